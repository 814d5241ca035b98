//! A study repeated over simulation seeds (docs/model.md §16.8). Under common random numbers
//! every evaluation of a study uses one seed, so its indices are exact for that seed and the
//! dummy factor is 0 by construction: an index that is an artefact of the seed cannot show.
//! Running the same design at several seeds and reporting each index's spread across them does
//! show it. The plan's `seeds` runs the study once per seed into `seed-<n>/` (each a complete
//! study folder, staged or not, that resumes as any other) and writes `seeds.csv` and a report.

use std::collections::BTreeMap;
use std::path::Path;

use super::batch::{Done, STAGES, read_indices, run, run_staged};
use super::{Design, Study, plan_text};
use crate::document::{Block, html, markdown};
use crate::error::{Error, Result};
use crate::folder::{write_csv, write_text};

/// The folder of seed `seed` inside a seeds study's folder.
pub fn seed_dir(out: &Path, seed: u64) -> std::path::PathBuf {
    out.join(format!("seed-{seed}"))
}

/// The study at one of its plan's seeds: the same plan with `seed` set and `seeds` cleared.
pub fn at_seed(study: &Study, seed: u64) -> Result<Study> {
    let mut plan = study.plan.clone();
    plan.seeds = Vec::new();
    plan.seed = Some(seed);
    Study::from_base(
        plan,
        study.base.clone(),
        study.source.clone(),
        &format!("{} (seed {seed})", study.file),
        Path::new("."),
    )
}

/// What [`run_seeds`] did: the evaluations of each stage it ran, and the seeds whose finished
/// folders it kept (from a run that was killed after them).
#[derive(Clone, Debug, Default)]
pub struct SeedsDone {
    /// One per stage run, seed after seed.
    pub stages: Vec<Done>,
    /// Seeds whose folders were finished and kept.
    pub kept: Vec<u64>,
}

/// Runs a plan with `seeds` into `out`: each seed's study into `out/seed-<n>`, then `seeds.csv`
/// and the report. A killed run resumes: a finished seed is kept, one under way resumes.
pub fn run_seeds(
    study: &Study,
    out: &Path,
    force: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SeedsDone> {
    let text = plan_text(study);
    let ours = std::fs::read_to_string(out.join("plan.toml")).is_ok_and(|t| t == text)
        && !out.join("report.md").exists();
    if out.exists() && !ours {
        if !force {
            return Err(Error::Exists(out.to_path_buf()));
        }
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_text(&out.join("plan.toml"), &text)?;
    let mut done = SeedsDone::default();
    for &seed in &study.plan.seeds {
        let s = at_seed(study, seed)?;
        let dir = seed_dir(out, seed);
        // A seed's folder is finished once its report is written (the last file of either
        // kind of study); one of another plan is not this seed's.
        let finished = std::fs::read_to_string(dir.join("plan.toml"))
            .is_ok_and(|t| t == plan_text(&s))
            && dir.join("report.md").exists();
        if finished {
            done.kept.push(seed);
        } else if s.plan.then.is_some() {
            done.stages.extend(run_staged(&s, &dir, true, progress)?);
        } else {
            done.stages.push(run(&s, &dir, true, None, progress)?);
        }
    }
    let mut table = spread(study, out)?;
    write_csv(&out.join("seeds.csv"), &mut table)?;
    let blocks = report(study, &table);
    write_text(&out.join("report.html"), &html(&blocks, out)?)?;
    write_text(&out.join("report.md"), &markdown(&blocks))?;
    Ok(done)
}

/// The stages of the study, as folders inside a seed's folder ("" for an unstaged study),
/// with the measure the report leads with.
fn stages(study: &Study) -> Vec<(&'static str, &'static str)> {
    let lead = |d: Design| match d {
        Design::Morris => "mu_star",
        Design::Sobol => "ST",
        Design::Lhs => "spearman_rho",
        Design::Grid => "main_effect_swing",
    };
    match &study.plan.then {
        Some(t) => {
            let mut v = vec![(STAGES[0], "mu_star"), (STAGES[1], "ST")];
            if t.lhs_samples.is_some() {
                v.push((STAGES[2], "spearman_rho"));
            }
            v
        }
        None => vec![("", lead(study.plan.design))],
    }
}

/// Every index of every stage at every seed: one row per stage, output, factor and measure,
/// a column per seed, and the mean, smallest, largest and range across the seeds (over the
/// seeds where the index exists: a staged study may carry other factors at another seed).
pub fn spread(study: &Study, out: &Path) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let seeds = &study.plan.seeds;
    type Key = (String, String, String, String);
    let mut rows: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<Key> = Vec::new();
    for (j, &seed) in seeds.iter().enumerate() {
        for (stage, _) in stages(study) {
            let path = seed_dir(out, seed).join(stage).join("indices.csv");
            let df = read_indices(&path)?;
            let (o, f, m) = (
                crate::table::texts(&df, "output"),
                crate::table::texts(&df, "factor"),
                crate::table::texts(&df, "measure"),
            );
            let v = crate::table::floats(&df, "value");
            for i in 0..o.len() {
                let key = (stage.to_string(), o[i].clone(), f[i].clone(), m[i].clone());
                let row = rows.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    vec![f64::NAN; seeds.len()]
                });
                row[j] = v[i];
            }
        }
    }
    let col = |f: &dyn Fn(&Key) -> &String| order.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
    let mut columns: Vec<Column> = vec![
        Column::new("stage".into(), col(&|r| &r.0)),
        Column::new("output".into(), col(&|r| &r.1)),
        Column::new("factor".into(), col(&|r| &r.2)),
        Column::new("measure".into(), col(&|r| &r.3)),
    ];
    for (j, seed) in seeds.iter().enumerate() {
        let v: Vec<Option<f64>> = order
            .iter()
            .map(|k| Some(rows[k][j]).filter(|x| x.is_finite()))
            .collect();
        columns.push(Column::new(format!("seed_{seed}").into(), v));
    }
    let stat = |f: &dyn Fn(&[f64]) -> f64| -> Vec<Option<f64>> {
        order
            .iter()
            .map(|k| {
                let v: Vec<f64> = rows[k].iter().copied().filter(|x| x.is_finite()).collect();
                (!v.is_empty()).then(|| f(&v)).filter(|x| x.is_finite())
            })
            .collect()
    };
    let mean = stat(&|v| v.iter().sum::<f64>() / v.len() as f64);
    let min = stat(&|v| v.iter().copied().fold(f64::INFINITY, f64::min));
    let max = stat(&|v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let range: Vec<Option<f64>> = min
        .iter()
        .zip(&max)
        .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
        .collect();
    let seeds_with = stat(&|v| v.len() as f64);
    columns.push(Column::new("seeds_with".into(), seeds_with));
    columns.push(Column::new("mean".into(), mean));
    columns.push(Column::new("min".into(), min));
    columns.push(Column::new("max".into(), max));
    columns.push(Column::new("range".into(), range));
    DataFrame::new(order.len(), columns).map_err(|source| Error::Table {
        path: out.join("seeds.csv"),
        source,
    })
}

/// The report: for each stage's lead measure and each output, every factor's index at each
/// seed with its range across them.
fn report(study: &Study, table: &polars::prelude::DataFrame) -> Vec<Block> {
    let seeds = &study.plan.seeds;
    let (stage, output, factor, measure) = (
        crate::table::texts(table, "stage"),
        crate::table::texts(table, "output"),
        crate::table::texts(table, "factor"),
        crate::table::texts(table, "measure"),
    );
    let per_seed: Vec<Vec<f64>> = seeds
        .iter()
        .map(|s| crate::table::floats(table, &format!("seed_{s}")))
        .collect();
    let (mean, range) = (
        crate::table::floats(table, "mean"),
        crate::table::floats(table, "range"),
    );
    let p = &study.plan;
    let list = seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut b = vec![
        Block::Heading(
            1,
            format!("adsim study: {} at {} seeds", p.name, seeds.len()),
        ),
        Block::Para(p.description.clone()),
        Block::Para(format!(
            "The same plan and design run once per simulation seed ({list}), each into `seed-<n>/`, a complete study folder with its own report. Within a seed every evaluation uses that seed (common random numbers), so an index there carries no Monte Carlo noise of its own and the dummy is 0 by construction; the spread of an index across seeds is the noise the single-seed figure hides. `seeds.csv` holds every index of every stage at every seed with its mean, smallest, largest and range. An empty cell: the index does not exist at that seed (a staged study carries to its second stage the factors its screening ranks highest, which can differ between seeds)."
        )),
    ];
    let fmt = |x: f64| {
        if x.is_finite() {
            format!("{x:.3}")
        } else {
            "-".into()
        }
    };
    for (st, lead) in stages(study) {
        let title = if st.is_empty() {
            format!("{lead} by seed")
        } else {
            format!("Stage `{st}`: {lead} by seed")
        };
        b.push(Block::Heading(2, title));
        let mut outputs: Vec<&String> = Vec::new();
        for i in 0..output.len() {
            if stage[i] == st && measure[i] == lead && !outputs.contains(&&output[i]) {
                outputs.push(&output[i]);
            }
        }
        for o in outputs {
            let mut idx: Vec<usize> = (0..output.len())
                .filter(|&i| stage[i] == st && measure[i] == lead && &output[i] == o)
                .collect();
            if idx.iter().all(|&i| !mean[i].is_finite()) {
                b.push(Block::Heading(3, o.replace('@', " at ")));
                b.push(Block::Para(
                    "The output does not vary over the design: no index at any seed.".into(),
                ));
                continue;
            }
            idx.sort_by(|&x, &y| {
                mean[y]
                    .abs()
                    .total_cmp(&mean[x].abs())
                    .then_with(|| factor[x].cmp(&factor[y]))
            });
            let widest = idx
                .iter()
                .copied()
                .filter(|&i| range[i].is_finite())
                .max_by(|&x, &y| range[x].total_cmp(&range[y]));
            b.push(Block::Heading(3, o.replace('@', " at ")));
            if let Some(w) = widest {
                b.push(Block::Para(format!(
                    "Widest spread across seeds: {} ({} from {} to {}).",
                    factor[w],
                    lead,
                    fmt(extreme(&per_seed, w, f64::min, f64::INFINITY)),
                    fmt(extreme(&per_seed, w, f64::max, f64::NEG_INFINITY))
                )));
            }
            let mut header = vec!["factor".to_string()];
            header.extend(seeds.iter().map(|s| format!("seed {s}")));
            header.extend(["mean".to_string(), "range".to_string()]);
            let rows = idx
                .iter()
                .map(|&i| {
                    let mut row = vec![factor[i].clone()];
                    row.extend(per_seed.iter().map(|v| fmt(v[i])));
                    row.extend([fmt(mean[i]), fmt(range[i])]);
                    row
                })
                .collect();
            b.push(Block::Table(header, rows));
        }
    }
    b
}

/// The smallest or largest (by `pick`) of index `i` over the seeds that computed it.
fn extreme(per_seed: &[Vec<f64>], i: usize, pick: fn(f64, f64) -> f64, start: f64) -> f64 {
    per_seed
        .iter()
        .map(|v| v[i])
        .filter(|x| x.is_finite())
        .fold(start, pick)
}
