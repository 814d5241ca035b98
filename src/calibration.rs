//! The calibration sample (docs/model.md §4.2): the privacy scores of a population of its own,
//! keyed by the seed and the replication but not the run's users, whose quantiles are the
//! opt-out thresholds of every rate level. So thresholds depend neither on N nor on shards,
//! and need no extra pass over the run's users.
//!
//! Only what the score depends on is drawn for each calibration user, the quantiles are found
//! by selection rather than by sorting, and a process keeps the thresholds of the last
//! [`THRESHOLD_CACHE`] calibrations for evaluations that share the score's parameters.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::policy::Thresholds;
use crate::population::Population;
use crate::scenario::Resolved;

/// Derives the calibration population's seed from the scenario seed.
pub const CALIBRATION_TAG: u64 = 0x6361_6c69_6272_6174;

/// The privacy scores of the calibration sample of replication `replication`, in id order.
///
/// Only what the score depends on is drawn ([`Population::privacy_score`]): each user's age
/// band, interests and noise, not its account, phone or businesses.
pub fn calibration_scores(resolved: &Resolved, replication: u32) -> Result<Vec<f64>> {
    let s = &resolved.scenario;
    let users = u64::from(s.policy.calibration_users);
    let seed = crate::rng::hash2(s.population.seed, CALIBRATION_TAG);
    let pop = Population::with(
        &resolved.data,
        &resolved.spaces,
        users,
        seed,
        replication,
        s.opt_out.heterogeneity,
    )
    .map_err(|e| {
        Error::invalid(
            resolved.source.clone(),
            "policy.calibration_users",
            users,
            format!("a calibration sample the number blocks hold ({e})"),
        )
    })?;
    let ends: Vec<u64> = pop.country_ranges().iter().map(|r| r.end).collect();
    let mut scores = vec![0.0; users as usize];
    const CHUNK: usize = 1 << 14;
    scores
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(k, slice)| {
            let first = (k * CHUNK) as u64;
            let mut country = pop.country_of(first);
            for (j, score) in slice.iter_mut().enumerate() {
                let id = first + j as u64;
                while id >= ends[country] {
                    country += 1;
                }
                *score = pop.privacy_score(id, country);
            }
        });
    Ok(scores)
}

/// The values that positions `ks` (sorted, distinct, below `v.len()`) would hold if `v` were
/// sorted by [`f64::total_cmp`], found by selection (each step splits the slice around the
/// middle position asked for) rather than by sorting: about `n log(ks)` comparisons instead
/// of `n log n`. `v` is reordered.
pub fn order_statistics(v: &mut [f64], ks: &[usize]) -> Vec<f64> {
    fn select(v: &mut [f64], offset: usize, ks: &[usize], out: &mut [f64]) {
        if ks.is_empty() {
            return;
        }
        let mid = ks.len() / 2;
        let (left, kth, right) = v.select_nth_unstable_by(ks[mid] - offset, f64::total_cmp);
        out[mid] = *kth;
        let (out_left, out_right) = out.split_at_mut(mid);
        select(left, offset, &ks[..mid], out_left);
        select(right, ks[mid] + 1, &ks[mid + 1..], &mut out_right[1..]);
    }
    let mut out = vec![0.0; ks.len()];
    select(v, 0, ks, &mut out);
    out
}

/// Score thresholds of arms with rate lists `rates`, from the calibration sample of
/// replication `replication`.
///
/// The thresholds depend only on the seed, the replication, the calibration size, the
/// heterogeneity and the data that shape the score (country shares and shifts, age shares and
/// shifts, segment prevalences, age multipliers and shifts), so they are kept for the
/// evaluations of one process that share those (a study varying a CTR, say): at most
/// [`THRESHOLD_CACHE`] entries, the oldest dropped first.
pub fn calibration_thresholds(
    resolved: &Resolved,
    replication: u32,
    rates: &[Vec<f64>],
) -> Result<Vec<Thresholds>> {
    type Entry = (String, Arc<Vec<Thresholds>>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let key = score_key(resolved, replication, rates);
    // A poisoned cache is still a list of finished entries.
    let cache = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let hit = cache().iter().find(|e| e.0 == key).map(|e| e.1.clone());
    if let Some(hit) = hit {
        return Ok(hit.as_ref().clone());
    }
    let mut scores = calibration_scores(resolved, replication)?;
    let m = scores.len();
    let mut ks: Vec<usize> = rates
        .iter()
        .flatten()
        .filter_map(|&r| Thresholds::position(r, m))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let values = order_statistics(&mut scores, &ks);
    let at = |k: usize| values[ks.partition_point(|&x| x < k)];
    let thresholds: Vec<Thresholds> = rates
        .iter()
        .map(|list| Thresholds::from_positions(list, m, at))
        .collect();
    let mut entries = cache();
    if !entries.iter().any(|e| e.0 == key) {
        if entries.len() >= THRESHOLD_CACHE {
            entries.remove(0);
        }
        entries.push((key, Arc::new(thresholds.clone())));
    }
    Ok(thresholds)
}

/// How many sets of thresholds a process keeps ([`calibration_thresholds`]).
pub const THRESHOLD_CACHE: usize = 64;

/// Everything the calibration thresholds depend on, as text.
fn score_key(resolved: &Resolved, replication: u32, rates: &[Vec<f64>]) -> String {
    let s = &resolved.scenario;
    let d = &resolved.data;
    serde_json::json!({
        "seed": s.population.seed,
        "replication": replication,
        "users": s.policy.calibration_users,
        "heterogeneity": s.opt_out.heterogeneity,
        "rates": rates,
        "countries": d.countries.country.iter().map(|c| (c.m_share, &c.age_shares, c.privacy_shift)).collect::<Vec<_>>(),
        "bands": d.age_bands.band.iter().map(|b| (b.share, b.privacy_shift)).collect::<Vec<_>>(),
        "segments": d.segments.segment.iter().map(|g| (g.prevalence, &g.age_multipliers, g.privacy_shift)).collect::<Vec<_>>(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_finds_the_sorted_values() {
        let mut state = 12345u64;
        let mut v: Vec<f64> = (0..10_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        v[17] = v[4000]; // ties
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let ks = [0, 1, 499, 500, 4_999, 9_000, 9_998, 9_999];
        let got = order_statistics(&mut v, &ks);
        let want: Vec<f64> = ks.iter().map(|&k| sorted[k]).collect();
        assert_eq!(got, want);
    }
}
