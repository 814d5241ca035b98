//! Comparing results folders (`adsim compare`): their summaries set side by side in one long
//! table, and overlaid charts.

use std::path::PathBuf;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::folder::{check_schema, load_scenario, read_parquet};
use crate::policy::{ArmKind, Mode};
use crate::table::{floats, texts};

/// The metrics `adsim compare` sets side by side.
pub const COMPARED: &[&str] = &[
    "achieved_rate",
    "precision",
    "ctr",
    "ca_match_rate",
    "revenue_change_musd",
    "market_revenue_change_musd",
    "people_mislinked",
];

/// A comparison of results folders.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// One row per run, arm and level kept: `run`, `scenario`, `mode`, `arm`, `rate` and each
    /// metric of [`COMPARED`] with its bounds.
    pub table: DataFrame,
    /// The rate levels left out because not every rate-mode run has them, one line per run.
    pub left_out: Vec<String>,
    /// The scenario keys whose values differ between the runs: key and each run's value
    /// (`-` where a run's scenario does not have the key).
    pub differences: Vec<(String, Vec<String>)>,
}

/// A folder's name as a run label.
fn run_label(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Every leaf key of a scenario with its value as text (arms by name).
fn scenario_keys(toml_text: &str) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table) => {
                for (i, x) in a.iter().enumerate() {
                    let name = x.get("name").and_then(|n| n.as_str()).map(str::to_string);
                    walk(
                        &format!("{prefix}[{}]", name.unwrap_or(i.to_string())),
                        x,
                        out,
                    );
                }
            }
            toml::Value::String(text) => out.push((prefix.to_string(), text.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = toml::from_str::<toml::Value>(toml_text) {
        walk("", &v, &mut out);
    }
    out
}

/// Reads the summaries of several results folders into one long table. Runs of either mode
/// compare: every run's rows are kept, on the common rate levels of the rate-mode runs (the
/// other levels are listed in [`Comparison::left_out`]); a behavioral run's arms are single
/// points at their achieved rates. The scenario keys whose values differ are listed too.
pub fn compare(dirs: &[PathBuf]) -> Result<Comparison> {
    struct Run {
        label: String,
        scenario: String,
        mode: Mode,
        kinds: Vec<(String, ArmKind)>,
        summary: DataFrame,
        keys: Vec<(String, String)>,
    }
    let mut runs = Vec::new();
    for dir in dirs {
        let resolved = load_scenario(dir)?;
        let path = dir.join("summary.parquet");
        check_schema(
            &path,
            crate::metrics::SCHEMA_VERSION,
            &dir.join("scenario.toml"),
        )?;
        let s = &resolved.scenario;
        runs.push(Run {
            label: run_label(dir),
            scenario: s.name.clone(),
            mode: s.policy.mode,
            kinds: s
                .policy
                .arms
                .iter()
                .map(|a| (a.name.clone(), a.kind))
                .collect(),
            summary: read_parquet(&path)?,
            keys: scenario_keys(&s.to_toml()),
        });
    }
    if runs.is_empty() {
        return Err(Error::Argument {
            name: "compare".into(),
            value: "no folders".into(),
            expected: "at least one results folder".into(),
        });
    }
    let key = |r: f64| (r * 1e9).round() as i64;
    // The rate levels of each rate-mode run's sharing arms, and those every one has.
    let grid = |run: &Run| -> Vec<i64> {
        let (arms, rates) = (texts(&run.summary, "arm"), floats(&run.summary, "rate"));
        let mut g: Vec<i64> = arms
            .iter()
            .zip(&rates)
            .filter(|(a, _)| {
                run.kinds
                    .iter()
                    .any(|(n, k)| n == *a && *k != ArmKind::None)
            })
            .map(|(_, &r)| key(r))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    let rate_runs: Vec<&Run> = runs.iter().filter(|r| r.mode == Mode::Rate).collect();
    let common: Vec<i64> = rate_runs
        .iter()
        .map(|r| grid(r))
        .reduce(|a, b| a.into_iter().filter(|x| b.contains(x)).collect())
        .unwrap_or_default();
    let mut left_out = Vec::new();
    for run in &rate_runs {
        let dropped: Vec<String> = grid(run)
            .into_iter()
            .filter(|x| !common.contains(x))
            .map(|x| format!("{}", x as f64 / 1e9))
            .collect();
        if !dropped.is_empty() {
            left_out.push(format!(
                "{}: rates {} (not in every rate-mode run)",
                run.label,
                dropped.join(", ")
            ));
        }
    }
    let mut frames = Vec::new();
    for run in &runs {
        let (arms, rates) = (texts(&run.summary, "arm"), floats(&run.summary, "rate"));
        let none = |a: &str| run.kinds.iter().any(|(n, k)| n == a && *k == ArmKind::None);
        let keep: Vec<usize> = (0..run.summary.height())
            .filter(|&i| {
                run.mode == Mode::Behavioral || none(&arms[i]) || common.contains(&key(rates[i]))
            })
            .collect();
        let n = keep.len();
        let pick = |v: Vec<f64>| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let mode = match run.mode {
            Mode::Rate => "rate",
            Mode::Behavioral => "behavioral",
        };
        let mut cols = vec![
            StringChunked::from_iter_values(
                "run".into(),
                std::iter::repeat_n(run.label.as_str(), n),
            )
            .into_column(),
            StringChunked::from_iter_values(
                "scenario".into(),
                std::iter::repeat_n(run.scenario.as_str(), n),
            )
            .into_column(),
            StringChunked::from_iter_values("mode".into(), std::iter::repeat_n(mode, n))
                .into_column(),
            StringChunked::from_iter_values("arm".into(), keep.iter().map(|&i| arms[i].as_str()))
                .into_column(),
            Series::from_vec("rate".into(), pick(rates.clone())).into_column(),
        ];
        for m in COMPARED {
            for suffix in ["", "_lo", "_hi"] {
                let name = format!("{m}{suffix}");
                cols.push(
                    Series::from_vec(name.as_str().into(), pick(floats(&run.summary, &name)))
                        .into_column(),
                );
            }
        }
        frames.push(DataFrame::new(n, cols).map_err(|source| Error::Table {
            path: PathBuf::from(&run.label),
            source,
        })?);
    }
    let mut all = frames.into_iter();
    let first = all.next().ok_or_else(|| Error::Argument {
        name: "compare".into(),
        value: "no folders".into(),
        expected: "at least one results folder".into(),
    })?;
    let table = all
        .try_fold(first, |mut acc, df| {
            acc.vstack_mut(&df)?;
            Ok(acc)
        })
        .map_err(|source| Error::Table {
            path: PathBuf::from("compare"),
            source,
        })?;
    // The keys whose values differ (the description and the engine's tuning aside).
    let mut all_keys: Vec<&String> = runs
        .iter()
        .flat_map(|r| r.keys.iter().map(|k| &k.0))
        .collect();
    all_keys.sort();
    all_keys.dedup();
    let differences = all_keys
        .into_iter()
        .filter(|k| *k != "description" && !k.starts_with("engine."))
        .filter_map(|k| {
            let values: Vec<String> = runs
                .iter()
                .map(|r| {
                    r.keys
                        .iter()
                        .find(|(x, _)| x == k)
                        .map_or("-".to_string(), |(_, v)| v.clone())
                })
                .collect();
            values
                .iter()
                .any(|v| *v != values[0])
                .then(|| (k.clone(), values))
        })
        .collect();
    Ok(Comparison {
        table,
        left_out,
        differences,
    })
}

/// Overlaid charts of a comparison table: one line per run and sharing arm.
pub fn compare_figures(table: &DataFrame) -> Vec<crate::report::Figure> {
    use crate::charts::{Chart, Line, LineChart, Style, Unit};
    // Runs of either mode share one axis: the achieved opt-out rate.
    let (runs, arms, rates) = (
        texts(table, "run"),
        texts(table, "arm"),
        floats(table, "achieved_rate"),
    );
    let mut keys: Vec<(String, String)> = runs.iter().cloned().zip(arms.iter().cloned()).collect();
    keys.dedup();
    let chart = |metric: &str, scale: f64, title: &str, y: &str, unit: Unit| {
        let (m, lo, hi) = (
            floats(table, metric),
            floats(table, &format!("{metric}_lo")),
            floats(table, &format!("{metric}_hi")),
        );
        let lines = keys
            .iter()
            .enumerate()
            .map(|(k, (run, arm))| Line {
                label: format!("{run}: {arm}"),
                points: (0..table.height())
                    .filter(|&i| &runs[i] == run && &arms[i] == arm && m[i].is_finite())
                    .map(|i| {
                        (
                            rates[i] * 100.0,
                            m[i] * scale,
                            (lo[i].is_finite() && hi[i].is_finite())
                                .then(|| (lo[i] * scale, hi[i] * scale)),
                        )
                    })
                    .collect(),
                style: Style {
                    colour: k,
                    dashed: false,
                },
            })
            .filter(|l| !l.points.is_empty())
            .collect();
        Chart::Lines(LineChart {
            title: title.into(),
            x_label: "achieved opt-out rate".into(),
            x_unit: Unit::Percent,
            y_label: y.into(),
            y_unit: unit,
            x_from_zero: false,
            y_from_zero: false,
            lines,
            ..Default::default()
        })
    };
    vec![
        crate::report::Figure {
            stem: "compare_relevance",
            caption: "Audience precision against the achieved opt-out rate, every run and arm (a behavioral run's arms are points)."
                .into(),
            chart: chart(
                "precision",
                100.0,
                "Targeting relevance vs opt-out rate",
                "audience precision",
                Unit::Percent,
            ),
        },
        crate::report::Figure {
            stem: "compare_revenue",
            caption: "Revenue change at fixed prices per click against no sharing and the achieved opt-out rate, every run and arm.".into(),
            chart: chart(
                "revenue_change_musd",
                1.0,
                "Revenue change at fixed prices vs opt-out rate",
                "revenue change over the horizon",
                Unit::MillionsUsd,
            ),
        },
        crate::report::Figure {
            stem: "compare_market_revenue",
            caption: "Revenue change with prices from the advertisers' auctions (docs/model.md §17) against no sharing and the achieved opt-out rate, every run and arm.".into(),
            chart: chart(
                "market_revenue_change_musd",
                1.0,
                "Revenue change with auctions vs opt-out rate",
                "revenue change over the horizon",
                Unit::MillionsUsd,
            ),
        },
    ]
}

/// Writes a comparison's folder atomically: `compare.csv` (every row kept),
/// `differences.csv` (the scenario keys whose values differ, one column per run), and the
/// overlaid charts. An existing folder is replaced only when `force`.
pub fn write(c: &Comparison, runs: &[String], out: &std::path::Path, force: bool) -> Result<()> {
    crate::folder::write_dir(out, force, |tmp| {
        let mut table = c.table.clone();
        crate::folder::write_csv(&tmp.join("compare.csv"), &mut table)?;
        let mut columns = vec![
            StringChunked::from_iter_values(
                "key".into(),
                c.differences.iter().map(|(k, _)| k.as_str()),
            )
            .into_column(),
        ];
        for (j, run) in runs.iter().enumerate() {
            columns.push(
                StringChunked::from_iter_values(
                    run.as_str().into(),
                    c.differences
                        .iter()
                        .map(|(_, v)| v.get(j).map_or("-", String::as_str)),
                )
                .into_column(),
            );
        }
        let path = tmp.join("differences.csv");
        let mut diffs =
            DataFrame::new(c.differences.len(), columns).map_err(|source| Error::Table {
                path: path.clone(),
                source,
            })?;
        crate::folder::write_csv(&path, &mut diffs)?;
        for f in compare_figures(&c.table) {
            crate::charts::save(&f.chart, tmp, f.stem)?;
        }
        Ok(())
    })
}

/// The run labels of folders, as the comparison names them.
pub fn labels(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().map(|d| run_label(d)).collect()
}
