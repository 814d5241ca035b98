//! A study's report (`report.md` / `report.html` of its folder), and its result as a run reads
//! it for the run's report (docs/model.md §16.6).

use std::path::Path;

use polars::prelude::*;

use super::factors::{KeyKind, lookup, range_kind};
use super::{DUMMY, Design, Effect, Plan, Spread, Study, quantile};
use crate::document::Block;
use crate::ensure;
use crate::error::{Error, Result};
use crate::table::level_near;

pub(super) fn report(
    study: &Study,
    names: &[String],
    outputs: &[Vec<f64>],
    effects: &[Effect],
) -> Vec<Block> {
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
                        match (&f.levels, &f.choices) {
                            (Some(l), _) => format!("{l:?}"),
                            (None, Some(c)) => c.join(" or "),
                            (None, None) => format!(
                                "{} to {}",
                                f.low.unwrap_or(f64::NAN),
                                f.high.unwrap_or(f64::NAN)
                            ),
                        },
                        match (p.design, f.spread) {
                            (Design::Grid, _) => "levels".into(),
                            _ if f.levels.is_some() || f.choices.is_some() => {
                                "each level equally often".into()
                            }
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
