//! The fuzzer's cases: scenario files made by walking the parameter registry (every key: wrong
//! types, both sides of each bound, the legal extremes) and by mutating the built-in scenarios
//! (values, deletions, unknown keys, damaged text). A case is a pure function of (seed, index),
//! so a failing case is reproduced by its number.

use adsim::registry::{Parameter, parameters};
use adsim::scenario::{BUILTINS, Scenario};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use toml::Value;

/// One scenario file to try.
#[derive(Clone, Debug)]
pub struct Case {
    /// How it was made, for the report (`walk: population.users = 0`).
    pub origin: String,
    /// The file's text.
    pub text: String,
    /// The registry paths it sets.
    pub keys: Vec<String>,
}

/// Country and segment used where a key names a row.
const CODE: &str = "IN";
const SEGMENT: &str = "Pets";

/// The scenario key a registry parameter is set through, if a scenario can set it.
pub fn scenario_key(p: &Parameter) -> Option<String> {
    match (&p.override_path, p.is_data_column()) {
        (Some(o), true) => Some(o.replace("<CODE>", CODE).replace("<NAME>", SEGMENT)),
        (None, false) => Some(p.path.clone()),
        _ => None,
    }
}

/// The registry paths a scenario file can reach: what coverage is counted against.
pub fn reachable_keys() -> Vec<String> {
    parameters()
        .iter()
        .filter(|p| scenario_key(p).is_some())
        .map(|p| p.path.clone())
        .collect()
}

/// Splits a dotted key into parts, keeping quoted parts (`"Pets"`) whole.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    for ch in key.chars() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            _ => part.push(ch),
        }
    }
    parts.push(part);
    parts
}

/// Sets `key` in `root` (creating tables on the way; `name[]` means every element of the
/// array `name`, and does nothing when the array is absent or empty). `None` removes the key.
pub fn set(root: &mut Value, key: &str, value: Option<Value>) -> bool {
    let parts = split_key(key);
    set_parts(root, &parts, value)
}

fn set_parts(at: &mut Value, parts: &[String], value: Option<Value>) -> bool {
    let Some(table) = at.as_table_mut() else {
        return false;
    };
    let (head, rest) = (&parts[0], &parts[1..]);
    if let Some(name) = head.strip_suffix("[]") {
        let Some(Value::Array(items)) = table.get_mut(name) else {
            return false;
        };
        let mut any = false;
        for item in items.iter_mut() {
            any |= set_parts(item, rest, value.clone());
        }
        return any;
    }
    if rest.is_empty() {
        match value {
            Some(v) => {
                table.insert(head.clone(), v);
            }
            None => {
                table.remove(head);
            }
        }
        return true;
    }
    let next = table
        .entry(head.clone())
        .or_insert_with(|| Value::Table(toml::Table::new()));
    set_parts(next, rest, value)
}

/// The built-in scenarios as TOML values, defaults filled in.
pub fn bases() -> &'static [(String, Value)] {
    static BASES: std::sync::OnceLock<Vec<(String, Value)>> = std::sync::OnceLock::new();
    BASES.get_or_init(|| {
        BUILTINS
            .iter()
            .filter_map(|(name, _)| {
                let (s, _) = Scenario::builtin(name).ok()?;
                Some((name.to_string(), toml::from_str(&s.to_toml()).ok()?))
            })
            .collect()
    })
}

fn text(root: &Value) -> String {
    toml::to_string(root).unwrap_or_default()
}

/// Values of the wrong type for a key of type `kind`.
fn wrong_types(kind: &str) -> Vec<Value> {
    let mut v = vec![
        Value::String("x".into()),
        Value::Boolean(true),
        Value::Array(vec![Value::Integer(1)]),
        Value::Table(toml::Table::new()),
    ];
    if matches!(kind, "string" | "enum" | "path") {
        v[0] = Value::Integer(5);
    }
    if kind.starts_with("list") {
        v[2] = Value::Float(0.5);
    }
    v
}

/// A number of the key's type.
fn number(p: &Parameter, x: f64) -> Value {
    if p.kind == "integer" {
        Value::Integer(x.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
    } else {
        Value::Float(x)
    }
}

/// Values on both sides of each bound, the bounds, the middle, and the non-finite floats.
fn numeric_probes(p: &Parameter) -> Vec<Value> {
    let [lo, hi] = p.legal.unwrap_or([-1e308, 1e308]);
    let integer = p.kind == "integer";
    let step = |x: f64| {
        if integer {
            1.0
        } else {
            (x.abs() * 1e-6).max(1e-9)
        }
    };
    let mut xs = vec![];
    if lo > -1e300 {
        xs.extend([lo, lo - step(lo), lo + step(lo)]);
    }
    if hi < 1e300 {
        xs.extend([hi, hi + step(hi), hi - step(hi)]);
    }
    if lo > -1e300 && hi < 1e300 {
        xs.push((lo + hi) / 2.0);
    }
    xs.extend([-1.0, 0.0, 1.0]);
    let mut values: Vec<Value> = xs.into_iter().map(|x| number(p, x)).collect();
    if integer {
        values.push(Value::Integer(i64::MAX));
        values.push(Value::Integer(i64::MIN));
        values.push(Value::Float(1.5));
    } else {
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308].map(Value::Float));
    }
    values
}

/// Probe values for one parameter.
fn probes(p: &Parameter) -> Vec<Value> {
    let mut values = wrong_types(&p.kind);
    match p.kind.as_str() {
        "integer" | "float" => values.extend(numeric_probes(p)),
        "enum" => {
            for v in p.values.iter().flatten() {
                values.push(Value::String(v.clone()));
            }
            values.push(Value::String("bogus".into()));
            values.push(Value::String(String::new()));
        }
        "list<float>" => {
            let [lo, hi] = p.legal.unwrap_or([0.0, 1.0]);
            let edge = |x: f64| Value::Array(vec![Value::Float(x)]);
            values.extend([
                Value::Array(vec![]),
                edge(lo.max(-1e300)),
                edge(hi.min(1e300)),
                edge(f64::NAN),
                edge(if hi < 1e300 { hi + 1.0 } else { f64::INFINITY }),
                edge(if lo > -1e300 {
                    lo - 1.0
                } else {
                    f64::NEG_INFINITY
                }),
                Value::Array(vec![Value::Float(0.5); 1002]),
                Value::Array(vec![Value::Float(0.2), Value::Float(0.1)]),
                Value::Array(vec![Value::Float(0.3), Value::Float(0.3)]),
            ]);
        }
        "list<string>" => values.extend([
            Value::Array(vec![]),
            Value::Array(vec![Value::String(CODE.into()), Value::String(CODE.into())]),
            Value::Array(vec![Value::String("ZZ".into())]),
            Value::Array(vec![Value::String(String::new())]),
        ]),
        "string" => values.extend(
            [
                "",
                "/",
                "..",
                "../../escape",
                "/abs",
                "a/b",
                "\u{0}",
                &"n".repeat(300),
            ]
            .map(|s| Value::String(s.into())),
        ),
        "path" => values.extend(
            [
                "",
                "/nonexistent/file.toml",
                ".",
                "/dev/null",
                "/proc/self/status",
            ]
            .map(|s| Value::String(s.into())),
        ),
        _ => {}
    }
    values
}

/// The base a key is set in: the first built-in that has the array the key descends into
/// (`policy.arms[].regional[]` exists only in `eu-pause-2016`).
fn base_for<'a>(bases: &'a [(String, Value)], key: &str) -> &'a (String, Value) {
    let array = key.rfind("[]").map(|i| &key[..i]);
    bases
        .iter()
        .find(|(_, root)| {
            array.is_none_or(|a| {
                let mut probe = root.clone();
                set(
                    &mut probe,
                    &format!("{a}[].__probe"),
                    Some(Value::Boolean(true)),
                )
            })
        })
        .unwrap_or(&bases[0])
}

/// Edits that make the legal extremes of SPEC §13: each is a list of (key, value) on the
/// default scenario.
fn extremes() -> Vec<(&'static str, Vec<(String, Value)>)> {
    let f = Value::Float;
    let i = Value::Integer;
    let kv = |k: &str, v: Value| (k.to_string(), v);
    let segments: Vec<String> = Scenario::default()
        .resolve("fuzz", std::path::Path::new("."))
        .map(|r| {
            r.data
                .segments
                .segment
                .iter()
                .map(|s| s.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let every_segment = |field: &str, v: f64| {
        segments
            .iter()
            .map(|s| kv(&format!("data.segment_overrides.\"{s}\".{field}"), f(v)))
            .collect::<Vec<_>>()
    };
    let detectors = |v: f64| {
        ["on_platform_recall", "on_platform_fpr", "m_recall", "m_fpr"]
            .iter()
            .map(|k| kv(&format!("targeting.{k}"), f(v)))
            .collect::<Vec<_>>()
    };
    vec![
        ("1 user", vec![kv("population.users", i(1))]),
        ("2 users", vec![kv("population.users", i(2))]),
        (
            "1 level",
            vec![kv("policy.rates", Value::Array(vec![f(0.0)]))],
        ),
        (
            "rate 1 only",
            vec![kv("policy.rates", Value::Array(vec![f(1.0)]))],
        ),
        (
            "10 users x 1000 replications",
            vec![
                kv("population.users", i(10)),
                kv("population.replications", i(1000)),
            ],
        ),
        ("chunk size 1", vec![kv("engine.chunk_size", i(1))]),
        ("every prevalence 0", every_segment("prevalence", 0.0)),
        ("every prevalence 1", every_segment("prevalence", 1.0)),
        ("every detector 0", detectors(0.0)),
        ("every detector 1", detectors(1.0)),
        (
            "every CTR 0",
            ["ctr_relevant", "ctr_irrelevant", "ctr_untargeted"]
                .iter()
                .map(|k| kv(&format!("targeting.{k}"), f(0.0)))
                .collect(),
        ),
        (
            "window 365",
            vec![
                kv("policy.window_days", i(365)),
                // The last Settings day: 29 days of acceptance, then the window; a horizon past
                // 2016 is priced at Q2 2016 (the calendar ends on 31 December 2016).
                kv("policy.horizon_days", i(394)),
                kv("revenue.anchor", Value::String("q2_2016".into())),
            ],
        ),
        (
            "horizon 3650",
            vec![
                kv("policy.horizon_days", i(3650)),
                kv("revenue.anchor", Value::String("q2_2016".into())),
            ],
        ),
        ("horizon 129", vec![kv("policy.horizon_days", i(129))]),
        (
            "heterogeneity 10",
            vec![kv("opt_out.heterogeneity", f(10.0))],
        ),
        ("heterogeneity 0", vec![kv("opt_out.heterogeneity", f(0.0))]),
        ("nobody reads", vec![kv("policy.notice_read_rate", f(0.0))]),
        (
            "everybody reads",
            vec![kv("policy.notice_read_rate", f(1.0))],
        ),
        (
            "no faults, strict",
            vec![
                kv("audiences.fault_rate", f(0.0)),
                kv("audiences.normalization", Value::String("strict".into())),
            ],
        ),
        ("every fault", vec![kv("audiences.fault_rate", f(1.0))]),
        (
            "101 levels",
            vec![kv(
                "policy.rates",
                Value::Array((0..=100).map(|k| f(f64::from(k) / 100.0)).collect()),
            )],
        ),
        (
            "behavioural",
            vec![kv("policy.mode", Value::String("behavioral".into()))],
        ),
    ]
}

/// The deterministic walk: every registry key with each of its probes and a removal, then the
/// legal extremes.
pub fn walk() -> Vec<Case> {
    let bases = bases();
    let mut cases = Vec::new();
    for p in parameters() {
        let Some(key) = scenario_key(p) else { continue };
        let (name, base) = base_for(bases, &key);
        let mut values: Vec<Option<Value>> = probes(p).into_iter().map(Some).collect();
        values.push(None);
        for value in values {
            let mut root = base.clone();
            let shown = value.as_ref().map_or("(removed)".to_string(), short);
            if !set(&mut root, &key, value) {
                continue;
            }
            cases.push(Case {
                origin: format!("walk {name}: {key} = {shown}"),
                text: text(&root),
                keys: vec![p.path.clone()],
            });
        }
    }
    let default: Value =
        toml::from_str(&Scenario::default().to_toml()).unwrap_or(Value::Table(toml::Table::new()));
    for (label, edits) in extremes() {
        let mut root = default.clone();
        let mut keys = Vec::new();
        for (k, v) in edits {
            keys.push(registry_path(&k));
            set(&mut root, &k, Some(v));
        }
        keys.dedup();
        cases.push(Case {
            origin: format!("extreme: {label}"),
            text: text(&root),
            keys,
        });
    }
    cases
}

/// A value shown in a case's origin, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.floor_char_boundary(37)])
    } else {
        s
    }
}

/// The registry path of a scenario key (`data.segment_overrides."Pets".prevalence` ->
/// `segments.prevalence`).
pub fn registry_path(key: &str) -> String {
    let parts = split_key(key);
    let generic = match parts.first().map(String::as_str) {
        Some("data") if parts.len() == 4 && parts[1] == "country_overrides" => {
            format!("data.country_overrides.<CODE>.{}", parts[3])
        }
        Some("data") if parts.len() == 4 && parts[1] == "segment_overrides" => {
            format!("data.segment_overrides.\"<NAME>\".{}", parts[3])
        }
        _ => return key.to_string(),
    };
    parameters()
        .iter()
        .find(|p| p.override_path.as_deref() == Some(generic.as_str()))
        .map_or(generic, |p| p.path.clone())
}

/// Every leaf of a TOML value as a key (arrays of tables as `name[]`).
fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                let k = if k.contains('.') || k.contains(' ') {
                    format!("\"{k}\"")
                } else {
                    k.clone()
                };
                let p = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table) => {
            out.push(prefix.to_string());
            for x in a {
                leaves(&format!("{prefix}[]"), x, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// A random value: another type, a boundary-ish number, or a scaled copy of `old`.
fn random_value(rng: &mut StdRng, old: Option<&Value>) -> Value {
    let scale = match old {
        Some(Value::Integer(i)) => *i as f64,
        Some(Value::Float(x)) => *x,
        _ => 1.0,
    };
    match rng.random_range(0..12) {
        0 => Value::String(
            ["", "x", "none", "behavioral", "IN", "../x"][rng.random_range(0..6)].into(),
        ),
        1 => Value::Boolean(rng.random()),
        2 => Value::Array(vec![]),
        3 => Value::Table(toml::Table::new()),
        4 => Value::Integer(
            [0, -1, 1, 2, 255, 256, 257, 365, 366, 1001, i64::MAX][rng.random_range(0..11)],
        ),
        5 => Value::Float(
            [
                0.0,
                -0.0,
                1.0,
                -1e-9,
                1.0 + 1e-9,
                f64::NAN,
                f64::INFINITY,
                1e308,
            ][rng.random_range(0..8)],
        ),
        6 | 7 => Value::Float(scale * rng.random_range(-2.0..3.0)),
        8 | 9 => Value::Integer((scale * rng.random_range(-1.0..3.0)).round() as i64),
        10 => Value::Array(
            (0..rng.random_range(1..5))
                .map(|_| Value::Float(rng.random()))
                .collect(),
        ),
        _ => Value::Float(scale),
    }
}

fn get<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    let mut at = root;
    for part in split_key(key) {
        if part.ends_with("[]") {
            let arr = at.get(part.trim_end_matches("[]"))?.as_array()?;
            at = arr.first()?;
        } else {
            at = at.get(&part)?;
        }
    }
    Some(at)
}

/// A random mutation of a built-in scenario: one to three edits, sometimes damaged text.
pub fn mutation(seed: u64, index: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let bases = bases();
    let (name, base) = &bases[rng.random_range(0..bases.len())];
    let mut root = base.clone();
    let mut keys = Vec::new();
    let mut what = Vec::new();
    let all_keys: Vec<String> = parameters().iter().filter_map(scenario_key).collect();
    for _ in 0..rng.random_range(1..=3) {
        let mut present = Vec::new();
        leaves("", &root, &mut present);
        match rng.random_range(0..10) {
            // A registry key set to one of its probes.
            0..=3 => {
                let key = &all_keys[rng.random_range(0..all_keys.len())];
                let p = adsim::registry::find(&registry_path(key)).or_else(|| {
                    parameters()
                        .iter()
                        .find(|p| scenario_key(p).as_deref() == Some(key.as_str()))
                });
                if let Some(p) = p {
                    let values = probes(p);
                    let v = values[rng.random_range(0..values.len())].clone();
                    what.push(format!("{key} = {}", short(&v)));
                    set(&mut root, key, Some(v));
                    keys.push(p.path.clone());
                }
            }
            // A present leaf given a random value.
            4..=6 if !present.is_empty() => {
                let key = present[rng.random_range(0..present.len())].clone();
                let v = random_value(&mut rng, get(&root, &key));
                what.push(format!("{key} = {}", short(&v)));
                set(&mut root, &key, Some(v));
                keys.push(registry_path(&key));
            }
            // A present leaf removed.
            7 if !present.is_empty() => {
                let key = present[rng.random_range(0..present.len())].clone();
                what.push(format!("{key} removed"));
                set(&mut root, &key, None);
                keys.push(registry_path(&key));
            }
            // An unknown key.
            _ => {
                let tables = [
                    "",
                    "population",
                    "policy",
                    "opt_out",
                    "targeting",
                    "audiences",
                    "revenue",
                    "data",
                    "engine",
                ];
                let t = tables[rng.random_range(0..tables.len())];
                let key = if t.is_empty() {
                    "bogus_key".to_string()
                } else {
                    format!("{t}.bogus_key")
                };
                what.push(format!("{key} added"));
                set(&mut root, &key, Some(Value::Integer(1)));
            }
        }
    }
    let mut text = text(&root);
    // Damaged text in one case of eight: cut short, a stray byte, or a line repeated.
    if rng.random_range(0..8) == 0 && !text.is_empty() {
        let at = text.floor_char_boundary(rng.random_range(0..text.len()));
        match rng.random_range(0..3) {
            0 => {
                text.truncate(at);
                what.push(format!("cut at byte {at}"));
            }
            1 => {
                text.insert(at, ['"', '[', '=', '\u{7f}', '\n'][rng.random_range(0..5)]);
                what.push(format!("stray character at byte {at}"));
            }
            _ => {
                let line = text[at..].lines().next().unwrap_or("").to_string();
                text.insert_str(at, &format!("{line}\n"));
                what.push(format!("line repeated at byte {at}"));
            }
        }
    }
    keys.sort();
    keys.dedup();
    Case {
        origin: format!("mutation {name}: {}", what.join("; ")),
        text,
        keys,
    }
}

/// Case `index` of a fuzz run: the walk's cases in turn on even indices, mutations on odd
/// ones.
pub fn case(walk: &[Case], seed: u64, index: u64) -> Case {
    if index.is_multiple_of(2) && !walk.is_empty() {
        walk[(index / 2) as usize % walk.len()].clone()
    } else {
        mutation(seed, index)
    }
}
