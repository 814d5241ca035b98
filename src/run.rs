//! A whole run (`adsim run`): simulate every replication, write the count tables, derive the
//! estimates and write the results folder of SPEC §11.
//!
//! The folder is built under a temporary name beside its target and renamed into place when
//! every file is written, so an interrupted run leaves nothing that looks complete. Every file
//! but `run.json` (timings, host, paths) is a pure function of the resolved scenario.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;

use crate::cells::{ALL_MEASURES, Counts, Layout, SEGMENT_MEASURES, TIMELINE_CHANNELS};
use crate::error::{Error, Result};
use crate::metrics::{Context, Estimates, estimate};
use crate::policy::ArmKind;
use crate::scenario::Resolved;
use crate::sweep::Sweep;

/// Version of the `cells` and `timeline_cells` tables' schemas.
pub const CELLS_SCHEMA_VERSION: &str = "cells/1";

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The results folder.
    pub out: PathBuf,
    /// Replace an existing folder.
    pub force: bool,
    /// Show progress (only drawn on a terminal).
    pub progress: bool,
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

/// Simulates every replication and returns its counts.
pub fn simulate(resolved: &Resolved, progress: bool) -> Result<(Layout, Vec<Counts>)> {
    simulate_range(resolved, 0..resolved.scenario.population.users, progress)
}

/// Simulates users `ids` of every replication (a shard's slice, or all of them).
pub fn simulate_range(
    resolved: &Resolved,
    ids: std::ops::Range<u64>,
    progress: bool,
) -> Result<(Layout, Vec<Counts>)> {
    let sweep = Sweep::new(resolved);
    let p = &resolved.scenario.population;
    let bar =
        crate::export::progress_bar((ids.end - ids.start) * u64::from(p.replications), progress);
    let mut all = Vec::with_capacity(p.replications as usize);
    for r in 0..p.replications {
        // Replications run one after another; each is parallel over chunks of users.
        all.push(sweep.run_with_progress(r, ids.clone(), |n| bar.inc(n))?);
    }
    bar.finish_and_clear();
    Ok((sweep.layout.clone(), all))
}

/// The long-form `cells` table of finished counts: one row per non-zero count.
pub fn cells_frame(
    resolved: &Resolved,
    layout: &Layout,
    counts: &[Counts],
) -> PolarsResult<DataFrame> {
    let sweep = Sweep::new(resolved);
    let countries: Vec<&str> = resolved.data.country_codes();
    let ages: Vec<&str> = resolved.data.age_labels();
    let seg_names: Vec<&str> = resolved.data.segment_names();
    let nseg = SEGMENT_MEASURES.len() * layout.segments;
    let measure_of = |i: usize| -> (&str, &str) {
        if i < nseg {
            (
                seg_names[i / SEGMENT_MEASURES.len()],
                SEGMENT_MEASURES[i % SEGMENT_MEASURES.len()],
            )
        } else {
            ("all", ALL_MEASURES[i - nseg])
        }
    };
    // Visit every non-zero count in a fixed order.
    let visit = |f: &mut dyn FnMut(usize, usize, usize, usize, usize, usize, u64)| {
        for (r, c) in counts.iter().enumerate() {
            for (a, arm) in sweep.arms.iter().enumerate() {
                for k in 0..arm.rates.len() {
                    for country in 0..layout.countries {
                        for age in 0..layout.ages {
                            for m in 0..layout.measures() {
                                let v = c.get(layout, a, k, country, age, m);
                                if v != 0 {
                                    f(r, a, k, country, age, m, v.max(0) as u64);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    // Compact keys first; each string column is then built and turned into a categorical one
    // at a time, so the table never holds millions of repeated strings.
    struct Row {
        replication: u32,
        arm: u16,
        level: u32,
        country: u16,
        age: u16,
        measure: u32,
        count: u64,
    }
    let mut rows: Vec<Row> = Vec::new();
    visit(&mut |r, a, k, c, g, m, v| {
        rows.push(Row {
            replication: r as u32,
            arm: a as u16,
            level: k as u32,
            country: c as u16,
            age: g as u16,
            measure: m as u32,
            count: v,
        });
    });
    let categorical = DataType::from_categories(Categories::global());
    fn cat<'a>(
        rows: &[Row],
        name: &str,
        dtype: &DataType,
        f: impl Fn(&Row) -> &'a str,
    ) -> PolarsResult<Column> {
        StringChunked::from_iter_values(name.into(), rows.iter().map(f))
            .into_column()
            .cast(dtype)
    }
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            cat(&rows, "arm", &categorical, |r| {
                sweep.arms[r.arm as usize].name.as_str()
            })?,
            Series::from_vec(
                "level".into(),
                rows.iter().map(|r| r.level).collect::<Vec<_>>(),
            )
            .into_column(),
            Series::from_vec(
                "rate".into(),
                rows.iter()
                    .map(|r| sweep.arms[r.arm as usize].rates[r.level as usize])
                    .collect::<Vec<_>>(),
            )
            .into_column(),
            Series::from_vec(
                "replication".into(),
                rows.iter().map(|r| r.replication).collect::<Vec<_>>(),
            )
            .into_column(),
            cat(&rows, "country", &categorical, |r| {
                countries[r.country as usize]
            })?,
            cat(&rows, "age_band", &categorical, |r| ages[r.age as usize])?,
            cat(&rows, "segment", &categorical, |r| {
                measure_of(r.measure as usize).0
            })?,
            cat(&rows, "measure", &categorical, |r| {
                measure_of(r.measure as usize).1
            })?,
            Series::from_vec(
                "count".into(),
                rows.iter().map(|r| r.count).collect::<Vec<_>>(),
            )
            .into_column(),
        ],
    )
}

/// The long-form `timeline_cells` table: every (arm, level, replication, day, channel).
pub fn timeline_frame(
    resolved: &Resolved,
    layout: &Layout,
    counts: &[Counts],
) -> PolarsResult<DataFrame> {
    let sweep = Sweep::new(resolved);
    let (mut arm, mut level, mut rate, mut rep, mut day, mut channel, mut count) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let ch = TIMELINE_CHANNELS.len();
    for (r, c) in counts.iter().enumerate() {
        for (a, spec) in sweep.arms.iter().enumerate() {
            if spec.kind == ArmKind::None {
                continue;
            }
            for k in 0..spec.rates.len() {
                let base = k * layout.timeline_per_level();
                for d in 0..=layout.days {
                    for (j, name) in TIMELINE_CHANNELS.iter().enumerate() {
                        arm.push(spec.name.as_str());
                        level.push(k as u32);
                        rate.push(spec.rates[k]);
                        rep.push(r as u32);
                        day.push(d as u32);
                        channel.push(*name);
                        count.push(c.timeline[a][base + d * ch + j].max(0) as u64);
                    }
                }
            }
        }
    }
    let n = arm.len();
    DataFrame::new(
        n,
        vec![
            StringChunked::from_iter_values("arm".into(), arm.into_iter()).into_column(),
            Series::from_vec("level".into(), level).into_column(),
            Series::from_vec("rate".into(), rate).into_column(),
            Series::from_vec("replication".into(), rep).into_column(),
            Series::from_vec("day".into(), day).into_column(),
            StringChunked::from_iter_values("channel".into(), channel.into_iter()).into_column(),
            Series::from_vec("count".into(), count).into_column(),
        ],
    )
}

/// The estimation context of a resolved scenario.
pub fn context(resolved: &Resolved) -> Context {
    let s = &resolved.scenario;
    let regions = &resolved.data.countries.arpu_region;
    Context {
        users: s.population.users,
        replications: s.population.replications,
        none_arm: s
            .policy
            .arms
            .iter()
            .find(|a| a.kind == ArmKind::None)
            .map(|a| a.name.clone())
            .unwrap_or_default(),
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
                    .map_or(0.0, |r| r.arpu_q2_2016_usd);
                (c.code.clone(), c.arpu_region.clone(), arpu)
            })
            .collect(),
        k_anonymity: 100.0,
    }
}

/// Runs `resolved` and writes its results folder.
pub fn run(resolved: &Resolved, options: &RunOptions) -> Result<RunOutput> {
    if options.out.exists() && !options.force {
        return Err(Error::Exists(options.out.clone()));
    }
    let start = Instant::now();
    let (layout, counts) = simulate(resolved, options.progress)?;
    publish(
        resolved,
        &layout,
        &counts,
        options,
        start.elapsed().as_secs_f64(),
    )
}

/// Builds a results folder from finished counts: count tables, estimates, charts, report and
/// `run.json`, written under a temporary name and renamed into place.
pub fn publish(
    resolved: &Resolved,
    layout: &Layout,
    counts: &[Counts],
    options: &RunOptions,
    simulate_secs: f64,
) -> Result<RunOutput> {
    let out = &options.out;
    let start = Instant::now();
    let table = |source| Error::Table {
        path: out.clone(),
        source,
    };
    let mut cells = cells_frame(resolved, layout, counts).map_err(table)?;
    let mut timeline = timeline_frame(resolved, layout, counts).map_err(table)?;
    let estimates = estimate(&cells, &timeline, &context(resolved)).map_err(table)?;
    write_dir(out, options.force, |tmp| {
        write_folder(resolved, tmp, &mut cells, &mut timeline, &estimates)?;
        let p = &resolved.scenario.population;
        let run_json = serde_json::json!({
            "program": format!("adsim {}", env!("CARGO_PKG_VERSION")),
            "scenario_source": resolved.source,
            "out": out.display().to_string(),
            "threads": rayon::current_num_threads(),
            "simulate_secs": simulate_secs,
            "estimate_and_write_secs": start.elapsed().as_secs_f64(),
            "users_per_second": (p.users * u64::from(p.replications)) as f64 / simulate_secs.max(1e-9),
            "host": std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        });
        write_text(
            &tmp.join("run.json"),
            &format!(
                "{}\n",
                serde_json::to_string_pretty(&run_json).unwrap_or_default()
            ),
        )
    })?;
    Ok(RunOutput {
        estimates,
        simulate_secs,
        estimate_secs: start.elapsed().as_secs_f64(),
    })
}

/// Writes a folder through `fill` under a temporary name beside `out`, then renames it into
/// place (replacing an existing `out` only when `force`). A failure removes the temporary.
pub fn write_dir(out: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() && !force {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = crate::export::temp_path(out);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

pub(crate) fn write_parquet(path: &Path, df: &mut DataFrame, schema: &str) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let meta = polars::io::parquet::write::KeyValueMetadata::from_static(vec![
        ("adsim.schema_version".into(), schema.into()),
        ("adsim.version".into(), env!("CARGO_PKG_VERSION").into()),
    ]);
    ParquetWriter::new(BufWriter::new(f))
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(meta))
        .finish(df)
        .map_err(|source| Error::Table {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    CsvWriter::new(BufWriter::new(f))
        .with_float_precision(Some(6))
        .finish(df)
        .map_err(|source| Error::Table {
            path: path.to_path_buf(),
            source,
        })
}

fn write_folder(
    resolved: &Resolved,
    dir: &Path,
    cells: &mut DataFrame,
    timeline: &mut DataFrame,
    e: &Estimates,
) -> Result<()> {
    let header = format!(
        "# Resolved scenario: every default filled in. adsim {} reproduces every file of this folder\n\
         # but run.json from it: adsim run scenario.toml --out OTHER\n",
        env!("CARGO_PKG_VERSION")
    );
    write_text(
        &dir.join("scenario.toml"),
        &format!("{header}{}", resolved.scenario.to_toml()),
    )?;
    write_parquet(&dir.join("cells.parquet"), cells, CELLS_SCHEMA_VERSION)?;
    write_parquet(
        &dir.join("timeline_cells.parquet"),
        timeline,
        CELLS_SCHEMA_VERSION,
    )?;
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
    )?;
    write_csv(&dir.join("segments.csv"), &mut segments)?;
    write_csv(&dir.join("countries.csv"), &mut countries)?;
    write_csv(&dir.join("timeline.csv"), &mut tl)?;
    write_text(
        &dir.join("summary.json"),
        &summary_json(resolved, &e.summary),
    )?;
    crate::report::write(resolved, e, dir)
}

/// Reads a Parquet table of a results folder.
pub(crate) fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|source| Error::Table {
            path: path.to_path_buf(),
            source,
        })
}

/// Loads the resolved scenario of a results folder.
pub fn load_folder_scenario(dir: &Path) -> Result<Resolved> {
    let path = dir.join("scenario.toml");
    if !path.exists() {
        return Err(Error::Argument {
            name: "results folder".into(),
            value: dir.display().to_string(),
            expected: "a folder written by `adsim run` (it has no scenario.toml)".into(),
        });
    }
    let scenario = crate::scenario::Scenario::from_file(&path)?;
    scenario.resolve(&path.display().to_string(), dir)
}

/// Redraws the charts and the report of a results folder from its count tables, without
/// simulating again, into `out` (the folder itself by default).
pub fn replot(dir: &Path, out: Option<&Path>) -> Result<()> {
    let resolved = load_folder_scenario(dir)?;
    let cells = read_parquet(&dir.join("cells.parquet"))?;
    let timeline = read_parquet(&dir.join("timeline_cells.parquet"))?;
    let estimates =
        estimate(&cells, &timeline, &context(&resolved)).map_err(|source| Error::Table {
            path: dir.to_path_buf(),
            source,
        })?;
    let target = out.unwrap_or(dir);
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    crate::report::write(&resolved, &estimates, target)
}

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
        let resolved = load_folder_scenario(dir)?;
        let summary = read_parquet(&dir.join("summary.parquet"))?;
        let kinds: Vec<(String, ArmKind)> = resolved
            .scenario
            .policy
            .arms
            .iter()
            .map(|a| (a.name.clone(), a.kind))
            .collect();
        let arms = crate::report::texts(&summary, "arm");
        let rates = crate::report::floats(&summary, "rate");
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
                    Series::from_vec(name.as_str().into(), crate::report::floats(&summary, &name))
                        .into_column(),
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
    use crate::charts::{Chart, Line, LineChart};
    use crate::report::{floats, texts};
    let (runs, arms, rates) = (
        texts(table, "run"),
        texts(table, "arm"),
        floats(table, "rate"),
    );
    let mut keys: Vec<(String, String)> = runs.iter().cloned().zip(arms.iter().cloned()).collect();
    keys.dedup();
    let chart = |metric: &str, scale: f64, title: &str, y: &str| {
        let (m, lo, hi) = (
            floats(table, metric),
            floats(table, &format!("{metric}_lo")),
            floats(table, &format!("{metric}_hi")),
        );
        let lines = keys
            .iter()
            .map(|(run, arm)| Line {
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
            })
            .filter(|l| l.points.len() > 1)
            .collect();
        Chart::Lines(LineChart {
            title: title.into(),
            x_label: "target opt-out rate (%)".into(),
            y_label: y.into(),
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
                "audience precision (%)",
            ),
        },
        crate::report::Figure {
            stem: "compare_revenue",
            caption: "Revenue change against no sharing, every run and sharing arm.".into(),
            chart: chart(
                "revenue_change_musd",
                1.0,
                "Revenue change vs opt-out rate",
                "revenue change ($M per quarter)",
            ),
        },
    ]
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
