//! The study-plan fuzzer through the binary, beside the in-process one of `study` (random
//! plans through `Plan::parse` and `Study::new`): what this one adds is the command line's
//! side, exit codes, errors on the terminal, `--dry-run` and leftovers. Plans are made from
//! six valid templates by one to three mutations (each plan key, factor field, output field
//! and `[then]` field set to wrong types, both sides of its bounds and its legal extremes,
//! or removed; factors added from every registry key; unknown keys). Every plan goes
//! through `adsim study --dry-run`, and the accepted ones small enough go through a real
//! study. A plan is accepted or refused with an error that names a file; nothing panics or
//! hangs; a refused study leaves no folder; a finished one has its files. A case is a pure
//! function of (seed, index), so a failure is reproduced by its number.

use std::path::Path;
use std::process::Output;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use toml::Value;

use crate::fuzz::runner::{Exit, Limits, run_once};

/// Valid plans at 200 users, the starting points of the mutations.
const TEMPLATES: &[&str] = &[
    r#"name = "grid"
scenario = "whatsapp-2016"
users = 200
replications = 1
design = "grid"
[[factor]]
key = "targeting.m_recall"
levels = [0.5, 0.9]
[[factor]]
key = "policy.notice_read_rate"
low = 0.2
high = 0.6
points = 2
"#,
    r#"name = "lhs"
scenario = "opt-in"
users = 200
replications = 2
design = "lhs"
samples = 10
[[factor]]
key = "targeting.m_recall"
low = 0.5
high = 0.95
[[factor]]
key = "countries.recycled_rate"
low = 0.5
high = 2.0
spread = "loguniform"
"#,
    r#"name = "morris"
scenario = "eu-pause-2016"
users = 200
replications = 1
design = "morris"
trajectories = 2
[[factor]]
key = "targeting.m_recall"
low = 0.5
high = 0.95
[[factor]]
key = "data.country_overrides.IN.recycled_rate"
low = 0.0
high = 0.1
"#,
    r#"name = "sobol"
scenario = "whatsapp-2021"
users = 200
replications = 1
design = "sobol"
samples = 16
[[factor]]
key = "targeting.m_recall"
low = 0.5
high = 0.95
[[output]]
metric = "precision_lift"
rate = 0.5
"#,
    r#"name = "staged"
scenario = "whatsapp-2016"
users = 200
replications = 1
design = "morris"
trajectories = 2
[[factor]]
key = "targeting.m_recall"
low = 0.5
high = 0.95
[[factor]]
key = "policy.notice_read_rate"
low = 0.2
high = 0.6
[then]
design = "sobol"
factors = 1
samples = 16
"#,
    r#"name = "assumptions"
scenario = "whatsapp-2016"
users = 200
replications = 1
design = "lhs"
samples = 60
assumptions = true
"#,
];

const PLAN_KEYS: &[&str] = &[
    "name",
    "description",
    "scenario",
    "users",
    "replications",
    "design",
    "samples",
    "trajectories",
    "morris_levels",
    "bootstrap",
    "design_seed",
    "assumptions",
];
const FACTOR_KEYS: &[&str] = &["key", "low", "high", "levels", "points", "spread"];
const OUTPUT_KEYS: &[&str] = &["metric", "arm", "rate"];
const THEN_KEYS: &[&str] = &["design", "factors", "samples"];

/// Values at the bounds the plan's fields have (and wrong types).
fn value(rng: &mut StdRng) -> Value {
    const INTS: &[i64] = &[
        -1,
        0,
        1,
        2,
        3,
        4,
        9,
        10,
        15,
        16,
        17,
        20,
        21,
        22,
        1000,
        1001,
        10_000,
        10_001,
        65_536,
        65_537,
        100_000,
        100_001,
        1_000_000_000,
        1_000_000_001,
        i64::MAX,
    ];
    const FLOATS: &[f64] = &[
        -1.0,
        0.0,
        1e-300,
        0.05,
        0.5,
        0.95,
        1.0,
        1.5,
        2.0,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    const TEXTS: &[&str] = &[
        "",
        "grid",
        "lhs",
        "morris",
        "sobol",
        "uniform",
        "loguniform",
        "whatsapp-2016",
        "opt-in",
        "missing.toml",
        "../escape",
        "none",
        "opt_out_window",
        "nope",
    ];
    match rng.random_range(0..7) {
        0 | 1 => Value::Integer(INTS[rng.random_range(0..INTS.len())]),
        2 | 3 => Value::Float(FLOATS[rng.random_range(0..FLOATS.len())]),
        4 => Value::String(TEXTS[rng.random_range(0..TEXTS.len())].into()),
        5 => Value::Boolean(rng.random_range(0..2) == 0),
        _ => {
            let n = rng.random_range(0..4);
            Value::Array(
                (0..n)
                    .map(|_| Value::Float(FLOATS[rng.random_range(0..FLOATS.len())]))
                    .collect(),
            )
        }
    }
}

/// A factor key: any registry parameter (by its path, and by its override path for a row),
/// or no key at all.
fn factor_key(rng: &mut StdRng) -> String {
    let params = adsim::registry::parameters();
    let p = &params[rng.random_range(0..params.len())];
    match (&p.override_path, rng.random_range(0..5)) {
        (Some(o), 0 | 1) => o.replace("<CODE>", "IN").replace("<NAME>", "\"Pets\""),
        (_, 4) => "targeting.no_such_key".into(),
        _ => p.path.clone(),
    }
}

fn metric(rng: &mut StdRng) -> Value {
    let m = adsim::metrics::METRICS;
    if rng.random_range(0..8) == 0 {
        Value::String("nope".into())
    } else {
        Value::String(m[rng.random_range(0..m.len())].0.into())
    }
}

/// A random element of the array of tables `name`, created with one empty table if absent.
fn element<'a>(plan: &'a mut toml::Table, name: &str, rng: &mut StdRng) -> &'a mut toml::Table {
    let items = plan
        .entry(name)
        .or_insert_with(|| Value::Array(vec![Value::Table(toml::Table::new())]));
    if !matches!(items, Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table)) {
        *items = Value::Array(vec![Value::Table(toml::Table::new())]);
    }
    let Value::Array(a) = items else {
        unreachable!("made an array above")
    };
    let i = rng.random_range(0..a.len());
    match &mut a[i] {
        Value::Table(t) => t,
        _ => unreachable!("every element is a table"),
    }
}

/// A legal change: a field set to a value of its type at or inside its bounds.
fn legal(plan: &mut toml::Table, rng: &mut StdRng) -> String {
    let int = Value::Integer;
    let (table, key, v): (Option<&str>, &str, Value) = match rng.random_range(0..12) {
        0 => (None, "users", int([1, 2, 1000][rng.random_range(0..3)])),
        1 => (None, "replications", int([1, 3][rng.random_range(0..2)])),
        2 => (
            None,
            "design_seed",
            int([0, i64::MAX][rng.random_range(0..2)]),
        ),
        3 => (
            None,
            "bootstrap",
            int([10, 100_000][rng.random_range(0..2)]),
        ),
        4 => (None, "description", Value::String("a plan".into())),
        5 => (
            None,
            "name",
            Value::String("x".repeat(rng.random_range(1..101))),
        ),
        6 => {
            let b = adsim::scenario::BUILTINS;
            (
                None,
                "scenario",
                Value::String(b[rng.random_range(0..b.len())].0.into()),
            )
        }
        7 => (Some("factor"), "low", Value::Float(0.0)),
        8 => (Some("factor"), "high", Value::Float(1.0)),
        9 => {
            let spread = ["uniform", "loguniform"][rng.random_range(0..2)];
            (Some("factor"), "spread", Value::String(spread.into()))
        }
        10 => (
            Some("output"),
            "rate",
            Value::Float([0.0, 1.0][rng.random_range(0..2)]),
        ),
        _ => (Some("output"), "metric", metric(rng)),
    };
    let said = format!(
        "{}{key} = {v}",
        table.map_or(String::new(), |t| format!("{t}."))
    );
    match table {
        None => {
            plan.insert(key.into(), v);
        }
        Some(t) => {
            let e = element(plan, t, rng);
            e.insert(key.into(), v);
            if t == "output" {
                // A new output needs its rate.
                e.entry("rate").or_insert(Value::Float(0.5));
            }
        }
    }
    said
}

/// One mutation of `plan`; what it did. Half are legal changes, so that accepted plans stay
/// common after several.
fn mutate(plan: &mut toml::Table, rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, keys: &[&'static str]| keys[rng.random_range(0..keys.len())];
    if rng.random_range(0..2) == 0 {
        return legal(plan, rng);
    }
    match rng.random_range(0..10) {
        0 | 1 => {
            let k = pick(rng, PLAN_KEYS);
            let v = value(rng);
            let said = format!("{k} = {v}");
            plan.insert(k.into(), v);
            said
        }
        2 => {
            let k = pick(rng, PLAN_KEYS);
            plan.remove(k);
            format!("no {k}")
        }
        3 | 4 => {
            let k = pick(rng, FACTOR_KEYS);
            let v = if k == "key" {
                Value::String(factor_key(rng))
            } else {
                value(rng)
            };
            let said = format!("factor.{k} = {v}");
            element(plan, "factor", rng).insert(k.into(), v);
            said
        }
        5 => {
            let k = pick(rng, FACTOR_KEYS);
            element(plan, "factor", rng).remove(k);
            format!("factor without {k}")
        }
        6 => {
            let key = factor_key(rng);
            let (low, high) = (value(rng), value(rng));
            let mut f = toml::Table::new();
            f.insert("key".into(), Value::String(key.clone()));
            f.insert("low".into(), low.clone());
            f.insert("high".into(), high.clone());
            if let Some(Value::Array(a)) = plan.get_mut("factor") {
                a.push(Value::Table(f));
            } else {
                plan.insert("factor".into(), Value::Array(vec![Value::Table(f)]));
            }
            format!("factor {key} from {low} to {high}")
        }
        7 => {
            let k = pick(rng, OUTPUT_KEYS);
            let v = if k == "metric" {
                metric(rng)
            } else {
                value(rng)
            };
            let said = format!("output.{k} = {v}");
            element(plan, "output", rng).insert(k.into(), v);
            said
        }
        8 => {
            let k = pick(rng, THEN_KEYS);
            let v = value(rng);
            let said = format!("then.{k} = {v}");
            let then = plan
                .entry("then")
                .or_insert_with(|| Value::Table(toml::Table::new()));
            if !then.is_table() {
                *then = Value::Table(toml::Table::new());
            }
            if let Value::Table(t) = then {
                t.insert(k.into(), v);
            }
            said
        }
        _ => {
            let v = value(rng);
            let said = format!("unknown key = {v}");
            if rng.random_range(0..2) == 0 {
                plan.insert("no_such_key".into(), v);
            } else {
                element(plan, "factor", rng).insert("no_such_key".into(), v);
            }
            said
        }
    }
}

/// Case `i` of `seed`: a template's text after one to three mutations, and what they did.
fn case(seed: u64, i: u64) -> (String, String) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
    let t = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
    let mut plan: toml::Table = toml::from_str(t).expect("templates parse");
    let mut said = vec![format!("{}:", plan["name"])];
    for _ in 0..rng.random_range(1..4) {
        said.push(mutate(&mut plan, &mut rng));
    }
    let text = toml::to_string(&plan).unwrap_or_default();
    (text, said.join(" "))
}

/// Runs adsim with `args` (paths in them absolute), killed after `seconds`; `None` if it was.
fn adsim_within(args: &[&str], seconds: f64) -> Option<Output> {
    let limits = Limits {
        binary: env!("CARGO_BIN_EXE_adsim").into(),
        max_users: 0,
        memory_slack: 0,
        threads: 1,
    };
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match run_once(&args, &limits, seconds, u64::MAX) {
        Exit::Done(out) => Some(out),
        Exit::Timeout | Exit::Memory(_) => None,
    }
}

/// Why `out` is not a clean refusal: exit 1, one short `error: ` naming a TOML file (the plan,
/// or the scenario it names).
fn unclear(out: &Output) -> Option<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let clear = out.status.code() == Some(1)
        && err.starts_with("error: ")
        && err.len() < 4000
        && err.contains(".toml")
        && !err.contains("panicked");
    (!clear).then(|| format!("{}: {err}", out.status))
}

/// The number after `label` at the start of a dry run's line.
fn count(said: &str, label: &str) -> Option<u64> {
    let line = said.lines().find(|l| l.starts_with(label))?;
    line[label.len()..].split_whitespace().next()?.parse().ok()
}

/// Entries beside `dir/out` left by an unfinished write (a progress log is not: it is how a
/// study resumes).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out.") && n != ".out.progress")
        .collect()
}

#[test]
fn fuzzed_plans_are_accepted_or_refused_cleanly_and_the_small_ones_run() {
    // PLAN_FUZZ="CASES SEED RUNS" runs it larger (the CI size below takes about 20 s).
    let size: Vec<u64> = std::env::var("PLAN_FUZZ")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (cases, seed, max_runs) = match size[..] {
        [c, s, r] => (c, s, r),
        _ => (400, 2026, 12),
    };
    let mut bad = Vec::new();
    let (mut accepted, mut runs, mut finished) = (0, 0, 0);
    for i in 0..cases {
        let (text, origin) = case(seed, i);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (plan, out) = (d.join("plan.toml"), d.join("out"));
        let (plan, out) = (plan.to_str().unwrap(), out.to_str().unwrap());
        std::fs::write(plan, &text).unwrap();
        let Some(dry) = adsim_within(&["study", plan, "--dry-run"], 60.0) else {
            bad.push(format!("case {i} ({origin}): the dry run hung"));
            continue;
        };
        if !dry.status.success() {
            if let Some(why) = unclear(&dry) {
                bad.push(format!("case {i} ({origin}): dry run {why}"));
            }
            continue;
        }
        accepted += 1;
        let said = String::from_utf8_lossy(&dry.stdout);
        let users = said
            .lines()
            .find(|l| l.starts_with("scenario"))
            .and_then(|l| {
                l.split(" at ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(u64::MAX);
        let small = users <= 1000
            && count(&said, "evaluations").is_some_and(|e| e <= 40)
            && !text.contains("population.users")
            && !said.contains("\nthen");
        if !small || runs >= max_runs {
            continue;
        }
        runs += 1;
        let Some(run) = adsim_within(&["study", plan, "--out", out, "--quiet"], 300.0) else {
            bad.push(format!("case {i} ({origin}): the study hung"));
            continue;
        };
        let left = leftovers(d);
        if !left.is_empty() {
            bad.push(format!("case {i} ({origin}): left {left:?}"));
        } else if run.status.success() {
            finished += 1;
            for f in ["plan.toml", "evaluations.csv", "summary.csv", "report.md"] {
                if !d.join("out").join(f).is_file() {
                    bad.push(format!("case {i} ({origin}): finished without {f}"));
                }
            }
        } else if let Some(why) = unclear(&run) {
            bad.push(format!("case {i} ({origin}): study {why}"));
        } else if d.join("out").exists() {
            bad.push(format!("case {i} ({origin}): refused but wrote the folder"));
        }
    }
    eprintln!(
        "plan fuzz: {cases} plans from seed {seed}, {accepted} accepted, {runs} run, {finished} finished"
    );
    assert!(bad.is_empty(), "{} defects:\n{}", bad.len(), bad.join("\n"));
    // The mutations must leave both kinds of plan, and some small enough to run.
    assert!(
        accepted >= cases / 10 && accepted <= cases * 9 / 10,
        "{accepted} of {cases} accepted"
    );
    assert!(finished >= 4, "{finished} of {runs} runs finished");
}

#[test]
fn the_fuzzers_checks_catch_an_unclear_refusal_and_a_leftover() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A refusal that names no file, or comes with another exit code, is not clear.
    let fake = |code: i32, err: &str| Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(code << 8),
        stdout: vec![],
        stderr: err.as_bytes().to_vec(),
    };
    assert!(
        unclear(&fake(
            1,
            "error: plan.toml: key `users` = 0: expected 1 to 10^9"
        ))
        .is_none()
    );
    assert!(unclear(&fake(1, "error: something went wrong")).is_some());
    assert!(unclear(&fake(101, "error: plan.toml: thread 'main' panicked")).is_some());
    assert!(unclear(&fake(2, "error: plan.toml: usage")).is_some());
    std::fs::create_dir(d.join(".out.tmp")).unwrap();
    std::fs::write(d.join(".out.progress"), "").unwrap();
    assert_eq!(leftovers(d), vec![".out.tmp".to_string()]);
    // Cases are reproducible by number, and differ from one another.
    assert_eq!(case(7, 3), case(7, 3));
    assert_ne!(case(7, 3).0, case(7, 4).0);
}
