//! The parameter registry (`data/parameters.toml`): every scenario key and every reference-data
//! column, once, with its type, legal range, unit, default, source (or "assumption") and, for
//! assumptions, a plausible range with its reasoning (docs/model.md §14).
//!
//! It is the one table the rest reads: `adsim parameters` prints it, the README's key table and
//! docs/model.md follow it, the tests check that validation refuses exactly the values outside
//! each legal range and that every default lies inside it, and studies draw assumptions from
//! the plausible ranges.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The registry as shipped, compiled into the binary.
pub const TEXT: &str = include_str!("../data/parameters.toml");

/// One parameter: a scenario key or a reference-data column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// The key in a scenario file (`policy.window_days`, `policy.arms[].kind`), or the column
    /// of a reference table (`countries.recycled_rate`).
    pub path: String,
    /// For a reference-data column: what a row is (`country`, `segment`, `age_band`,
    /// `arpu_region`).
    pub per_row: Option<String>,
    /// For a reference-data column: the key inside its data file, as errors name it.
    pub file_key: Option<String>,
    /// For a column a scenario can override field by field: the scenario key, with `<CODE>`
    /// or `<NAME>` for the row.
    pub override_path: Option<String>,
    /// `integer`, `float`, `bool`, `string`, `enum`, `list<float>`, `list<string>`, `path` or
    /// `table`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Legal range, `[low, high]` (1e308 for no bound).
    pub legal: Option<[f64; 2]>,
    /// The low bound itself is refused.
    #[serde(default)]
    pub low_exclusive: bool,
    /// A key whose value is the real bound where `legal` gives the widest one.
    pub bound_from: Option<String>,
    /// The accepted spellings of an enum.
    pub values: Option<Vec<String>>,
    /// Everything else validation enforces.
    pub legal_note: Option<String>,
    /// Whether the code checks the value beyond its type.
    pub validated: Option<bool>,
    /// Unit of the value.
    pub unit: Option<String>,
    /// The default value.
    pub default: Option<toml::Value>,
    /// Where there is no single default (per-row data, optional keys).
    pub default_note: Option<String>,
    /// Published source, "assumption", "run setting" or "scenario design".
    pub source: String,
    /// What the parameter is, one sentence.
    pub doc: String,
    /// When the value is read at all.
    pub used_when: Option<String>,
    /// A problem with the parameter found when it was registered.
    pub finding: Option<String>,
    /// Plausible range of an assumption (for a per-row column: of a common multiplier or
    /// shift).
    pub plausible: Option<[f64; 2]>,
    /// For a per-row column: `multiplier` or `shift`.
    pub plausible_mode: Option<String>,
    /// What the common multiplier acts on where a plain one is meaningless.
    pub plausible_applies_to: Option<String>,
    /// `uniform`, `loguniform` or `triangular`.
    pub distribution: Option<String>,
    /// `reasoned` or `generic` (a plus or minus x% with no reasoning of its own).
    pub plausible_kind: Option<String>,
    /// Why the plausible range is what it is.
    pub plausible_reason: Option<String>,
}

impl Parameter {
    /// Whether the parameter is an assumption (its source says so).
    pub fn is_assumption(&self) -> bool {
        self.source.to_lowercase().contains("assumption")
    }

    /// Whether it is a column of a reference table rather than a scenario key.
    pub fn is_data_column(&self) -> bool {
        self.per_row.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    parameter: Vec<Parameter>,
}

/// The registry as a table, one row per parameter in the registry's order: `path`, `per_row`,
/// `type`, `unit`, `default` (as TOML), `legal_low`, `legal_high`, `plausible_low`,
/// `plausible_high`, `distribution`, `assumption`, `source` and `doc` (the Python package's
/// `parameters()`).
pub fn frame() -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let all = parameters();
    let text = |f: &dyn Fn(&Parameter) -> Option<String>| all.iter().map(f).collect::<Vec<_>>();
    let bound = |f: &dyn Fn(&Parameter) -> Option<f64>| {
        all.iter()
            .map(|p| f(p).filter(|x| x.abs() < 1e300))
            .collect::<Vec<_>>()
    };
    df!(
        "path" => text(&|p| Some(p.path.clone())),
        "per_row" => text(&|p| p.per_row.clone()),
        "type" => text(&|p| Some(p.kind.clone())),
        "unit" => text(&|p| p.unit.clone()),
        "default" => text(&|p| p.default.as_ref().map(|v| v.to_string())),
        "legal_low" => bound(&|p| p.legal.map(|l| l[0])),
        "legal_high" => bound(&|p| p.legal.map(|l| l[1])),
        "plausible_low" => bound(&|p| p.plausible.map(|l| l[0])),
        "plausible_high" => bound(&|p| p.plausible.map(|l| l[1])),
        "distribution" => text(&|p| p.distribution.clone()),
        "assumption" => all.iter().map(Parameter::is_assumption).collect::<Vec<_>>(),
        "source" => text(&|p| Some(p.source.clone())),
        "doc" => text(&|p| Some(p.doc.clone())),
    )
}

/// Every parameter, in the registry's order. The registry is part of the program: a registry
/// that does not parse is a build defect, caught by the tests, and gives an empty list here.
pub fn parameters() -> &'static [Parameter] {
    static PARSED: OnceLock<Vec<Parameter>> = OnceLock::new();
    PARSED.get_or_init(|| {
        toml::from_str::<Registry>(TEXT)
            .map(|r| r.parameter)
            .unwrap_or_default()
    })
}

/// The parameter at `path`.
pub fn find(path: &str) -> Option<&'static Parameter> {
    parameters().iter().find(|p| p.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_parses_and_paths_are_unique() {
        let parsed: Registry = toml::from_str(TEXT).expect("data/parameters.toml parses");
        assert!(parsed.parameter.len() > 60);
        let mut paths: Vec<&str> = parsed.parameter.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        let n = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), n, "a path is registered twice");
    }

    #[test]
    fn every_assumption_has_a_plausible_range_holding_its_default() {
        for p in parameters().iter().filter(|p| p.is_assumption()) {
            let [lo, hi] = p
                .plausible
                .unwrap_or_else(|| panic!("{}: an assumption with no plausible range", p.path));
            assert!(lo < hi, "{}: plausible range {lo}..{hi}", p.path);
            assert!(
                p.plausible_reason.as_deref().is_some_and(|r| r.len() > 20),
                "{}: a plausible range needs its reasoning",
                p.path
            );
            assert!(
                matches!(p.plausible_kind.as_deref(), Some("reasoned" | "generic")),
                "{}: plausible_kind must say reasoned or generic",
                p.path
            );
            // A per-row column's range is of a common multiplier (default 1) or shift (0).
            let default = match p.plausible_mode.as_deref() {
                Some("multiplier") => Some(1.0),
                Some("shift") => Some(0.0),
                Some(other) => panic!("{}: unknown plausible_mode {other}", p.path),
                None => p
                    .default
                    .as_ref()
                    .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64))),
            };
            if let Some(d) = default {
                assert!(
                    lo <= d && d <= hi,
                    "{}: default {d} outside its plausible range {lo}..{hi}",
                    p.path
                );
                if let Some([llo, lhi]) = p.legal.filter(|_| p.plausible_mode.is_none()) {
                    assert!(
                        llo <= lo && hi <= lhi,
                        "{}: plausible {lo}..{hi} leaves the legal range {llo}..{lhi}",
                        p.path
                    );
                }
            }
        }
    }

    #[test]
    fn every_default_lies_in_its_legal_range() {
        for p in parameters() {
            let (Some([lo, hi]), Some(v)) = (p.legal, p.default.as_ref()) else {
                continue;
            };
            let values: Vec<f64> = match v {
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)))
                    .collect(),
                x => x
                    .as_float()
                    .or_else(|| x.as_integer().map(|i| i as f64))
                    .into_iter()
                    .collect(),
            };
            for x in values {
                assert!(
                    lo <= x && x <= hi && !(p.low_exclusive && x == lo),
                    "{}: default {x} outside {lo}..{hi}",
                    p.path
                );
            }
        }
    }
}
