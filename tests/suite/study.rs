//! Studies: plans refused with the factor named, a grid and a Latin hypercube end to end, a
//! factor's effect seen in the outputs, the written plan reproducing the folder, and a dry run
//! announcing the evaluations that the study and its shards then run.

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
            "shares are normalised",
        ),
        (
            "levels-and-range",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.5]\nlow = 0.1\nhigh = 0.9\n"),
            "factor[0] (targeting.m_recall).levels",
        ),
        (
            "choices-of-a-number",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_recall\"\nchoices = [\"a\", \"b\"]\n"),
            "factor[0] (targeting.m_recall).choices",
        ),
        (
            "a-word-it-does-not-take",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_evidence\"\nchoices = [\"none\", \"gossip\"]\n"),
            "factor[0] (targeting.m_evidence).choices",
        ),
        (
            "a-word-without-choices",
            format!("{lhs}[[factor]]\nkey = \"targeting.m_evidence\"\nlow = 0.0\nhigh = 1.0\n"),
            "choices",
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
            "repeated-level",
            format!("{grid}[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.5, 0.7, 0.5]\n"),
            "distinct values (0.5 is given twice)",
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
        let dry = adsim(d, &["study", &file, "--dry-run"]);
        assert_eq!(dry.status.code(), Some(1), "{name} --dry-run");
        assert!(stderr(&dry).contains(expect), "{name} --dry-run: {}", stderr(&dry));
    }
}

/// The number after `label` in a dry run's line that starts with it.
fn said_count(said: &str, label: &str) -> usize {
    let line = said
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line in {said}"));
    line[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"))
}

#[test]
fn a_dry_run_counts_the_evaluations_the_study_runs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "dry",
        "design = \"lhs\"\nsamples = 11\n[[factor]]\nkey = \"targeting.m_recall\"\nlow = 0.5\nhigh = 0.95\n[[factor]]\nkey = \"policy.notice_read_rate\"\nlow = 0.2\nhigh = 0.6\n",
    );
    let said = adsim_ok(d, &["study", &file, "--dry-run", "--out", "never"]);
    assert!(!d.join("never").exists(), "a dry run writes nothing");
    let total = said_count(&said, "evaluations");
    // Each of three shards evaluates exactly the share its dry run announced, of that total.
    let mut next = 0;
    for k in 0..3 {
        let shard = format!("{k}/3");
        let said = adsim_ok(d, &["study", &file, "--dry-run", "--shard", &shard]);
        let line = said.lines().find(|l| l.starts_with("shard")).unwrap();
        let first = said_count(
            line,
            &format!("shard                   {shard}: evaluations"),
        );
        let count: usize = line
            .rsplit('(')
            .next()
            .and_then(|t| t.trim_end_matches(')').parse().ok())
            .unwrap();
        assert_eq!(first, next, "{line}");
        let last: usize = line
            .split(" to ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(last + 1, first + count, "{line}");
        let out = format!("part-{k}");
        adsim_ok(
            d,
            &["study", &file, "--shard", &shard, "--out", &out, "--quiet"],
        );
        let rows = std::fs::read_to_string(d.join(&out).join("evaluations.rows")).unwrap();
        assert!(rows.contains(&format!("\nevaluations {total}\n")), "{rows}");
        let done: Vec<usize> = rows
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect();
        assert_eq!(done, (first..first + count).collect::<Vec<_>>(), "{line}");
        next += count;
    }
    assert_eq!(next, total);
}

#[test]
fn a_grid_shows_a_factors_effect_and_its_plan_reproduces_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // M recall is read where M's data carries business-messaging evidence: the 2021 scenario.
    let file = plan(
        d,
        "recall",
        "design = \"grid\"\n[[factor]]\nkey = \"targeting.m_recall\"\nlevels = [0.1, 0.9]\n\
         [[output]]\nmetric = \"precision_lift\"\nrate = 0.0\n",
    );
    let text = std::fs::read_to_string(d.join(&file)).unwrap();
    std::fs::write(
        d.join(&file),
        text.replace("whatsapp-2016", "whatsapp-2021"),
    )
    .unwrap();
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
        "design = \"lhs\"\nsamples = 80\nassumptions = true\n\
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
    assert_eq!(row[0], 80.0);
    assert!(
        row[3] <= row[4] && row[4] < row[5] && row[5] < row[6] && row[6] <= row[7],
        "{row:?}"
    );
    // The match rate rises with S presence (every country's, as a common multiplier: more
    // accounts to match), the strongest effect, and with the metadata link rate (a linked
    // account's number is matched), both far above the dummy's; with 35 factors and 80
    // points, correlations under about 0.22 are noise.
    let effects = std::fs::read_to_string(d.join("u/indices.csv")).unwrap();
    let rho_of = |factor: &str| -> f64 {
        effects
            .lines()
            .find(|l| l.contains(&format!(",{factor},spearman_rho")))
            .and_then(|l| l.split(',').nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {factor}: {effects}"))
    };
    let first = effects.lines().nth(1).unwrap();
    assert!(
        first.contains("countries.also_on_s,spearman_rho") && rho_of("countries.also_on_s") > 0.5,
        "{effects}"
    );
    assert!(rho_of("countries.metadata_link_rate") > 0.3, "{effects}");
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

    // Another study's log in the way: kept (refused, naming it) unless --force.
    std::fs::write(
        d.join(".other.progress"),
        format!(
            "adsim study rows 1\nfingerprint 00ff\npart all\nevaluations 53\noutputs 2\n0 {0} {0}\n",
            "3ff0000000000000"
        ),
    )
    .unwrap();
    let err = stderr(&adsim(d, &["study", &file, "--out", "other", "--quiet"]));
    assert!(
        err.contains("progress log of another study") && err.contains("--force"),
        "{err}"
    );
    adsim_ok(d, &["study", &file, "--out", "other", "--quiet", "--force"]);
    assert_eq!(files(&d.join("other")), whole);

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

#[test]
fn data_columns_vary_as_common_multipliers_and_rows_through_their_override_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The recycling rate of every country, x0.5 and x2: more recycled numbers, more people
    // mislinked; one segment's prevalence does not touch who is mislinked (its own stream).
    let file = plan(
        d,
        "columns",
        "design = \"grid\"\n[[factor]]\nkey = \"countries.recycled_rate\"\nlevels = [0.5, 2.0]\n\
         [[factor]]\nkey = 'data.segment_overrides.\"Pets\".prevalence'\nlevels = [0.05, 0.3]\n\
         [[output]]\nmetric = \"people_mislinked\"\nrate = 0.0\n\
         [[output]]\nmetric = \"revenue_change_musd\"\nrate = 0.0\n",
    );
    adsim_ok(d, &["study", &file, "--out", "c", "--quiet"]);
    let evals = read_parquet(&d.join("c/evaluations.parquet"));
    let mislinked = adsim::table::floats(&evals, "people_mislinked@opt_out_window@0");
    assert!(mislinked[2] > 1.5 * mislinked[0], "{mislinked:?}");
    assert_eq!(
        mislinked[0], mislinked[1],
        "a segment's prevalence moves no phone draw"
    );
    assert_eq!(mislinked[2], mislinked[3]);
    // The row factor reaches the model: Pets' prevalence moves the revenue change (more Pets
    // customers, more Custom Audience matches through metadata links).
    let lift = adsim::table::floats(&evals, "revenue_change_musd@opt_out_window@0");
    assert_ne!(lift[0], lift[1], "{lift:?}");
    let report = std::fs::read_to_string(d.join("c/report.md")).unwrap();
    assert!(
        report.contains("every row's value x the factor"),
        "{report}"
    );
    // Refused, naming the factor: a common multiplier of shares, an unknown row, a negative
    // multiplier, a text column.
    for (name, factor, expect) in [
        (
            "shares",
            "key = \"countries.m_share\"\nlow = 0.5\nhigh = 2.0",
            "shares are normalised",
        ),
        (
            "row",
            "key = \"data.country_overrides.XX.recycled_rate\"\nlow = 0.0\nhigh = 0.1",
            "XX",
        ),
        (
            "negative",
            "key = \"countries.recycled_rate\"\nlow = -1.0\nhigh = 2.0",
            "at least 0",
        ),
        (
            "text",
            "key = \"countries.name\"\nlow = 0.0\nhigh = 1.0",
            "numeric key",
        ),
        (
            "one-share",
            "key = \"data.country_overrides.IN.m_share\"\nlow = 0.1\nhigh = 0.3",
            "sum to 1",
        ),
    ] {
        let file = plan(
            d,
            name,
            &format!("design = \"lhs\"\nsamples = 10\n[[factor]]\n{factor}\n"),
        );
        let out = adsim(d, &["study", &file, "--out", name, "--quiet"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect) && err.contains(&file), "{name}: {err}");
        assert!(!d.join(name).exists(), "{name}: nothing written");
    }
}

#[test]
fn a_two_stage_plan_screens_then_carries_the_factors_that_matter_to_sobol() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The fault rate moves the match rate, the untargeted CTR does not: the second stage
    // carries the fault rate alone.
    let file = plan(
        d,
        "staged",
        "design = \"morris\"\ntrajectories = 4\nbootstrap = 50\n\
         [[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n\
         [[factor]]\nkey = \"targeting.ctr_untargeted\"\nlow = 0.002\nhigh = 0.0055\n\
         [[output]]\nmetric = \"ca_match_rate\"\nrate = 0.0\n\
         [then]\ndesign = \"sobol\"\nfactors = 2\nsamples = 16\n",
    );
    adsim_ok(d, &["study", &file, "--out", "s", "--quiet"]);
    let sobol = std::fs::read_to_string(d.join("s/2-sobol/plan.toml")).unwrap();
    assert!(
        sobol.contains("audiences.fault_rate") && !sobol.contains("ctr_untargeted"),
        "{sobol}"
    );
    let report = std::fs::read_to_string(d.join("s/report.md")).unwrap();
    assert!(
        report.contains("| audiences.fault_rate | 1.00 |"),
        "{report}"
    );
    // Each stage is a study folder of its own; the folder's plan reproduces the whole.
    assert!(d.join("s/1-screening/indices_1.png").is_file());
    adsim_ok(d, &["study", "s/plan.toml", "--out", "again", "--quiet"]);
    for f in [
        "report.md",
        "1-screening/evaluations.csv",
        "2-sobol/indices.csv",
    ] {
        assert_eq!(
            std::fs::read(d.join("s").join(f)).unwrap(),
            std::fs::read(d.join("again").join(f)).unwrap(),
            "{f}"
        );
    }
    // A second stage is refused under a design that is not a screening, and cannot shard.
    let bad = plan(
        d,
        "bad",
        "design = \"lhs\"\nsamples = 10\n[[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n\
         [then]\ndesign = \"sobol\"\nfactors = 1\nsamples = 16\n",
    );
    let err = stderr(&adsim(d, &["study", &bad, "--out", "b", "--quiet"]));
    assert!(err.contains("then.design"), "{err}");
    let err = stderr(&adsim(
        d,
        &["study", &file, "--shard", "0/2", "--out", "b", "--quiet"],
    ));
    assert!(
        err.contains("--shard") && err.contains("two-stage"),
        "{err}"
    );
    assert!(!d.join("b").exists());
}

/// The first option (the valid one), or one time in six any of them.
fn pick(rng: &mut rand::rngs::Xoshiro256PlusPlus, options: &[&str]) -> String {
    use rand::RngExt;
    if rng.random_range(0..6) != 0 {
        options[0].to_string()
    } else {
        options[rng.random_range(0..options.len())].to_string()
    }
}

/// One random plan: a valid small plan with some of its keys (about one in six) replaced by
/// legal, extreme or wrong values.
fn random_plan(rng: &mut rand::rngs::Xoshiro256PlusPlus, i: usize) -> String {
    use rand::RngExt;
    let design = pick(rng, &["lhs", "grid", "morris", "sobol", "anneal"]);
    let samples = match design.as_str() {
        "lhs" => pick(
            rng,
            &[
                "samples = 12",
                "samples = 1",
                "samples = 131072",
                "samples = 0",
            ],
        ),
        "sobol" => pick(rng, &["samples = 16", "samples = 17", "samples = 131072"]),
        _ => pick(rng, &["", "samples = 16"]),
    };
    let users = pick(
        rng,
        &["200", "1", "0", "-5", "1000000001", "2.5", "\"many\""],
    );
    let replications = pick(rng, &["1", "2", "0", "1001"]);
    let extra = pick(
        rng,
        &[
            "",
            "trajectories = 2",
            "trajectories = 1",
            "morris_levels = 5",
            "bootstrap = 10",
            "bootstrap = 3",
            "design_seed = 0",
            "colour = 1",
            "assumptions = true",
        ],
    );
    let scenario = pick(rng, &["whatsapp-2016", "eu-pause-2016", "no-such-scenario"]);
    let mut text = format!(
        "name = \"{}\"\nscenario = \"{scenario}\"\nusers = {users}\nreplications = {replications}\ndesign = \"{design}\"\n{samples}\n{extra}\n",
        pick(rng, &[&format!("fuzz{i}"), "../escape", ""]),
    );
    let factors = 1 + rng.random_range(0..3);
    let keys = [
        "targeting.m_recall",
        "audiences.fault_rate",
        "countries.recycled_rate",
        "data.country_overrides.IN.recycled_rate",
        "data.segment_overrides.\\\"Pets\\\".prevalence",
    ];
    for f in 0..factors {
        let key = pick(
            rng,
            &[
                keys[(f + i) % keys.len()],
                "policy.window_days",
                "countries.m_share",
                "countries.code",
                "segments.prevalence",
                "data.country_overrides.ZZ.privacy_shift",
                "population.users",
                "no.such.key",
                "",
            ],
        );
        let range = if design == "grid" {
            pick(
                rng,
                &[
                    "levels = [0.2, 0.4]",
                    "levels = []",
                    "levels = [30.0, 91.0, 200.0]",
                    "low = 0.1\nhigh = 0.3\npoints = 3",
                    "low = 0.1\nhigh = 0.3\npoints = 1",
                ],
            )
        } else {
            pick(
                rng,
                &[
                    "low = 0.1\nhigh = 0.4",
                    "low = 0.9\nhigh = 0.1",
                    "low = 0.0\nhigh = 1.0",
                    "low = -1.0\nhigh = 2.0",
                    "low = 1.0\nhigh = 200.0",
                    "low = 0.5\nhigh = 0.5",
                    "levels = [0.2, 0.4]",
                    "low = 1e-9\nhigh = 1e300\nspread = \"loguniform\"",
                    "low = 0.0\nhigh = 0.5\nspread = \"loguniform\"",
                    "low = 0.1",
                ],
            )
        };
        text.push_str(&format!("[[factor]]\nkey = \"{key}\"\n{range}\n"));
    }
    if rng.random_range(0..2) == 0 {
        text.push_str(&format!(
            "[[output]]\nmetric = \"{}\"\n{}rate = {}\n",
            pick(rng, &["precision_lift", "revenue_change_musd", "bogus"]),
            pick(rng, &["", "arm = \"none\"\n", "arm = \"nobody\"\n"]),
            pick(rng, &["0.5", "0.0", "1.0", "-0.1", "2"]),
        ));
    }
    if design == "morris" && rng.random_range(0..3) == 0 {
        text.push_str(&format!(
            "[then]\ndesign = \"{}\"\nfactors = {}\nsamples = {}\n",
            pick(rng, &["sobol", "lhs"]),
            pick(rng, &["1", "0", "9"]),
            pick(rng, &["16", "15"]),
        ));
    }
    text
}

/// The study-plan fuzzer: random plans, each refused with an error that names the plan file
/// and a key, or accepted; never a panic. Small accepted ones run to a full folder.
#[test]
fn fuzzed_plans_are_refused_naming_a_key_or_run_to_a_whole_folder() {
    use adsim::study::{Plan, Study, batch};
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(2026);
    let (mut accepted, mut refused, mut ran) = (0, 0, 0);
    for i in 0..1500 {
        let text = random_plan(&mut rng, i);
        let file = format!("fuzz{i}.toml");
        let outcome = std::panic::catch_unwind(|| {
            Plan::parse(&text, &file).and_then(|p| Study::new(p, &file, Path::new(".")))
        });
        let study = match outcome {
            Err(_) => panic!("plan {i} panicked:\n{text}"),
            Ok(Err(e)) => {
                let message = e.to_string();
                assert!(
                    message.contains(&file),
                    "plan {i}: the error does not name the plan: {message}\n{text}"
                );
                refused += 1;
                continue;
            }
            Ok(Ok(study)) => study,
        };
        accepted += 1;
        let evaluations = study.all_points().len();
        if ran < 6 && study.plan.users <= 300 && evaluations <= 60 && study.plan.then.is_none() {
            let out = dir.path().join(format!("s{i}"));
            batch::run(&study, &out, false, None, &|_, _| {})
                .unwrap_or_else(|e| panic!("plan {i}: {e}\n{text}"));
            let rows = std::fs::read_to_string(out.join("evaluations.csv")).unwrap();
            assert_eq!(rows.lines().count(), study.points.len() + 1, "plan {i}");
            assert!(out.join("report.html").is_file() && out.join("indices.csv").is_file());
            ran += 1;
        }
    }
    assert!(
        refused > 500 && accepted > 30 && ran >= 3,
        "{refused} refused, {accepted} accepted, {ran} ran"
    );
}

/// Structural alternatives as discrete factors (docs/model.md §16.1): a key of words takes
/// `choices`, a number `levels`, in a Latin hypercube as in a grid. M's interest evidence on
/// raises the precision of interest audiences and off leaves it, point by point.
#[test]
fn discrete_factors_take_their_words_and_levels_in_a_latin_hypercube() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "structural",
        "design = \"lhs\"\nsamples = 12\n\
         [[factor]]\nkey = \"targeting.m_evidence\"\nchoices = [\"none\", \"business_messaging\"]\n\
         [[factor]]\nkey = \"known_numbers.contact_uploads\"\nlevels = [0.0, 0.3]\n\
         [[output]]\nmetric = \"precision_lift\"\nrate = 0.0\n\
         [[output]]\nmetric = \"ca_match_rate\"\narm = \"none\"\nrate = 0.0\n",
    );
    adsim_ok(d, &["study", &file, "--out", "s", "--quiet"]);
    // The report's factor table names the words and the levels.
    let report = std::fs::read_to_string(d.join("s/report.md")).unwrap();
    assert!(
        report.contains("| targeting.m_evidence | the key | none or business_messaging | each level equally often |"),
        "{report}"
    );
    assert!(
        report.contains("| [0.0, 0.3] | each level equally often |"),
        "{report}"
    );
    let evals = read_parquet(&d.join("s/evaluations.parquet"));
    let evidence = adsim::table::floats(&evals, "targeting.m_evidence");
    let uploads = adsim::table::floats(&evals, "known_numbers.contact_uploads");
    let lift = adsim::table::floats(&evals, "precision_lift@opt_out_window@0");
    let matched = adsim::table::floats(&evals, "ca_match_rate@none@0");
    assert_eq!(evidence.len(), 12);
    // Evenly: six of each word and each level.
    assert_eq!(evidence.iter().filter(|&&e| e == 1.0).count(), 6);
    assert_eq!(uploads.iter().filter(|&&u| u == 0.3).count(), 6);
    for i in 0..12 {
        assert!(evidence[i] == 0.0 || evidence[i] == 1.0);
        assert!(uploads[i] == 0.0 || uploads[i] == 0.3);
        if evidence[i] == 0.0 {
            assert_eq!(lift[i], 1.0, "point {i}: no evidence, no lift");
        } else {
            assert!(lift[i] > 1.0, "point {i}: evidence, a lift ({})", lift[i]);
        }
    }
    // Contact uploads on add numbers S knows: a higher match rate without sharing.
    let mean = |level: f64| {
        let v: Vec<f64> = (0..12)
            .filter(|&i| uploads[i] == level)
            .map(|i| matched[i])
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(mean(0.3) > mean(0.0), "{} {}", mean(0.3), mean(0.0));
}

/// Reads a CSV written by adsim into rows of its text cells.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn a_study_at_several_seeds_reports_each_index_at_each_seed_and_compares_three_methods() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = plan(
        d,
        "seeded",
        "design = \"morris\"\ntrajectories = 3\nbootstrap = 20\nseeds = [11, 12]\n\
         [[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n\
         [[factor]]\nkey = \"countries.also_on_s\"\nlow = 0.8\nhigh = 1.1\n\
         [[factor]]\nkey = \"known_numbers.contact_uploads\"\nlevels = [0.0, 0.3]\n\
         [[factor]]\nkey = \"targeting.m_evidence\"\nchoices = [\"none\", \"business_messaging\"]\n\
         [[output]]\nmetric = \"ca_match_rate\"\nrate = 0.0\n\
         [[output]]\nmetric = \"people_mislinked\"\nrate = 0.0\n\
         [then]\ndesign = \"sobol\"\nfactors = 2\nsamples = 16\nlhs_samples = 12\n",
    );
    adsim_ok(d, &["study", &file, "--out", "s", "--quiet"]);
    // Each seed is a complete three-stage study whose plan names its seed.
    for seed in [11, 12] {
        let one = d.join(format!("s/seed-{seed}"));
        for stage in ["1-screening", "2-sobol", "3-lhs"] {
            assert!(one.join(stage).join("indices.csv").is_file(), "{stage}");
        }
        let p = std::fs::read_to_string(one.join("plan.toml")).unwrap();
        assert!(p.contains(&format!("seed = {seed}")), "{p}");
        assert!(!p.contains("seeds"), "{p}");
        let report = std::fs::read_to_string(one.join("report.md")).unwrap();
        assert!(report.contains("Do the methods agree?"), "{report}");
        assert!(report.contains("LHS rank of 4"), "{report}");
        assert!(
            report.contains("All three put") || report.contains("They differ on the strongest"),
            "{report}"
        );
    }
    // seeds.csv holds each seed's value of every index, as its folder wrote it, and their mean
    // and range.
    let (header, rows) = csv_rows(&d.join("s/seeds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (stage, output, factor, measure) =
        (col("stage"), col("output"), col("factor"), col("measure"));
    let (a, b, mean, range) = (col("seed_11"), col("seed_12"), col("mean"), col("range"));
    let num = |s: &str| s.parse::<f64>().ok();
    let mut differ = 0;
    for (seed, c) in [(11, a), (12, b)] {
        let (h, own) = csv_rows(&d.join(format!("s/seed-{seed}/3-lhs/indices.csv")));
        let v = h.iter().position(|x| x == "value").unwrap();
        for r in own {
            let found = rows
                .iter()
                .find(|x| {
                    x[stage] == "3-lhs"
                        && x[output] == r[0]
                        && x[factor] == r[1]
                        && x[measure] == r[2]
                })
                .unwrap_or_else(|| panic!("{r:?} missing from seeds.csv"));
            match (num(&found[c]), num(&r[v])) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "{r:?}"),
                (x, y) => assert_eq!(x.is_none(), y.is_none(), "{r:?}"),
            }
        }
    }
    for r in &rows {
        if let (Some(x), Some(y)) = (num(&r[a]), num(&r[b])) {
            assert!(
                (num(&r[mean]).unwrap() - (x + y) / 2.0).abs() < 1e-6,
                "{r:?}"
            );
            assert!(
                (num(&r[range]).unwrap() - (x - y).abs()).abs() < 1e-6,
                "{r:?}"
            );
            differ += usize::from((x - y).abs() > 1e-9);
        }
        // Within a seed the dummy's Sobol indices are exactly 0 (common random numbers).
        if r[stage] == "2-sobol" && r[factor] == "dummy" && r[measure] == "ST" {
            assert_eq!(num(&r[mean]), Some(0.0), "{r:?}");
        }
    }
    // Another seed is other noise: some index moves.
    assert!(differ > 0);
    let report = std::fs::read_to_string(d.join("s/report.md")).unwrap();
    assert!(
        report.contains("at 2 seeds") && report.contains("seed 12"),
        "{report}"
    );
    // Killed after its seeds finished, it resumes: the seeds' folders are kept, the same files.
    let before = std::fs::read(d.join("s/seeds.csv")).unwrap();
    std::fs::remove_file(d.join("s/seeds.csv")).unwrap();
    std::fs::remove_file(d.join("s/report.md")).unwrap();
    let said = adsim_ok(d, &["study", "s/plan.toml", "--out", "s"]);
    assert!(said.contains("resumed"), "{said}");
    assert_eq!(before, std::fs::read(d.join("s/seeds.csv")).unwrap());
}

#[test]
fn a_plans_seed_replaces_the_scenarios_and_seeds_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grid = "design = \"grid\"\n[[factor]]\nkey = \"audiences.fault_rate\"\nlevels = [0.1]\n\
                [[output]]\nmetric = \"people_mislinked\"\nrate = 0.0\n";
    let seeded = plan(d, "seeded", &format!("seed = 77\n{grid}"));
    adsim_ok(d, &["study", &seeded, "--out", "a", "--quiet"]);
    // The same study on a scenario whose own seed is 77.
    let scenario = adsim_ok(d, &["scenarios", "show", "whatsapp-2016"]);
    let scenario = scenario.replace("seed = 2016", "seed = 77");
    assert!(scenario.contains("seed = 77"));
    std::fs::write(d.join("s77.toml"), scenario).unwrap();
    let text =
        format!("name = \"own\"\nscenario = \"s77.toml\"\nusers = 3000\nreplications = 1\n{grid}");
    std::fs::write(d.join("own.toml"), text).unwrap();
    adsim_ok(d, &["study", "own.toml", "--out", "b", "--quiet"]);
    let (_, a) = csv_rows(&d.join("a/evaluations.csv"));
    let (_, b) = csv_rows(&d.join("b/evaluations.csv"));
    assert_eq!(a, b);
    let plain = plan(d, "plain", grid);
    adsim_ok(d, &["study", &plain, "--out", "c", "--quiet"]);
    let (_, c) = csv_rows(&d.join("c/evaluations.csv"));
    assert_ne!(a, c, "another seed, other draws");
    for (rest, key) in [
        ("seeds = [5]\n", "seeds"),
        ("seeds = [5, 5]\n", "seeds"),
        ("seed = 3\nseeds = [5, 6]\n", "seeds"),
    ] {
        let bad = plan(d, "bad", &format!("{rest}{grid}"));
        let err = stderr(&adsim(d, &["study", &bad, "--out", "x", "--quiet"]));
        assert!(err.contains(key), "{err}");
    }
    let bad = plan(
        d,
        "bad",
        "design = \"morris\"\ntrajectories = 2\n[[factor]]\nkey = \"audiences.fault_rate\"\nlow = 0.05\nhigh = 0.3\n\
         [then]\ndesign = \"sobol\"\nfactors = 1\nsamples = 16\nlhs_samples = 3\n",
    );
    let err = stderr(&adsim(d, &["study", &bad, "--out", "x", "--quiet"]));
    assert!(err.contains("then.lhs_samples"), "{err}");
    let seeded = plan(d, "two", &format!("seeds = [1, 2]\n{grid}"));
    let err = stderr(&adsim(
        d,
        &["study", &seeded, "--shard", "0/2", "--out", "x", "--quiet"],
    ));
    assert!(err.contains("--shard") && err.contains("seeds"), "{err}");
    assert!(!d.join("x").exists());
}
