//! Studies: plans refused with the factor named, a grid and a Latin hypercube end to end, a
//! factor's effect seen in the outputs, and the written plan reproducing the folder.

use std::path::Path;

use crate::common::{adsim, adsim_ok, stderr};

/// A small plan: 3000 users x 1 replication, with `rest` appended.
fn plan(dir: &Path, name: &str, rest: &str) -> String {
    let text = format!(
        "name = \"{name}\"\nscenario = \"whatsapp-2016\"\nusers = 3000\nreplications = 1\n{rest}"
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

#[test]
fn bad_plans_are_refused_naming_the_factor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grid = "design = \"grid\"\n";
    let lhs = "design = \"lhs\"\nsamples = 20\n";
    for (name, rest, expect) in [
        (
            "unknown",
            format!("{grid}[[factor]]\nkey = \"targeting.m_recal\"\nlevels = [0.5]\n"),
            "factor[0] (targeting.m_recal).key",
        ),
        (
            "inverted",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.9\nhigh = 0.5\n"),
            "factor[0] (targeting.m_recall).high",
        ),
        (
            "illegal",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.5\nhigh = 1.5\n"),
            "legal range",
        ),
        (
            "too-few",
            "design = \"lhs\"\nsamples = 5\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.5\nhigh = 0.9\n".to_string(),
            "samples",
        ),
        (
            "data-column",
            format!("{grid}[[factor]]\nkey = \"countries.m_share\"\nlevels = [1.0]\n"),
            "a scalar scenario key",
        ),
        (
            "levels-in-lhs",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.5]\n"),
            "factor[0] (targeting.m_recall).levels",
        ),
        (
            "twice",
            format!("{grid}[[factor]]\nkey = \"targeting.m_fpr\"\nlevels = [0.001]\n[[factor]]\nkey = \"targeting.m_fpr\"\nlevels = [0.002]\n"),
            "factor[1].key",
        ),
        (
            "fractional-integer",
            format!("{grid}[[factor]]\nkey = \"policy.window_days\"\nlevels = [10.5]\n"),
            "a whole number",
        ),
        (
            "bad-metric",
            format!("{grid}[[factor]]\nkey = \"targeting.m_fpr\"\nlevels = [0.001]\n[[output]]\nmetric = \"revenue\"\nrate = 0.5\n"),
            "output[0].metric",
        ),
        (
            "invalid-point",
            // A window longer than the horizon is legal for the key alone, not for the scenario.
            format!("{grid}[[factor]]\nkey = \"policy.window_days\"\nlevels = [30, 200]\n"),
            "policy.window_days = 200",
        ),
        (
            "sobol-not-power-of-two",
            "design = \"sobol\"\nsamples = 100\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.5\nhigh = 0.9\n".to_string(),
            "a power of two",
        ),
        (
            "morris-odd-levels",
            "design = \"morris\"\nmorris_levels = 5\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.5\nhigh = 0.9\n".to_string(),
            "morris_levels",
        ),
        (
            "loguniform-from-zero",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_fpr\"\nlow = 0.0\nhigh = 0.01\nspread = \"loguniform\"\n"),
            "factor[0] (targeting.m_fpr).low",
        ),
        (
            "unknown-plan-key",
            format!("{grid}sample = 3\n"),
            "unknown field",
        ),
    ] {
        let file = plan(d, name, &rest);
        let out = adsim(d, &["study", &file, "--out", name, "--quiet"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!d.join(name).exists(), "{name}: nothing written");
    }
}

#[test]
fn a_grid_shows_a_factors_effect_and_its_plan_reproduces_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "recall",
        "design = \"grid\"\n[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.1, 0.9]\n\
         [[output]]\nmetric = \"precision_lift\"\nrate = 0.0\n",
    );
    adsim_ok(d, &["study", &file, "--out", "a", "--quiet"]);
    let rows: Vec<Vec<String>> = std::fs::read_to_string(d.join("a/evaluations.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows[0][1], "targeting.m_recall");
    assert_eq!(rows.len(), 3, "two evaluations");
    let lift = |r: usize| rows[r][2].parse::<f64>().unwrap();
    assert!(
        lift(2) > lift(1),
        "more M recall, more precision: {} vs {}",
        lift(2),
        lift(1)
    );
    let effects = std::fs::read_to_string(d.join("a/indices.csv")).unwrap();
    assert!(effects.contains("targeting.m_recall,main_effect_swing"));
    // The written plan runs again, from the study folder, to the same bytes.
    adsim_ok(d, &["study", "a/plan.toml", "--out", "b", "--quiet"]);
    // The tornado: the base scenario's m_recall (0.8) and the grid's ends, one at a time.
    let tornado = std::fs::read_to_string(d.join("a/tornado.csv")).unwrap();
    let row: Vec<&str> = tornado.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(
        &row[1..4],
        &["targeting.m_recall", "0.100000", "0.900000"],
        "{tornado}"
    );
    let (base, low, high): (f64, f64, f64) = (
        row[4].parse().unwrap(),
        row[5].parse().unwrap(),
        row[6].parse().unwrap(),
    );
    assert!(low < base && base < high, "{tornado}");
    assert_eq!(
        low,
        lift(1),
        "the tornado's low end is the grid's first point"
    );
    for f in [
        "tornado.csv",
        "tornado_1.png",
        "evaluations.csv",
        "evaluations.parquet",
        "summary.csv",
        "indices.csv",
        "report.md",
        "plan.toml",
    ] {
        assert_eq!(
            std::fs::read(d.join("a").join(f)).unwrap(),
            std::fs::read(d.join("b").join(f)).unwrap(),
            "{f}"
        );
    }
    // An existing folder is kept without --force.
    let out = adsim(d, &["study", &file, "--out", "a", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
}

#[test]
fn a_latin_hypercube_over_the_assumptions_gives_percentiles_and_a_dummy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "lhs",
        "design = \"lhs\"\nsamples = 40\nassumptions = true\n\
         [[output]]\nmetric = \"ca_match_rate\"\nrate = 0.0\n",
    );
    adsim_ok(d, &["study", &file, "--out", "u", "--quiet"]);
    let header = std::fs::read_to_string(d.join("u/evaluations.csv")).unwrap();
    let header = header.lines().next().unwrap().to_string();
    assert!(header.contains(",dummy,"), "{header}");
    assert!(header.contains("audiences.fault_rate"), "{header}");
    assert!(
        !header.contains("fault_shares"),
        "shares that must sum to 1 are held"
    );
    assert!(
        !header.contains("policy.behavior."),
        "a rate-mode scenario reads no behaviour key"
    );
    let summary = std::fs::read_to_string(d.join("u/summary.csv")).unwrap();
    let row: Vec<f64> = summary
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // evaluations, mean, sd, min, p2.5, p50, p97.5, max: ordered, and spread.
    assert_eq!(row[0], 40.0);
    assert!(
        row[3] <= row[4] && row[4] < row[5] && row[5] < row[6] && row[6] <= row[7],
        "{row:?}"
    );
    // The fault rate governs the match rate: the strongest effect, far above the dummy's.
    let effects = std::fs::read_to_string(d.join("u/indices.csv")).unwrap();
    let first = effects.lines().nth(1).unwrap();
    // Columns: output, factor, measure, value, lo, hi.
    let rho: f64 = first.split(',').nth(3).unwrap().parse().unwrap();
    assert!(
        first.contains("audiences.fault_rate,spearman_rho") && rho < -0.9,
        "{first}"
    );
    let dummy: f64 = effects
        .lines()
        .find(|l| l.contains(",dummy,"))
        .and_then(|l| l.split(',').nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(dummy.abs() < 0.5, "the dummy is noise: {dummy}");
    let report = std::fs::read_to_string(d.join("u/report.md")).unwrap();
    assert!(
        report.contains("parameter-uncertainty interval"),
        "{report}"
    );
}

#[test]
fn built_in_studies_list_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let list = adsim_ok(dir.path(), &["studies"]);
    for name in [
        "uncertainty",
        "heterogeneity-x-notice",
        "screening",
        "sobol-targeting",
    ] {
        assert!(list.contains(name), "{list}");
    }
    let shown = adsim_ok(dir.path(), &["studies", "--show", "uncertainty"]);
    assert!(shown.contains("design = \"lhs\""));
}

#[test]
fn morris_and_sobol_designs_rank_a_factor_that_matters_above_one_that_does_not() {
    // The fault rate governs the Custom Audience match rate; the untargeted CTR does not touch
    // it. Under common random numbers the dummy's indices are exactly zero.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let factors = "[[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n\
                   [[factor]]\nkey = \"targeting.ctr_untargeted\"\nlow = 0.002\nhigh = 0.0055\n\
                   [[output]]\nmetric = \"ca_match_rate\"\nrate = 0.0\n";
    for (name, design, main) in [
        (
            "morris",
            "design = \"morris\"\ntrajectories = 4\nbootstrap = 50\n",
            "mu_star",
        ),
        (
            "sobol",
            "design = \"sobol\"\nsamples = 16\nbootstrap = 50\n",
            "ST",
        ),
    ] {
        let file = plan(d, name, &format!("{design}{factors}"));
        adsim_ok(d, &["study", &file, "--out", name, "--quiet"]);
        let effects = std::fs::read_to_string(d.join(name).join("indices.csv")).unwrap();
        let rows: Vec<Vec<&str>> = effects
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let value = |factor: &str| -> f64 {
            rows.iter()
                .find(|r| r[1] == factor && r[2] == main)
                .map(|r| r[3].parse().unwrap())
                .unwrap_or_else(|| panic!("{name}: no {main} of {factor}: {effects}"))
        };
        assert_eq!(rows[0][1], "audiences.fault_rate", "{name}: {effects}");
        assert!(value("audiences.fault_rate") > 0.0, "{name}");
        assert_eq!(value("targeting.ctr_untargeted"), 0.0, "{name}: {effects}");
        assert_eq!(value("dummy"), 0.0, "{name}: {effects}");
        let evaluations = std::fs::read_to_string(d.join(name).join("evaluations.csv")).unwrap();
        let expected = if name == "morris" { 4 * 4 } else { 16 * 5 };
        assert_eq!(evaluations.lines().count(), expected + 1, "{name}");
        // The index chart and the scatter plot of the one output that moves, in the report.
        let report = std::fs::read_to_string(d.join(name).join("report.md")).unwrap();
        for chart in ["indices_1.png", "scatter_1.png"] {
            assert!(d.join(name).join(chart).is_file(), "{name}: {chart}");
            assert!(report.contains(chart), "{name}: {chart} in the report");
        }
    }
}

#[test]
fn a_run_shows_a_studys_interval_beside_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "small",
        "design = \"lhs\"\nsamples = 10\n[[factor]]\nkey = \"targeting.ctr_customer\"\nlow = 0.015\nhigh = 0.05\n",
    );
    adsim_ok(d, &["study", &file, "--out", "s", "--quiet"]);
    adsim_ok(
        d,
        &[
            "run",
            "--users",
            "3000",
            "--replications",
            "2",
            "--study",
            "s",
            "--out",
            "r",
            "--quiet",
        ],
    );
    let report = std::fs::read_to_string(d.join("r/report.md")).unwrap();
    assert!(report.contains("## Parameter uncertainty"), "{report}");
    assert!(report.contains("From the study `small`"), "{report}");
    assert!(
        report.contains("`revenue_change_musd`, opt_out_window at 0 |"),
        "{report}"
    );
    // A folder that is not a study is refused before any work, naming the file.
    std::fs::create_dir(d.join("empty")).unwrap();
    let out = adsim(
        d,
        &[
            "run", "--users", "3000", "--study", "empty", "--out", "r2", "--quiet",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty/plan.toml"), "{}", stderr(&out));
    assert!(!d.join("r2").exists());
    // So is a run folder given as a study.
    let out = adsim(
        d,
        &[
            "run", "--users", "3000", "--study", "r", "--out", "r3", "--quiet",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

fn read_parquet(path: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::*;
    ParquetReader::new(std::fs::File::open(path).expect("opens"))
        .finish()
        .expect("reads")
}

#[test]
fn a_grid_studys_outputs_equal_the_scenarios_run_one_by_one() {
    use adsim::scenario::Scenario;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let levels = [0.2, 0.65];
    let file = plan(
        d,
        "one-by-one",
        "design = \"grid\"\n[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.2, 0.65]\n\
         [[output]]\nmetric = \"precision_lift\"\nrate = 0.0\n\
         [[output]]\nmetric = \"revenue_change_musd\"\narm = \"opt_out_window\"\nrate = 0.5\n",
    );
    adsim_ok(d, &["study", &file, "--out", "g", "--quiet"]);
    let evals = read_parquet(&d.join("g/evaluations.parquet"));
    let lift = adsim::table::floats(&evals, "precision_lift@opt_out_window@0");
    let revenue = adsim::table::floats(&evals, "revenue_change_musd@opt_out_window@0.5");
    for (i, level) in levels.iter().enumerate() {
        let (base, _) = Scenario::builtin("whatsapp-2016").unwrap();
        let mut tree = toml::Value::try_from(&base).unwrap();
        tree["targeting"]["m_recall"] = toml::Value::Float(*level);
        let name = format!("s{i}.toml");
        std::fs::write(d.join(&name), toml::to_string(&tree).unwrap()).unwrap();
        let out = format!("r{i}");
        adsim_ok(
            d,
            &[
                "run",
                &name,
                "--users",
                "3000",
                "--replications",
                "1",
                "--out",
                &out,
                "--quiet",
            ],
        );
        let s = read_parquet(&d.join(&out).join("summary.parquet"));
        let (arm, rate) = (
            adsim::table::texts(&s, "arm"),
            adsim::table::floats(&s, "rate"),
        );
        let row = |r: f64| {
            (0..s.height())
                .find(|&j| arm[j] == "opt_out_window" && (rate[j] - r).abs() < 1e-9)
                .unwrap()
        };
        // Common random numbers: the study's evaluation is the run, bit for bit.
        assert_eq!(
            adsim::table::floats(&s, "precision_lift")[row(0.0)].to_bits(),
            lift[i].to_bits(),
            "m_recall = {level}"
        );
        assert_eq!(
            adsim::table::floats(&s, "revenue_change_musd")[row(0.5)].to_bits(),
            revenue[i].to_bits(),
            "m_recall = {level}"
        );
    }
}

/// The files of a study folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_killed_study_resumes_and_shards_merge_to_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "resume",
        "design = \"lhs\"\nsamples = 40\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.3\nhigh = 0.9\n\
         [[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n",
    );
    adsim_ok(d, &["study", &file, "--out", "whole", "--quiet"]);
    let whole = files(&d.join("whole"));
    assert!(
        !d.join(".whole.progress").exists(),
        "the log goes once written"
    );

    // Killed once some evaluations are logged: run again, it reads them back.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_adsim"))
        .current_dir(d)
        .args(["study", &file, "--out", "again", "--quiet"])
        .spawn()
        .unwrap();
    let log = d.join(".again.progress");
    let rows = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count().saturating_sub(5))
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while rows(&log) < 3 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = rows(&log);
    assert!(
        logged >= 3 && !d.join("again").exists(),
        "killed mid-study: {logged} rows logged"
    );
    // A torn last line, as a kill mid-write leaves it, is dropped, not misread.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("17 3ff0");
    std::fs::write(&log, text).unwrap();
    let said = adsim_ok(d, &["study", &file, "--out", "again"]);
    assert!(said.contains("resumed:"), "{said}");
    assert_eq!(files(&d.join("again")), whole, "resumed = uninterrupted");
    assert!(!log.exists());

    // Three shards, merged in any order, equal the whole study.
    for k in 0..3 {
        adsim_ok(
            d,
            &[
                "study",
                &file,
                "--shard",
                &format!("{k}/3"),
                "--out",
                &format!("p{k}"),
                "--quiet",
            ],
        );
    }
    adsim_ok(d, &["merge", "p2", "p0", "p1", "--out", "merged"]);
    assert_eq!(
        files(&d.join("merged")),
        whole,
        "merged shards = whole study"
    );
    // A missing shard, a repeated one, another study's: refused, naming what is wrong.
    let err = stderr(&adsim(d, &["merge", "p0", "p1", "--out", "m2"]));
    assert!(err.contains("missing: 2/3"), "{err}");
    let err = stderr(&adsim(d, &["merge", "p0", "p1", "p1", "--out", "m2"]));
    assert!(err.contains("same shard"), "{err}");
    let other = plan(
        d,
        "other",
        "design = \"lhs\"\nsamples = 40\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.3\nhigh = 0.8\n",
    );
    adsim_ok(
        d,
        &["study", &other, "--shard", "2/3", "--out", "q2", "--quiet"],
    );
    let err = stderr(&adsim(d, &["merge", "p0", "p1", "q2", "--out", "m2"]));
    assert!(err.contains("another study") && err.contains("q2"), "{err}");
    assert!(!d.join("m2").exists());
}
