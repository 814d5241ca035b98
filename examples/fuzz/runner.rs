//! Running a fuzz case: parse and validate in process (a panic caught), then a small run of the
//! real binary under a memory cap and a time limit derived from the run's predicted cost, and
//! the properties every finished run must have.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adsim::cells::{All, Channel, Counts, Layout};
use adsim::scenario::{Resolved, Scenario};

use super::cases::Case;

/// How far a case got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Reading the file into a scenario (TOML syntax, types, unknown keys).
    Parse,
    /// Checking values and loading the reference data.
    Validate,
    /// Running it.
    Run,
}

/// What became of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Accepted, and (if run) finished with every property holding.
    Ran,
    /// Accepted at validation; not run (the run budget was spent).
    Validated,
    /// Refused with a clear error (it names the file).
    Refused,
    /// Refused with an error that does not name the file or key.
    Unclear,
    /// A panic (in process) or a crash (the binary).
    Panic,
    /// Over the time limit twice.
    Hang,
    /// Over the memory cap.
    OverMemory,
    /// A failed run left files behind, or a finished run lacks a file.
    Partial,
    /// A finished run broke a property.
    Broken,
}

impl Class {
    /// Whether the class is a defect.
    pub fn is_bad(self) -> bool {
        !matches!(self, Class::Ran | Class::Validated | Class::Refused)
    }
}

/// A case's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The stage reached.
    pub stage: Stage,
    /// What happened there.
    pub class: Class,
    /// The error, or what broke.
    pub detail: String,
}

/// Limits of the run stage.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The adsim binary.
    pub binary: PathBuf,
    /// Users of a run at most (larger cases run at this size).
    pub max_users: u64,
    /// Peak resident memory allowed a run, on top of three times its predicted peak.
    pub memory_slack: u64,
    /// Worker threads of a run.
    pub threads: usize,
}

fn outcome(stage: Stage, class: Class, detail: impl Into<String>) -> Outcome {
    Outcome {
        stage,
        class,
        detail: detail.into(),
    }
}

/// Runs `f`, turning a panic into its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// Whether an error message is clear: it names the case's file (or a data file it points to)
/// and is short enough to read.
fn clear(message: &str, file: &Path) -> bool {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !message.is_empty()
        && message.len() < 4000
        && (message.contains(name.as_ref()) || message.contains(".toml") || message.contains("/"))
}

/// Parses and validates `case` (written to `dir/case.toml`).
pub fn validate(case: &Case, dir: &Path) -> Result<Resolved, Outcome> {
    let file = dir.join("case.toml");
    std::fs::write(&file, &case.text)
        .map_err(|e| outcome(Stage::Parse, Class::Panic, e.to_string()))?;
    let source = file.display().to_string();
    let parsed = guarded(|| Scenario::from_file(&file))
        .map_err(|p| outcome(Stage::Parse, Class::Panic, p))?;
    let scenario = parsed.map_err(|e| {
        let m = e.to_string();
        let class = if clear(&m, &file) {
            Class::Refused
        } else {
            Class::Unclear
        };
        outcome(Stage::Parse, class, m)
    })?;
    let resolved = guarded(|| scenario.resolve(&source, dir))
        .map_err(|p| outcome(Stage::Validate, Class::Panic, p))?;
    resolved.map_err(|e| {
        let m = e.to_string();
        let class = if clear(&m, &file) {
            Class::Refused
        } else {
            Class::Unclear
        };
        outcome(Stage::Validate, class, m)
    })
}

/// The size a case runs at: at most `max_users` users, and few replications unless the users
/// are few (10 users x 1000 replications is a legal extreme worth running whole).
fn small_size(resolved: &Resolved, max_users: u64) -> (u64, u32) {
    let p = &resolved.scenario.population;
    let users = p.users.min(max_users);
    let cap = if users <= 20 { 1000 } else { 2 };
    (users, p.replications.min(cap))
}

/// Peak resident memory of process `pid` so far, bytes (Linux).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How a process run under [`run_once`] ended.
pub enum Exit {
    /// It exited: its status and what it wrote.
    Done(std::process::Output),
    /// It ran past the time limit and was killed.
    Timeout,
    /// Its resident memory passed the cap (bytes, as read) and it was killed.
    Memory(u64),
}

/// Reads `pipe` to its end on a thread of its own (so that a full pipe cannot stall the child).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut b);
        }
        b
    })
}

/// Runs the binary of `limits` with `args`, killed past `seconds` or `cap` bytes resident.
pub fn run_once(args: &[String], limits: &Limits, seconds: f64, cap: u64) -> Exit {
    let mut child = match Command::new(&limits.binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Exit::Done(std::process::Output {
                status: std::process::ExitStatus::default(),
                stdout: vec![],
                stderr: format!("spawn: {e}").into_bytes(),
            });
        }
    };
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Exit::Done(std::process::Output {
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            });
        }
        if let Some(rss) = peak_rss(child.id()).filter(|&r| r > cap) {
            let _ = child.kill();
            let _ = child.wait();
            return Exit::Memory(rss);
        }
        if start.elapsed().as_secs_f64() > seconds {
            let _ = child.kill();
            let _ = child.wait();
            return Exit::Timeout;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an accepted case small with the real binary into `dir/out` and checks the result.
pub fn run(resolved: &Resolved, dir: &Path, limits: &Limits) -> Outcome {
    let (users, replications) = small_size(resolved, limits.max_users);
    let mut small = resolved.clone();
    small.scenario.population.users = users;
    small.scenario.population.replications = replications;
    let layout = adsim::run::layout(&small);
    let plan = adsim::plan::Plan::of(&small, &layout, limits.threads);
    let seconds = 20.0 * plan.seconds + 10.0;
    let cap = 3 * plan.peak_bytes + limits.memory_slack;
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let args: Vec<String> = [
        "run",
        &dir.join("case.toml").display().to_string(),
        "--out",
        &out.display().to_string(),
        "--quiet",
        "--users",
        &users.to_string(),
        "--replications",
        &replications.to_string(),
        "--threads",
        &limits.threads.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut exit = run_once(&args, limits, seconds, cap);
    if matches!(exit, Exit::Timeout) {
        let _ = std::fs::remove_dir_all(&out);
        exit = run_once(&args, limits, seconds, cap);
    }
    let leftovers = leftovers(&out);
    match exit {
        Exit::Timeout => outcome(
            Stage::Run,
            Class::Hang,
            format!("over {seconds:.0} s twice"),
        ),
        Exit::Memory(rss) => outcome(
            Stage::Run,
            Class::OverMemory,
            format!("{} MB resident, cap {} MB", rss >> 20, cap >> 20),
        ),
        Exit::Done(done) if done.status.success() => {
            if !leftovers.is_empty() {
                return outcome(
                    Stage::Run,
                    Class::Partial,
                    format!("left behind: {leftovers:?}"),
                );
            }
            match check_folder(&out, users, replications) {
                Ok(()) => outcome(Stage::Run, Class::Ran, ""),
                Err((class, why)) => outcome(Stage::Run, class, why),
            }
        }
        Exit::Done(done) => {
            let (status, err) = (done.status, String::from_utf8_lossy(&done.stderr));
            if err.contains("panicked") || status.code().is_none_or(|c| c != 1) {
                outcome(Stage::Run, Class::Panic, format!("{status}: {err}"))
            } else if out.exists() || !leftovers.is_empty() {
                outcome(
                    Stage::Run,
                    Class::Partial,
                    format!("refused but left files: {err}"),
                )
            } else if err.starts_with("error: ") {
                outcome(Stage::Run, Class::Refused, err)
            } else {
                outcome(Stage::Run, Class::Unclear, err)
            }
        }
    }
}

/// Temporary folders left beside `out`.
fn leftovers(out: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return vec![];
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// The files every run folder holds.
const FILES: &[&str] = &[
    "scenario.toml",
    "run.json",
    "cells.parquet",
    "timeline_cells.parquet",
    "summary.csv",
    "summary.parquet",
    "summary.json",
    "segments.csv",
    "countries.csv",
    "timeline.csv",
    "report.md",
    "report.html",
];

type Broken = (Class, String);

fn broken(why: impl Into<String>) -> Broken {
    (Class::Broken, why.into())
}

/// Every file present and readable, and the counts' properties in every replication.
pub fn check_folder(dir: &Path, users: u64, replications: u32) -> Result<(), Broken> {
    for f in FILES {
        if !dir.join(f).is_file() {
            return Err((Class::Partial, format!("{f} missing")));
        }
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| broken(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let pngs = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    if pngs == 0 {
        return Err((Class::Partial, "no chart".into()));
    }
    for p in &entries {
        readable(p).map_err(|why| broken(format!("{}: {why}", p.display())))?;
    }
    let resolved = adsim::folder::load_scenario(dir).map_err(|e| broken(e.to_string()))?;
    let sweep = adsim::sweep::Sweep::new(&resolved);
    let names = adsim::run::names(&resolved, &sweep);
    let layout = &sweep.layout;
    let policy = &resolved.scenario.policy;
    for r in 0..replications {
        let mut counts = Counts::zeros(layout);
        adsim::folder::read_counts(dir, &names, layout, r, &mut counts)
            .map_err(|e| broken(e.to_string()))?;
        counts_hold(layout, &counts, users, policy)
            .map_err(|why| broken(format!("replication {r}: {why}")))?;
    }
    adsim::run::estimate_folder(dir).map_err(|e| broken(e.to_string()))?;
    Ok(())
}

fn readable(p: &Path) -> Result<(), String> {
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    match ext.as_str() {
        "png" if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.len() < 1000 => {
            Err("not a PNG image".into())
        }
        "svg"
            if !String::from_utf8_lossy(&bytes)
                .trim_end()
                .ends_with("</svg>") =>
        {
            Err("not a whole SVG".into())
        }
        "json" => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "parquet" => adsim::folder::read_parquet(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "csv" => {
            let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
            let mut lines = text.lines();
            let columns = lines.next().map_or(0, |h| h.split(',').count());
            if columns < 2 || lines.any(|l| l.split(',').count() < columns) {
                return Err("ragged CSV".into());
            }
            Ok(())
        }
        "md" | "html" | "toml" if bytes.is_empty() => Err("empty".into()),
        _ => Ok(()),
    }
}

/// The properties of one replication's counts: every user counted once per arm and level;
/// opt-outs nested (the achieved rate never falls as the target rises); ad use only for
/// users who stayed; every shared user linked once (or not at all); notice actions on an
/// acceptance day (any day of the horizon where new users choose at sign-up), Settings actions
/// on a day of a window opened by an acceptance (docs/model.md §4.4); users in ad use never
/// more than users.
pub fn counts_hold(
    l: &Layout,
    c: &Counts,
    users: u64,
    policy: &adsim::policy::PolicyConfig,
) -> Result<(), String> {
    let accept = policy.acceptance_days as usize;
    let window = accept - 1 + policy.window_days as usize;
    let last_notice = if policy.new_user_share > 0.0 {
        l.days.saturating_sub(1)
    } else {
        accept - 1
    };
    let total = |arm: usize, level: usize, m: All| -> i64 {
        (0..l.countries)
            .flat_map(|co| (0..l.ages).map(move |a| (co, a)))
            .map(|(co, a)| c.get(l, arm, level, co, a, l.all(m)))
            .sum()
    };
    for arm in 0..l.levels.len() {
        let mut previous = -1;
        for level in 0..l.levels[arm] {
            let t = |m| total(arm, level, m);
            if t(All::Users) != users as i64 {
                return Err(format!(
                    "arm {arm} level {level}: {} users of {users}",
                    t(All::Users)
                ));
            }
            if t(All::OptedOut) < previous {
                return Err(format!(
                    "arm {arm} level {level}: fewer opt-outs than the level below"
                ));
            }
            previous = t(All::OptedOut);
            if t(All::AdUse) > t(All::Users) - t(All::OptedOut) {
                return Err(format!(
                    "arm {arm} level {level}: ad use of users who opted out"
                ));
            }
            let links = t(All::LinkTrue)
                + t(All::LinkMetadata)
                + t(All::LinkMislinkRecycled)
                + t(All::LinkMislinkShared)
                + t(All::LinkNone);
            if links != t(All::Shared) || t(All::Shared) > t(All::Users) {
                return Err(format!(
                    "arm {arm} level {level}: links {links}, shared {}",
                    t(All::Shared)
                ));
            }
            let tl = c.timeline_level(l, arm, level);
            for (region, day) in (0..l.regions).flat_map(|r| (0..=l.days).map(move |d| (r, d))) {
                let notice = tl[l.day(region, day, Channel::Notice)];
                let settings = tl[l.day(region, day, Channel::Settings)];
                let in_use = tl[l.day(region, day, Channel::InAdUse)];
                if notice < 0 || settings < 0 || in_use < 0 || in_use > users as i64 {
                    return Err(format!(
                        "arm {arm} level {level} region {region} day {day}: a count out of range"
                    ));
                }
                if day == l.days && tl[l.day(region, day, Channel::ValueGain)] != 0 {
                    return Err(format!(
                        "arm {arm} level {level} region {region}: value past the horizon"
                    ));
                }
                if (day > last_notice && notice != 0)
                    || ((day == 0 || day > window) && settings != 0)
                {
                    return Err(format!(
                        "arm {arm} level {level}: an action on day {day} (notice to day {last_notice}, Settings to day {window})"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The tally of a fuzz run.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases by (stage reached, class).
    pub counts: std::collections::BTreeMap<(Stage, Class), u64>,
    /// The defective cases: index, origin, outcome.
    pub bad: Vec<(u64, String, Outcome)>,
    /// Registry keys a scenario can reach that some case set.
    pub covered: usize,
    /// Registry keys a scenario can reach.
    pub reachable: usize,
    /// Cases run through the binary.
    pub runs: u64,
    /// Reachable registry keys no case set.
    pub uncovered: Vec<String>,
    /// The first refusal of each stage, as an example of the messages.
    pub examples: std::collections::BTreeMap<Stage, (String, String)>,
}

impl Report {
    /// Cases of a class, over every stage.
    #[allow(dead_code)] // read by the test module, not by the example's main
    pub fn class(&self, class: Class) -> u64 {
        self.counts
            .iter()
            .filter(|((_, c), _)| *c == class)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Cases `0..n` of seed `seed`: each validated; the accepted ones run while fewer than `runs`
/// have run. Work files go under `dir`.
pub fn fuzz(n: u64, seed: u64, runs: u64, limits: &Limits, dir: &Path) -> Report {
    use super::cases::{case, reachable_keys, walk};
    let walk = walk();
    let reachable = reachable_keys();
    let mut seen = std::collections::BTreeSet::new();
    let mut report = Report {
        reachable: reachable.len(),
        ..Report::default()
    };
    for i in 0..n {
        let c = case(&walk, seed, i);
        seen.extend(c.keys.iter().cloned());
        let work = dir.join(format!("case-{}", i % 4));
        let _ = std::fs::create_dir_all(&work);
        let result = match validate(&c, &work) {
            Err(o) => o,
            Ok(_) if report.runs >= runs => outcome(Stage::Validate, Class::Validated, ""),
            Ok(resolved) => {
                report.runs += 1;
                run(&resolved, &work, limits)
            }
        };
        *report
            .counts
            .entry((result.stage, result.class))
            .or_default() += 1;
        if result.class == Class::Refused && i % 2 == 1 {
            report
                .examples
                .entry(result.stage)
                .or_insert_with(|| (c.origin.clone(), result.detail.clone()));
        }
        if result.class.is_bad() {
            report.bad.push((i, c.origin.clone(), result));
        }
    }
    report.covered = reachable.iter().filter(|k| seen.contains(*k)).count();
    report.uncovered = reachable
        .into_iter()
        .filter(|k| !seen.contains(k))
        .collect();
    report
}
