//! The score thresholds of the rate levels (docs/model.md §4.2): at rate `r`, the `1 - r`
//! quantile of the privacy score's distribution, which depends on the reference data and the
//! heterogeneity but not on the run's users, so thresholds depend neither on N nor on shards
//! and need no pass over the run's users.
//!
//! By default ([`ThresholdMethod::Exact`]) the quantiles are computed from the distribution
//! itself: the score is a logistic variable shifted by a discrete mixture (country, age band,
//! interests), whose survival function is summed in closed form and solved for each rate
//! ([`ScoreDistribution`]). On request ([`ThresholdMethod::Sample`]) they are the order
//! statistics of a calibration sample: a population of its own keyed by the seed and the
//! replication, of which only what the score depends on is drawn, the quantiles found by
//! selection rather than by sorting. A process keeps the thresholds of the last
//! [`THRESHOLD_CACHE`] computations for evaluations that share the score's parameters.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::policy::{ThresholdMethod, Thresholds};
use crate::population::Population;
use crate::rng::{Categorical, Threshold};
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

/// Score thresholds of arms with rate lists `rates` in replication `replication`: exact
/// quantiles of the score distribution, or under `policy.thresholds = "sample"` order
/// statistics of the replication's calibration sample.
///
/// The thresholds depend only on the heterogeneity and the data that shape the score (country
/// shares and shifts, age shares and shifts, segment prevalences, age multipliers and shifts),
/// and for a sample on the seed, the replication and its size, so they are kept for the
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
    let thresholds = match resolved.scenario.policy.thresholds {
        ThresholdMethod::Exact => {
            let distribution = ScoreDistribution::new(resolved);
            rates
                .iter()
                .map(|list| {
                    Thresholds::from_values(list.iter().map(|&r| distribution.quantile_above(r)))
                })
                .collect()
        }
        ThresholdMethod::Sample => sample_thresholds(resolved, replication, rates)?,
    };
    let mut entries = cache();
    if !entries.iter().any(|e| e.0 == key) {
        if entries.len() >= THRESHOLD_CACHE {
            entries.remove(0);
        }
        entries.push((key, Arc::new(thresholds.clone())));
    }
    Ok(thresholds)
}

/// Thresholds from the order statistics of replication `replication`'s calibration sample.
fn sample_thresholds(
    resolved: &Resolved,
    replication: u32,
    rates: &[Vec<f64>],
) -> Result<Vec<Thresholds>> {
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
    Ok(rates
        .iter()
        .map(|list| Thresholds::from_positions(list, m, at))
        .collect())
}

/// How many sets of thresholds a process keeps ([`calibration_thresholds`]).
pub const THRESHOLD_CACHE: usize = 64;

/// Everything the calibration thresholds depend on, as text.
fn score_key(resolved: &Resolved, replication: u32, rates: &[Vec<f64>]) -> String {
    let s = &resolved.scenario;
    let d = &resolved.data;
    let sample = s.policy.thresholds == ThresholdMethod::Sample;
    serde_json::json!({
        "method": s.policy.thresholds,
        "seed": sample.then_some(s.population.seed),
        "replication": sample.then_some(replication),
        "users": sample.then_some(s.policy.calibration_users),
        "heterogeneity": s.opt_out.heterogeneity,
        "rates": rates,
        "countries": d.countries.country.iter().map(|c| (c.m_share, &c.age_shares, c.privacy_shift)).collect::<Vec<_>>(),
        "bands": d.age_bands.band.iter().map(|b| (b.share, b.privacy_shift)).collect::<Vec<_>>(),
        "segments": d.segments.segment.iter().map(|g| (g.prevalence, &g.age_multipliers, g.privacy_shift)).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Most atoms an age band's interest-shift distribution, and the whole mixture, keep
/// ([`ScoreDistribution`]): beyond it, atoms within `1 / MAX_ATOMS` of the range of each other
/// are pooled at their probability-weighted mean. The built-in segments give a few dozen a
/// band.
pub const MAX_ATOMS: usize = 1 << 14;

/// Half the largest |second derivative| of the logistic survival function, `1 / (12 sqrt 3)`,
/// over 4: pooling atoms spread over at most `w` at their mean moves the share above any
/// threshold by at most this times `w^2` (the first-order terms cancel at the mean; the
/// variance of a spread of `w` is at most `w^2 / 4`).
const POOLING_BOUND: f64 = 0.012_03;

/// Locations closer than this are one atom (sums of the same shifts in another order).
const TIE: f64 = 1e-9;

/// The privacy score's distribution (docs/model.md §4.2): `h * shift + L`, `L` standard
/// logistic and `shift` the sum of the user's country, age band and interest shifts, drawn as
/// the engine draws them (country shares, each country's age shares and each band's interest
/// probabilities as their 32-bit thresholds give them). Held as the atoms of `h * shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreDistribution {
    /// (location, probability): locations increasing and distinct, probabilities summing to 1.
    atoms: Vec<(f64, f64)>,
    /// A bound on how far pooling atoms moved the share above any threshold: 0 unless an
    /// age band's interests or the mixture had more than [`MAX_ATOMS`] distinct locations
    /// (ties within 10^-9 of each other are pooled too, and move it by under 10^-20).
    pub rate_error: f64,
}

impl ScoreDistribution {
    /// The score distribution of a resolved scenario.
    pub fn new(resolved: &Resolved) -> Self {
        let d = &resolved.data;
        let h = resolved.scenario.opt_out.heterogeneity;
        if h == 0.0 {
            return ScoreDistribution {
                atoms: vec![(0.0, 1.0)],
                rate_error: 0.0,
            };
        }
        let bands = &d.age_bands.band;
        let global_age: Vec<f64> = bands.iter().map(|b| b.share).collect();
        let mut rate_error: f64 = 0.0;
        // Pools `atoms` (locations `scale` score units apart a unit) to at most MAX_ATOMS + 1
        // locations if they have more.
        let mut coarsen = |atoms: Vec<(f64, f64)>, scale: f64| {
            if atoms.len() <= MAX_ATOMS {
                return atoms;
            }
            let width = (atoms[atoms.len() - 1].0 - atoms[0].0) / MAX_ATOMS as f64;
            rate_error += POOLING_BOUND * (scale * width).powi(2);
            pool(atoms, width)
        };
        // Each age band's distribution of the interests' summed shift: a convolution, one
        // segment at a time, of two-point distributions.
        let interests: Vec<Vec<(f64, f64)>> = (0..bands.len())
            .map(|b| {
                let mut atoms = vec![(0.0, 1.0)];
                for g in &d.segments.segment {
                    let multiplier = g.age_multipliers.as_ref().map_or(1.0, |m| m[b]);
                    let p = Threshold::new(g.prevalence * multiplier).probability();
                    if g.privacy_shift == 0.0 || p == 0.0 {
                        continue;
                    }
                    let mut next = Vec::with_capacity(2 * atoms.len());
                    for &(x, q) in &atoms {
                        if p < 1.0 {
                            next.push((x, q * (1.0 - p)));
                        }
                        next.push((x + g.privacy_shift, q * p));
                    }
                    atoms = coarsen(pool(next, TIE), h);
                }
                atoms
            })
            .collect();
        let countries = &d.countries.country;
        let total: f64 = countries.iter().map(|c| c.m_share).sum();
        let mut atoms = Vec::new();
        for c in countries {
            let w = c.m_share / total;
            let age = Categorical::new(c.age_shares.as_deref().unwrap_or(&global_age));
            for (b, a) in age.probabilities().into_iter().enumerate() {
                let base = c.privacy_shift + bands[b].privacy_shift;
                atoms.extend(
                    interests[b]
                        .iter()
                        .map(|&(x, q)| (h * (base + x), w * a * q))
                        .filter(|a| a.1 > 0.0),
                );
            }
        }
        let mut atoms = coarsen(pool(atoms, TIE), 1.0);
        let mass: f64 = atoms.iter().map(|a| a.1).sum();
        for a in &mut atoms {
            a.1 /= mass;
        }
        ScoreDistribution { atoms, rate_error }
    }

    /// The share of scores above `t`, and its rate of fall (minus its derivative) at `t`.
    pub fn above(&self, t: f64) -> (f64, f64) {
        let (mut share, mut density) = (0.0, 0.0);
        for &(location, p) in &self.atoms {
            // P(L > t - location) for a standard logistic L, and its density there.
            let above = 1.0 / (1.0 + (t - location).exp());
            share += p * above;
            density += p * above * (1.0 - above);
        }
        (share, density)
    }

    /// The threshold above which a share `r` of scores lies: positive infinity at `r <= 0`,
    /// negative infinity at `r >= 1`. Newton's method kept inside a shrinking bracket
    /// (bisection where a step would leave it), to the last few bits of an `f64`.
    pub fn quantile_above(&self, r: f64) -> f64 {
        if r.is_nan() || r <= 0.0 {
            return f64::INFINITY;
        }
        if r >= 1.0 {
            return f64::NEG_INFINITY;
        }
        // Each atom alone puts its threshold at location + logit; the mixture's lies between
        // the lowest and the highest.
        let logit = ((1.0 - r) / r).ln();
        let (mut lo, mut hi) = (
            self.atoms[0].0 + logit,
            self.atoms[self.atoms.len() - 1].0 + logit,
        );
        let mean: f64 = self.atoms.iter().map(|a| a.0 * a.1).sum();
        let mut t = (mean + logit).clamp(lo, hi);
        for _ in 0..200 {
            let (share, density) = self.above(t);
            let gap = share - r;
            if gap == 0.0 {
                return t;
            }
            // The share falls as t rises: too many above means t is too low.
            if gap > 0.0 {
                lo = t;
            } else {
                hi = t;
            }
            let newton = t + gap / density;
            let next = if density > 0.0 && newton > lo && newton < hi {
                newton
            } else {
                0.5 * (lo + hi)
            };
            let tolerance = 4.0 * f64::EPSILON * next.abs().max(1.0);
            if (next - t).abs() <= tolerance || hi - lo <= tolerance {
                return next;
            }
            t = next;
        }
        t
    }
}

/// `atoms` sorted by location, those within `width` of the first of their run pooled at their
/// probability-weighted mean.
fn pool(mut atoms: Vec<(f64, f64)>, width: f64) -> Vec<(f64, f64)> {
    atoms.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(atoms.len());
    let mut anchor = f64::NEG_INFINITY;
    for (x, q) in atoms {
        match out.last_mut() {
            Some(last) if x - anchor <= width => {
                let total = last.1 + q;
                if total > 0.0 {
                    last.0 = (last.0 * last.1 + x * q) / total;
                }
                last.1 = total;
            }
            _ => {
                anchor = x;
                out.push((x, q));
            }
        }
    }
    out
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

    fn resolved(edit: impl FnOnce(&mut crate::scenario::Scenario)) -> Resolved {
        let mut s = crate::scenario::Scenario::default();
        edit(&mut s);
        s.resolve("test", std::path::Path::new(".")).unwrap()
    }

    /// The share of `scores` strictly above `t`.
    fn share_above(scores: &[f64], t: f64) -> f64 {
        scores.iter().filter(|&&x| x > t).count() as f64 / scores.len() as f64
    }

    #[test]
    fn without_heterogeneity_the_threshold_is_the_logistic_quantile() {
        let r = resolved(|s| s.opt_out.heterogeneity = 0.0);
        let d = ScoreDistribution::new(&r);
        for rate in [1e-9f64, 0.01, 0.05, 0.3, 0.5, 0.77, 0.99, 1.0 - 1e-9] {
            let want = ((1.0 - rate) / rate).ln();
            let got = d.quantile_above(rate);
            assert!(
                (got - want).abs() < 1e-12,
                "rate {rate}: {got} against {want}"
            );
        }
        assert_eq!(d.quantile_above(0.0), f64::INFINITY);
        assert_eq!(d.quantile_above(1.0), f64::NEG_INFINITY);
    }

    #[test]
    fn exact_thresholds_leave_the_rate_above_them() {
        let r = resolved(|_| {});
        let d = ScoreDistribution::new(&r);
        assert_eq!(d.rate_error, 0.0, "the built-in data need no pooling");
        let mut last = f64::INFINITY;
        for k in 1..100 {
            let rate = f64::from(k) / 100.0;
            let t = d.quantile_above(rate);
            assert!((d.above(t).0 - rate).abs() < 1e-12, "rate {rate}");
            assert!(t < last, "thresholds fall as the rate rises");
            last = t;
        }
    }

    /// The exact quantiles against the scores of a calibration sample of 2^20 users drawn
    /// user by user as the engine draws them: the share of the sample above each threshold is
    /// the rate, within five standard errors of a binomial share (plus, where atoms were
    /// pooled, the bound on what pooling moved). A wrong shift, weight or sign moves them by
    /// far more.
    fn agrees_with_a_sample(r: &Resolved) {
        let d = ScoreDistribution::new(r);
        let scores = calibration_scores(r, 0).unwrap();
        let m = scores.len() as f64;
        for k in 1..20 {
            let rate = f64::from(k) / 20.0;
            let got = share_above(&scores, d.quantile_above(rate));
            let bound = 5.0 * (rate * (1.0 - rate) / m).sqrt() + d.rate_error;
            assert!(
                (got - rate).abs() < bound,
                "rate {rate}: {got} above (bound {bound})"
            );
        }
    }

    #[test]
    fn exact_thresholds_agree_with_sampled_scores() {
        agrees_with_a_sample(&resolved(|_| {}));
        agrees_with_a_sample(&resolved(|s| s.opt_out.heterogeneity = 3.0));
    }

    #[test]
    fn pooled_atoms_stay_within_their_bound() {
        // Shifts with no common measure: every subset sums differently, 2^k atoms.
        let mut r = resolved(|s| s.opt_out.heterogeneity = 2.0);
        for (j, g) in r.data.segments.segment.iter_mut().enumerate() {
            g.privacy_shift = (j as f64 + 2.0).sqrt() / 3.0 - 0.6;
            g.prevalence = 0.3;
            g.age_multipliers = None;
        }
        let d = ScoreDistribution::new(&r);
        assert!(
            d.rate_error > 0.0 && d.rate_error < 1e-5,
            "{}",
            d.rate_error
        );
        assert!(d.atoms.len() <= MAX_ATOMS + 1, "{} atoms", d.atoms.len());
        agrees_with_a_sample(&r);
        // Without the shifts' spread the quantiles would be the logistic's: far from these.
        let plain = ((1.0 - 0.5) / 0.5f64).ln();
        assert!((d.quantile_above(0.5) - plain).abs() > 0.5);
    }

    #[test]
    fn the_sample_method_takes_the_calibration_sample_order_statistics() {
        let r = resolved(|s| {
            s.policy.thresholds = ThresholdMethod::Sample;
            s.policy.calibration_users = 4096;
        });
        let rates = vec![vec![0.0, 0.25, 0.5, 1.0]];
        let got = calibration_thresholds(&r, 3, &rates).unwrap();
        let mut sorted = calibration_scores(&r, 3).unwrap();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(got, vec![Thresholds::new(&rates[0], &sorted)]);
        // Exact thresholds are the same in every replication; sampled ones are not.
        let other = calibration_thresholds(&r, 4, &rates).unwrap();
        assert_ne!(got, other);
        let exact = resolved(|_| {});
        assert_eq!(
            calibration_thresholds(&exact, 3, &rates).unwrap(),
            calibration_thresholds(&exact, 4, &rates).unwrap()
        );
    }
}
