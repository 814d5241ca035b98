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
    let effects = std::fs::read_to_string(d.join("a/effects.csv")).unwrap();
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
        "effects.csv",
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
    let effects = std::fs::read_to_string(d.join("u/effects.csv")).unwrap();
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
        let effects = std::fs::read_to_string(d.join(name).join("effects.csv")).unwrap();
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
