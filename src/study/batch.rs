//! Running a study's evaluations (docs/model.md §16.7): in parallel across the design's
//! points, with a progress log that a killed study resumes from, and in shards that
//! `adsim merge` joins. Every path ends in the same [`super::write`], so an interrupted,
//! resumed or sharded study writes the same files as an uninterrupted one.
//!
//! The progress log and a shard's `evaluations.rows` share one text format: a header (the
//! study's fingerprint, the part, the number of evaluations and of outputs), then one line per
//! finished evaluation, `index` and each output's IEEE-754 bits in hexadecimal, so a value read
//! back is the value computed, bit for bit.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::{DUMMY, Design, Plan, Study, write};
use crate::document::{Block, html, markdown};
use crate::error::{Error, Result};
use crate::folder::{write_dir, write_text};
use crate::shard::Shard;

/// The rows of a study shard's folder.
pub const ROWS_FILE: &str = "evaluations.rows";
const MAGIC: &str = "adsim study rows 1";

impl Study {
    /// Every evaluation the study runs, in index order: the design's points, then the
    /// tornado's one-at-a-time points ([`Study::tornado_points`]).
    pub fn all_points(&self) -> Vec<Vec<f64>> {
        let mut all = self.points.clone();
        all.extend(self.tornado_points().into_iter().map(|(_, p)| p));
        all
    }

    /// SHA-256 of what the outputs depend on: the program version and stream layout, the
    /// resolved plan, the base scenario and its reference data. Progress logs and shards of another study are refused by it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(crate::rng::STREAM_LAYOUT.to_le_bytes());
        h.update(self.plan.to_toml().as_bytes());
        h.update(self.base.to_toml().as_bytes());
        h.update(self.data_hash.as_bytes());
        hex::encode(h.finalize().as_slice())
    }
}

/// Finished evaluations: outputs by evaluation index, with the header that says whose.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// [`Study::fingerprint`] of the study.
    pub fingerprint: String,
    /// `all`, or `K/N` for a shard.
    pub part: String,
    /// Evaluations of the whole study.
    pub total: usize,
    /// Outputs per evaluation.
    pub width: usize,
    /// Outputs by evaluation index.
    pub rows: BTreeMap<usize, Vec<f64>>,
}

impl Rows {
    fn header(&self) -> String {
        format!(
            "{MAGIC}\nfingerprint {}\npart {}\nevaluations {}\noutputs {}\n",
            self.fingerprint, self.part, self.total, self.width
        )
    }

    fn same_study(&self, other: &Rows) -> bool {
        self.fingerprint == other.fingerprint
            && self.part == other.part
            && self.total == other.total
            && self.width == other.width
    }
}

fn row_line(i: usize, row: &[f64]) -> String {
    let mut line = i.to_string();
    for v in row {
        line.push_str(&format!(" {:016x}", v.to_bits()));
    }
    line.push('\n');
    line
}

/// Parses a rows file. `strict` (a shard's finished file): any bad line is an error naming
/// `path` and the line. Otherwise (a progress log a kill may have cut mid-line) the rows end at
/// the first bad line. Returns the rows and the length in bytes of the part that parsed.
fn parse_rows(text: &str, path: &Path, strict: bool) -> Result<(Rows, usize)> {
    let bad = |line: usize, problem: String| Error::Folder {
        path: path.to_path_buf(),
        problem: format!(
            "line {line}: {problem}: not a study's rows file (docs/data-dictionary.md)"
        ),
    };
    let mut lines = text.split_inclusive('\n');
    let mut field = |n: usize, name: &str| -> Result<String> {
        let line = lines.next().unwrap_or("");
        if !line.ends_with('\n') {
            return Err(bad(n, "the header is cut short".into()));
        }
        let line = line.trim_end();
        if name.is_empty() {
            return if line == MAGIC {
                Ok(String::new())
            } else {
                Err(bad(n, format!("{line:?} instead of {MAGIC:?}")))
            };
        }
        line.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_string)
            .ok_or_else(|| bad(n, format!("{line:?} instead of `{name} ...`")))
    };
    field(1, "")?;
    let fingerprint = field(2, "fingerprint")?;
    let part = field(3, "part")?;
    let total: usize = field(4, "evaluations")?
        .parse()
        .map_err(|_| bad(4, "the number of evaluations is not a number".into()))?;
    let width: usize = field(5, "outputs")?
        .parse()
        .map_err(|_| bad(5, "the number of outputs is not a number".into()))?;
    let mut used: usize = text.split_inclusive('\n').take(5).map(str::len).sum();
    let mut rows = BTreeMap::new();
    for (n, line) in text[used..].split_inclusive('\n').enumerate() {
        let parsed = line.strip_suffix('\n').and_then(|l| {
            let mut parts = l.split(' ');
            let i: usize = parts.next()?.parse().ok()?;
            let row: Option<Vec<f64>> = parts
                .map(|h| u64::from_str_radix(h, 16).ok().map(f64::from_bits))
                .collect();
            let row = row?;
            (i < total && row.len() == width && !rows.contains_key(&i)).then_some((i, row))
        });
        match parsed {
            Some((i, row)) => {
                rows.insert(i, row);
                used += line.len();
            }
            None if strict => {
                return Err(bad(
                    n + 6,
                    format!(
                        "expected an evaluation index below {total} not seen before and {width} hexadecimal outputs"
                    ),
                ));
            }
            None => break,
        }
    }
    Ok((
        Rows {
            fingerprint,
            part,
            total,
            width,
            rows,
        },
        used,
    ))
}

/// Where the progress log of a study written to `out` lives: a hidden file beside it.
pub fn progress_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.progress"))
}

/// The progress log: finished rows are appended as they come, from any thread.
struct Log {
    file: Mutex<File>,
    path: PathBuf,
}

impl Log {
    /// Opens (and locks) the log at `path`. Rows of the same study and part are kept (a torn
    /// last line dropped); anything else is started afresh.
    fn open(path: &Path, want: &Rows, force: bool) -> Result<(Log, BTreeMap<usize, Vec<f64>>)> {
        let io = |e| Error::io(path, e);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Folder {
                    path: path.to_path_buf(),
                    problem: "another adsim is running this study now (its progress log is locked): wait for it, or write elsewhere with --out".into(),
                });
            }
            // A file system without locks (some network file systems): go on unlocked.
            Err(std::fs::TryLockError::Error(_)) => {}
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let text = String::from_utf8_lossy(&bytes);
        let kept = match parse_rows(&text, path, false) {
            Ok((rows, used)) if rows.same_study(want) => Some((rows.rows, used)),
            // Another study's log (another plan, part or program version): its rows are
            // kept unless --force says to start afresh.
            Ok((rows, _)) if !force && !rows.rows.is_empty() => {
                return Err(Error::Folder {
                    path: path.to_path_buf(),
                    problem: format!(
                        "the progress log of another study ({} finished evaluations of part {}, fingerprint {}; this one is part {}, {}): pass --force to start afresh, or write elsewhere with --out",
                        rows.rows.len(),
                        rows.part,
                        &rows.fingerprint[..rows.fingerprint.len().min(12)],
                        want.part,
                        &want.fingerprint[..12]
                    ),
                });
            }
            _ => None,
        };
        let (done, used) = match kept {
            Some(k) => k,
            None => {
                file.set_len(0).map_err(io)?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                file.write_all(want.header().as_bytes()).map_err(io)?;
                (BTreeMap::new(), want.header().len())
            }
        };
        file.set_len(used as u64).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Log {
                file: Mutex::new(file),
                path: path.to_path_buf(),
            },
            done,
        ))
    }

    /// Appends one finished row, whole: one write of one line.
    fn add(&self, i: usize, row: &[f64]) -> Result<()> {
        let mut file = lock(&self.file);
        file.write_all(row_line(i, row).as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a call of [`run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// Evaluations in this call's part.
    pub evaluations: usize,
    /// Of those, read back from an earlier, interrupted call.
    pub resumed: usize,
}

/// The evaluation indices of `part` among `total`.
fn part_range(shard: Option<Shard>, total: usize) -> Range<usize> {
    match shard {
        Some(s) => {
            let r = s.ids(total as u64);
            r.start as usize..r.end as usize
        }
        None => 0..total,
    }
}

fn part_name(shard: Option<Shard>) -> String {
    shard.map_or("all".into(), |s| format!("{}/{}", s.index, s.count))
}

/// Runs `study` (or its `shard`) into `out`: evaluations in parallel on rayon, each appended to
/// the progress log ([`progress_path`]) as it finishes, so a killed study, run again with the
/// same plan and `--out`, evaluates only what is missing. Without a shard, writes the study
/// folder; with one, a shard folder (`plan.toml` and [`ROWS_FILE`]) for [`merge`]. The log is
/// removed once the folder is written. `progress` gets (finished, all) after each evaluation.
pub fn run(
    study: &Study,
    out: &Path,
    force: bool,
    shard: Option<Shard>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Done> {
    if out.exists() && !force {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let all = study.all_points();
    let range = part_range(shard, all.len());
    let want = Rows {
        fingerprint: study.fingerprint(),
        part: part_name(shard),
        total: all.len(),
        width: study.plan.output.len(),
        rows: BTreeMap::new(),
    };
    let path = progress_path(out);
    let (log, mut done) = Log::open(&path, &want, force)?;
    let resumed = done.len();
    let todo: Vec<usize> = range.clone().filter(|i| !done.contains_key(i)).collect();
    let finished = AtomicUsize::new(resumed);
    progress(resumed, range.len());
    let design = study.points.len();
    // Two evaluations at once per thread of the pool, each on a worker outside the pool
    // (its engine's parallel loops run on the pool): a rayon task per evaluation would let a
    // thread waiting inside one evaluation start others, and hold many evaluations' memory.
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None);
    let fresh = Mutex::new(Vec::with_capacity(todo.len()));
    std::thread::scope(|scope| {
        for _ in 0..(2 * rayon::current_num_threads()).min(todo.len()) {
            scope.spawn(|| {
                while let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if lock(&failed).is_some() {
                        break;
                    }
                    let label = if i < design {
                        format!("evaluation {i}")
                    } else {
                        format!("tornado point {}", i - design)
                    };
                    let row = study
                        .evaluate_at(&all[i], &label)
                        .and_then(|row| log.add(i, &row).map(|()| row));
                    match row {
                        Ok(row) => {
                            lock(&fresh).push((i, row));
                            progress(finished.fetch_add(1, Ordering::Relaxed) + 1, range.len());
                        }
                        Err(e) => {
                            lock(&failed).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&failed).take() {
        return Err(e);
    }
    let fresh = std::mem::take(&mut *lock(&fresh));
    done.extend(fresh);
    match shard {
        None => {
            let mut rows = done.into_values();
            let outputs: Vec<Vec<f64>> = rows.by_ref().take(design).collect();
            let tornado: Vec<Vec<f64>> = rows.collect();
            write(study, &outputs, &tornado, out, force)?;
        }
        Some(_) => {
            let rows = Rows { rows: done, ..want };
            write_dir(out, force, |tmp| {
                write_plan(study, tmp)?;
                let mut text = rows.header();
                for (i, row) in &rows.rows {
                    text.push_str(&row_line(*i, row));
                }
                write_text(&tmp.join(ROWS_FILE), &text)
            })?;
        }
    }
    drop(log);
    let _ = std::fs::remove_file(&path);
    Ok(Done {
        evaluations: range.len(),
        resumed,
    })
}

/// Writes the resolved plan to `dir/plan.toml`.
pub(super) fn write_plan(study: &Study, dir: &Path) -> Result<()> {
    write_text(&dir.join("plan.toml"), &super::plan_text(study))
}

/// Whether `dir` is a study shard's folder (it holds [`ROWS_FILE`]).
pub fn is_shard(dir: &Path) -> bool {
    dir.join(ROWS_FILE).is_file()
}

/// Joins the shard folders of one study (`adsim study PLAN --shard K/N`) into the study folder
/// `out`, equal to an unsharded run's. Refused, naming the folder: a shard of another study or
/// another split, a missing or repeated shard, a damaged rows file.
pub fn merge(dirs: &[PathBuf], out: &Path, force: bool) -> Result<()> {
    let first = dirs.first().ok_or_else(|| Error::Argument {
        name: "shards".into(),
        value: "none".into(),
        expected: "the folders of every shard of one study".into(),
    })?;
    let plan_path = first.join("plan.toml");
    let text = std::fs::read_to_string(&plan_path).map_err(|e| Error::io(&plan_path, e))?;
    let file = plan_path.display().to_string();
    let study = Study::new(Plan::parse(&text, &file)?, &file, first)?;
    let fingerprint = study.fingerprint();
    let total = study.all_points().len();
    let mut seen: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut count = None;
    let mut rows = BTreeMap::new();
    for dir in dirs {
        let path = dir.join(ROWS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let (r, _) = parse_rows(&text, &path, true)?;
        let folder = |problem: String| Error::Folder {
            path: dir.clone(),
            problem,
        };
        if r.fingerprint != fingerprint || r.total != total || r.width != study.plan.output.len() {
            return Err(folder(format!(
                "a shard of another study (or of another adsim version) than {}: merge the shards of one `adsim study ... --shard K/N`",
                first.display()
            )));
        }
        let shard = Shard::parse(&r.part).map_err(|_| {
            folder(format!(
                "part {:?}: not a shard (a study's rows of part K/N)",
                r.part
            ))
        })?;
        if *count.get_or_insert(shard.count) != shard.count {
            return Err(folder(format!(
                "shard {} of {}, but the others split the study into {}",
                shard.index,
                shard.count,
                count.unwrap_or(0)
            )));
        }
        if let Some(other) = seen.insert(shard.index, dir.clone()) {
            return Err(folder(format!(
                "shard {}/{} again: {} is the same shard",
                shard.index,
                shard.count,
                other.display()
            )));
        }
        let range = part_range(Some(shard), total);
        if r.rows.len() != range.len() || r.rows.keys().any(|i| !range.contains(i)) {
            return Err(folder(format!(
                "{ROWS_FILE} holds {} evaluations, but shard {}/{} has {} ({} to {})",
                r.rows.len(),
                shard.index,
                shard.count,
                range.len(),
                range.start,
                range.end.saturating_sub(1)
            )));
        }
        rows.extend(r.rows);
    }
    let count = count.unwrap_or(0);
    let missing: Vec<String> = (0..count)
        .filter(|k| !seen.contains_key(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Argument {
            name: "shards".into(),
            value: format!("{} folders", dirs.len()),
            expected: format!("every shard of the study; missing: {}", missing.join(", ")),
        });
    }
    let design = study.points.len();
    let mut values = rows.into_values();
    let outputs: Vec<Vec<f64>> = values.by_ref().take(design).collect();
    let tornado: Vec<Vec<f64>> = values.collect();
    write(&study, &outputs, &tornado, out, force)
}

/// The folders of a staged study's stages, inside its folder (the third only with
/// `then.lhs_samples`).
pub const STAGES: [&str; 3] = ["1-screening", "2-sobol", "3-lhs"];

/// A study's `indices.csv`, read back.
pub(super) fn read_indices(path: &Path) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|source| Error::Table {
            path: path.to_path_buf(),
            source,
        })
}

/// Each factor's screening score from a Morris study's `indices.csv`: its mu* over the
/// largest mu* of the same output, at its largest over the outputs (so a factor that drives
/// any one output ranks high). Strongest first; the dummy and factors that move nothing left
/// out.
pub fn screening_scores(indices: &Path) -> Result<Vec<(String, f64)>> {
    let df = read_indices(indices)?;
    let (outputs, factors, measures) = (
        crate::table::texts(&df, "output"),
        crate::table::texts(&df, "factor"),
        crate::table::texts(&df, "measure"),
    );
    let values = crate::table::floats(&df, "value");
    let mut best: BTreeMap<&str, f64> = BTreeMap::new();
    for (i, o) in outputs.iter().enumerate() {
        if measures[i] != "mu_star" {
            continue;
        }
        let top = (0..outputs.len())
            .filter(|&j| &outputs[j] == o && measures[j] == "mu_star")
            .map(|j| values[j])
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        if top > 0.0 && values[i].is_finite() {
            let score = best.entry(factors[i].as_str()).or_insert(0.0);
            *score = score.max(values[i] / top);
        }
    }
    let mut out: Vec<(String, f64)> = best
        .into_iter()
        .filter(|(f, v)| *f != DUMMY && *v > 0.0)
        .map(|(f, v)| (f.to_string(), v))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// Each output's factors from a Morris study's `indices.csv`, strongest (largest mu*) first,
/// outputs in the order of the file; the dummy and factors that do not move the output left
/// out.
pub fn screening_rankings(indices: &Path) -> Result<Vec<Vec<String>>> {
    let df = read_indices(indices)?;
    let (outputs, factors, measures) = (
        crate::table::texts(&df, "output"),
        crate::table::texts(&df, "factor"),
        crate::table::texts(&df, "measure"),
    );
    let values = crate::table::floats(&df, "value");
    let mut order: Vec<&str> = Vec::new();
    for o in &outputs {
        if !order.contains(&o.as_str()) {
            order.push(o);
        }
    }
    Ok(order
        .into_iter()
        .map(|o| {
            let mut ranked: Vec<(&str, f64)> = (0..outputs.len())
                .filter(|&i| outputs[i] == o && measures[i] == "mu_star")
                .filter(|&i| factors[i] != DUMMY && values[i].is_finite() && values[i] > 0.0)
                .map(|i| (factors[i].as_str(), values[i]))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            ranked.into_iter().map(|(f, _)| f.to_string()).collect()
        })
        .collect())
}

/// The factors a second stage carries: each output's strongest, then each output's second,
/// and so on, in turn, skipping factors already carried, until `n` (or every factor that moves
/// some output) are carried. So every output that varies has its top factors in the Sobol
/// stage, rather than the factors of one output taking every place.
pub fn carried_factors(rankings: &[Vec<String>], n: usize) -> Vec<String> {
    let mut carried: Vec<String> = Vec::new();
    let depth = rankings.iter().map(Vec::len).max().unwrap_or(0);
    'ranks: for rank in 0..depth {
        for ranking in rankings {
            if carried.len() >= n {
                break 'ranks;
            }
            if let Some(f) = ranking.get(rank)
                && !carried.contains(f)
            {
                carried.push(f.clone());
            }
        }
    }
    carried
}

/// The second stage of a two-stage `study`: a `sobol` study of `then.factors` factors taken
/// in turn from each output's screening ranking ([`carried_factors`]), the others at their
/// base values, with the same outputs, size and seed.
pub fn second_stage(study: &Study, rankings: &[Vec<String>]) -> Result<Study> {
    let then = study.plan.then.clone().ok_or_else(|| Error::Argument {
        name: "plan".into(),
        value: study.plan.name.clone(),
        expected: "a plan with a [then] stage".into(),
    })?;
    let carried = carried_factors(rankings, then.factors as usize);
    let factor: Vec<super::Factor> = study
        .plan
        .factor
        .iter()
        .filter(|f| carried.contains(&f.key))
        .cloned()
        .collect();
    let file = format!("{} (second stage)", study.plan.name);
    if factor.is_empty() {
        return Err(Error::invalid(
            &file,
            "then",
            "no factor",
            "a screening in which at least one factor moves an output",
        ));
    }
    let plan = Plan {
        name: format!("{}-sobol", study.plan.name),
        description: format!(
            "Sobol indices of {} factors taken in turn from each output's ranking in the Morris screening of {}.",
            factor.len(),
            study.plan.name
        ),
        design: Design::Sobol,
        samples: Some(then.samples),
        trajectories: None,
        morris_levels: None,
        factor,
        then: None,
        ..study.plan.clone()
    };
    Study::new(plan, &file, Path::new("."))
}

/// The third stage of a staged study with `then.lhs_samples`: a Latin hypercube over every
/// factor of the screening, with the same outputs, size and seed, whose rank correlations the
/// report sets beside the other two stages' rankings.
pub fn third_stage(study: &Study) -> Result<Option<Study>> {
    let Some(n) = study.plan.then.as_ref().and_then(|t| t.lhs_samples) else {
        return Ok(None);
    };
    let plan = Plan {
        name: format!("{}-lhs", study.plan.name),
        description: format!(
            "Rank correlations and the parameter-uncertainty interval over a Latin hypercube of the {} factors screened by {}.",
            study.plan.factor.len(),
            study.plan.name
        ),
        design: Design::Lhs,
        samples: Some(n),
        trajectories: None,
        morris_levels: None,
        bootstrap: None,
        then: None,
        ..study.plan.clone()
    };
    let file = format!("{} (third stage)", study.plan.name);
    Study::new(plan, &file, Path::new(".")).map(Some)
}

/// Runs a staged study (a `morris` plan with `[then]`) into `out`: the screening into
/// `out/1-screening`, then Sobol indices of the factors it ranks highest into `out/2-sobol`,
/// and with `then.lhs_samples` a Latin hypercube of every screened factor into `out/3-lhs`,
/// each a study folder of its own, and a report of all (with the stages' rankings compared
/// when there are three). A killed study resumes: a finished stage is kept (the folder holds
/// the plan, so a folder of another plan is not mistaken for it), a stage under way resumes
/// from its progress log. Returns each stage's evaluations.
pub fn run_staged(
    study: &Study,
    out: &Path,
    force: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<Done>> {
    let plan_text = super::plan_text(study);
    let ours = std::fs::read_to_string(out.join("plan.toml")).is_ok_and(|t| t == plan_text)
        && !out.join("report.md").exists();
    // A folder that is not this study's, replaced under --force: moved aside first and
    // removed only once the study is written, so a failed run loses nothing.
    let aside = out.with_file_name(format!(
        ".{}.replaced",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if out.exists() && !ours {
        if !force {
            return Err(Error::Exists(out.to_path_buf()));
        }
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_text(&out.join("plan.toml"), &plan_text)?;
    let mut first = study.clone();
    first.plan.then = None;
    let stage = |s: &Study, dir: &Path| -> Result<Done> {
        // A finished stage is kept if it is this stage (its plan, in this program version).
        let same =
            std::fs::read_to_string(dir.join("plan.toml")).is_ok_and(|t| t == super::plan_text(s));
        if same && dir.join("report.md").exists() {
            let n = s.all_points().len();
            return Ok(Done {
                evaluations: n,
                resumed: n,
            });
        }
        run(s, dir, true, None, progress)
    };
    let one = stage(&first, &out.join(STAGES[0]))?;
    let scores = screening_scores(&out.join(STAGES[0]).join("indices.csv"))?;
    let rankings = screening_rankings(&out.join(STAGES[0]).join("indices.csv"))?;
    let second = second_stage(study, &rankings)?;
    let two = stage(&second, &out.join(STAGES[1]))?;
    let mut done = vec![one, two];
    let third = third_stage(study)?;
    if let Some(t) = &third {
        done.push(stage(t, &out.join(STAGES[2]))?);
    }
    let mut blocks = staged_report(study, &second, third.as_ref(), &scores, out)?;
    if third.is_some() {
        blocks.extend(super::rankings::compared(study, &second, out)?);
    }
    write_text(&out.join("report.html"), &html(&blocks, out)?)?;
    write_text(&out.join("report.md"), &markdown(&blocks))?;
    let _ = std::fs::remove_dir_all(&aside);
    Ok(done)
}

/// The report of a two-stage study: what the screening found, what it carried on, and the
/// Sobol indices of those factors, with the stages' index charts.
fn staged_report(
    study: &Study,
    second: &Study,
    third: Option<&Study>,
    scores: &[(String, f64)],
    out: &Path,
) -> Result<Vec<Block>> {
    let df = read_indices(&out.join(STAGES[1]).join("indices.csv"))?;
    let (outputs, factors, measures) = (
        crate::table::texts(&df, "output"),
        crate::table::texts(&df, "factor"),
        crate::table::texts(&df, "measure"),
    );
    let (values, lo, hi) = (
        crate::table::floats(&df, "value"),
        crate::table::floats(&df, "lo"),
        crate::table::floats(&df, "hi"),
    );
    let names = study.output_names();
    let carried: Vec<&String> = second.plan.factor.iter().map(|f| &f.key).collect();
    let st = |o: &str, f: &str| -> String {
        (0..outputs.len())
            .find(|&i| outputs[i] == o && factors[i] == f && measures[i] == "ST")
            .map_or("-".into(), |i| {
                if values[i].is_finite() {
                    format!("{:.2} [{:.2}, {:.2}]", values[i], lo[i], hi[i])
                } else {
                    // An output with no variance over the design has no share of it to give.
                    "undefined (the output does not vary)".into()
                }
            })
    };
    // One table per opt-out rate, so a table has a handful of columns; headers wrap.
    let mut rates: Vec<f64> = Vec::new();
    for o in &study.plan.output {
        if !rates.contains(&o.rate) {
            rates.push(o.rate);
        }
    }
    let tables: Vec<Block> = rates
        .iter()
        .map(|&rate| {
            let chosen: Vec<usize> = (0..names.len())
                .filter(|&i| study.plan.output[i].rate == rate)
                .collect();
            let mut header = vec!["factor".to_string(), "screening score".to_string()];
            header.extend(chosen.iter().map(|&i| {
                let o = &study.plan.output[i];
                format!("ST: {} ({})", o.metric, o.arm.as_deref().unwrap_or(""))
            }));
            let rows = scores
                .iter()
                .map(|(f, score)| {
                    let mut row = vec![f.clone(), format!("{score:.2}")];
                    row.extend(chosen.iter().map(|&i| {
                        if carried.contains(&f) {
                            st(&names[i], f)
                        } else {
                            "-".into()
                        }
                    }));
                    row
                })
                .collect();
            Block::Table(header, rows)
        })
        .collect();
    let p = &study.plan;
    let lhs = third.map_or(String::new(), |t| {
        format!(
            " Stage 3, `{}/`: a Latin hypercube of all {} factors, {} evaluations, for rank correlations and the parameter-uncertainty interval.",
            STAGES[2],
            p.factor.len(),
            t.all_points().len()
        )
    });
    let mut b = vec![
        Block::Heading(
            1,
            format!(
                "adsim study: {} ({} stages)",
                p.name,
                if third.is_some() { "three" } else { "two" }
            ),
        ),
        Block::Para(p.description.clone()),
        Block::Para(format!(
            "Stage 1, `{}/`: Morris screening of {} factors and a dummy, {} evaluations. Stage 2, `{}/`: Sobol indices of the {} factors it ranks highest, the others at their base values, {} evaluations.{lhs} Each stage's folder is a study of its own, with its report, tables and charts; every evaluation uses the simulation seed {}.",
            STAGES[0],
            p.factor.len(),
            study.all_points().len(),
            STAGES[1],
            carried.len(),
            second.all_points().len(),
            study.base.population.seed
        )),
        Block::Heading(2, "What the screening found, and what it explains".into()),
        Block::Para("A factor's screening score is its Morris mu* over the largest mu* of the same output, at its largest over the outputs: 1 for the factor that moves some output most. Factors that move no output are left out. The second stage carries each output's strongest factor, then each output's second, and so on in turn, so that every output that varies has its top factors there. ST is the factor's total Sobol index (share of the output's variance it explains, interactions included), with its 95% bootstrap interval; a dash: not carried to the second stage.".into()),
    ];
    for (rate, table) in rates.iter().zip(tables) {
        b.push(Block::Heading(3, format!("At opt-out rate {rate}")));
        b.push(table);
    }
    for (o, name) in names.iter().enumerate() {
        let chart = format!("{}/indices_{}.png", STAGES[1], o + 1);
        if out.join(&chart).is_file() {
            b.push(Block::Image(
                chart,
                format!("Sobol indices of {name} (stage 2)."),
            ));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_bit_for_bit_and_a_torn_line_ends_them() {
        let rows = Rows {
            fingerprint: "ab12".into(),
            part: "1/3".into(),
            total: 10,
            width: 3,
            rows: BTreeMap::from([
                (4, vec![0.1 + 0.2, f64::NAN, -0.0]),
                (7, vec![1e-300, f64::INFINITY, 123456.789]),
            ]),
        };
        let mut text = rows.header();
        for (i, r) in &rows.rows {
            text.push_str(&row_line(*i, r));
        }
        let path = Path::new("x");
        let (back, used) = parse_rows(&text, path, true).unwrap();
        assert_eq!(used, text.len());
        for (i, r) in &rows.rows {
            let b = &back.rows[i];
            assert!(r.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        // A kill mid-line: the lenient reader keeps the whole lines, the strict one refuses.
        let cut = &text[..text.len() - 5];
        let (lenient, used) = parse_rows(cut, path, false).unwrap();
        assert_eq!(lenient.rows.len(), 1);
        assert!(cut[..used].ends_with('\n'));
        assert!(parse_rows(cut, path, true).is_err());
        // A row past the study's evaluations, or repeated, is not a row.
        let extra = format!("{text}12 0000000000000000 0000000000000000 0000000000000000\n");
        assert!(parse_rows(&extra, path, true).is_err());
        let again = format!("{text}{}", row_line(4, &[1.0, 2.0, 3.0]));
        assert!(parse_rows(&again, path, true).is_err());
    }

    #[test]
    fn the_second_stage_carries_each_outputs_top_factors_in_turn() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Output 1 is moved by a, b, c; output 2 by a, d; output 3 by e alone.
        let rankings = vec![r(&["a", "b", "c"]), r(&["a", "d"]), r(&["e"])];
        // First every output's strongest (a, then e: a is output 2's too), then the seconds.
        assert_eq!(carried_factors(&rankings, 4), r(&["a", "e", "b", "d"]));
        assert_eq!(carried_factors(&rankings, 3), r(&["a", "e", "b"]));
        // A best score over all outputs would have carried output 1's a, b, c and left e out.
        assert_eq!(
            carried_factors(&rankings, 10),
            r(&["a", "e", "b", "d", "c"])
        );
        assert!(carried_factors(&[], 3).is_empty());
    }
}
