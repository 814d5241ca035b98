//! Running a scenario: the evaluation path ([`evaluate`], no files) and a whole run ([`run`],
//! the same path writing its results folder, docs/model.md §11).
//!
//! Replications are simulated one after another, each parallel over chunks of users; each
//! replication's counts are handed on as soon as they are finished (to the estimator, and in a
//! run to the count tables on disk) and dropped, so memory does not grow with the number of
//! replications. Every file but `run.json` (timings, host, paths) is a pure function of the
//! resolved scenario.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;

use crate::cells::{Counts, Layout, Names};
use crate::document::Block;
use crate::error::{Error, Result};
use crate::folder::{
    CountsWriter, PROGRAM, Stamp, data_hash, load_scenario, read_counts, write_csv, write_dir,
    write_parquet, write_text,
};
use crate::metrics::{Context, Estimates, Estimator};
use crate::policy::ArmKind;
use crate::report::Handed;
use crate::revenue::DayValue;
use crate::scenario::Resolved;
use crate::sweep::Sweep;

/// Reports progress: called with the number of users just simulated (from any thread).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// No progress report.
pub fn quiet(_: u64) {}

/// Blocks a run's report shows after its headline results, made from the run's summary by
/// whoever hands them in: a study's parameter-uncertainty intervals beside the Monte Carlo
/// ones (docs/model.md §16.6, `crate::study::StudyResult::blocks`). Handed in as a function
/// so that the run does not depend on studies.
#[derive(Clone)]
pub struct Extra(pub std::sync::Arc<ExtraBlocks>);

/// What an [`Extra`] holds: blocks from a run's summary.
pub type ExtraBlocks = dyn Fn(&DataFrame) -> Vec<Block> + Send + Sync;

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extra(..)")
    }
}

/// Where and how to write a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The results folder.
    pub out: PathBuf,
    /// Replace an existing folder.
    pub force: bool,
    /// Blocks the report shows after the headline results ([`Extra`]).
    pub extra: Option<Extra>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The estimated tables.
    pub estimates: Estimates,
    /// Wall time of the simulation, seconds.
    pub simulate_secs: f64,
    /// Wall time of estimation and writing, seconds.
    pub estimate_secs: f64,
}

/// The labels of a scenario's count tables.
pub fn names(resolved: &Resolved, sweep: &Sweep) -> Names {
    let own = |v: Vec<&str>| v.into_iter().map(String::from).collect();
    Names {
        arms: sweep.arms.iter().map(|a| a.name.clone()).collect(),
        rates: sweep.arms.iter().map(|a| a.rates.clone()).collect(),
        is_none: sweep.arms.iter().map(|a| a.kind == ArmKind::None).collect(),
        countries: own(resolved.data.country_codes()),
        ages: own(resolved.data.age_labels()),
        segments: own(resolved.data.segment_names()),
        regions: resolved
            .data
            .countries
            .arpu_region
            .iter()
            .map(|r| r.name.clone())
            .collect(),
    }
}

/// The estimation context of a resolved scenario.
pub fn context(resolved: &Resolved) -> Context {
    let s = &resolved.scenario;
    let regions = &resolved.data.countries.arpu_region;
    let cpc = resolved.click_values();
    let none_arm = s
        .policy
        .arms
        .iter()
        .find(|a| a.kind == ArmKind::None)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    Context {
        users: s.population.users,
        replications: s.population.replications,
        baseline_arm: s
            .policy
            .baseline
            .clone()
            .unwrap_or_else(|| none_arm.clone()),
        none_arm,
        targeting: s.targeting.clone(),
        revenue: s.revenue.clone(),
        regions: resolved
            .data
            .countries
            .country
            .iter()
            .map(|c| {
                let arpu = regions
                    .iter()
                    .find(|r| r.name == c.arpu_region)
                    .map_or([0.0; 3], |r| {
                        [
                            r.arpu_q2_2016_usd,
                            r.arpu_q3_2016_usd.unwrap_or(0.0),
                            r.arpu_q4_2016_usd.unwrap_or(0.0),
                        ]
                    });
                let days = s.revenue.day_anchors(arpu, s.policy.horizon_days);
                (c.code.clone(), c.arpu_region.clone(), days)
            })
            .collect(),
        k_anonymity: 100.0,
        horizon_days: s.policy.horizon_days,
        cpc: cpc.clone(),
        value_quantum: DayValue::new(&s.targeting, &s.revenue, &cpc, s.population.users).quantum,
        market: s.market.clone(),
    }
}

/// An estimator for the counts of `resolved`.
pub fn estimator(resolved: &Resolved) -> Estimator {
    let sweep = Sweep::new(resolved);
    Estimator::new(
        context(resolved),
        names(resolved, &sweep),
        sweep.layout.clone(),
    )
}

/// Simulates users `ids` of every replication, one replication at a time, handing each
/// replication's finished counts to `each`.
pub fn simulate_each(
    resolved: &Resolved,
    ids: Range<u64>,
    progress: Progress,
    mut each: impl FnMut(u32, Counts) -> Result<()>,
) -> Result<()> {
    let sweep = Sweep::new(resolved);
    // Replications reuse the buffers of earlier ones' counts, freed when the last is done.
    let _reuse = crate::cells::Reuse::start();
    for r in 0..resolved.scenario.population.replications {
        let counts = sweep.run_with_progress(r, ids.clone(), progress)?;
        each(r, counts)?;
    }
    Ok(())
}

fn polars_error(what: &str) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Table {
        path: PathBuf::from(what),
        source,
    }
}

/// The evaluation path: simulates `resolved` and returns its estimates, writing no file.
/// `adsim run` is this path plus the results folder; studies, benches and tests call it.
pub fn evaluate(resolved: &Resolved, progress: Progress) -> Result<Estimates> {
    let mut est = estimator(resolved);
    simulate_each(
        resolved,
        0..resolved.scenario.population.users,
        progress,
        |_, counts| {
            est.add(&counts).map_err(polars_error("estimation"))?;
            crate::cells::recycle(counts);
            Ok(())
        },
    )?;
    est.finish().map_err(polars_error("estimation"))
}

/// Runs `resolved` and writes its results folder (docs/model.md §11), atomically.
pub fn run(resolved: &Resolved, options: &RunOptions, progress: Progress) -> Result<RunOutput> {
    let sweep = Sweep::new(resolved);
    let names = names(resolved, &sweep);
    let layout = sweep.layout.clone();
    let users = resolved.scenario.population.users;
    write_dir(&options.out, options.force, |tmp| {
        let start = Instant::now();
        let mut simulate_secs = 0.0;
        let mut writer =
            CountsWriter::new(tmp, names.clone(), layout.clone(), &Stamp::of(resolved));
        let mut est = estimator(resolved);
        let mut last = Instant::now();
        simulate_each(resolved, 0..users, progress, |r, counts| {
            simulate_secs += last.elapsed().as_secs_f64();
            est.add(&counts).map_err(polars_error("estimation"))?;
            writer.write(r, counts)?;
            last = Instant::now();
            Ok(())
        })?;
        // The charts and the report are drawn while the writer finishes the count tables.
        let estimates = est.finish().map_err(polars_error("estimation"))?;
        write_results(resolved, tmp, &estimates, options.extra.as_ref())?;
        writer.finish()?;
        write_run_json(resolved, tmp, &options.out, simulate_secs, start)?;
        Ok(RunOutput {
            estimates,
            simulate_secs,
            estimate_secs: start.elapsed().as_secs_f64() - simulate_secs,
        })
    })
}

/// Writes everything of a results folder but the count tables into `dir`: the resolved
/// scenario, the estimated tables, the charts, the report and `run.json`.
pub fn publish(
    resolved: &Resolved,
    dir: &Path,
    e: &Estimates,
    out: &Path,
    simulate_secs: f64,
    start: Instant,
) -> Result<()> {
    write_results(resolved, dir, e, None)?;
    write_run_json(resolved, dir, out, simulate_secs, start)
}

/// Writes `run.json`: timings, threads, host, paths (the one file that differs between runs
/// of the same scenario).
fn write_run_json(
    resolved: &Resolved,
    dir: &Path,
    out: &Path,
    simulate_secs: f64,
    start: Instant,
) -> Result<()> {
    let p = &resolved.scenario.population;
    let run_json = serde_json::json!({
        "program": PROGRAM,
        "scenario_source": resolved.source,
        "out": out.display().to_string(),
        "threads": rayon::current_num_threads(),
        "simulate_secs": simulate_secs,
        "estimate_and_write_secs": start.elapsed().as_secs_f64() - simulate_secs,
        "users_per_second": (p.users * u64::from(p.replications)) as f64 / simulate_secs.max(1e-9),
        "host": std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
    });
    write_text(
        &dir.join("run.json"),
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&run_json).unwrap_or_default()
        ),
    )
}

/// The header of a folder's `scenario.toml`: the program and the data it used.
pub fn scenario_header(resolved: &Resolved) -> String {
    format!(
        "# Resolved scenario: every default filled in. {PROGRAM} reproduces every file of this folder\n\
         # but run.json from it: adsim run scenario.toml --out OTHER\n\
         # Reference data SHA-256: {}\n",
        data_hash(resolved)
    )
}

fn write_results(
    resolved: &Resolved,
    dir: &Path,
    e: &Estimates,
    extra: Option<&Extra>,
) -> Result<()> {
    write_text(
        &dir.join("scenario.toml"),
        &format!(
            "{}{}",
            scenario_header(resolved),
            resolved.scenario.to_toml()
        ),
    )?;
    let stamp = Stamp::of(resolved);
    let (mut summary, mut segments, mut countries, mut tl) = (
        e.summary.clone(),
        e.segments.clone(),
        e.countries.clone(),
        e.timeline.clone(),
    );
    write_csv(&dir.join("summary.csv"), &mut summary)?;
    write_parquet(
        &dir.join("summary.parquet"),
        &mut summary,
        crate::metrics::SCHEMA_VERSION,
        &stamp,
    )?;
    write_csv(&dir.join("segments.csv"), &mut segments)?;
    write_csv(&dir.join("countries.csv"), &mut countries)?;
    write_csv(&dir.join("timeline.csv"), &mut tl)?;
    write_csv(&dir.join("ages.csv"), &mut e.ages.clone())?;
    write_csv(&dir.join("revenue_days.csv"), &mut e.revenue_days.clone())?;
    write_csv(&dir.join("market.csv"), &mut e.market.clone())?;
    write_text(
        &dir.join("summary.json"),
        &summary_json(resolved, &e.summary),
    )?;
    let handed = Handed {
        calibration: crate::validate::run_blocks(resolved, e),
        extra: extra.map_or_else(Vec::new, |x| (x.0)(&e.summary)),
    };
    crate::report::write(resolved, e, dir, handed)
}

/// Estimates a results folder from its count tables, one replication at a time.
pub fn estimate_folder(dir: &Path) -> Result<(Resolved, Estimates)> {
    let resolved = load_scenario(dir)?;
    let sweep = Sweep::new(&resolved);
    let names = names(&resolved, &sweep);
    let mut est = estimator(&resolved);
    for r in 0..resolved.scenario.population.replications {
        let mut counts = Counts::zeros(&sweep.layout);
        read_counts(dir, &names, &sweep.layout, r, &mut counts)?;
        est.add(&counts).map_err(polars_error("estimation"))?;
    }
    let e = est.finish().map_err(polars_error("estimation"))?;
    Ok((resolved, e))
}

/// Redraws the charts and the report of a results folder from its count tables, without
/// simulating again, into `out` (the folder itself by default).
pub fn replot(dir: &Path, out: Option<&Path>) -> Result<()> {
    let (resolved, estimates) = estimate_folder(dir)?;
    let target = out.unwrap_or(dir);
    // Drawn into a temporary folder first, then moved file by file (each rename atomic): a
    // failure while drawing leaves the target as it was.
    let staging = crate::folder::temp_path(target);
    let _guard = crate::folder::Unfinished::new(&staging);
    let _ = std::fs::remove_dir_all(&staging);
    let drawn = std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io(&staging, e))
        .and_then(|()| {
            let handed = Handed {
                calibration: crate::validate::run_blocks(&resolved, &estimates),
                extra: Vec::new(),
            };
            crate::report::write(&resolved, &estimates, &staging, handed)
        })
        .and_then(|()| std::fs::create_dir_all(target).map_err(|e| Error::io(target, e)))
        .and_then(|()| {
            let files = std::fs::read_dir(&staging).map_err(|e| Error::io(&staging, e))?;
            for f in files {
                let f = f.map_err(|e| Error::io(&staging, e))?.path();
                let to = target.join(f.file_name().unwrap_or_default());
                std::fs::rename(&f, &to).map_err(|e| Error::io(&to, e))?;
            }
            Ok(())
        });
    let _ = std::fs::remove_dir_all(&staging);
    drawn
}

/// The layout of a resolved scenario's counts.
pub fn layout(resolved: &Resolved) -> Layout {
    Sweep::new(resolved).layout
}

/// The headline figures: every metric of every arm's levels, with intervals.
fn summary_json(resolved: &Resolved, summary: &DataFrame) -> String {
    let s = &resolved.scenario;
    let get = |name: &str, row: usize| -> serde_json::Value {
        summary
            .column(name)
            .ok()
            .and_then(|c| c.get(row).ok())
            .map(|v| match v {
                AnyValue::Float64(x) if x.is_finite() => serde_json::json!(x),
                AnyValue::UInt32(x) => serde_json::json!(x),
                AnyValue::String(x) => serde_json::json!(x),
                _ => serde_json::Value::Null,
            })
            .unwrap_or(serde_json::Value::Null)
    };
    let names = crate::metrics::summary_metric_names();
    let rows: Vec<serde_json::Value> = (0..summary.height())
        .map(|i| {
            let mut o = serde_json::Map::new();
            o.insert("arm".into(), get("arm", i));
            o.insert("level".into(), get("level", i));
            o.insert("rate".into(), get("rate", i));
            for n in &names {
                o.insert(n.clone(), serde_json::json!({"mean": get(n, i), "lo": get(&format!("{n}_lo"), i), "hi": get(&format!("{n}_hi"), i)}));
            }
            serde_json::Value::Object(o)
        })
        .collect();
    let json = serde_json::json!({
        "schema_version": crate::metrics::SCHEMA_VERSION,
        "program": PROGRAM,
        "data_sha256": data_hash(resolved),
        "scenario": s.name,
        "users": s.population.users,
        "replications": s.population.replications,
        "seed": s.population.seed,
        "intervals": if s.population.replications > 1 {
            "95% intervals across replications (Monte Carlo noise only, not parameter uncertainty)"
        } else {
            "one replication: no interval"
        },
        "rows": rows,
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    )
}
