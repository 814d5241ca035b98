//! Comparing results folders (`adsim compare`): their summaries set side by side in one long
//! table, and overlaid charts.

use std::path::PathBuf;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::folder::{check_schema, load_scenario, read_parquet};
use crate::policy::ArmKind;
use crate::table::{floats, texts};

/// The metrics `adsim compare` sets side by side.
pub const COMPARED: &[&str] = &[
    "achieved_rate",
    "precision",
    "ctr",
    "ca_match_rate",
    "revenue_change_musd",
    "people_mislinked",
];

/// Reads the summaries of several results folders into one long table, refusing folders whose
/// rate axes differ (the comparison would set unlike levels side by side).
pub fn compare(dirs: &[PathBuf]) -> Result<DataFrame> {
    let mut frames = Vec::new();
    let mut axis: Option<(PathBuf, Vec<f64>)> = None;
    for dir in dirs {
        let resolved = load_scenario(dir)?;
        let path = dir.join("summary.parquet");
        check_schema(
            &path,
            crate::metrics::SCHEMA_VERSION,
            &dir.join("scenario.toml"),
        )?;
        let summary = read_parquet(&path)?;
        let kinds: Vec<(String, ArmKind)> = resolved
            .scenario
            .policy
            .arms
            .iter()
            .map(|a| (a.name.clone(), a.kind))
            .collect();
        let arms = texts(&summary, "arm");
        let rates = floats(&summary, "rate");
        let mut grid: Vec<f64> = arms
            .iter()
            .zip(&rates)
            .filter(|(a, _)| kinds.iter().any(|(n, k)| n == *a && *k != ArmKind::None))
            .map(|(_, r)| (r * 1e9).round() / 1e9)
            .collect();
        grid.sort_by(f64::total_cmp);
        grid.dedup();
        match &axis {
            None => axis = Some((dir.clone(), grid)),
            Some((first, g)) if *g != grid => {
                return Err(Error::Argument {
                    name: "compare".into(),
                    value: dir.display().to_string(),
                    expected: format!(
                        "the same opt-out rates as {}: it has {:?}, this folder {:?}; run both with the same policy.rates and mode",
                        first.display(),
                        g,
                        grid
                    ),
                });
            }
            _ => {}
        }
        let run = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let n = summary.height();
        let mut cols = vec![
            StringChunked::from_iter_values("run".into(), std::iter::repeat_n(run.as_str(), n))
                .into_column(),
            StringChunked::from_iter_values(
                "scenario".into(),
                std::iter::repeat_n(resolved.scenario.name.as_str(), n),
            )
            .into_column(),
            StringChunked::from_iter_values("arm".into(), arms.iter().map(String::as_str))
                .into_column(),
            Series::from_vec("rate".into(), rates.clone()).into_column(),
        ];
        for m in COMPARED {
            for suffix in ["", "_lo", "_hi"] {
                let name = format!("{m}{suffix}");
                cols.push(
                    Series::from_vec(name.as_str().into(), floats(&summary, &name)).into_column(),
                );
            }
        }
        frames.push(DataFrame::new(n, cols).map_err(|source| Error::Table {
            path: dir.clone(),
            source,
        })?);
    }
    let mut all = frames.into_iter();
    let first = all.next().ok_or_else(|| Error::Argument {
        name: "compare".into(),
        value: "no folders".into(),
        expected: "at least one results folder".into(),
    })?;
    all.try_fold(first, |mut acc, df| {
        acc.vstack_mut(&df)?;
        Ok(acc)
    })
    .map_err(|source| Error::Table {
        path: PathBuf::from("compare"),
        source,
    })
}

/// Overlaid charts of a comparison table: one line per run and sharing arm.
pub fn compare_figures(table: &DataFrame) -> Vec<crate::report::Figure> {
    use crate::charts::{Chart, Line, LineChart, Style, Unit};
    let (runs, arms, rates) = (
        texts(table, "run"),
        texts(table, "arm"),
        floats(table, "rate"),
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
            x_label: "target opt-out rate".into(),
            x_unit: Unit::Percent,
            y_label: y.into(),
            y_unit: unit,
            x_from_zero: false,
            y_from_zero: false,
            lines,
        })
    };
    vec![
        crate::report::Figure {
            stem: "compare_relevance",
            caption: "Audience precision against the opt-out rate, every run and sharing arm."
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
            caption: "Revenue change against no sharing, every run and sharing arm.".into(),
            chart: chart(
                "revenue_change_musd",
                1.0,
                "Revenue change vs opt-out rate",
                "revenue change per quarter",
                Unit::MillionsUsd,
            ),
        },
    ]
}
