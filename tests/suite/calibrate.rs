//! History matching (docs/model.md §18): synthetic truths recovered, conflicts reported,
//! the kept set the same on any thread count, and the command line's refusals.

use std::path::Path;

use adsim::study::calibrate::{Calibration, CalibrationPlan, Target, calibrate};
use adsim::study::{Factor, latin_hypercube};
use adsim::table::{floats, level_near};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::common::{adsim, stderr};

const CTR: (f64, f64) = (0.010, 0.025);
const FPR: (f64, f64) = (0.02, 0.15);
/// Stated observation standard deviations of the synthetic targets: CTR, precision.
const SD: [f64; 2] = [0.0006, 0.02];

fn factor(key: &str, (low, high): (f64, f64)) -> Factor {
    Factor {
        key: key.into(),
        low: Some(low),
        high: Some(high),
        levels: None,
        points: None,
        spread: None,
        choices: None,
    }
}

/// A scenario file at `values` (ctr_relevant, on_platform_fpr) and seed.
fn scenario(dir: &Path, name: &str, values: [f64; 2], seed: u64) -> String {
    let file = format!("{name}.toml");
    std::fs::write(
        dir.join(&file),
        format!(
            "name = \"{name}\"\n[population]\nseed = {seed}\n[targeting]\nctr_relevant = {}\non_platform_fpr = {}\n",
            values[0], values[1]
        ),
    )
    .unwrap();
    file
}

fn plan(scenario: String, observed: [f64; 2]) -> CalibrationPlan {
    let target = |name: &str, metric: &str, observed: f64, sd: f64| Target {
        name: name.into(),
        metric: metric.into(),
        arm: Some("none".into()),
        rate: 0.0,
        observed,
        observation_sd: sd,
        discrepancy_sd: 0.0,
        source: "synthetic".into(),
    };
    CalibrationPlan {
        name: "synthetic".into(),
        description: String::new(),
        scenario,
        users: 3000,
        replications: 2,
        waves: 2,
        samples: 24,
        cutoff: 3.0,
        design_seed: 7,
        factor: vec![
            factor("targeting.ctr_relevant", CTR),
            factor("targeting.on_platform_fpr", FPR),
        ],
        target: vec![
            target("ctr", "ctr", observed[0], SD[0]),
            target("precision", "precision", observed[1], SD[1]),
        ],
        output: vec![adsim::study::Output {
            metric: "revenue_change_musd".into(),
            arm: None,
            rate: 0.0,
        }],
    }
}

/// The model's CTR and precision of the none arm at `values`, with another seed than the
/// calibration's (the observation is not the calibration's own draw).
fn observe(dir: &Path, values: [f64; 2]) -> [f64; 2] {
    let file = scenario(dir, "observed", values, 99);
    let s = adsim::scenario::Scenario::from_file(&dir.join(file)).unwrap();
    let mut s = s;
    s.population.users = 3000;
    // More replications than the calibration's, so that the observation's own Monte Carlo
    // noise is small beside the stated observation noise.
    s.population.replications = 8;
    let r = s.resolve("observed", dir).unwrap();
    let e = adsim::run::evaluate(&r, &adsim::run::quiet).unwrap();
    let row = level_near(&e.summary, "none", 0.0).unwrap().1[0];
    [
        floats(&e.summary, "ctr")[row],
        floats(&e.summary, "precision")[row],
    ]
}

fn quiet(_: u32, _: usize, _: usize) {}

/// Whether `unit` is in the region the last wave sampled.
fn inside(c: &Calibration, unit: &[f64]) -> bool {
    c.region.as_ref().is_none_or(|r| r.contains(unit))
}

#[test]
fn history_matching_keeps_synthetic_truths_and_rules_out_most_of_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let truths = latin_hypercube(2, 20, 2024);
    let mut rng = StdRng::seed_from_u64(5);
    let mut normal = move || {
        // Box-Muller.
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let (mut recovered, mut ruled_out) = (0, Vec::new());
    for (i, u) in truths.iter().enumerate() {
        let truth = [
            CTR.0 + u[0] * (CTR.1 - CTR.0),
            FPR.0 + u[1] * (FPR.1 - FPR.0),
        ];
        let model = observe(dir.path(), truth);
        let observed = [model[0] + SD[0] * normal(), model[1] + SD[1] * normal()];
        // The base scenario sits at the truth, so the calibration's base point is the truth
        // evaluated as every other point is.
        let file = scenario(dir.path(), &format!("truth{i}"), truth, 2016);
        let c = calibrate(plan(file, observed), "synthetic", dir.path(), &quiet).unwrap();
        assert!(c.conflict.is_none(), "truth {i}: {:?}", c.conflict);
        if c.base.max_implausibility() <= 3.0 && inside(&c, &c.base.unit) {
            recovered += 1;
        }
        ruled_out.push(c.waves.last().unwrap().ruled_out);
    }
    let mean = ruled_out.iter().sum::<f64>() / ruled_out.len() as f64;
    eprintln!("synthetic truths kept: {recovered} of 20; mean share ruled out {mean:.3}");
    assert!(recovered >= 19, "truth kept in {recovered} of 20");
    assert!(mean > 0.5, "mean share ruled out {mean}: {ruled_out:?}");
}

#[test]
fn targets_no_point_meets_together_are_reported_as_in_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "base", [0.015, 0.06], 2016);
    let mut p = plan(file, [0.014, 0.55]);
    // A second target on the same CTR, far from the first: each is met, never both.
    p.target.push(Target {
        name: "ctr-again".into(),
        ..p.target[0].clone()
    });
    p.target[2].observed = 0.030;
    p.target[2].observation_sd = 0.004;
    p.target[0].observation_sd = 0.001;
    // Precision is met everywhere.
    p.target[1].observation_sd = 1.0;
    p.waves = 1;
    let c = calibrate(p, "conflict", dir.path(), &quiet).unwrap();
    let conflict = c.conflict.expect("a conflict");
    assert_eq!(
        conflict.pairs,
        vec![("ctr".to_string(), "ctr-again".to_string())]
    );
    assert!(conflict.unmet.is_empty());
    assert_eq!(c.waves.len(), 1);
    assert_eq!(c.waves[0].kept, 0);
}

#[test]
fn the_kept_set_is_the_same_on_one_thread_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "base", [0.015, 0.06], 2016);
    let run = |threads: usize| {
        let p = plan(file.clone(), [0.0145, 0.56]);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| calibrate(p, "threads", dir.path(), &quiet).unwrap())
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.points, two.points);
    assert_eq!(one.waves, two.waves);
    assert!(one.waves[0].kept > 0 && one.waves[0].kept < one.waves[0].evaluated);
}

#[test]
fn the_command_refuses_bad_plans_naming_the_key_and_writes_a_folder_a_run_can_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.toml"),
        "name = \"bad\"\nscenario = \"whatsapp-2016\"\nusers = 1000\nreplications = 1\nsamples = 12\n[[factor]]\nkey = \"targeting.ctr_relevant\"\n[[target]]\nname = \"ctr\"\nmetric = \"ctr\"\nrate = 0.0\nobserved = 0.015\nobservation_sd = 0.002\ndiscrepancy_sd = 0.0\n",
    )
    .unwrap();
    let out = adsim(d, &["calibrate", "bad.toml", "--out", "c"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("replications"),
        "{err}"
    );
    assert!(!d.join("c").exists());
    let text = std::fs::read_to_string(d.join("bad.toml"))
        .unwrap()
        .replace("replications = 1", "replications = 2")
        .replace("discrepancy_sd = 0.0\n", "discrepancy_sd = 0.0\n[[target]]\nname = \"ctr\"\nmetric = \"ctr\"\nrate = 0.0\nobserved = 0.01\nobservation_sd = 0.001\ndiscrepancy_sd = 0.0");
    std::fs::write(d.join("dup.toml"), &text).unwrap();
    let err = stderr(&adsim(d, &["calibrate", "dup.toml", "--out", "c"]));
    assert!(err.contains("target[1] (ctr).name"), "{err}");
    let good = text.replace("[[target]]\nname = \"ctr\"\nmetric = \"ctr\"\nrate = 0.0\nobserved = 0.01\nobservation_sd = 0.001\ndiscrepancy_sd = 0.0", "");
    std::fs::write(d.join("good.toml"), good).unwrap();
    let out = adsim(d, &["calibrate", "good.toml", "--out", "c", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "calibration.toml",
        "points.csv",
        "waves.csv",
        "intervals.csv",
        "plan.toml",
        "summary.csv",
        "report.md",
        "report.html",
    ] {
        assert!(d.join("c").join(f).is_file(), "{f}");
    }
    // The data dictionary names every column of the two fixed tables.
    let doc = include_str!("../../docs/data-dictionary.md");
    for table in ["waves.csv", "intervals.csv"] {
        let text = std::fs::read_to_string(d.join("c").join(table)).unwrap();
        for col in text.lines().next().unwrap().split(',') {
            let col = col.replace("ruled_out_by_ctr", "ruled_out_by_<target>");
            assert!(doc.contains(&format!("`{col}`")), "{table}: {col}");
        }
    }
    // An existing folder is refused; a run can be given the calibration as a study.
    let out = adsim(d, &["calibrate", "good.toml", "--out", "c", "--quiet"]);
    assert!(!out.status.success());
    let out = adsim(
        d,
        &[
            "run",
            "--users",
            "1000",
            "--replications",
            "2",
            "--study",
            "c",
            "--out",
            "r",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(d.join("r").join("report.md")).unwrap();
    assert!(
        md.contains("synthetic") || md.contains("calibration"),
        "{md}"
    );

    // A study given the calibration takes the calibrated factor's values from its kept points
    // (the last wave's), the others from its own hypercube; another design is refused.
    let (keys, kept) = adsim::study::calibrate::kept_points(&d.join("c")).unwrap();
    assert_eq!(keys, vec!["targeting.ctr_relevant".to_string()]);
    let study = "name = \"s\"\nscenario = \"whatsapp-2016\"\nusers = 1000\nreplications = 1\ndesign = \"lhs\"\nsamples = 12\ncalibration = \"c\"\n[[factor]]\nkey = \"targeting.ctr_relevant\"\nlow = 0.01\nhigh = 0.025\n[[factor]]\nkey = \"targeting.ctr_customer\"\nlow = 0.015\nhigh = 0.05\n[[output]]\nmetric = \"ctr\"\nrate = 0.0\n";
    std::fs::write(d.join("s.toml"), study).unwrap();
    let out = adsim(d, &["study", "s.toml", "--out", "s", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(d.join("s").join("evaluations.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let (c, other) = (
        header
            .iter()
            .position(|h| *h == "targeting.ctr_relevant")
            .unwrap(),
        header
            .iter()
            .position(|h| *h == "targeting.ctr_customer")
            .unwrap(),
    );
    let mut distinct = std::collections::BTreeSet::new();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let v: f64 = cells[c].parse().unwrap();
        assert!(
            kept.iter().any(|k| (k[0] - v).abs() <= 1e-6 * v),
            "{v} is not a kept value"
        );
        distinct.insert(cells[other].to_string());
    }
    assert_eq!(
        distinct.len(),
        12,
        "the other factor keeps its own hypercube"
    );
    std::fs::write(
        d.join("m.toml"),
        study.replace("design = \"lhs\"\nsamples = 12", "design = \"morris\""),
    )
    .unwrap();
    let out = adsim(d, &["study", "m.toml", "--out", "m", "--quiet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("calibration"), "{}", stderr(&out));
}
