//! A study's folder (docs/model.md §16.4): the evaluations, summary, indices and tornado
//! tables, the index, scatter and tornado charts, and the report built from them.

use std::path::Path;

use polars::prelude::*;

use super::estimators::sd;
use super::report::report;
use super::{DUMMY, Design, Effect, STUDY_SCHEMA_VERSION, Study, batch, effects, quantile};
use crate::charts::{BarChart, Chart, Line, LineChart, Style, Unit};
use crate::document::{Block, html, markdown};
use crate::error::{Error, Result};
use crate::folder::{Stamp, write_csv, write_dir, write_parquet, write_text};

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
pub(super) fn summary_frame(names: &[String], outputs: &[Vec<f64>]) -> PolarsResult<DataFrame> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standard_deviation_needs_two_finite_values() {
        assert!(sd(&[]).is_nan(), "no value: undefined, not 0");
        assert!(sd(&[f64::NAN, 2.0, f64::INFINITY]).is_nan());
        assert_eq!(sd(&[1.0, f64::NAN, 3.0]), 2f64.sqrt());
        // A summary of an output no evaluation defined leaves its sd empty, like its mean.
        let frame = summary_frame(&["x".into()], &[vec![f64::NAN], vec![f64::NAN]]).unwrap();
        assert_eq!(frame.column("sd").unwrap().null_count(), 1);
    }
}
