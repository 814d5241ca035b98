//! Beyond one machine (SPEC §12): shards and their merge.
//!
//! Shard `k` of `n` simulates a fixed slice of user ids, `[k N / n, (k+1) N / n)`, in every
//! replication, and writes its partial count tables with `shard.json`: its index, the shard
//! count, and a fingerprint of the resolved scenario (SHA-256 of its TOML and the program
//! version). Users are pure functions of their ids and thresholds come from the calibration
//! sample, so a shard's counts do not depend on the others. `merge` checks that every shard is
//! present exactly once and that the fingerprints agree, adds the counts, and publishes the
//! same results folder as a single-machine run.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cells::{ALL_MEASURES, Counts, Layout, SEGMENT_MEASURES, TIMELINE_CHANNELS};
use crate::error::{Error, Result};
use crate::report::{floats, texts};
use crate::run::{
    CELLS_SCHEMA_VERSION, RunOptions, RunOutput, load_folder_scenario, publish, read_parquet,
    simulate_range, write_dir, write_parquet, write_text,
};
use crate::scenario::Resolved;
use crate::sweep::Sweep;

/// One shard of a run: `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// 0-based index.
    pub index: u32,
    /// How many shards the run has.
    pub count: u32,
}

impl Shard {
    /// Parses `K/N` (0 <= K < N).
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || Error::Argument {
            name: "--shard".into(),
            value: text.into(),
            expected: "K/N with 0 <= K < N, such as 3/8".into(),
        };
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The user ids of this shard among `users`.
    pub fn ids(&self, users: u64) -> std::ops::Range<u64> {
        let cut = |k: u32| (u128::from(users) * u128::from(k) / u128::from(self.count)) as u64;
        cut(self.index)..cut(self.index + 1)
    }
}

/// The fingerprint of a resolved scenario: SHA-256 of its TOML and the program version.
pub fn fingerprint(resolved: &Resolved) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(resolved.scenario.to_toml().as_bytes());
    hex::encode(h.finalize().as_slice())
}

/// What `shard.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// Which shard.
    pub shard: Shard,
    /// Fingerprint of the resolved scenario.
    pub fingerprint: String,
    /// Users of the whole run.
    pub users: u64,
}

/// Simulates shard `shard` of `resolved` and writes its folder: `scenario.toml`, the partial
/// `cells.parquet` and `timeline_cells.parquet`, and `shard.json`.
pub fn run_shard(
    resolved: &Resolved,
    shard: Shard,
    out: &Path,
    force: bool,
    progress: bool,
) -> Result<()> {
    let users = resolved.scenario.population.users;
    if u64::from(shard.count) > users {
        return Err(Error::Argument {
            name: "--shard".into(),
            value: format!("{}/{}", shard.index, shard.count),
            expected: format!("at most as many shards as users ({users})"),
        });
    }
    if out.exists() && !force {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let (layout, counts) = simulate_range(resolved, shard.ids(users), progress)?;
    let table = |source| Error::Table {
        path: out.to_path_buf(),
        source,
    };
    let mut cells = crate::run::cells_frame(resolved, &layout, &counts).map_err(table)?;
    let mut timeline = crate::run::timeline_frame(resolved, &layout, &counts).map_err(table)?;
    let info = ShardInfo {
        shard,
        fingerprint: fingerprint(resolved),
        users,
    };
    write_dir(out, force, |tmp| {
        write_text(&tmp.join("scenario.toml"), &resolved.scenario.to_toml())?;
        write_parquet(&tmp.join("cells.parquet"), &mut cells, CELLS_SCHEMA_VERSION)?;
        write_parquet(
            &tmp.join("timeline_cells.parquet"),
            &mut timeline,
            CELLS_SCHEMA_VERSION,
        )?;
        write_text(
            &tmp.join("shard.json"),
            &format!(
                "{}\n",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            ),
        )
    })
}

fn read_info(dir: &Path) -> Result<ShardInfo> {
    let path = dir.join("shard.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Argument {
        name: "shard folder".into(),
        value: dir.display().to_string(),
        expected: format!(
            "a folder written by `adsim run --shard K/N` ({}: {e})",
            path.display()
        ),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        file: path.display().to_string(),
        key: ".".into(),
        message: e.to_string(),
    })
}

/// Adds a shard's long-form tables into `counts` (one per replication).
fn accumulate(
    resolved: &Resolved,
    layout: &Layout,
    dir: &Path,
    counts: &mut [Counts],
) -> Result<()> {
    let sweep = Sweep::new(resolved);
    let arm_index = |name: &str| sweep.arms.iter().position(|a| a.name == name);
    let countries: Vec<&str> = resolved.data.country_codes();
    let ages: Vec<&str> = resolved.data.age_labels();
    let segments: Vec<&str> = resolved.data.segment_names();
    let foreign = |what: &str, value: &str| Error::Argument {
        name: "shard".into(),
        value: dir.display().to_string(),
        expected: format!("counts of this scenario, but it has {what} {value:?}"),
    };
    let cells = read_parquet(&dir.join("cells.parquet"))?;
    let (arm, level, rep, country, age, seg, meas, count) = (
        texts(&cells, "arm"),
        floats(&cells, "level"),
        floats(&cells, "replication"),
        texts(&cells, "country"),
        texts(&cells, "age_band"),
        texts(&cells, "segment"),
        texts(&cells, "measure"),
        floats(&cells, "count"),
    );
    let per = layout.per_level();
    for i in 0..cells.height() {
        let a = arm_index(&arm[i]).ok_or_else(|| foreign("arm", &arm[i]))?;
        let c = countries
            .iter()
            .position(|x| *x == country[i])
            .ok_or_else(|| foreign("country", &country[i]))?;
        let g = ages
            .iter()
            .position(|x| *x == age[i])
            .ok_or_else(|| foreign("age band", &age[i]))?;
        let m = if seg[i] == "all" {
            ALL_MEASURES
                .iter()
                .position(|x| *x == meas[i])
                .map(|m| layout.segments * SEGMENT_MEASURES.len() + m)
        } else {
            let s = segments
                .iter()
                .position(|x| *x == seg[i])
                .ok_or_else(|| foreign("segment", &seg[i]))?;
            SEGMENT_MEASURES
                .iter()
                .position(|x| *x == meas[i])
                .map(|m| s * SEGMENT_MEASURES.len() + m)
        }
        .ok_or_else(|| foreign("measure", &meas[i]))?;
        let (k, r) = (level[i] as usize, rep[i] as usize);
        if k >= layout.levels[a] || r >= counts.len() {
            return Err(foreign("level or replication", &format!("{k}, {r}")));
        }
        counts[r].arms[a][k * per + layout.cell(c, g) + m] += count[i] as i64;
    }
    let t = read_parquet(&dir.join("timeline_cells.parquet"))?;
    let (arm, level, rep, day, channel, count) = (
        texts(&t, "arm"),
        floats(&t, "level"),
        floats(&t, "replication"),
        floats(&t, "day"),
        texts(&t, "channel"),
        floats(&t, "count"),
    );
    let tper = layout.timeline_per_level();
    for i in 0..t.height() {
        let a = arm_index(&arm[i]).ok_or_else(|| foreign("arm", &arm[i]))?;
        let j = TIMELINE_CHANNELS
            .iter()
            .position(|x| *x == channel[i])
            .ok_or_else(|| foreign("channel", &channel[i]))?;
        let (k, r, d) = (level[i] as usize, rep[i] as usize, day[i] as usize);
        if k >= layout.levels[a] || r >= counts.len() || d > layout.days {
            return Err(foreign(
                "level, replication or day",
                &format!("{k}, {r}, {d}"),
            ));
        }
        counts[r].timeline[a][k * tper + d * TIMELINE_CHANNELS.len() + j] += count[i] as i64;
    }
    Ok(())
}

/// Merges shard folders into one results folder, identical to a single-machine run but for
/// `run.json`. Refuses a missing, duplicate or foreign shard, naming it.
pub fn merge(dirs: &[PathBuf], options: &RunOptions) -> Result<RunOutput> {
    let first = dirs.first().ok_or_else(|| Error::Argument {
        name: "merge".into(),
        value: "no folders".into(),
        expected: "the folders of every shard".into(),
    })?;
    let resolved = load_folder_scenario(first)?;
    let expected = fingerprint(&resolved);
    let mut seen: Vec<Option<&PathBuf>> = Vec::new();
    let mut total = None;
    for dir in dirs {
        let info = read_info(dir)?;
        if info.fingerprint != expected {
            return Err(Error::Argument {
                name: "shard".into(),
                value: dir.display().to_string(),
                expected: format!(
                    "a shard of the same scenario as {} (fingerprints differ: it comes from another scenario, seed or program version)",
                    first.display()
                ),
            });
        }
        let n = *total.get_or_insert(info.shard.count);
        if info.shard.count != n {
            return Err(Error::Argument {
                name: "shard".into(),
                value: dir.display().to_string(),
                expected: format!(
                    "one of {n} shards, like the others, but it is one of {}",
                    info.shard.count
                ),
            });
        }
        seen.resize(n as usize, None);
        let slot = &mut seen[info.shard.index as usize];
        if let Some(other) = slot {
            return Err(Error::Argument {
                name: "shard".into(),
                value: dir.display().to_string(),
                expected: format!(
                    "each shard once, but shard {} is also {}",
                    info.shard.index,
                    other.display()
                ),
            });
        }
        *slot = Some(dir);
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(k, _)| format!("{k}/{}", seen.len()))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Argument {
            name: "merge".into(),
            value: format!("{} folders", dirs.len()),
            expected: format!("every shard, but these are missing: {}", missing.join(", ")),
        });
    }
    let sweep = Sweep::new(&resolved);
    let layout = sweep.layout.clone();
    let mut counts: Vec<Counts> = (0..resolved.scenario.population.replications)
        .map(|_| Counts::zeros(&layout))
        .collect();
    for dir in dirs {
        accumulate(&resolved, &layout, dir, &mut counts)?;
    }
    publish(&resolved, &layout, &counts, options, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_ids() {
        for (users, n) in [(10u64, 3u32), (1000, 7), (5, 5), (1_000_000_007, 64)] {
            let mut next = 0;
            for k in 0..n {
                let r = Shard { index: k, count: n }.ids(users);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, users);
        }
        assert!(Shard::parse("3/8").is_ok());
        for bad in ["8/8", "1/0", "x/2", "3", "-1/4"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
