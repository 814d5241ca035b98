//! A study's factors against the parameter registry and the base scenario: what a factor's key
//! names, the checks a factor must pass, the assumptions a plan can add, and what each factor
//! sets in the scenario's TOML.

use std::path::Path;

use super::{Design, Factor, Plan, Spread};
use crate::ensure;
use crate::error::{Error, Result};
use crate::registry;
use crate::scenario::{Resolved, Scenario};

/// What a factor's key sets in the scenario.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// A scalar key of the scenario (`targeting.m_recall`); integer keys are rounded.
    Scalar { path: Vec<String>, integer: bool },
    /// A data column (`countries.recycled_rate`) as a common multiplier of every row's value
    /// (SALib's groups): each row's override path, its value in the base scenario, and the
    /// field's legal range, at which a multiplied value is clamped.
    Column {
        rows: Vec<(Vec<String>, f64)>,
        legal: (f64, f64),
    },
    /// One row's field through its override path
    /// (`data.country_overrides.IN.recycled_rate`), with its value in the base scenario.
    Row { path: Vec<String>, base: f64 },
    /// A key that takes one of several words: the factor's value is the word's index.
    Choice {
        path: Vec<String>,
        words: Vec<String>,
    },
}

/// How a factor's key names what it varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Scalar,
    Column,
    Row,
}

/// The parts of a dotted key; a part may be double-quoted to hold dots or spaces
/// (`data.segment_overrides."Food & Drink".prevalence`).
fn key_parts(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

/// The registry parameter a factor key names, and how: a scalar key, a data column (a common
/// multiplier), or one row's override path.
pub(super) fn lookup(key: &str) -> Option<(&'static registry::Parameter, KeyKind)> {
    if let Some(p) = registry::find(key) {
        let kind = if p.is_data_column() {
            KeyKind::Column
        } else {
            KeyKind::Scalar
        };
        return Some((p, kind));
    }
    let parts = key_parts(key);
    registry::parameters().iter().find_map(|p| {
        let pattern = key_parts(p.override_path.as_deref()?);
        let matches = pattern.len() == parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(a, b)| (a.starts_with('<') && a.ends_with('>') && !b.is_empty()) || a == b);
        matches.then_some((p, KeyKind::Row))
    })
}

/// Where a factor's range comes from: the registry's plausible range (`reasoned` or
/// `generic`, as the registry labels it) or the plan's own (`plan`).
pub(super) fn range_kind(f: &Factor) -> &'static str {
    let Some((p, KeyKind::Scalar | KeyKind::Column)) = lookup(&f.key) else {
        return "plan";
    };
    match p.plausible {
        Some([lo, hi]) if f.low == Some(lo) && f.high == Some(hi) && f.levels.is_none() => {
            match p.plausible_kind.as_deref() {
                Some("generic") => "generic",
                _ => "reasoned",
            }
        }
        _ => "plan",
    }
}

/// Whether a data column can be a common-multiplier factor: a float field with an override
/// path whose plausible range is a multiplier. A country's share is not: shares are
/// normalised, so a common multiplier changes nothing (vary one country's share instead).
fn column_factor(p: &registry::Parameter) -> bool {
    p.kind == "float"
        && p.override_path.is_some()
        && p.plausible_mode.as_deref() == Some("multiplier")
        && p.path != "countries.m_share"
}

/// Reads the base scenario of a plan from `dir` (the plan's folder); a file's path becomes
/// absolute in the plan, so the plan written to the study folder finds it too.
pub(super) fn base_scenario(plan: &mut Plan, dir: &Path, file: &str) -> Result<(Scenario, String)> {
    if plan.scenario.ends_with(".toml") {
        let path = dir.join(&plan.scenario);
        let scenario = Scenario::from_file(&path)?;
        let full = std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
        plan.scenario = full.display().to_string();
        Ok((scenario, plan.scenario.clone()))
    } else {
        Scenario::builtin(&plan.scenario).map_err(|e| {
            Error::invalid(
                file,
                "scenario",
                format!("{:?}", plan.scenario),
                format!(
                    "a built-in scenario (adsim scenarios) or a scenario file ending in .toml ({e})"
                ),
            )
        })
    }
}

/// The scalar assumptions of the registry that `base` reads, as factors at their plausible
/// ranges. The six fault shares are left out (they must sum to 1: varying one alone is
/// refused), and so are the behavioural keys of a rate-mode scenario and the business-messaging
/// keys of a scenario whose M data carries no interest evidence.
pub fn assumption_factors(base: &Scenario) -> Vec<Factor> {
    let behavioral = base.policy.mode == crate::policy::Mode::Behavioral;
    let messaging = base.targeting.m_evidence == crate::targeting::MEvidence::BusinessMessaging;
    let used_when =
        |p: &registry::Parameter, what: &str| p.used_when.as_deref().unwrap_or("").contains(what);
    registry::parameters()
        .iter()
        .filter(|p| p.is_assumption() && (!p.is_data_column() || column_factor(p)))
        .filter(|p| !p.path.starts_with("audiences.fault_shares."))
        .filter(|p| behavioral || !used_when(p, "behavioral"))
        .filter(|p| messaging || !used_when(p, "business_messaging"))
        .filter_map(|p| {
            let [low, high] = p.plausible?;
            Some(Factor {
                key: p.path.clone(),
                low: Some(low),
                high: Some(high),
                levels: None,
                points: None,
                spread: Some(match p.distribution.as_deref() {
                    Some("loguniform") => Spread::Loguniform,
                    _ => Spread::Uniform,
                }),
                choices: None,
            })
        })
        .collect()
}

/// Checks one factor against the registry and the design; `file` names the plan.
pub(super) fn check_factor(f: &Factor, design: Design, file: &str, i: usize) -> Result<()> {
    let key = format!("factor[{i}] ({})", f.key);
    let (p, kind) = lookup(&f.key).ok_or_else(|| {
        Error::invalid(
            file,
            format!("{key}.key"),
            &f.key,
            "a scalar scenario key of the parameter registry (`adsim parameters`), a data column \
             (`countries.recycled_rate`: a common multiplier of every row), or one row's override \
             path (`data.country_overrides.IN.recycled_rate`)",
        )
    })?;
    if let Some(choices) = &f.choices {
        ensure!(
            p.kind == "enum" && kind == KeyKind::Scalar,
            file,
            format!("{key}.choices"),
            format!("{choices:?}"),
            format!(
                "choices only for a key that takes one of several words (this one is {})",
                p.kind
            )
        );
        let words = p.values.clone().unwrap_or_default();
        ensure!(
            (2..=100).contains(&choices.len()),
            file,
            format!("{key}.choices"),
            format!("{choices:?}"),
            "2 to 100 words"
        );
        for (i, c) in choices.iter().enumerate() {
            ensure!(
                words.contains(c) && !choices[..i].contains(c),
                file,
                format!("{key}.choices"),
                c,
                format!("distinct words the key takes: {}", words.join(", "))
            );
        }
        ensure!(
            f.low.is_none() && f.high.is_none() && f.levels.is_none() && f.points.is_none(),
            file,
            format!("{key}.choices"),
            format!("{choices:?}"),
            "choices alone (no low, high, levels or points)"
        );
        return Ok(());
    }
    ensure!(
        matches!(p.kind.as_str(), "float" | "integer"),
        file,
        format!("{key}.key"),
        &f.key,
        format!(
            "a numeric key, or a key of words with `choices` (this one is {})",
            p.kind
        )
    );
    ensure!(
        kind != KeyKind::Column || column_factor(p),
        file,
        format!("{key}.key"),
        &f.key,
        if p.path == "countries.m_share" {
            "not a common multiplier of every country's share (shares are normalised: it changes nothing)".to_string()
        } else {
            "a data column with a multiplier range in the registry (`adsim parameters --assumptions`)".to_string()
        }
    );
    ensure!(
        !(kind == KeyKind::Row && p.path == "countries.m_share"),
        file,
        format!("{key}.key"),
        &f.key,
        "not one country's share: the shares must sum to 1, so one cannot vary alone (write scenarios with the shares you want and compare them)"
    );
    let [lo, hi] = match kind {
        KeyKind::Column => [0.0, f64::MAX],
        _ => p.legal.unwrap_or([f64::MIN, f64::MAX]),
    };
    let low_exclusive = p.low_exclusive && kind != KeyKind::Column;
    let legal = |v: f64| v.is_finite() && v <= hi && (v > lo || (v == lo && !low_exclusive));
    let within = if kind == KeyKind::Column {
        "a multiplier of at least 0 (a data column's factor multiplies every row's value)"
            .to_string()
    } else {
        format!(
            "a value in the key's legal range {}{lo}, {hi}]",
            if low_exclusive { "(" } else { "[" }
        )
    };
    let integer = p.kind == "integer";
    let check = |name: &str, v: f64| -> Result<()> {
        ensure!(legal(v), file, format!("{key}.{name}"), v, within.clone());
        ensure!(
            !integer || v.fract() == 0.0,
            file,
            format!("{key}.{name}"),
            v,
            "a whole number (the key is an integer)"
        );
        Ok(())
    };
    if let Some(levels) = &f.levels {
        // Under grid each level in turn; under the other designs one of them, evenly.
        let _ = design;
        ensure!(
            f.low.is_none() && f.high.is_none(),
            file,
            format!("{key}.levels"),
            format!("{levels:?}"),
            "levels or low and high, not both"
        );
        ensure!(
            !levels.is_empty() && levels.len() <= 1000,
            file,
            format!("{key}.levels"),
            format!("{levels:?}"),
            "1 to 1000 values"
        );
        for (i, v) in levels.iter().enumerate() {
            check("levels", *v)?;
            ensure!(
                !levels[..i].contains(v),
                file,
                format!("{key}.levels"),
                format!("{levels:?}"),
                format!(
                    "distinct values ({v} is given twice): a repeated level repeats its evaluations and weighs them twice"
                )
            );
        }
        return Ok(());
    }
    let (Some(low), Some(high)) = (f.low, f.high) else {
        return Err(Error::invalid(
            file,
            key,
            "no low and high",
            "low and high (or, under grid, levels)",
        ));
    };
    check("low", low)?;
    check("high", high)?;
    ensure!(
        low < high,
        file,
        format!("{key}.high"),
        high,
        format!("above low = {low}")
    );
    if f.spread == Some(Spread::Loguniform) {
        ensure!(
            low > 0.0,
            file,
            format!("{key}.low"),
            low,
            "above 0 (spread = \"loguniform\")"
        );
    }
    if let Some(n) = f.points {
        ensure!(
            (2..=1000).contains(&n),
            file,
            format!("{key}.points"),
            n,
            "2 to 1000"
        );
    }
    Ok(())
}

/// Sets the value at `path` of a scenario's TOML tree, making the tables on the way.
pub fn set_path(tree: &mut toml::Value, path: &[String], value: toml::Value) {
    let mut node = tree;
    for (i, part) in path.iter().enumerate() {
        // A registry key's parents are tables of the scenario (checked by `check_factor`).
        let Some(table) = node.as_table_mut() else {
            return;
        };
        if i + 1 == path.len() {
            table.insert(part.clone(), value);
            return;
        }
        node = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
}

/// The value at `path` of a TOML tree, as a number.
pub(super) fn get_number(tree: &toml::Value, path: &[String]) -> Option<f64> {
    let mut node = tree;
    for part in path {
        node = node.get(part)?;
    }
    match node {
        toml::Value::Float(x) => Some(*x),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// The word at `path` of a scenario's TOML tree.
pub(super) fn get_text(tree: &toml::Value, path: &[String]) -> Option<String> {
    let mut node = tree;
    for part in path {
        node = node.get(part)?;
    }
    node.as_str().map(String::from)
}

/// What each factor of a checked plan sets, with the base scenario's values of data rows.
pub(super) fn targets(factors: &[Factor], base: &Resolved) -> Vec<Target> {
    let rows = |table: &str| -> Vec<(String, toml::Value)> {
        let d = &base.data;
        let named = |v: toml::Value, name: &str| {
            v.get(name)
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string()
        };
        match table {
            "country" => d
                .countries
                .country
                .iter()
                .filter_map(|c| toml::Value::try_from(c).ok())
                .map(|v| (named(v.clone(), "code"), v))
                .collect(),
            _ => d
                .segments
                .segment
                .iter()
                .filter_map(|c| toml::Value::try_from(c).ok())
                .map(|v| (named(v.clone(), "name"), v))
                .collect(),
        }
    };
    factors
        .iter()
        .map(|f| {
            let (p, kind) = lookup(&f.key).expect("checked by check_factor");
            let field = key_parts(&p.path).pop().unwrap_or_default();
            match kind {
                KeyKind::Scalar if f.choices.is_some() => Target::Choice {
                    path: key_parts(&f.key),
                    words: f.choices.clone().unwrap_or_default(),
                },
                KeyKind::Scalar => Target::Scalar {
                    path: key_parts(&f.key),
                    integer: p.kind == "integer",
                },
                KeyKind::Column => {
                    let pattern = key_parts(p.override_path.as_deref().unwrap_or(""));
                    let table = p.per_row.as_deref().unwrap_or("");
                    let [lo, hi] = p.legal.unwrap_or([f64::MIN, f64::MAX]);
                    Target::Column {
                        rows: rows(table)
                            .into_iter()
                            .filter_map(|(name, row)| {
                                let value = get_number(&row, std::slice::from_ref(&field))?;
                                let path = pattern
                                    .iter()
                                    .map(|part| {
                                        if part.starts_with('<') {
                                            name.clone()
                                        } else {
                                            part.clone()
                                        }
                                    })
                                    .collect();
                                Some((path, value))
                            })
                            .collect(),
                        legal: (lo, hi),
                    }
                }
                KeyKind::Row => {
                    let path = key_parts(&f.key);
                    let name = &path[path.len() - 2];
                    let table = p.per_row.as_deref().unwrap_or("");
                    let base = rows(table)
                        .into_iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, row)| get_number(&row, std::slice::from_ref(&field)))
                        .unwrap_or(f64::NAN);
                    Target::Row { path, base }
                }
            }
        })
        .collect()
}
