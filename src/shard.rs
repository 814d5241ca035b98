//! Beyond one machine (docs/model.md §12): shards and their merge.
//!
//! Shard `k` of `n` simulates a fixed slice of user ids, `[k N / n, (k+1) N / n)`, in every
//! replication, and writes its partial count tables with `shard.json`: its index, the shard
//! count, and a fingerprint of the resolved scenario (SHA-256 of its TOML and the program
//! version). Users are pure functions of their ids and thresholds come from the calibration
//! sample, so a shard's counts do not depend on the others. `merge` checks that every shard is
//! present exactly once and that the fingerprints agree, adds the counts, and publishes the
//! same results folder as a single-machine run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::cells::Counts;
use crate::error::{Error, Result};
use crate::folder::{
    CountsWriter, PART_KEY, Stamp, load_scenario, metadata_value, read_counts, write_dir,
    write_text,
};
use crate::run::{
    Progress, RunOptions, RunOutput, estimator, names, publish, scenario_header, simulate_each,
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

    /// Refuses more shards than `users`: some shards would have no user to simulate.
    pub fn fits(&self, users: u64) -> Result<()> {
        if u64::from(self.count) > users {
            return Err(Error::Argument {
                name: "--shard".into(),
                value: format!("{}/{}", self.index, self.count),
                expected: format!("at most as many shards as users ({users})"),
            });
        }
        Ok(())
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
    progress: Progress,
) -> Result<()> {
    let users = resolved.scenario.population.users;
    shard.fits(users)?;
    let sweep = Sweep::new(resolved);
    let info = ShardInfo {
        shard,
        fingerprint: fingerprint(resolved),
        users,
    };
    write_dir(out, force, |tmp| {
        write_text(
            &tmp.join("scenario.toml"),
            &format!(
                "{}{}",
                scenario_header(resolved),
                resolved.scenario.to_toml()
            ),
        )?;
        let mut writer = CountsWriter::new(
            tmp,
            names(resolved, &sweep),
            sweep.layout.clone(),
            &Stamp::of(resolved).part(format!("{}/{}", shard.index, shard.count)),
        );
        simulate_each(resolved, shard.ids(users), progress, |r, counts| {
            writer.write(r, counts)
        })?;
        writer.finish()?;
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
    if !path.is_file() {
        return Err(Error::Folder {
            path: dir.to_path_buf(),
            problem: "not a shard folder written by `adsim run --shard K/N` (it has no shard.json)"
                .into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        file: path.display().to_string(),
        key: ".".into(),
        message: e.to_string(),
    })
}

/// Checks that `dirs` are every shard of one run exactly once; returns the run's scenario.
fn check_shards(dirs: &[PathBuf]) -> Result<Resolved> {
    let first = dirs.first().ok_or_else(|| Error::Argument {
        name: "merge".into(),
        value: "no folders".into(),
        expected: "the folders of every shard".into(),
    })?;
    let resolved = load_scenario(first)?;
    let expected = fingerprint(&resolved);
    let mut seen: Vec<Option<&PathBuf>> = Vec::new();
    let mut total = None;
    let refuse = |dir: &Path, problem: String| Error::Folder {
        path: dir.to_path_buf(),
        problem,
    };
    for dir in dirs {
        let info = read_info(dir)?;
        if info.fingerprint != expected {
            return Err(refuse(
                dir,
                format!(
                    "not a shard of the same scenario as {} (fingerprints differ: it comes from another scenario, seed or program version)",
                    first.display()
                ),
            ));
        }
        let part = format!("{}/{}", info.shard.index, info.shard.count);
        let cells = dir.join("cells.parquet");
        if let Some(found) = metadata_value(&cells, PART_KEY)?
            && found != part
        {
            return Err(refuse(
                &cells,
                format!("holds the counts of shard {found}, but shard.json says {part}"),
            ));
        }
        let n = *total.get_or_insert(info.shard.count);
        if info.shard.count != n {
            return Err(refuse(
                dir,
                format!(
                    "one of {} shards, but the others are of {n}",
                    info.shard.count
                ),
            ));
        }
        seen.resize(n as usize, None);
        let slot = &mut seen[info.shard.index as usize];
        if let Some(other) = slot {
            return Err(refuse(
                dir,
                format!(
                    "each shard once, but shard {} is also {}",
                    info.shard.index,
                    other.display()
                ),
            ));
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
    Ok(resolved)
}

/// Merges shard folders into one results folder, identical to a single-machine run but for
/// `run.json`. Refuses a missing, duplicate or foreign shard, naming it. Counts are added one
/// replication at a time.
pub fn merge(dirs: &[PathBuf], options: &RunOptions) -> Result<RunOutput> {
    let resolved = check_shards(dirs)?;
    let sweep = Sweep::new(&resolved);
    let names = names(&resolved, &sweep);
    let layout = sweep.layout.clone();
    write_dir(&options.out, options.force, |tmp| {
        let start = Instant::now();
        let mut writer =
            CountsWriter::new(tmp, names.clone(), layout.clone(), &Stamp::of(&resolved));
        let mut est = estimator(&resolved);
        for r in 0..resolved.scenario.population.replications {
            let mut counts = Counts::zeros(&layout);
            for dir in dirs {
                let before = users_counted(&layout, &counts);
                read_counts(dir, &names, &layout, r, &mut counts)?;
                let got = users_counted(&layout, &counts) - before;
                let info = read_info(dir)?;
                let ids = info.shard.ids(resolved.scenario.population.users);
                let expected = (ids.end - ids.start) as i64;
                if got != expected {
                    return Err(Error::Folder {
                        path: dir.join("cells.parquet"),
                        problem: format!(
                            "counts {got} users in replication {r}, but shard {}/{} has {expected}: the table is damaged or belongs to another run",
                            info.shard.index, info.shard.count
                        ),
                    });
                }
            }
            est.add(&counts).map_err(|source| Error::Table {
                path: options.out.clone(),
                source,
            })?;
            writer.write(r, counts)?;
        }
        writer.finish()?;
        let estimates = est.finish().map_err(|source| Error::Table {
            path: options.out.clone(),
            source,
        })?;
        publish(&resolved, tmp, &estimates, &options.out, 0.0, start)?;
        Ok(RunOutput {
            estimates,
            simulate_secs: 0.0,
            estimate_secs: start.elapsed().as_secs_f64(),
        })
    })
}

/// Users counted in arm 0, level 0 (every user is counted once in each arm and level).
fn users_counted(layout: &crate::cells::Layout, counts: &Counts) -> i64 {
    let users = layout.all(crate::cells::All::Users);
    (0..layout.countries)
        .flat_map(|c| (0..layout.ages).map(move |a| (c, a)))
        .map(|(c, a)| counts.get(layout, 0, 0, c, a, users))
        .sum()
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
