//! Studies (docs/model.md §16): one scenario evaluated over a design of parameter values, to see
//! which assumptions its figures depend on and how wide they are once the assumptions vary.
//!
//! A plan (`adsim study PLAN`, a TOML file or a built-in from `data/studies/`) names a base
//! scenario, its size, the factors (scalar scenario keys, each with a range or a list of
//! levels; `assumptions = true` adds every scalar assumption of the parameter registry at its
//! plausible range), a design and the outputs (metrics at an arm and a rate). Designs: `grid`
//! (full factorial) and `lhs` (Latin hypercube, with a dummy factor that touches nothing: its
//! correlation with an output is the noise floor). Every evaluation uses the base scenario's
//! seed (common random numbers, docs/model.md §16.3), runs through [`crate::run::evaluate`] and
//! writes no file of its own. The study folder holds the resolved plan, `evaluations.csv` and
//! `.parquet` (one row per evaluation), `summary.csv` (each output's spread; under `lhs` its 2.5
//! and 97.5 percentiles, the parameter-uncertainty interval), `indices.csv` (each factor's
//! effect on each output) and `report.md` / `report.html`.

use std::path::Path;

pub mod batch;

use polars::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::charts::{BarChart, Chart, Line, LineChart, Style, Unit};
use crate::ensure;
use crate::error::{Error, Result};
use crate::folder::{Stamp, write_csv, write_dir, write_parquet, write_text};
use crate::registry;
use crate::report::{Block, html, level_near, markdown};
use crate::scenario::{Resolved, Scenario};
use crate::table::floats;

/// Version of the study tables' schema.
pub const STUDY_SCHEMA_VERSION: &str = "study/1";

/// The built-in study plans: name and text.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "assumptions",
        include_str!("../../data/studies/assumptions.toml"),
    ),
    (
        "uncertainty",
        include_str!("../../data/studies/uncertainty.toml"),
    ),
    (
        "heterogeneity-x-notice",
        include_str!("../../data/studies/heterogeneity-x-notice.toml"),
    ),
    (
        "screening",
        include_str!("../../data/studies/screening.toml"),
    ),
    (
        "sobol-targeting",
        include_str!("../../data/studies/sobol-targeting.toml"),
    ),
];

/// The name of the dummy factor of an `lhs` design.
pub const DUMMY: &str = "dummy";

/// A study design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// Every combination of the factors' levels.
    Grid,
    /// A Latin hypercube of `samples` points.
    Lhs,
    /// Morris elementary effects: `trajectories` one-at-a-time paths on a grid of
    /// `morris_levels` levels.
    Morris,
    /// Sobol indices: Saltelli's sampling of `samples` base points of a scrambled Sobol
    /// sequence.
    Sobol,
}

impl Design {
    /// Its name in a plan (`design = "lhs"`).
    pub fn key(self) -> &'static str {
        match self {
            Design::Grid => "grid",
            Design::Lhs => "lhs",
            Design::Morris => "morris",
            Design::Sobol => "sobol",
        }
    }
}

/// How a factor's values spread over its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Evenly.
    Uniform,
    /// Evenly in the logarithm (both bounds above 0).
    Loguniform,
}

/// One factor: a scalar scenario key and the values it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor {
    /// The scenario key (`targeting.m_recall`).
    pub key: String,
    /// Low end of its range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// High end of its range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// The values a `grid` takes (instead of `points` values from `low` to `high`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<f64>>,
    /// Under `grid` without `levels`: how many evenly spaced values from `low` to `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u32>,
    /// Under `lhs`: how values spread over the range (default uniform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// One output: a metric of `summary.csv` at an arm and the level nearest a rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The metric (a column of `summary.csv`: `revenue_change_musd`, `precision_lift`...).
    pub metric: String,
    /// The arm (default: the scenario's first sharing arm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The target opt-out rate (the level nearest it is read).
    pub rate: f64,
}

/// A study plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name (the folder's, by default).
    pub name: String,
    /// What it asks.
    #[serde(default)]
    pub description: String,
    /// The base scenario: a built-in name or a TOML file (relative to the plan).
    pub scenario: String,
    /// Users per replication of each evaluation.
    pub users: u64,
    /// Replications of each evaluation.
    pub replications: u32,
    /// `grid` or `lhs`.
    pub design: Design,
    /// Under `lhs`: the number of points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// Under `morris`: the number of trajectories (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<u32>,
    /// Under `morris`: the levels of its grid, even (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub morris_levels: Option<u32>,
    /// Under `morris` and `sobol`: bootstrap resamples of the intervals (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<u32>,
    /// Seed of the design's draws (not of the simulation: every evaluation uses the
    /// scenario's seed).
    #[serde(default = "one")]
    pub design_seed: u64,
    /// Add every scalar assumption of the registry that the scenario reads, at its plausible
    /// range and spread.
    #[serde(default)]
    pub assumptions: bool,
    /// The factors.
    #[serde(default)]
    pub factor: Vec<Factor>,
    /// The outputs (default: revenue change, precision lift, Custom Audience match rate and
    /// people mislinked of the first sharing arm at rates 0 and 0.5).
    #[serde(default)]
    pub output: Vec<Output>,
    /// Under `morris`: a second stage, Sobol indices on the factors the screening ranks
    /// highest ([`batch::run_staged`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Then>,
}

/// The second stage of a two-stage plan: Sobol indices on the `factors` factors that the
/// Morris screening ranks highest, at `samples` base points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    /// `sobol`, the only second stage.
    pub design: Design,
    /// How many of the screened factors it carries, strongest first.
    pub factors: u32,
    /// Its base points: a power of two.
    pub samples: u32,
}

fn one() -> u64 {
    1
}

/// The metrics studied when a plan names none.
pub const DEFAULT_METRICS: [&str; 5] = [
    "revenue_change_musd",
    "market_revenue_change_musd",
    "precision_lift",
    "ca_match_rate",
    "people_mislinked",
];

impl Plan {
    /// Parses a plan; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Plan> {
        toml::from_str(text).map_err(|e| {
            Error::invalid(
                file,
                "plan",
                e.message(),
                "a study plan (docs/model.md §16)",
            )
        })
    }

    /// A built-in plan by name.
    pub fn builtin(name: &str) -> Result<(Plan, String)> {
        let (_, text) = BUILTINS
            .iter()
            .find(|b| b.0 == name)
            .ok_or_else(|| Error::Argument {
                name: "plan".into(),
                value: name.into(),
                expected: format!(
                    "a TOML file or a built-in study: {}",
                    BUILTINS.iter().map(|b| b.0).collect::<Vec<_>>().join(", ")
                ),
            })?;
        let source = format!("data/studies/{name}.toml (built in)");
        Ok((Plan::parse(text, &source)?, source))
    }

    /// The plan as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialize the plan: {e}\n"))
    }
}

/// A plan made ready: its base scenario, the factors (assumptions expanded, checked), the
/// design's points and the outputs.
#[derive(Clone, Debug)]
pub struct Study {
    /// The plan, with the factors and outputs it resolved to.
    pub plan: Plan,
    /// The base scenario at the plan's size.
    pub base: Scenario,
    /// Where the scenario came from.
    pub source: String,
    /// The plan's file (or built-in), as errors name it.
    pub file: String,
    /// SHA-256 of the reference data the base scenario resolves to.
    pub data_hash: String,
    /// Factor names, in column order (the dummy last, under `lhs`).
    pub names: Vec<String>,
    /// The design: one row of factor values per evaluation.
    pub points: Vec<Vec<f64>>,
    /// The design in the unit cube (every design but `grid`): one row per evaluation.
    pub units: Vec<Vec<f64>>,
    /// What each factor sets in the scenario, in factor order.
    targets: Vec<Target>,
}

/// What a factor's key sets in the scenario.
#[derive(Clone, Debug)]
enum Target {
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
}

/// How a factor's key names what it varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
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
fn lookup(key: &str) -> Option<(&'static registry::Parameter, KeyKind)> {
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
fn range_kind(f: &Factor) -> &'static str {
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

/// The most base points of a `sobol` design: the length of the Sobol sequence (sobol_burley).
pub const SOBOL_MAX_POINTS: u32 = 1 << 16;
/// Dimensions of the Sobol sequence: a `sobol` design uses two per factor.
pub const SOBOL_MAX_DIMENSIONS: usize = sobol_burley::NUM_DIMENSIONS as usize;

impl Factor {
    /// The value at `u` in [0, 1] of its range: evenly, or evenly in the logarithm.
    pub fn at(&self, u: f64) -> f64 {
        let (low, high) = (self.low.unwrap_or(0.0), self.high.unwrap_or(1.0));
        match self.spread {
            Some(Spread::Loguniform) => (low.ln() + u * (high.ln() - low.ln())).exp(),
            _ => low + u * (high - low),
        }
        .clamp(low, high)
    }
}

/// Reads the base scenario of a plan from `dir` (the plan's folder); a file's path becomes
/// absolute in the plan, so the plan written to the study folder finds it too.
fn base_scenario(plan: &mut Plan, dir: &Path, file: &str) -> Result<(Scenario, String)> {
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
            })
        })
        .collect()
}

/// Checks one factor against the registry and the design; `file` names the plan.
fn check_factor(f: &Factor, design: Design, file: &str, i: usize) -> Result<()> {
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
    ensure!(
        matches!(p.kind.as_str(), "float" | "integer"),
        file,
        format!("{key}.key"),
        &f.key,
        format!("a numeric key (this one is {})", p.kind)
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
        ensure!(
            design == Design::Grid,
            file,
            format!("{key}.levels"),
            format!("{levels:?}"),
            "no levels under design = \"lhs\" (give low and high)"
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
fn set_path(tree: &mut toml::Value, path: &[String], value: toml::Value) {
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
fn get_number(tree: &toml::Value, path: &[String]) -> Option<f64> {
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

/// What each factor of a checked plan sets, with the base scenario's values of data rows.
fn targets(factors: &[Factor], base: &Resolved) -> Vec<Target> {
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

impl Study {
    /// Makes a plan ready: reads its scenario (relative to `dir`), expands and checks its
    /// factors and outputs, and draws its design. `file` names the plan in errors.
    pub fn new(mut plan: Plan, file: &str, dir: &Path) -> Result<Study> {
        ensure!(
            !plan.name.is_empty()
                && plan.name.len() <= 100
                && !plan.name.starts_with('.')
                && plan
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            file,
            "name",
            format!("{:?}", plan.name),
            "1 to 100 letters, digits, '-', '_' or '.', not starting with '.'"
        );
        ensure!(
            (1..=1_000_000_000).contains(&plan.users),
            file,
            "users",
            plan.users,
            "1 to 10^9 users per evaluation"
        );
        ensure!(
            (1..=1000).contains(&plan.replications),
            file,
            "replications",
            plan.replications,
            "1 to 1000"
        );
        let (mut base, source) = base_scenario(&mut plan, dir, file)?;
        base.population.users = plan.users;
        base.population.replications = plan.replications;
        if plan.assumptions {
            let have: Vec<String> = plan.factor.iter().map(|f| f.key.clone()).collect();
            plan.factor.extend(
                assumption_factors(&base)
                    .into_iter()
                    .filter(|f| !have.contains(&f.key)),
            );
            plan.assumptions = false;
        }
        ensure!(
            !plan.factor.is_empty(),
            file,
            "factor",
            "none",
            "at least one [[factor]], or assumptions = true"
        );
        for (i, f) in plan.factor.iter().enumerate() {
            check_factor(f, plan.design, file, i)?;
            ensure!(
                plan.factor[..i].iter().all(|g| g.key != f.key),
                file,
                format!("factor[{i}].key"),
                &f.key,
                "a key no other factor has"
            );
        }
        let resolved_base = base.clone().resolve(file, dir)?;
        let targets = targets(&plan.factor, &resolved_base);
        let k = plan.factor.len();
        let mut names: Vec<String> = plan.factor.iter().map(|f| f.key.clone()).collect();
        let mut unit_points = Vec::new();
        let points = match plan.design {
            Design::Grid => {
                ensure!(
                    plan.samples.is_none(),
                    file,
                    "samples",
                    plan.samples.unwrap_or(0),
                    "no samples under design = \"grid\" (its size is the product of the levels)"
                );
                let levels: Vec<Vec<f64>> = plan.factor.iter().map(grid_levels).collect();
                let size: f64 = levels.iter().map(|l| l.len() as f64).product();
                ensure!(
                    size <= 100_000.0,
                    file,
                    "factor",
                    size,
                    "a grid of at most 100,000 points"
                );
                cartesian(&levels)
            }
            design => {
                let kd = k + 1;
                let units = match design {
                    Design::Lhs => {
                        let n = plan.samples.unwrap_or(0);
                        let least = (2 * (k as u32 + 1)).max(10);
                        ensure!(
                            n >= least && n <= 100_000,
                            file,
                            "samples",
                            n,
                            format!(
                                "{least} to 100,000 points for {k} factors and the dummy (at least twice the factors, and 10)"
                            )
                        );
                        latin_hypercube(kd, n as usize, plan.design_seed)
                    }
                    Design::Morris => {
                        ensure!(
                            plan.samples.is_none(),
                            file,
                            "samples",
                            plan.samples.unwrap_or(0),
                            "no samples under design = \"morris\" (give trajectories)"
                        );
                        let r = plan.trajectories.unwrap_or(10);
                        ensure!(
                            (2..=10_000).contains(&r) && r as usize * (kd + 1) <= 1_000_000,
                            file,
                            "trajectories",
                            r,
                            format!(
                                "2 to 10,000, and at most 10^6 evaluations ({} each)",
                                kd + 1
                            )
                        );
                        let p = plan.morris_levels.unwrap_or(4);
                        ensure!(
                            (4..=20).contains(&p) && p.is_multiple_of(2),
                            file,
                            "morris_levels",
                            p,
                            "an even number of levels from 4 to 20"
                        );
                        morris_design(kd, r as usize, p, plan.design_seed)
                    }
                    Design::Sobol => {
                        let n = plan.samples.unwrap_or(0);
                        ensure!(
                            n.is_power_of_two() && (16..=SOBOL_MAX_POINTS).contains(&n),
                            file,
                            "samples",
                            n,
                            format!(
                                "a power of two from 16 to {SOBOL_MAX_POINTS} base points (the Sobol sequence's limit)"
                            )
                        );
                        ensure!(
                            2 * kd <= SOBOL_MAX_DIMENSIONS,
                            file,
                            "factor",
                            k,
                            format!(
                                "at most {} factors with the dummy (the Sobol sequence has {SOBOL_MAX_DIMENSIONS} dimensions, two per factor)",
                                SOBOL_MAX_DIMENSIONS / 2
                            )
                        );
                        ensure!(
                            n as usize * (kd + 2) <= 1_000_000,
                            file,
                            "samples",
                            n,
                            format!("at most 10^6 evaluations ({} per base point)", kd + 2)
                        );
                        saltelli_design(kd, n as usize, plan.design_seed as u32)
                    }
                    Design::Grid => unreachable!("handled above"),
                };
                if matches!(design, Design::Morris | Design::Sobol) {
                    let b = plan.bootstrap.unwrap_or(500);
                    ensure!(
                        (10..=100_000).contains(&b),
                        file,
                        "bootstrap",
                        b,
                        "10 to 100,000 resamples"
                    );
                }
                names.push(DUMMY.into());
                let mut with_dummy = plan.factor.clone();
                with_dummy.push(Factor {
                    key: DUMMY.into(),
                    low: Some(0.0),
                    high: Some(1.0),
                    levels: None,
                    points: None,
                    spread: None,
                });
                let integer: Vec<bool> = targets
                    .iter()
                    .map(|t| matches!(t, Target::Scalar { integer: true, .. }))
                    .chain([false])
                    .collect();
                let points = units
                    .iter()
                    .map(|row| {
                        row.iter()
                            .zip(&with_dummy)
                            .zip(&integer)
                            .map(|((u, f), &int)| {
                                let v = f.at(*u);
                                if int { v.round() } else { v }
                            })
                            .collect()
                    })
                    .collect();
                unit_points = units;
                points
            }
        };
        if plan.output.is_empty() {
            plan.output = DEFAULT_METRICS
                .iter()
                .flat_map(|m| {
                    [0.0, 0.5].map(|rate| Output {
                        metric: m.to_string(),
                        arm: None,
                        rate,
                    })
                })
                .collect();
        }
        let sharing = base
            .policy
            .arms
            .iter()
            .find(|a| a.kind != crate::policy::ArmKind::None)
            .map(|a| a.name.clone());
        let metrics = crate::metrics::summary_metric_names();
        for (i, o) in plan.output.iter_mut().enumerate() {
            ensure!(
                metrics.contains(&o.metric),
                file,
                format!("output[{i}].metric"),
                &o.metric,
                "a metric of summary.csv (docs/data-dictionary.md)"
            );
            ensure!(
                (0.0..=1.0).contains(&o.rate),
                file,
                format!("output[{i}].rate"),
                o.rate,
                "an opt-out rate in [0, 1]"
            );
            let arm = o
                .arm
                .clone()
                .or_else(|| sharing.clone())
                .unwrap_or_default();
            ensure!(
                base.policy.arms.iter().any(|a| a.name == arm),
                file,
                format!("output[{i}].arm"),
                format!("{arm:?}"),
                format!(
                    "an arm of the scenario: {}",
                    base.policy
                        .arms
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            );
            o.arm = Some(arm);
        }
        if let Some(t) = &plan.then {
            ensure!(
                plan.design == Design::Morris && t.design == Design::Sobol,
                file,
                "then.design",
                format!("{} after {}", t.design.key(), plan.design.key()),
                "design = \"sobol\" after design = \"morris\" (a screening, then indices on what it finds)"
            );
            let most = (k as u32).min(SOBOL_MAX_DIMENSIONS as u32 / 2 - 1);
            ensure!(
                (1..=most).contains(&t.factors),
                file,
                "then.factors",
                t.factors,
                format!(
                    "1 to {most} (the plan's {k} factors, and the Sobol sequence's {SOBOL_MAX_DIMENSIONS} dimensions, two per factor and the dummy)"
                )
            );
            ensure!(
                t.samples.is_power_of_two()
                    && (16..=SOBOL_MAX_POINTS).contains(&t.samples)
                    && t.samples as usize * (t.factors as usize + 3) <= 1_000_000,
                file,
                "then.samples",
                t.samples,
                format!(
                    "a power of two from 16 to {SOBOL_MAX_POINTS} base points, and at most 10^6 evaluations ({} per base point)",
                    t.factors + 3
                )
            );
        }
        let study = Study {
            plan,
            base,
            source,
            file: file.to_string(),
            data_hash: crate::folder::data_hash(&resolved_base),
            names,
            points,
            units: unit_points,
            targets,
        };
        // Every point must make a valid scenario, the tornado's too: refused now, before any
        // evaluation.
        for (i, _) in study.points.iter().enumerate() {
            study.scenario(i)?;
        }
        for (i, (_, point)) in study.tornado_points().iter().enumerate() {
            study.scenario_at(point, &format!("tornado point {i}"))?;
        }
        Ok(study)
    }

    /// The scenario of evaluation `i`, resolved.
    pub fn scenario(&self, i: usize) -> Result<Resolved> {
        self.scenario_at(&self.points[i], &format!("evaluation {i}"))
    }

    /// Each factor's value in the base scenario (NaN where the scenario leaves it unset): a
    /// data column's multiplier is 1.
    pub fn base_values(&self) -> Vec<f64> {
        let tree = toml::Value::try_from(&self.base).ok();
        self.targets
            .iter()
            .map(|t| match t {
                Target::Scalar { path, .. } => tree
                    .as_ref()
                    .and_then(|t| get_number(t, path))
                    .unwrap_or(f64::NAN),
                Target::Column { .. } => 1.0,
                Target::Row { base, .. } => *base,
            })
            .collect()
    }

    /// The one-at-a-time points of the tornado chart: the base scenario, then each factor at
    /// its low and at its high end (a grid's lowest and highest level) with the others at
    /// their base values. Factors the base leaves unset are skipped.
    pub fn tornado_points(&self) -> Vec<(Option<usize>, Vec<f64>)> {
        let base = self.base_values();
        let mut row = base.clone();
        row.resize(self.names.len(), 0.5);
        let mut out = vec![(None, row.clone())];
        for (i, f) in self.plan.factor.iter().enumerate() {
            if !base[i].is_finite() {
                continue;
            }
            let (low, high) = match &f.levels {
                Some(l) => (
                    l.iter().copied().fold(f64::INFINITY, f64::min),
                    l.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                None => (f.low.unwrap_or(0.0), f.high.unwrap_or(1.0)),
            };
            for v in [low, high] {
                let mut r = row.clone();
                r[i] = v;
                out.push((Some(i), r));
            }
        }
        out
    }

    /// The scenario at factor values `values` (in [`Study::names`] order), resolved; `label`
    /// names it in errors.
    pub fn scenario_at(&self, values: &[f64], label: &str) -> Result<Resolved> {
        let mut tree = toml::Value::try_from(&self.base)
            .map_err(|e| Error::invalid(&self.source, "scenario", e.to_string(), "a scenario"))?;
        // Columns first, so a row factor of the same field (an override of one country's
        // value) wins over the column's multiplier of every row.
        let mut order: Vec<(&Target, f64)> =
            self.targets.iter().zip(values.iter().copied()).collect();
        order.sort_by_key(|(t, _)| !matches!(t, Target::Column { .. }));
        for (t, v) in order {
            match t {
                Target::Scalar { path, integer } => {
                    let value = if *integer {
                        toml::Value::Integer(v as i64)
                    } else {
                        toml::Value::Float(v)
                    };
                    set_path(&mut tree, path, value);
                }
                Target::Column { rows, legal } => {
                    for (path, base) in rows {
                        let value = (base * v).clamp(legal.0, legal.1);
                        set_path(&mut tree, path, toml::Value::Float(value));
                    }
                }
                Target::Row { path, .. } => set_path(&mut tree, path, toml::Value::Float(v)),
            }
        }
        let at = self
            .plan
            .factor
            .iter()
            .zip(values)
            .map(|(f, v)| format!("{} = {v}", f.key))
            .collect::<Vec<_>>()
            .join(", ");
        let file = format!("{} at {label} ({at})", self.file);
        let scenario: Scenario = tree.try_into().map_err(|e: toml::de::Error| {
            Error::invalid(&file, "scenario", e.message(), "a scenario")
        })?;
        scenario.resolve(&file, Path::new("."))
    }

    /// Output column names: `metric@arm@rate`.
    pub fn output_names(&self) -> Vec<String> {
        self.plan
            .output
            .iter()
            .map(|o| format!("{}@{}@{}", o.metric, o.arm.as_deref().unwrap_or(""), o.rate))
            .collect()
    }

    /// Outputs of one evaluation at factor values `point` (NaN where a metric is undefined);
    /// `label` names it in errors.
    pub fn evaluate_at(&self, point: &[f64], label: &str) -> Result<Vec<f64>> {
        let resolved = self.scenario_at(point, label)?;
        let e = crate::run::evaluate(&resolved, &crate::run::quiet)?;
        let s = &e.summary;
        Ok(self
            .plan
            .output
            .iter()
            .map(|o| {
                let arm = o.arm.as_deref().unwrap_or("");
                let values = floats(s, &o.metric);
                level_near(s, arm, o.rate)
                    .and_then(|(_, rows)| rows.first().copied())
                    .map_or(f64::NAN, |j| values[j])
            })
            .collect())
    }
}

/// The resolved plan as written to a study folder's `plan.toml`.
pub fn plan_text(study: &Study) -> String {
    format!(
        "# Resolved study plan: `adsim study plan.toml --out OTHER` reproduces every file of\n# this folder. Base scenario: {}\n{}",
        study.source,
        study.plan.to_toml()
    )
}

/// The values a factor takes in a grid.
fn grid_levels(f: &Factor) -> Vec<f64> {
    if let Some(l) = &f.levels {
        return l.clone();
    }
    let (low, high) = (f.low.unwrap_or(0.0), f.high.unwrap_or(1.0));
    let n = f.points.unwrap_or(3).max(2);
    (0..n)
        .map(|j| low + (high - low) * f64::from(j) / f64::from(n - 1))
        .collect()
}

/// Every combination of `levels`, the first factor varying slowest.
fn cartesian(levels: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new()];
    for l in levels {
        out = out
            .into_iter()
            .flat_map(|row| {
                l.iter().map(move |v| {
                    let mut r = row.clone();
                    r.push(*v);
                    r
                })
            })
            .collect();
    }
    out
}

/// A Latin hypercube of `n` points in the unit cube of `k` dimensions: each axis cut into `n`
/// strata, each stratum used by exactly one point, at a uniform position inside it; strata
/// paired across axes by independent random permutations (McKay, Beckman & Conover 1979).
/// Xoshiro256++ seeded with `seed` (a stream rand documents as stable).
pub fn latin_hypercube(k: usize, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut columns = Vec::with_capacity(k);
    for _ in 0..k {
        let mut strata: Vec<usize> = (0..n).collect();
        shuffle(&mut strata, &mut rng);
        let column: Vec<f64> = strata
            .into_iter()
            .map(|s| ((s as f64 + rng.random::<f64>()) / n as f64).min(1.0))
            .collect();
        columns.push(column);
    }
    (0..n)
        .map(|i| columns.iter().map(|c| c[i]).collect())
        .collect()
}

/// Fisher-Yates.
fn shuffle<T>(v: &mut [T], rng: &mut Xoshiro256PlusPlus) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// A Morris design (Morris 1991, as in SALib): `r` trajectories of `k + 1` points in the unit
/// cube on a grid of `p` levels. A trajectory starts at a random grid point and moves one
/// factor at a time, in a random order, by `delta = p / (2 (p - 1))` (up if that stays inside
/// the cube, else down), so consecutive points differ in exactly one factor.
pub fn morris_design(k: usize, r: usize, p: u32, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let step = 1.0 / f64::from(p - 1);
    let delta = f64::from(p) / (2.0 * f64::from(p - 1));
    let mut out = Vec::with_capacity(r * (k + 1));
    for _ in 0..r {
        let mut x: Vec<f64> = (0..k)
            .map(|_| f64::from(rng.random_range(0..p)) * step)
            .collect();
        let mut order: Vec<usize> = (0..k).collect();
        shuffle(&mut order, &mut rng);
        out.push(x.clone());
        for i in order {
            x[i] = if x[i] + delta <= 1.0 + 1e-12 {
                (x[i] + delta).min(1.0)
            } else {
                (x[i] - delta).max(0.0)
            };
            out.push(x.clone());
        }
    }
    out
}

/// Morris indices of one factor: the mean of its elementary effects, the mean of their
/// absolute values (with a bootstrap interval over trajectories) and their standard
/// deviation; effects are in output units per the factor's whole range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MorrisIndex {
    /// Mean elementary effect.
    pub mu: f64,
    /// Mean absolute elementary effect.
    pub mu_star: f64,
    /// 95% bootstrap interval of `mu_star` (estimate +/- 1.96 bootstrap sd).
    pub mu_star_ci: (f64, f64),
    /// Standard deviation of the elementary effects (interactions and non-linearity).
    pub sigma: f64,
}

/// The Morris indices of `k` factors from a [`morris_design`] (`units`) and its outputs `y`.
pub fn morris_indices(
    units: &[Vec<f64>],
    y: &[f64],
    k: usize,
    resamples: usize,
    seed: u64,
) -> Vec<MorrisIndex> {
    // effects[t][i]: trajectory t's elementary effect of factor i (NaN if undefined).
    let trajectories = units.len() / (k + 1);
    let mut effects = vec![vec![f64::NAN; k]; trajectories];
    for (t, row) in effects.iter_mut().enumerate() {
        for s in 0..k {
            let (a, b) = (t * (k + 1) + s, t * (k + 1) + s + 1);
            if let Some(i) = (0..k).find(|&i| units[a][i] != units[b][i]) {
                row[i] = (y[b] - y[a]) / (units[b][i] - units[a][i]);
            }
        }
    }
    let stats = |rows: &[usize], i: usize| -> (f64, f64, f64) {
        let e: Vec<f64> = rows
            .iter()
            .map(|&t| effects[t][i])
            .filter(|v| v.is_finite())
            .collect();
        let n = e.len() as f64;
        let mu = e.iter().sum::<f64>() / n;
        let mu_star = e.iter().map(|v| v.abs()).sum::<f64>() / n;
        let sigma = (e.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / (n - 1.0)).sqrt();
        (mu, mu_star, sigma)
    };
    let all: Vec<usize> = (0..trajectories).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6d6f_7272_6973);
    let resampled: Vec<Vec<usize>> = (0..resamples)
        .map(|_| {
            (0..trajectories)
                .map(|_| rng.random_range(0..trajectories))
                .collect()
        })
        .collect();
    (0..k)
        .map(|i| {
            let (mu, mu_star, sigma) = stats(&all, i);
            let boot: Vec<f64> = resampled.iter().map(|rows| stats(rows, i).1).collect();
            let half = 1.96 * sd(&boot);
            MorrisIndex {
                mu,
                mu_star,
                mu_star_ci: (mu_star - half, mu_star + half),
                sigma,
            }
        })
        .collect()
}

/// The sample standard deviation of the finite values of `v`; NaN (shown empty) when fewer
/// than two are finite.
fn sd(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return f64::NAN;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Saltelli's design for Sobol indices (Saltelli et al. 2010) on an Owen-scrambled Sobol
/// sequence (sobol_burley, seeded with `seed`): base point `j` takes matrix A's row from
/// dimensions 0 to k-1 and B's from k to 2k-1, and contributes `k + 2` evaluations in this
/// order: A, then A with factor i's value from B for each i, then B. At most 2^16 base points
/// and 128 factors; the sequence's values are 32-bit floats (24 bits of each value's place in
/// its range, far finer than any plausible range needs).
pub fn saltelli_design(k: usize, n: usize, seed: u32) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(n * (k + 2));
    for j in 0..n as u32 {
        let a: Vec<f64> = (0..k as u32)
            .map(|d| f64::from(sobol_burley::sample(j, d, seed)))
            .collect();
        let b: Vec<f64> = (0..k as u32)
            .map(|d| f64::from(sobol_burley::sample(j, k as u32 + d, seed)))
            .collect();
        out.push(a.clone());
        for i in 0..k {
            let mut ab = a.clone();
            ab[i] = b[i];
            out.push(ab);
        }
        out.push(b);
    }
    out
}

/// First-order and total Sobol indices of one factor, with 95% bootstrap intervals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SobolIndex {
    /// First order (Saltelli 2010): the share of the output's variance the factor explains
    /// alone.
    pub s1: f64,
    /// Its interval.
    pub s1_ci: (f64, f64),
    /// Total (Jansen 1999): the share it explains with all its interactions.
    pub st: f64,
    /// Its interval.
    pub st_ci: (f64, f64),
}

/// The Sobol indices of `k` factors from the outputs `y` of a [`saltelli_design`] of `n` base
/// points: `S1_i = mean((f(B) - c) (f(AB_i) - f(A))) / V` and `ST_i = mean((f(A) -
/// f(AB_i))^2) / 2V`, V the variance of f(A) and f(B) together and c their mean; base points
/// with an undefined output are left out. Centring f(B) leaves S1's expectation unchanged
/// (`f(AB_i) - f(A)` has mean 0) and removes the term `c x mean(f(AB_i) - f(A))` from its
/// noise, as SALib does by centring the outputs (docs/model.md §16.2). Intervals: estimate
/// +/- 1.96 sd over `resamples` bootstrap resamples of base points, the centre held at its
/// value on all of them.
pub fn sobol_indices(
    y: &[f64],
    k: usize,
    n: usize,
    resamples: usize,
    seed: u64,
) -> Vec<SobolIndex> {
    let block = k + 2;
    let rows: Vec<usize> = (0..n)
        .filter(|&j| y[j * block..(j + 1) * block].iter().all(|v| v.is_finite()))
        .collect();
    if rows.len() < 2 {
        let none = (f64::NAN, f64::NAN);
        return vec![
            SobolIndex {
                s1: f64::NAN,
                s1_ci: none,
                st: f64::NAN,
                st_ci: none,
            };
            k
        ];
    }
    let (fa, fb) = (|j: usize| y[j * block], |j: usize| y[j * block + k + 1]);
    let centre = rows.iter().map(|&j| fa(j) + fb(j)).sum::<f64>() / (2 * rows.len()) as f64;
    let estimate = |rows: &[usize], i: usize| -> (f64, f64) {
        let m = rows.len() as f64;
        let fab = |j: usize| y[j * block + 1 + i];
        let all: Vec<f64> = rows.iter().flat_map(|&j| [fa(j), fb(j)]).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / all.len() as f64;
        if var <= 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let s1 = rows
            .iter()
            .map(|&j| (fb(j) - centre) * (fab(j) - fa(j)))
            .sum::<f64>()
            / m
            / var;
        let st = rows.iter().map(|&j| (fa(j) - fab(j)).powi(2)).sum::<f64>() / (2.0 * m) / var;
        (s1, st)
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0073_6f62_6f6c);
    let resampled: Vec<Vec<usize>> = (0..resamples)
        .map(|_| {
            (0..rows.len())
                .map(|_| rows[rng.random_range(0..rows.len().max(1))])
                .collect()
        })
        .collect();
    (0..k)
        .map(|i| {
            let (s1, st) = estimate(&rows, i);
            let boot: Vec<(f64, f64)> = resampled.iter().map(|r| estimate(r, i)).collect();
            let h1 = 1.96 * sd(&boot.iter().map(|b| b.0).collect::<Vec<_>>());
            let ht = 1.96 * sd(&boot.iter().map(|b| b.1).collect::<Vec<_>>());
            SobolIndex {
                s1,
                s1_ci: (s1 - h1, s1 + h1),
                st,
                st_ci: (st - ht, st + ht),
            }
        })
        .collect()
}

/// Ranks of `v` (1-based, ties averaged).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = rank;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation of `x` and `y`; NaN when either is constant.
fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        f64::NAN
    }
}

/// Spearman's rank correlation of `x` and `y` over the pairs where `y` is finite.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (x, y): (Vec<f64>, Vec<f64>) = x
        .iter()
        .zip(y)
        .filter(|(_, b)| b.is_finite())
        .map(|(a, b)| (*a, *b))
        .unzip();
    if x.len() < 3 {
        return f64::NAN;
    }
    correlation(&ranks(&x), &ranks(&y))
}

/// The `q` quantile of the finite values of `v` (linear between order statistics, as numpy's
/// default); NaN if none.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let h = q * (s.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

/// One measure of one factor's effect on one output: under `lhs` Spearman's rank
/// correlation; under `grid` the main-effect swing (the largest less the smallest mean of the
/// output over the factor's levels); under `morris` mu* (with its interval), mu and sigma;
/// under `sobol` the first-order and total indices (with intervals).
#[derive(Clone, Debug)]
pub struct Effect {
    /// The output's column name.
    pub output: String,
    /// The factor.
    pub factor: String,
    /// `spearman_rho`, `main_effect_swing`, `mu_star`, `mu`, `sigma`, `S1` or `ST`.
    pub measure: &'static str,
    /// Its value.
    pub value: f64,
    /// Its 95% interval, where it has one (NaN otherwise).
    pub lo: f64,
    /// Its 95% interval, where it has one (NaN otherwise).
    pub hi: f64,
}

/// The effects of every factor on every output: per output, the factors strongest first by
/// the design's main measure (the first of each factor's rows).
pub fn effects(study: &Study, outputs: &[Vec<f64>]) -> Vec<Effect> {
    let names = study.output_names();
    let k = study.names.len();
    let resamples = study.plan.bootstrap.unwrap_or(500) as usize;
    let seed = study.plan.design_seed;
    let mut out = Vec::new();
    for (o, name) in names.iter().enumerate() {
        let y: Vec<f64> = outputs.iter().map(|r| r[o]).collect();
        let effect = |f: usize, measure: &'static str, value: f64, (lo, hi): (f64, f64)| Effect {
            output: name.clone(),
            factor: study.names[f].clone(),
            measure,
            value,
            lo,
            hi,
        };
        let none = (f64::NAN, f64::NAN);
        let mut per_factor: Vec<Vec<Effect>> = match study.plan.design {
            Design::Lhs | Design::Grid => (0..k)
                .map(|f| {
                    let x: Vec<f64> = study.points.iter().map(|p| p[f]).collect();
                    vec![if study.plan.design == Design::Lhs {
                        effect(f, "spearman_rho", spearman(&x, &y), none)
                    } else {
                        effect(f, "main_effect_swing", swing(&x, &y), none)
                    }]
                })
                .collect(),
            Design::Morris => morris_indices(&study.units, &y, k, resamples, seed)
                .into_iter()
                .enumerate()
                .map(|(f, m)| {
                    vec![
                        effect(f, "mu_star", m.mu_star, m.mu_star_ci),
                        effect(f, "mu", m.mu, none),
                        effect(f, "sigma", m.sigma, none),
                    ]
                })
                .collect(),
            Design::Sobol => {
                let n = study.points.len() / (k + 2);
                sobol_indices(&y, k, n, resamples, seed)
                    .into_iter()
                    .enumerate()
                    .map(|(f, s)| {
                        vec![
                            effect(f, "ST", s.st, s.st_ci),
                            effect(f, "S1", s.s1, s.s1_ci),
                        ]
                    })
                    .collect()
            }
        };
        per_factor.sort_by(|a, b| {
            let key = |e: &[Effect]| e[0].value.abs();
            // Strongest first; an undefined measure (NaN) last.
            match (key(a).is_nan(), key(b).is_nan()) {
                (false, true) => std::cmp::Ordering::Less,
                (true, false) => std::cmp::Ordering::Greater,
                _ => key(b).total_cmp(&key(a)),
            }
        });
        out.extend(per_factor.into_iter().flatten());
    }
    out
}

/// The largest less the smallest mean of `y` over the distinct values of `x`.
fn swing(x: &[f64], y: &[f64]) -> f64 {
    let mut levels: Vec<f64> = x.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let means: Vec<f64> = levels
        .iter()
        .map(|l| {
            let v: Vec<f64> = x
                .iter()
                .zip(y)
                .filter(|(a, b)| *a == l && b.is_finite())
                .map(|(_, b)| *b)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        })
        .filter(|m| m.is_finite())
        .collect();
    let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = means.iter().copied().fold(f64::INFINITY, f64::min);
    if means.len() > 1 { max - min } else { f64::NAN }
}

fn table_error(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Table {
        path: path.to_path_buf(),
        source,
    }
}

/// The study folder (docs/model.md §16.4): written into a temporary folder and renamed.
pub fn write(
    study: &Study,
    outputs: &[Vec<f64>],
    tornado: &[Vec<f64>],
    out: &Path,
    force: bool,
) -> Result<()> {
    let names = study.output_names();
    let effects = effects(study, outputs);
    write_dir(out, force, |tmp| {
        let path = tmp.join("tornado.csv");
        let swings = tornado_rows(study, tornado);
        let mut t = df!(
            "output" => swings.iter().map(|r| names[r.output].as_str()).collect::<Vec<_>>(),
            "factor" => swings.iter().map(|r| study.names[r.factor].as_str()).collect::<Vec<_>>(),
            "factor_low" => swings.iter().map(|r| r.values.0).collect::<Vec<_>>(),
            "factor_high" => swings.iter().map(|r| r.values.1).collect::<Vec<_>>(),
            "at_base" => swings.iter().map(|r| r.base).collect::<Vec<_>>(),
            "at_low" => swings.iter().map(|r| r.at.0).collect::<Vec<_>>(),
            "at_high" => swings.iter().map(|r| r.at.1).collect::<Vec<_>>(),
            "swing" => swings.iter().map(|r| (r.at.1 - r.at.0).abs()).collect::<Vec<_>>(),
        )
        .map_err(table_error(&path))?;
        write_csv(&path, &mut t)?;
        let mut figures = Vec::new();
        for (o, name) in names.iter().enumerate() {
            let rows: Vec<&Swing> = swings.iter().filter(|r| r.output == o).collect();
            if rows.iter().all(|r| r.at.0 == r.base && r.at.1 == r.base) {
                continue;
            }
            let stem = format!("tornado_{}", o + 1);
            let chart = Chart::Bars(BarChart {
                title: format!("Swing of {name}"),
                x_label: format!(
                    "change from the base value {:.4}",
                    rows.first().map_or(f64::NAN, |r| r.base)
                ),
                x_unit: Unit::Plain,
                categories: rows.iter().map(|r| study.names[r.factor].clone()).collect(),
                groups: vec![
                    (
                        "factor at its low end".into(),
                        rows.iter().map(|r| r.at.0 - r.base).collect(),
                    ),
                    (
                        "factor at its high end".into(),
                        rows.iter().map(|r| r.at.1 - r.base).collect(),
                    ),
                ],
                ..Default::default()
            });
            crate::charts::save(&chart, tmp, &stem)?;
            figures.push((stem, name.clone()));
        }
        batch::write_plan(study, tmp)?;
        let mut columns = vec![
            Series::from_vec(
                "evaluation".into(),
                (0..study.points.len() as u32).collect::<Vec<_>>(),
            )
            .into_column(),
        ];
        for (f, name) in study.names.iter().enumerate() {
            let v: Vec<f64> = study.points.iter().map(|p| p[f]).collect();
            columns.push(Series::from_vec(name.as_str().into(), v).into_column());
        }
        for (o, name) in names.iter().enumerate() {
            let v: Vec<Option<f64>> = outputs
                .iter()
                .map(|r| Some(r[o]).filter(|x| x.is_finite()))
                .collect();
            columns.push(Column::new(name.as_str().into(), v));
        }
        let path = tmp.join("evaluations.parquet");
        let mut df = DataFrame::new(study.points.len(), columns).map_err(table_error(&path))?;
        write_csv(&tmp.join("evaluations.csv"), &mut df)?;
        let stamp = Stamp {
            data: String::new(),
            scenario: String::new(),
            part: "all".into(),
        };
        write_parquet(&path, &mut df, STUDY_SCHEMA_VERSION, &stamp)?;
        let path = tmp.join("summary.csv");
        let mut summary = summary_frame(&names, outputs).map_err(table_error(&path))?;
        write_csv(&path, &mut summary)?;
        let path = tmp.join("indices.csv");
        let mut e = df!(
            "output" => effects.iter().map(|e| e.output.as_str()).collect::<Vec<_>>(),
            "factor" => effects.iter().map(|e| e.factor.as_str()).collect::<Vec<_>>(),
            "measure" => effects.iter().map(|e| e.measure).collect::<Vec<_>>(),
            "value" => effects.iter().map(|e| Some(e.value).filter(|v| v.is_finite())).collect::<Vec<_>>(),
            "lo" => effects.iter().map(|e| Some(e.lo).filter(|v| v.is_finite())).collect::<Vec<_>>(),
            "hi" => effects.iter().map(|e| Some(e.hi).filter(|v| v.is_finite())).collect::<Vec<_>>(),
        )
        .map_err(table_error(&path))?;
        write_csv(&path, &mut e)?;
        let mut blocks = report(study, &names, outputs, &effects);
        blocks.extend(index_and_scatter_charts(
            study, &names, outputs, &effects, tmp,
        )?);
        if !figures.is_empty() {
            blocks.push(Block::Heading(2, "One at a time".into()));
            blocks.push(Block::Para("Each chart moves one factor to the low and then the high end of its range, the others at the base scenario's values, and shows how far the output moves (tornado.csv). It shows each factor's reach alone, not its interactions.".into()));
            for (stem, name) in figures {
                blocks.push(Block::Image(
                    format!("{stem}.png"),
                    format!("Tornado: {name}, factors by swing, largest first."),
                ));
            }
        }
        write_text(&tmp.join("report.md"), &markdown(&blocks))?;
        write_text(&tmp.join("report.html"), &html(&blocks, tmp)?)
    })
}

/// The factors scatter plots show per output: its strongest, by the first measure of
/// [`effects`], the dummy left out.
const SCATTER_FACTORS: usize = 3;

/// Index charts (`indices_<k>.png`: each factor's index of output k, strongest first, with 95%
/// intervals where the design gives them) and scatter plots (`scatter_<k>.png`: output k
/// against each of its strongest factors over the evaluations), and the report's blocks that
/// show them. Outputs that do not move get neither.
fn index_and_scatter_charts(
    study: &Study,
    names: &[String],
    outputs: &[Vec<f64>],
    effects: &[Effect],
    dir: &Path,
) -> Result<Vec<Block>> {
    let mut indices = Vec::new();
    let mut scatters = Vec::new();
    for (o, name) in names.iter().enumerate() {
        let y: Vec<f64> = outputs.iter().map(|r| r[o]).collect();
        let finite: Vec<f64> = y.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.windows(2).all(|w| w[0] == w[1]) {
            continue;
        }
        let rows: Vec<&Effect> = effects.iter().filter(|e| &e.output == name).collect();
        let mut factors: Vec<&str> = Vec::new();
        for e in &rows {
            if !factors.contains(&e.factor.as_str()) {
                factors.push(&e.factor);
            }
        }
        let measures: Vec<&str> = match study.plan.design {
            Design::Morris => vec!["mu_star"],
            Design::Sobol => vec!["ST", "S1"],
            Design::Lhs => vec!["spearman_rho"],
            Design::Grid => vec!["main_effect_swing"],
        };
        let find = |f: &str, m: &str| rows.iter().find(|e| e.factor == f && e.measure == m);
        let label = |m: &str| match m {
            "mu_star" => "Morris mu* (output units over the factor's range)",
            "ST" => "Sobol total index ST",
            "S1" => "Sobol first-order index S1",
            "spearman_rho" => "Spearman's rho",
            _ => "main-effect swing (output units)",
        };
        let stem = format!("indices_{}", o + 1);
        let chart = Chart::Bars(BarChart {
            title: format!("Which factors drive {name}"),
            // Sobol charts show two indices, both shares of the output's variance.
            x_label: match study.plan.design {
                Design::Sobol => "Sobol index (share of the output's variance)".into(),
                _ => label(measures[0]).into(),
            },
            x_unit: Unit::Plain,
            categories: factors.iter().map(|f| f.to_string()).collect(),
            groups: measures
                .iter()
                .map(|m| {
                    (
                        label(m).to_string(),
                        factors
                            .iter()
                            .map(|f| find(f, m).map_or(f64::NAN, |e| e.value))
                            .collect(),
                    )
                })
                .collect(),
            intervals: measures
                .iter()
                .map(|m| {
                    factors
                        .iter()
                        .map(|f| find(f, m).map_or((f64::NAN, f64::NAN), |e| (e.lo, e.hi)))
                        .collect()
                })
                .collect(),
        });
        crate::charts::save(&chart, dir, &stem)?;
        indices.push((stem, name.clone()));
        let top: Vec<usize> = factors
            .iter()
            .filter(|f| **f != DUMMY)
            .take(SCATTER_FACTORS)
            .filter_map(|f| study.names.iter().position(|n| n == f))
            .collect();
        let stem = format!("scatter_{}", o + 1);
        let panels: Vec<LineChart> = top
            .iter()
            .map(|&f| LineChart {
                title: format!("{name} against {}", study.names[f]),
                x_label: study.names[f].clone(),
                y_label: name.clone(),
                lines: vec![Line {
                    label: format!("one evaluation ({} in all)", study.points.len()),
                    points: study
                        .points
                        .iter()
                        .zip(&y)
                        .filter(|(_, v)| v.is_finite())
                        .map(|(p, v)| (p[f], *v, None))
                        .collect(),
                    style: Style::default(),
                }],
                scatter: true,
                ..Default::default()
            })
            .collect();
        crate::charts::save(&Chart::Panels(panels), dir, &stem)?;
        scatters.push((stem, name.clone(), top.len()));
    }
    let mut blocks = Vec::new();
    if !indices.is_empty() {
        blocks.push(Block::Heading(2, "Indices".into()));
        blocks.push(Block::Para(match study.plan.design {
            Design::Morris => "Each chart ranks the factors by Morris mu*, the mean absolute change of the output when the factor alone moves over its whole range along a path, with its 95% bootstrap interval. A factor below the dummy's bar is not told apart from none.",
            Design::Sobol => "Each chart shows the factors' total (ST) and first-order (S1) Sobol indices, shares of the output's variance over the ranges, with 95% bootstrap intervals. ST includes the factor's interactions; ST well above S1 means the factor matters through others.",
            Design::Lhs => "Each chart shows Spearman's rank correlation of the output with each factor over the Latin hypercube. The dummy's shows how large a correlation chance alone makes.",
            Design::Grid => "Each chart shows each factor's main-effect swing: the largest less the smallest mean of the output over the factor's levels.",
        }.into()));
        for (stem, name) in indices {
            blocks.push(Block::Image(
                format!("{stem}.png"),
                format!("Indices: {name}, factors strongest first."),
            ));
        }
        blocks.push(Block::Heading(2, "Scatter plots".into()));
        blocks.push(Block::Para(format!("Each output against its strongest factors (up to {SCATTER_FACTORS}), one dot per evaluation, the other factors varying too: the spread at a given value is what the other factors do.")));
        for (stem, name, n) in scatters {
            blocks.push(Block::Image(
                format!("{stem}.png"),
                format!("Scatter: {name} against its {n} strongest factors."),
            ));
        }
    }
    Ok(blocks)
}

/// One factor's swing of one output between its low and high end, the others at base.
struct Swing {
    output: usize,
    factor: usize,
    /// The factor's low and high value.
    values: (f64, f64),
    /// The output at the base point.
    base: f64,
    /// The output with the factor at its low and at its high end.
    at: (f64, f64),
}

/// The tornado rows from [`Study::tornado_points`]'s outputs, per output largest swing first.
fn tornado_rows(study: &Study, tornado: &[Vec<f64>]) -> Vec<Swing> {
    let points = study.tornado_points();
    let mut out = Vec::new();
    let Some(base) = tornado.first() else {
        return out;
    };
    for o in 0..study.plan.output.len() {
        let mut rows: Vec<Swing> = points
            .iter()
            .zip(tornado)
            .skip(1)
            .collect::<Vec<_>>()
            .chunks(2)
            .filter_map(|pair| {
                let [(low_point, low), (high_point, high)] = pair else {
                    return None;
                };
                let f = low_point.0?;
                Some(Swing {
                    output: o,
                    factor: f,
                    values: (low_point.1[f], high_point.1[f]),
                    base: base[o],
                    at: (low[o], high[o]),
                })
            })
            .collect();
        rows.sort_by(|a, b| (b.at.1 - b.at.0).abs().total_cmp(&(a.at.1 - a.at.0).abs()));
        out.extend(rows);
    }
    out
}

/// Per output: evaluations, mean, sd, min, 2.5%, 50%, 97.5%, max.
fn summary_frame(names: &[String], outputs: &[Vec<f64>]) -> PolarsResult<DataFrame> {
    let col = |o: usize| -> Vec<f64> {
        outputs
            .iter()
            .map(|r| r[o])
            .filter(|x| x.is_finite())
            .collect()
    };
    let stat = |f: &dyn Fn(&[f64]) -> f64| -> Vec<Option<f64>> {
        (0..names.len())
            .map(|o| Some(f(&col(o))).filter(|v| v.is_finite()))
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    df!(
        "output" => names.iter().map(String::as_str).collect::<Vec<_>>(),
        "evaluations" => (0..names.len()).map(|o| col(o).len() as u32).collect::<Vec<_>>(),
        "mean" => stat(&mean),
        "sd" => stat(&sd),
        "min" => stat(&|v| quantile(v, 0.0)),
        "p2_5" => stat(&|v| quantile(v, 0.025)),
        "p50" => stat(&|v| quantile(v, 0.5)),
        "p97_5" => stat(&|v| quantile(v, 0.975)),
        "max" => stat(&|v| quantile(v, 1.0)),
    )
}

fn report(study: &Study, names: &[String], outputs: &[Vec<f64>], effects: &[Effect]) -> Vec<Block> {
    let p = &study.plan;
    let mut b = vec![
        Block::Heading(1, format!("adsim study: {}", p.name)),
        Block::Para(p.description.clone()),
        Block::Para(format!(
            "Base scenario {} at {} users x {} replication{} per evaluation, seed {} in every evaluation (common random numbers). Design: {}, {} evaluations, {} factors{}.",
            study.source,
            p.users,
            p.replications,
            if p.replications == 1 { "" } else { "s" },
            study.base.population.seed,
            match p.design {
                Design::Grid => "full factorial grid",
                Design::Lhs => "Latin hypercube",
                Design::Morris => "Morris elementary effects",
                Design::Sobol => "Saltelli sampling for Sobol indices",
            },
            study.points.len(),
            p.factor.len(),
            if p.design == Design::Grid {
                ""
            } else {
                " and a dummy factor that changes nothing (its measure is the floor a factor must clear)"
            }
        )),
        Block::Heading(2, "Factors".into()),
        Block::Table(
            ["factor", "what it sets", "values", "spread", "range"]
                .map(String::from)
                .to_vec(),
            p.factor
                .iter()
                .map(|f| {
                    let found = lookup(&f.key);
                    vec![
                        f.key.clone(),
                        match found.map(|x| x.1) {
                            Some(KeyKind::Column) => "every row's value x the factor".into(),
                            Some(KeyKind::Row) => "one row's value".into(),
                            _ => "the key".into(),
                        },
                        match &f.levels {
                            Some(l) => format!("{l:?}"),
                            None => format!(
                                "{} to {}",
                                f.low.unwrap_or(f64::NAN),
                                f.high.unwrap_or(f64::NAN)
                            ),
                        },
                        match (p.design, f.spread) {
                            (Design::Grid, _) => "levels".into(),
                            (_, Some(Spread::Loguniform)) => "log-uniform".into(),
                            _ => "uniform".into(),
                        },
                        range_kind(f).into(),
                    ]
                })
                .collect(),
        ),
    ];
    let generic: Vec<&str> = p
        .factor
        .iter()
        .filter(|f| range_kind(f) == "generic")
        .map(|f| f.key.as_str())
        .collect();
    b.push(Block::Para(format!(
        "Ranges: \"reasoned\" ranges have reasoning or a source of their own in the parameter registry (`adsim parameters --assumptions`, docs/model.md); \"generic\" ones are a plus or minus x% with none: {} of the {} factors{}; \"plan\" ranges are the plan's own.",
        generic.len(),
        p.factor.len(),
        if generic.is_empty() {
            String::new()
        } else {
            format!(" ({})", generic.join(", "))
        }
    )));
    b.push(Block::Heading(2, "Outputs".into()));
    // One format per row, by its largest magnitude.
    let fmt = |v: f64, top: f64| -> String {
        if !v.is_finite() {
            "-".into()
        } else if top >= 1e6 {
            format!("{:.2}M", v / 1e6)
        } else if top >= 100.0 {
            format!("{v:.1}")
        } else if top >= 1.0 {
            format!("{v:.3}")
        } else {
            format!("{v:.4}")
        }
    };
    b.push(Block::Table(
        ["output", "median", "2.5%", "97.5%", "min", "max"]
            .map(String::from)
            .to_vec(),
        names
            .iter()
            .enumerate()
            .map(|(o, n)| {
                let v: Vec<f64> = outputs.iter().map(|r| r[o]).collect();
                let top = quantile(&v, 0.0).abs().max(quantile(&v, 1.0).abs());
                let mut row = vec![n.clone()];
                for q in [0.5, 0.025, 0.975, 0.0, 1.0] {
                    row.push(fmt(quantile(&v, q), top));
                }
                row
            })
            .collect(),
    ));
    b.push(Block::Para(match p.design {
        Design::Lhs => "Under a Latin hypercube over plausible ranges, the 2.5% and 97.5% columns are the parameter-uncertainty interval of each figure: the spread its assumptions allow, beside the Monte Carlo interval of a run.".into(),
        Design::Grid | Design::Morris => "Over a grid or Morris trajectories, the spread is that of the design's points, not an uncertainty interval.".into(),
        Design::Sobol => "Over Saltelli's design the points are uniform in the ranges, so the 2.5% and 97.5% columns are also a parameter-uncertainty interval.".into(),
    }));
    b.push(Block::Heading(2, "What drives each figure".into()));
    let mut lines = Vec::new();
    for n in names {
        // Each factor's main measure (its first row).
        let mut seen: Vec<&str> = Vec::new();
        let these: Vec<&Effect> = effects
            .iter()
            .filter(|e| &e.output == n)
            .filter(|e| {
                let first = !seen.contains(&e.factor.as_str());
                seen.push(&e.factor);
                first
            })
            .collect();
        // A factor is named when its measure clears the dummy's (its upper bound, where it
        // has one); under lhs also 2 / sqrt(n), about a correlation's 95% band under no
        // association.
        let dummy = these.iter().find(|e| e.factor == DUMMY).map_or(0.0, |e| {
            if e.hi.is_finite() {
                e.hi.abs().max(e.value.abs())
            } else {
                e.value.abs()
            }
        });
        let floor = match p.design {
            Design::Lhs => dummy.max(2.0 / (outputs.len() as f64).sqrt()),
            Design::Grid => 0.0,
            Design::Morris | Design::Sobol => dummy,
        };
        let top: Vec<String> = these
            .iter()
            .filter(|e| e.factor != DUMMY && e.value.is_finite() && e.value.abs() > floor)
            .take(3)
            .map(|e| match e.measure {
                "spearman_rho" | "mu" => format!("`{}` ({} {:+.3})", e.factor, e.measure, e.value),
                _ => format!("`{}` ({} {:.3})", e.factor, e.measure, e.value),
            })
            .collect();
        let y: Vec<f64> = outputs
            .iter()
            .map(|r| r[names.iter().position(|x| x == n).unwrap_or(0)])
            .collect();
        let constant = quantile(&y, 0.0) == quantile(&y, 1.0);
        lines.push(if constant {
            format!("`{n}` does not vary over the design: none of these factors moves it.")
        } else if top.is_empty() {
            format!("`{n}`: no factor stands out.")
        } else if p.design == Design::Lhs {
            format!(
                "`{n}` moves most with {} (shown: |rho| above {floor:.3}, the larger of the dummy's {dummy:.3} and 2/sqrt(evaluations)).",
                top.join(", ")
            )
        } else {
            format!("`{n}` moves most with {}.", top.join(", "))
        });
    }
    for l in lines {
        b.push(Block::Para(l));
    }
    b.push(Block::Para(
        "Every factor's effect on every output is in indices.csv, every evaluation in evaluations.csv. Every evaluation draws from the scenario's seed, and a factor changes only the draws it governs (docs/model.md §2.1, §16.3): differences between evaluations are the factors' effects, and the dummy's measure is the floor.".into(),
    ));
    b
}

/// A study's result as a run reads it (`adsim run --study DIR`, docs/model.md §16.6): its plan
/// and each output's spread over the design.
#[derive(Clone, Debug)]
pub struct StudyResult {
    /// The study folder.
    pub dir: std::path::PathBuf,
    /// Its plan (resolved).
    pub plan: Plan,
    /// Per output: metric, arm, rate, evaluations, 2.5%, median, 97.5%.
    pub rows: Vec<(String, String, f64, u32, f64, f64, f64)>,
}

impl StudyResult {
    /// Reads `dir/plan.toml` and `dir/summary.csv`; errors name the file.
    pub fn read(dir: &Path) -> Result<StudyResult> {
        let plan_path = dir.join("plan.toml");
        let text = std::fs::read_to_string(&plan_path).map_err(|e| Error::io(&plan_path, e))?;
        let plan = Plan::parse(&text, &plan_path.display().to_string())?;
        let path = dir.join("summary.csv");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let file = path.display().to_string();
        let mut lines = text.lines();
        let header = "output,evaluations,mean,sd,min,p2_5,p50,p97_5,max";
        ensure!(
            lines.next() == Some(header),
            &file,
            "header",
            text.lines().next().unwrap_or(""),
            format!("a study's summary.csv ({header})")
        );
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            let key: Vec<&str> = cells[0].split('@').collect();
            let num = |j: usize| -> f64 {
                cells
                    .get(j)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            let rate = key.get(2).and_then(|r| r.parse::<f64>().ok());
            let (Some(rate), true) = (rate, cells.len() == 9 && key.len() == 3) else {
                return Err(Error::invalid(
                    &file,
                    format!("row {}", i + 2),
                    line,
                    "an output `metric@arm@rate` and eight numbers",
                ));
            };
            rows.push((
                key[0].to_string(),
                key[1].to_string(),
                rate,
                num(1) as u32,
                num(5),
                num(6),
                num(7),
            ));
        }
        Ok(StudyResult {
            dir: dir.to_path_buf(),
            plan,
            rows,
        })
    }

    /// The report's "Parameter uncertainty" section: each output of the study beside the
    /// run's value and Monte Carlo interval at the same arm and nearest rate.
    pub fn blocks(&self, summary: &DataFrame) -> Vec<Block> {
        let p = &self.plan;
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(metric, arm, rate, n, lo, mid, hi)| {
                // One format per row, by the study's largest magnitude: millions, or decimals.
                let top = lo.abs().max(hi.abs()).max(mid.abs());
                let (scale, digits, unit) = if top >= 1e6 {
                    (1e-6, 2, "M")
                } else if top >= 100.0 {
                    (1.0, 1, "")
                } else if top >= 1.0 {
                    (1.0, 3, "")
                } else {
                    (1.0, 4, "")
                };
                let f = |v: f64| format!("{:.*}{unit}", digits, v * scale);
                let run = level_near(summary, arm, *rate)
                    .and_then(|(_, rows)| rows.first().copied())
                    .map_or("-".into(), |j| {
                        format!(
                            "{}{unit}",
                            crate::table::with_ci(summary, metric, j, scale, digits)
                        )
                    });
                vec![
                    format!("`{metric}`, {arm} at {rate}"),
                    run,
                    f(*mid),
                    format!("[{}, {}]", f(*lo), f(*hi)),
                    n.to_string(),
                ]
            })
            .collect();
        let kind = match p.design {
            Design::Lhs | Design::Sobol => {
                "its 2.5% and 97.5% percentiles are the parameter-uncertainty interval"
            }
            Design::Grid | Design::Morris => {
                "its design is not uniform over the ranges, so its percentiles are a spread, not an uncertainty interval"
            }
        };
        vec![
            Block::Heading(2, "Parameter uncertainty".into()),
            Block::Para(format!(
                "From the study `{}` ({}; base scenario {}, {} users x {} replication(s) per evaluation): {kind}. This run's brackets cover Monte Carlo noise only. The study's figures come from its own size and base scenario; where those differ from this run's, compare widths, not levels.",
                p.name,
                self.dir.display(),
                p.scenario,
                p.users,
                p.replications
            )),
            Block::Table(
                [
                    "output",
                    "this run (Monte Carlo 95%)",
                    "study median",
                    "study 2.5% to 97.5%",
                    "evaluations",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(key: &str, low: f64, high: f64, spread: Option<Spread>) -> Factor {
        Factor {
            key: key.into(),
            low: Some(low),
            high: Some(high),
            levels: None,
            points: None,
            spread,
        }
    }

    #[test]
    fn a_standard_deviation_needs_two_finite_values() {
        assert!(sd(&[]).is_nan(), "no value: undefined, not 0");
        assert!(sd(&[f64::NAN, 2.0, f64::INFINITY]).is_nan());
        assert_eq!(sd(&[1.0, f64::NAN, 3.0]), 2f64.sqrt());
        // A summary of an output no evaluation defined leaves its sd empty, like its mean.
        let frame = summary_frame(&["x".into()], &[vec![f64::NAN], vec![f64::NAN]]).unwrap();
        assert_eq!(frame.column("sd").unwrap().null_count(), 1);
    }

    /// Golden: a design's points, pinned, so a new rand (whose Xoshiro256++ seeding and
    /// uniform floats are not promised value-stable) cannot move a study's design unseen.
    #[test]
    fn golden_designs_do_not_move() {
        let lhs = latin_hypercube(2, 3, 7);
        let morris = morris_design(2, 1, 4, 7);
        let got = format!("{lhs:.12?} {morris:.12?}");
        assert_eq!(
            got,
            "[[0.572525376120, 0.109946476518], [0.809069939764, 0.994107550404], \
             [0.321219840627, 0.357761263681]] [[0.000000000000, 0.000000000000], \
             [0.666666666667, 0.000000000000], [0.666666666667, 0.666666666667]]"
        );
    }

    #[test]
    fn a_latin_hypercube_uses_each_stratum_of_each_factor_once() {
        let n = 50;
        let points = latin_hypercube(3, n, 7);
        assert_eq!(points.len(), n);
        for j in 0..3 {
            let mut seen = vec![0; n];
            for p in &points {
                seen[((p[j] * n as f64) as usize).min(n - 1)] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "factor {j}: {seen:?}");
        }
        // The same seed, the same design; another seed, another.
        assert_eq!(latin_hypercube(3, n, 7), points);
        assert_ne!(latin_hypercube(3, n, 8), points);
        // Mapped to a range evenly, or evenly in the logarithm.
        let f = factor("a", 10.0, 20.0, None);
        assert_eq!(f.at(0.25), 12.5);
        let g = factor("b", 0.001, 1.0, Some(Spread::Loguniform));
        assert!((g.at(0.5) - 0.001f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn morris_finds_a_linear_functions_coefficients_times_ranges() {
        // f = 3 x0 - 2 x1 + 0 x2 on [0, 1]^3 (unit ranges): mu* = |coefficient|, sigma = 0,
        // whatever the trajectories. Consecutive points differ in exactly one factor.
        let (k, r) = (3, 12);
        let units = morris_design(k, r, 4, 5);
        assert_eq!(units.len(), r * (k + 1));
        for t in 0..r {
            for s in 0..k {
                let (a, b) = (&units[t * (k + 1) + s], &units[t * (k + 1) + s + 1]);
                let moved: Vec<usize> = (0..k).filter(|&i| a[i] != b[i]).collect();
                assert_eq!(moved.len(), 1);
                assert!(((a[moved[0]] - b[moved[0]]).abs() - 2.0 / 3.0).abs() < 1e-12);
            }
        }
        assert!(units.iter().flatten().all(|&u| (0.0..=1.0).contains(&u)));
        let y: Vec<f64> = units.iter().map(|x| 3.0 * x[0] - 2.0 * x[1]).collect();
        let m = morris_indices(&units, &y, k, 100, 1);
        for (i, c) in [3.0, -2.0, 0.0].into_iter().enumerate() {
            assert!((m[i].mu_star - f64::abs(c)).abs() < 1e-9, "{i}: {:?}", m[i]);
            assert!((m[i].mu - c).abs() < 1e-9);
            assert!(m[i].sigma.abs() < 1e-9);
        }
        // A factor's range scales its mu*: x0 over [0, 10] is the unit value times 10.
        let y10: Vec<f64> = units.iter().map(|x| 3.0 * (10.0 * x[0])).collect();
        assert!((morris_indices(&units, &y10, k, 10, 1)[0].mu_star - 30.0).abs() < 1e-9);
    }

    #[test]
    fn sobol_indices_of_the_ishigami_function_are_the_known_ones() {
        // Ishigami (a = 7, b = 0.1) on [-pi, pi]^3: S1 = 0.314, 0.442, 0; ST = 0.558, 0.442,
        // 0.244 (Ishigami & Homma 1990; the values SALib's tests use).
        let (k, n) = (3, 4096);
        let units = saltelli_design(k, n, 3);
        assert_eq!(units.len(), n * (k + 2));
        let pi = std::f64::consts::PI;
        let y: Vec<f64> = units
            .iter()
            .map(|u| {
                let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
            })
            .collect();
        let s = sobol_indices(&y, k, n, 200, 1);
        for (i, (s1, st)) in [(0.314, 0.558), (0.442, 0.442), (0.0, 0.244)]
            .into_iter()
            .enumerate()
        {
            assert!((s[i].s1 - s1).abs() < 0.03, "S1 {i}: {:?}", s[i]);
            assert!((s[i].st - st).abs() < 0.03, "ST {i}: {:?}", s[i]);
            assert!(s[i].st_ci.0 < s[i].st && s[i].st < s[i].st_ci.1);
        }
        // A factor the function ignores has indices of exactly zero.
        let z: Vec<f64> = units.iter().map(|u| u[0] * u[0]).collect();
        let s = sobol_indices(&z, k, n, 50, 1);
        assert_eq!((s[1].s1, s[1].st), (0.0, 0.0));
        assert!((s[0].st - 1.0).abs() < 0.02, "{:?}", s[0]);
    }

    #[test]
    fn centred_first_order_intervals_have_the_analytic_width_whatever_the_outputs_mean() {
        // Ishigami plus 100: the indices do not change with a constant. The S1 estimator is a
        // mean of m terms (f(B) - c)(f(AB_i) - f(A)) / V, so its standard error is their
        // sd / sqrt(m) / V; the bootstrap's (half-width / 1.96) must lie within 1.5x of it.
        // Uncentred, the terms would carry 100 (f(AB_i) - f(A)) / V and the intervals would be
        // tens of times wider than the estimator's error (SALib centres for this reason).
        let (k, n) = (3, 2048);
        let pi = std::f64::consts::PI;
        let units = saltelli_design(k, n, 7);
        let ishigami = |shift: f64| -> Vec<f64> {
            units
                .iter()
                .map(|u| {
                    let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                    shift + x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
                })
                .collect()
        };
        let (y, plain) = (ishigami(100.0), ishigami(0.0));
        let (s, s0) = (
            sobol_indices(&y, k, n, 400, 7),
            sobol_indices(&plain, k, n, 400, 7),
        );
        let block = k + 2;
        let (fa, fb) = (|j: usize| y[j * block], |j: usize| y[j * block + k + 1]);
        let both: Vec<f64> = (0..n).flat_map(|j| [fa(j), fb(j)]).collect();
        let c = both.iter().sum::<f64>() / both.len() as f64;
        let v = both.iter().map(|x| (x - c) * (x - c)).sum::<f64>() / both.len() as f64;
        for (i, index) in s.iter().enumerate() {
            assert!(
                (index.s1 - s0[i].s1).abs() < 1e-6,
                "S1 {i} moved with the shift"
            );
            let terms: Vec<f64> = (0..n)
                .map(|j| (fb(j) - c) * (y[j * block + 1 + i] - fa(j)) / v)
                .collect();
            let analytic = sd(&terms) / (n as f64).sqrt();
            let boot = (index.s1_ci.1 - index.s1_ci.0) / 2.0 / 1.96;
            assert!(
                boot < 1.5 * analytic && analytic < 1.5 * boot,
                "S1 {i}: bootstrap se {boot}, analytic {analytic}"
            );
        }
    }

    #[test]
    fn sobol_estimates_of_ishigami_hold_for_twenty_seeds_and_their_intervals_cover() {
        // At 2048 base points, for each of 20 scramblings of the sequence: every index within
        // 0.05 of the known value, and the known value inside most 95% bootstrap intervals.
        let (k, n) = (3, 2048);
        let pi = std::f64::consts::PI;
        let truth = [(0.314, 0.558), (0.442, 0.442), (0.0, 0.244)];
        let (mut covered, mut intervals) = (0, 0);
        for seed in 1..=20u32 {
            let units = saltelli_design(k, n, seed);
            let y: Vec<f64> = units
                .iter()
                .map(|u| {
                    let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                    x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
                })
                .collect();
            let s = sobol_indices(&y, k, n, 200, u64::from(seed));
            for (i, (s1, st)) in truth.into_iter().enumerate() {
                assert!(
                    (s[i].s1 - s1).abs() < 0.05,
                    "seed {seed}, S1 {i}: {:?}",
                    s[i]
                );
                assert!(
                    (s[i].st - st).abs() < 0.05,
                    "seed {seed}, ST {i}: {:?}",
                    s[i]
                );
                for (value, (lo, hi)) in [(s1, s[i].s1_ci), (st, s[i].st_ci)] {
                    intervals += 1;
                    covered += usize::from(lo <= value && value <= hi);
                }
            }
        }
        assert!(
            covered * 10 >= intervals * 8,
            "{covered} of {intervals} intervals cover the known value"
        );
    }

    #[test]
    fn a_grid_is_every_combination_first_factor_slowest() {
        let g = cartesian(&[vec![1.0, 2.0], vec![10.0, 20.0, 30.0]]);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![1.0, 10.0]);
        assert_eq!(g[2], vec![1.0, 30.0]);
        assert_eq!(g[3], vec![2.0, 10.0]);
        let mut f = factor("a", 0.0, 1.0, None);
        f.points = Some(5);
        assert_eq!(grid_levels(&f), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn rank_correlation_and_quantiles_match_hand_figures() {
        // Monotone: rho = 1 whatever the shape; reversed: -1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&x, &[1.0, 4.0, 9.0, 16.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ranks of y = [2, 1, 4, 3, 5]: d = [1, 1, 1, 1, 0], rho = 1 - 6 * 4 / (5 * 24) = 0.8.
        assert!((spearman(&x, &[2.0, 1.0, 4.0, 3.0, 5.0]) - 0.8).abs() < 1e-12);
        // Ties share their mean rank.
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
        // numpy.quantile([1, 2, 3, 4], 0.25) = 1.75; NaN is ignored.
        assert!((quantile(&[4.0, 1.0, f64::NAN, 3.0, 2.0], 0.25) - 1.75).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan());
        assert!((swing(&[0.0, 0.0, 1.0, 1.0], &[1.0, 3.0, 10.0, 12.0]) - 9.0).abs() < 1e-12);
    }
}
