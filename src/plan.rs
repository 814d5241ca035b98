//! What a run will cost before it starts (`adsim run --dry-run`), and the refusal of a run
//! that would need more memory than it may use (docs/model.md §2.3).
//!
//! Memory is bounded by construction: replications are simulated, written and folded into the
//! estimates one at a time, so the peak is set by one replication. Its parts, each from the
//! layout of the counts:
//! - one accumulator per worker thread, each a full replication's counts (difference arrays
//!   over `levels + 1` rows per arm) plus the per-cell table common to every arm;
//! - the finished counts of the replication, handed to the writer and the estimator;
//! - the calibration sample's scores (8 bytes per calibration user);
//! - the rows of the count tables being written, at most [`crate::cells::BATCH_ROWS`] at a
//!   time, and the estimator's running moments;
//! - a fixed base: the program, polars, the charts and the report.
//!
//! The base and the per-row costs were measured with `/usr/bin/time -v` on the reference
//! machine (reports/performance.md); the prediction is meant to lie at or above the measured
//! peak and within 25% of it.

use std::path::Path;

use crate::cells::{BATCH_ROWS, Layout};
use crate::error::{Error, Result};
use crate::scenario::Resolved;

/// Fixed memory of a run: the program, polars' and rayon's runtime, the charts and the
/// report (measured: see reports/performance.md).
pub const BASE_BYTES: u64 = 60 << 20;

/// Bytes per row of a count-table batch while it is built and encoded (keys, 26 counts with
/// their validity, the intermediate vectors and the encoder's buffers).
pub const BYTES_PER_ROW: u64 = 700;

/// Simulation cost, nanoseconds per user and arm on one core, and per level-change (the
/// reference machine: 2.9 M users per second per core for 3 arms and 21 levels).
const NS_PER_USER_ARM: f64 = 115.0;

/// Fixed cost of a replication besides its users: calibration, estimation, accumulators
/// (seconds per calibration user and per count).
const NS_PER_CALIBRATION_USER: f64 = 40.0;
const NS_PER_COUNT: f64 = 4.0;

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
    /// Predicted peak resident memory, bytes.
    pub peak_bytes: u64,
    /// Predicted wall time, seconds.
    pub seconds: f64,
}

impl Plan {
    /// The plan of `resolved` on `threads` worker threads.
    pub fn of(resolved: &Resolved, layout: &Layout, threads: usize) -> Plan {
        let s = &resolved.scenario;
        let threads = threads.max(1);
        let arm_levels: usize = layout.levels.iter().sum();
        let cells = (arm_levels * layout.countries * layout.ages * (layout.segments + 1)) as u64;
        let counts = layout.counts_bytes() + (layout.per_level() * 8) as u64;
        let calibration = u64::from(s.policy.calibration_users) * 8;
        let batch = cells.min(BATCH_ROWS as u64) * BYTES_PER_ROW;
        let peak = BASE_BYTES + (threads as u64 + 1) * counts + calibration + batch;
        let users = s.population.users as f64;
        let reps = f64::from(s.population.replications);
        let per_rep = (users * layout.levels.len() as f64 * NS_PER_USER_ARM
            + f64::from(s.policy.calibration_users) * NS_PER_CALIBRATION_USER)
            / threads as f64
            + (layout.counts_bytes() / 8) as f64 * NS_PER_COUNT;
        Plan {
            users: s.population.users,
            arms: layout.levels.len(),
            levels: layout.levels.clone(),
            replications: s.population.replications,
            threads,
            cells,
            peak_bytes: peak,
            seconds: reps * per_rep * 1e-9 + 0.3,
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
             the peak is one accumulator of counts per thread ({} threads x {} rate levels over {} arms); \
             run it with fewer --threads, fewer policy.rates levels, or a larger --memory-limit",
            human_bytes(self.peak_bytes),
            human_bytes(limit),
            self.threads,
            self.levels.iter().sum::<usize>(),
            self.arms,
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
        let plan = Plan {
            users: 10,
            arms: 3,
            levels: vec![1, 101, 101],
            replications: 1000,
            threads: 8,
            cells: 1,
            peak_bytes: 3_000_000_000,
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
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let (bytes, source) = memory_available().expect("meminfo");
            assert!(bytes > 1 << 20, "{bytes} bytes from {source}");
        }
    }
}
