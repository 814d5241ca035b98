//! The parameter registry (`data/parameters.toml`) agrees with the code: every scenario key is
//! registered with its true default, and validation refuses exactly the values outside each
//! registered legal range, on both sides of every bound.

use adsim::registry::{Parameter, parameters};
use adsim::scenario::Scenario;

use crate::common::toml_leaves;

fn default_toml() -> toml::Value {
    toml::from_str(&Scenario::default().to_toml()).expect("the default scenario is TOML")
}

#[test]
fn every_scenario_key_is_registered_with_its_default() {
    let mut keys = Vec::new();
    toml_leaves("", &default_toml(), &mut keys);
    assert!(keys.len() > 30, "only {} keys", keys.len());
    for (path, value) in &keys {
        let p = adsim::registry::find(path).unwrap_or_else(|| {
            panic!("{path} is a scenario key missing from data/parameters.toml")
        });
        // Defaults of keys outside arrays are single values; compare them.
        let tables = value
            .as_array()
            .is_some_and(|a| a.iter().any(toml::Value::is_table));
        if !path.contains("[]") && !value.is_table() && !tables {
            let registered = p
                .default
                .as_ref()
                .unwrap_or_else(|| panic!("{path}: no default registered"));
            let same = match (registered, value) {
                (toml::Value::Integer(a), toml::Value::Float(b))
                | (toml::Value::Float(b), toml::Value::Integer(a)) => (*a as f64 - b).abs() < 1e-12,
                (a, b) => a == b,
            };
            assert!(
                same,
                "{path}: registered default {registered}, the code's {value}"
            );
        }
    }
    // And every registered scenario key exists in the default or a built-in scenario
    // (optional keys say so in default_note).
    for (name, _) in adsim::scenario::BUILTINS {
        let (s, _) = Scenario::builtin(name).expect("built-in");
        let value: toml::Value = toml::from_str(&s.to_toml()).expect("TOML");
        toml_leaves("", &value, &mut keys);
    }
    for p in parameters().iter().filter(|p| !p.is_data_column()) {
        let known = keys.iter().any(|(k, _)| *k == p.path)
            || p.default_note.is_some()
            || p.path.starts_with("data.")
            || p.path == "engine.chunk_size";
        assert!(
            known,
            "{} is registered but is not a key of the default scenario",
            p.path
        );
    }
}

/// Sets `path` (dotted, no arrays) in `root` to `v`.
fn set(root: &mut toml::Value, path: &str, v: toml::Value) {
    let mut at = root;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = at.as_table_mut().expect("a table");
        at = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    if let Some(t) = at.as_table_mut() {
        t.insert(parts[parts.len() - 1].to_string(), v);
    }
}

/// Whether the default scenario with `path = v` resolves; the error text if not.
fn accepts(path: &str, v: toml::Value) -> Result<(), String> {
    let mut root = default_toml();
    set(&mut root, path, v);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("s.toml");
    std::fs::write(&file, toml::to_string(&root).expect("serializes")).expect("writes");
    Scenario::from_file(&file)
        .and_then(|s| s.resolve(&file.display().to_string(), dir.path()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The values on both sides of each bound of `p`: (value, accepted?).
fn probes(p: &Parameter) -> Vec<(f64, bool)> {
    let Some([lo, hi]) = p.legal else {
        return vec![];
    };
    let integer = p.kind == "integer";
    let step = |x: f64| {
        if integer {
            1.0
        } else {
            (x.abs() * 1e-6).max(1e-9)
        }
    };
    let mut out = Vec::new();
    if lo > -1e300 {
        out.push((lo, !p.low_exclusive));
        if !(integer && lo < 1.0 && p.path.starts_with("population.")) {
            out.push((lo - step(lo), false));
        }
        if p.low_exclusive {
            out.push((lo + step(lo), true));
        }
    }
    if hi < 1e300 {
        out.push((hi, true));
        out.push((hi + step(hi), false));
    }
    out
}

#[test]
fn validation_refuses_exactly_the_values_outside_each_legal_range() {
    let mut checked = 0;
    for p in parameters() {
        let numeric = matches!(p.kind.as_str(), "integer" | "float");
        let key = match (&p.override_path, p.is_data_column()) {
            (Some(o), true) => o.replace("<CODE>", "IN").replace("\"<NAME>\"", "Pets"),
            (None, false) => p.path.clone(),
            _ => continue,
        };
        // Keys inside arrays, sums over rows (a single row cannot move alone) and bounds set
        // by another key are checked by their own tests.
        let sums = p.legal_note.as_deref().is_some_and(|n| n.contains("sum"));
        if !numeric
            || key.contains("[]")
            || sums
            || p.bound_from.is_some()
            || p.validated == Some(false)
        {
            continue;
        }
        for (x, ok) in probes(p) {
            // A negative integer for an unsigned key is a type error: a refusal too.
            let v = if p.kind == "integer" {
                toml::Value::Integer(x as i64)
            } else {
                toml::Value::Float(x)
            };
            let result = accepts(&key, v.clone());
            match (ok, &result) {
                (true, Err(e)) => {
                    panic!("{key} = {v}: inside the registered legal range but refused: {e}")
                }
                (false, Ok(())) => {
                    panic!("{key} = {v}: outside the registered legal range but accepted")
                }
                (false, Err(e)) => {
                    let leaf = key.rsplit('.').next().unwrap_or(&key);
                    assert!(
                        e.contains(leaf),
                        "{key} = {v}: the error does not name the key: {e}"
                    );
                }
                _ => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} probes ran");
}

#[test]
fn the_readme_key_table_cites_every_registered_scenario_key() {
    let readme = include_str!("../../README.md");
    for p in parameters().iter().filter(|p| !p.is_data_column()) {
        let leaf = p
            .path
            .rsplit('.')
            .next()
            .unwrap_or(&p.path)
            .trim_end_matches("[]");
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with("| `") && l.contains(leaf)),
            "README's key table lacks {}",
            p.path
        );
    }
}

#[test]
fn the_model_document_sources_every_assumption() {
    let model = include_str!("../../docs/model.md");
    let assumptions = model
        .split("## 14. Assumptions and their sources")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/model.md has its section 14");
    for p in parameters().iter().filter(|p| p.is_assumption()) {
        let leaf = p.path.rsplit('.').next().unwrap_or(&p.path);
        assert!(
            assumptions.contains(leaf) || assumptions.contains(&leaf.replace('_', " ")),
            "docs/model.md section 14 does not give the source of the assumption {}",
            p.path
        );
    }
}
