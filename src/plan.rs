//! What a run will cost before it starts (`adsim run --dry-run`), and the refusal of a run
//! that would need more memory than it may use (docs/model.md §2.3).
//!
//! Memory is bounded by construction: replications are simulated, written and folded into the
//! estimates one at a time, so the peak is set by one replication and does not grow with
//! their number beyond the result tables. Its parts ([`Memory`]), each from the layout of the
//! counts:
//! - one accumulator per worker thread that has users to simulate, each a full replication's
//!   counts (difference arrays over `levels + 1` rows per arm) plus the per-cell table common
//!   to every arm;
//! - finished replications in flight: one being estimated while the writer encodes the one
//!   before (at most two);
//! - the calibration sample's scores (8 bytes per calibration user, under `policy.thresholds =
//!   "sample"`);
//! - the count-table rows gathered for a Parquet row group (at most
//!   [`crate::folder::ROW_GROUP_ROWS`] plus one batch), the day-by-day table's rows likewise
//!   (at most a row group plus one replication's), and the metadata the writer keeps per row
//!   group until the file is finished;
//! - a base: the program, polars, the charts and the report, and per level of the arms the
//!   estimator's tables of one replication and its folds across them.
//!
//! Pages of the cells no user falls in are never written, so a one-replication run's arrays
//! count only the pages of the cells its users are expected to reach; later replications
//! reuse memory the allocator zeroes in full, so theirs count in full. The constants were
//! fitted with `/usr/bin/time -v` on the
//! reference machine (reports/performance.md, which tables prediction against measurement):
//! the prediction is meant to lie at or above the measured peak and within 25% of it.

use std::path::Path;

use crate::cells::{BATCH_ROWS, Layout};
use crate::error::{Error, Result};
use crate::folder::ROW_GROUP_ROWS;
use crate::scenario::Resolved;

/// Fixed memory of a run: the program, polars' and rayon's runtime, the charts and the
/// report (fitted to `/usr/bin/time -v` on the reference machine: reports/performance.md).
pub const BASE_BYTES: u64 = 42_000_000;

/// Memory of a run per level of its arms: the estimator's margin and metric tables of one
/// replication, the folds across replications, the charts' series (fitted as [`BASE_BYTES`]:
/// 10 users and 10^8 users x 1 replication at 43 levels, 100 users x 200 at 203).
pub const BYTES_PER_ARM_LEVEL: u64 = 100_000;

/// Resident bytes per row of the count tables waiting to be written, while they are gathered,
/// joined into one row group and encoded (fitted as [`BASE_BYTES`]).
pub const BYTES_PER_ROW: u64 = 470;

/// Resident bytes per row of the day-by-day table (`timeline_cells.parquet`) waiting to be
/// written: a row per arm, level, region and day (at most; the writer skips empty ones), six
/// keys and a count per channel, built into one frame per replication and gathered like the
/// count tables' rows (fitted as [`BASE_BYTES`]: 10 users x 1000 replications and 10^5 x 5,
/// where these rows are most of what waits).
pub const BYTES_PER_TIMELINE_ROW: u64 = 450;

/// Bytes the Parquet writer keeps per row group of a count table until the file is finished
/// (column chunk metadata, statistics and page indices of about 33 columns; measured: 92 KB).
pub const BYTES_PER_ROW_GROUP: u64 = 100 << 10;

/// CPU nanoseconds per user and arm of the simulation (about 2.5 M users a second on 2 cores
/// for 3 arms at 21 levels with day-level outcomes, Custom Audience campaigns and typed
/// faults; 10^8 users x 1 replication measured at 39.9 s on 2026-11-30).
const NS_PER_USER_ARM: f64 = 265.0;
/// CPU nanoseconds per calibration user (scores and selection).
const NS_PER_CALIBRATION_USER: f64 = 90.0;
/// CPU nanoseconds per count of a replication's accumulators (zeroing, merging, prefix sums,
/// margins).
const NS_PER_COUNT: f64 = 20.0;
/// CPU nanoseconds per row of the count tables (building and encoding; on the writer's
/// thread, beside the simulation).
const NS_PER_ROW: f64 = 1000.0;
/// Seconds of every run: start, charts and report.
const FIXED_SECONDS: f64 = 0.12;

/// Where a run's peak memory goes, bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// The program and its runtime.
    pub base: u64,
    /// The engine's accumulators, one per worker thread with users to simulate.
    pub accumulators: u64,
    /// Finished replications waiting for the estimator and the writer (at most two).
    pub in_flight: u64,
    /// The calibration sample's scores.
    pub calibration: u64,
    /// Count-table and day-by-day rows gathered for a row group, and the writer's metadata.
    pub tables: u64,
}

impl Memory {
    /// The predicted peak: the sum of the parts.
    pub fn peak(&self) -> u64 {
        self.base + self.accumulators + self.in_flight + self.calibration + self.tables
    }
}

/// What a run would do and cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Users per replication.
    pub users: u64,
    /// Policy arms.
    pub arms: usize,
    /// Rate levels of each arm.
    pub levels: Vec<usize>,
    /// Replications.
    pub replications: u32,
    /// Worker threads.
    pub threads: usize,
    /// Count cells per replication: (arm, level, country, age band, segment or all).
    pub cells: u64,
    /// Count-table rows expected per replication (cells with any user).
    pub rows: u64,
    /// Predicted peak memory by part.
    pub memory: Memory,
    /// Predicted peak resident memory, bytes.
    pub peak_bytes: u64,
    /// Predicted wall time, seconds.
    pub seconds: f64,
}

/// Expected count-table rows per arm-level: a (country, age band) cell's `all` row when it
/// holds any of the `users` users, and a segment's row when any of its users touches the
/// segment (an S account interested in it or flagged for it, or a customer of one of its
/// businesses). At a few thousand users and more, nearly every row.
fn expected_rows(resolved: &Resolved, users: u64) -> f64 {
    let d = &resolved.data;
    let t = &resolved.scenario.targeting;
    let total: f64 = d.countries.country.iter().map(|c| c.m_share).sum();
    let n = users as f64;
    // Probability that one user touches segment `s`'s row (country-average S presence).
    let on_s = d
        .countries
        .country
        .iter()
        .map(|c| c.m_share * c.also_on_s)
        .sum::<f64>()
        / total.max(f64::MIN_POSITIVE);
    let touch: Vec<f64> = d
        .segments
        .segment
        .iter()
        .map(|g| {
            let p = g.prevalence.clamp(0.0, 1.0);
            let flagged = on_s * (p + (1.0 - p) * t.on_platform_fpr.max(t.m_fpr));
            let customer = p * g.customer_if_interested + (1.0 - p) * g.customer_if_not;
            1.0 - (1.0 - flagged.min(1.0)) * (1.0 - customer.min(1.0))
        })
        .collect();
    let seen = |p: f64| 1.0 - (1.0 - p.clamp(0.0, 1.0)).powf(n);
    cell_shares(resolved)
        .into_iter()
        .map(|cell| seen(cell) + touch.iter().map(|q| seen(cell * q)).sum::<f64>())
        .sum()
}

/// Each (country, age band) cell's share of the users, in layout order.
fn cell_shares(resolved: &Resolved) -> Vec<f64> {
    let d = &resolved.data;
    let global: Vec<f64> = d.age_bands.band.iter().map(|b| b.share).collect();
    let total: f64 = d.countries.country.iter().map(|c| c.m_share).sum();
    d.countries
        .country
        .iter()
        .flat_map(|c| {
            let ages = c.age_shares.clone().unwrap_or_else(|| global.clone());
            let share = c.m_share / total.max(f64::MIN_POSITIVE);
            let sum: f64 = ages.iter().sum();
            ages.into_iter()
                .map(move |a| share * a / sum.max(f64::MIN_POSITIVE))
        })
        .collect()
}

/// The share of a count array's pages that `users` users write: those of the (country, age
/// band) cells they fall in (docs/model.md §10.1), a cell's block of measures touching its own
/// pages and at most one more at each end (the blocks are about a page long, not aligned).
fn touched_share(resolved: &Resolved, layout: &Layout, users: u64) -> f64 {
    let shares = cell_shares(resolved);
    let n = users as f64;
    let reached: f64 = shares
        .iter()
        .map(|p| 1.0 - (1.0 - p.clamp(0.0, 1.0)).powf(n))
        .sum();
    let block = (layout.measures() * 8) as f64;
    (reached * (block + 2.0 * PAGE_BYTES) / (shares.len().max(1) as f64 * block)).min(1.0)
}

/// Bytes of a memory page.
const PAGE_BYTES: f64 = 4096.0;

impl Plan {
    /// The plan of `resolved` on `threads` worker threads.
    pub fn of(resolved: &Resolved, layout: &Layout, threads: usize) -> Plan {
        let s = &resolved.scenario;
        let threads = threads.max(1);
        let users = s.population.users;
        let reps = u64::from(s.population.replications);
        let arm_levels: usize = layout.levels.iter().sum();
        let per_cell = (layout.segments + 1) as u64;
        let cells = arm_levels as u64 * (layout.countries * layout.ages) as u64 * per_cell;
        let rows = ((arm_levels as f64 * expected_rows(resolved, users)).ceil() as u64).min(cells);
        let counts = layout.counts_bytes();
        let chunks = users.div_ceil(s.engine.chunk_size.max(1));
        // Only the pages of the cells a replication's users fall in are written, and so
        // resident (the rest of each array is never touched): at a few thousand users and
        // more, all of them. That holds for the first replication's arrays, fresh from the
        // system; later ones reuse memory the allocator zeroes in full (measured: 10 users x
        // 1000 replications peak as if every page were written).
        let cell_bytes =
            layout.levels.iter().map(|l| l + 1).sum::<usize>() * layout.per_level() * 8;
        let timeline_bytes = counts - cell_bytes as u64;
        let resident = |users: u64, bytes: usize| {
            let share = if reps == 1 {
                touched_share(resolved, layout, users)
            } else {
                1.0
            };
            (bytes as f64 * share).ceil() as u64
        };
        let accumulator_count = threads.min(chunks as usize).max(1) as u64;
        let accumulators = accumulator_count
            * (resident(
                users.div_ceil(accumulator_count),
                cell_bytes + layout.per_level() * 8,
            ) + timeline_bytes);
        let in_flight =
            reps.saturating_sub(1).min(2) * (resident(users, cell_bytes) + timeline_bytes);
        let buffered = (reps * rows).min((ROW_GROUP_ROWS + BATCH_ROWS) as u64);
        // The day-by-day rows of a replication come as one frame, gathered until a row group
        // is full.
        let timeline_rows = (arm_levels * layout.timeline_rows_per_level()) as u64;
        let timeline_buffered = (reps * timeline_rows).min(ROW_GROUP_ROWS as u64 + timeline_rows);
        let row_groups = 2 * ((reps * rows).div_ceil(ROW_GROUP_ROWS as u64) + 1);
        // Exact thresholds need no sample (docs/model.md §4.2).
        let calibration_users = match s.policy.thresholds {
            crate::policy::ThresholdMethod::Exact => 0,
            crate::policy::ThresholdMethod::Sample => s.policy.calibration_users,
        };
        let memory = Memory {
            base: BASE_BYTES + arm_levels as u64 * BYTES_PER_ARM_LEVEL,
            accumulators,
            in_flight,
            calibration: u64::from(calibration_users) * 8,
            tables: buffered * BYTES_PER_ROW
                + timeline_buffered * BYTES_PER_TIMELINE_ROW
                + row_groups * BYTES_PER_ROW_GROUP,
        };
        let cores = threads as f64;
        let simulate = (users as f64 * layout.levels.len() as f64 * NS_PER_USER_ARM
            + f64::from(calibration_users) * NS_PER_CALIBRATION_USER)
            / cores
            // Merging, prefix sums, margins and markets skip the cells no user reached.
            + (counts / 8) as f64 * touched_share(resolved, layout, users) * NS_PER_COUNT;
        // The writer's thread shares the cores with the simulation, and is itself one thread.
        let write = rows as f64 * NS_PER_ROW;
        let per_rep = simulate.max(write).max((simulate * cores + write) / cores);
        Plan {
            users,
            arms: layout.levels.len(),
            levels: layout.levels.clone(),
            replications: s.population.replications,
            threads,
            cells,
            rows,
            peak_bytes: memory.peak(),
            memory,
            seconds: reps as f64 * per_rep * 1e-9 + FIXED_SECONDS,
        }
    }

    /// Refuses the run when its predicted peak exceeds `limit` bytes, naming the figure and
    /// what to change.
    pub fn check(&self, limit: u64, source: &str) -> Result<()> {
        if self.peak_bytes <= limit {
            return Ok(());
        }
        Err(Error::Memory(format!(
            "this run would need about {} of memory at its peak, more than the {} it may use ({source}): \
             most of it is one replication's counts per worker thread and in flight ({} threads, {} rate levels over {} arms, {} each); \
             run it with fewer --threads, fewer policy.rates levels, or a larger --memory-limit",
            human_bytes(self.peak_bytes),
            human_bytes(limit),
            self.threads,
            self.levels.iter().sum::<usize>(),
            self.arms,
            human_bytes(self.memory.accumulators / self.threads.max(1) as u64),
        )))
    }
}

/// `1.3 GB`, `250 MB`, `12 kB` (decimal units).
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// The memory this process may use, bytes, and where the figure comes from: the smaller of
/// the memory available now (`MemAvailable` in `/proc/meminfo`) and the cgroup's limit
/// (`memory.max`, cgroup v2, or `memory.limit_in_bytes`, v1). `None` where neither can be
/// read (not Linux).
pub fn memory_available() -> Option<(u64, String)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| (kb * 1024, "memory available now".to_string()))
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| {
        std::fs::read_to_string(Path::new(p))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&b| b < 1 << 60)
            .map(|b| (b, format!("the cgroup's limit, {p}")))
    });
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(if c.0 < m.0 { c } else { m }),
        (m, c) => m.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_figure_and_the_way_out() {
        let memory = Memory {
            base: 1,
            accumulators: 2_999_999_999,
            in_flight: 0,
            calibration: 0,
            tables: 0,
        };
        let plan = Plan {
            users: 10,
            arms: 3,
            levels: vec![1, 101, 101],
            replications: 1000,
            threads: 8,
            cells: 1,
            rows: 1,
            peak_bytes: memory.peak(),
            memory,
            seconds: 1.0,
        };
        assert!(plan.check(4_000_000_000, "test").is_ok());
        let e = plan
            .check(2_000_000_000, "--memory-limit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3.00 GB") && e.contains("2.00 GB"), "{e}");
        assert!(
            e.contains("--threads") && e.contains("--memory-limit"),
            "{e}"
        );
    }

    #[test]
    fn the_day_by_day_rows_waiting_for_a_row_group_are_counted() {
        // The rows of timeline_cells.parquet do not depend on the users: at 10 users they
        // are what waits for the writer, up to a row group and one replication's frame.
        let resolved = crate::scenario::Scenario::default()
            .resolve("test", Path::new("."))
            .unwrap();
        let layout = crate::run::layout(&resolved);
        let plan = |replications: u32| {
            let mut r = resolved.clone();
            r.scenario.population.users = 10;
            r.scenario.population.replications = replications;
            Plan::of(&r, &layout, 2)
        };
        let one = plan(1);
        let per_rep =
            (layout.levels.iter().sum::<usize>() * layout.timeline_rows_per_level()) as u64;
        assert!(one.memory.tables >= per_rep * BYTES_PER_TIMELINE_ROW);
        let many = plan(1000);
        let most = (ROW_GROUP_ROWS as u64 + per_rep) * BYTES_PER_TIMELINE_ROW;
        assert!(many.memory.tables >= most, "{:?}", many.memory);
        assert!(plan(3).memory.tables > one.memory.tables);
    }

    #[test]
    fn arrays_count_the_pages_of_the_cells_users_reach() {
        let resolved = crate::scenario::Scenario::default()
            .resolve("test", Path::new("."))
            .unwrap();
        let layout = crate::run::layout(&resolved);
        let plan = |users: u64, replications: u32| {
            let mut r = resolved.clone();
            r.scenario.population.users = users;
            r.scenario.population.replications = replications;
            Plan::of(&r, &layout, 2).memory.accumulators
        };
        let full = layout.counts_bytes() + (layout.per_level() * 8) as u64;
        // Ten users reach at most ten of the 132 cells: a small part of the arrays.
        assert!(plan(10, 1) * 5 < full, "{} of {full}", plan(10, 1));
        assert!(plan(10, 1) < plan(100, 1));
        // Ten thousand users reach them all; a second replication reuses zeroed memory.
        assert_eq!(plan(10_000, 1), full);
        assert_eq!(plan(10, 2), full);
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let (bytes, source) = memory_available().expect("meminfo");
            assert!(bytes > 1 << 20, "{bytes} bytes from {source}");
        }
    }
}
