//! A study's estimators: Morris and Sobol indices, rank correlations, quantiles and main-effect
//! swings, and the effects of every factor on every output that a study's tables and report
//! show.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{Design, Study};

/// Morris indices of one factor: the mean of its elementary effects, the mean of their
/// absolute values (with a bootstrap interval over trajectories) and their standard
/// deviation; effects are in output units per the factor's whole range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MorrisIndex {
    /// Mean elementary effect.
    pub mu: f64,
    /// Mean absolute elementary effect.
    pub mu_star: f64,
    /// 95% bootstrap interval of `mu_star` (estimate +/- 1.96 bootstrap sd).
    pub mu_star_ci: (f64, f64),
    /// Standard deviation of the elementary effects (interactions and non-linearity).
    pub sigma: f64,
}

/// The Morris indices of `k` factors from a [`morris_design`] (`units`) and its outputs `y`.
///
/// [`morris_design`]: super::morris_design
pub fn morris_indices(
    units: &[Vec<f64>],
    y: &[f64],
    k: usize,
    resamples: usize,
    seed: u64,
) -> Vec<MorrisIndex> {
    // effects[t][i]: trajectory t's elementary effect of factor i (NaN if undefined).
    let trajectories = units.len() / (k + 1);
    let mut effects = vec![vec![f64::NAN; k]; trajectories];
    for (t, row) in effects.iter_mut().enumerate() {
        for s in 0..k {
            let (a, b) = (t * (k + 1) + s, t * (k + 1) + s + 1);
            if let Some(i) = (0..k).find(|&i| units[a][i] != units[b][i]) {
                row[i] = (y[b] - y[a]) / (units[b][i] - units[a][i]);
            }
        }
    }
    let stats = |rows: &[usize], i: usize| -> (f64, f64, f64) {
        let e: Vec<f64> = rows
            .iter()
            .map(|&t| effects[t][i])
            .filter(|v| v.is_finite())
            .collect();
        let n = e.len() as f64;
        let mu = e.iter().sum::<f64>() / n;
        let mu_star = e.iter().map(|v| v.abs()).sum::<f64>() / n;
        let sigma = (e.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / (n - 1.0)).sqrt();
        (mu, mu_star, sigma)
    };
    let all: Vec<usize> = (0..trajectories).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6d6f_7272_6973);
    let resampled: Vec<Vec<usize>> = (0..resamples)
        .map(|_| {
            (0..trajectories)
                .map(|_| rng.random_range(0..trajectories))
                .collect()
        })
        .collect();
    (0..k)
        .map(|i| {
            let (mu, mu_star, sigma) = stats(&all, i);
            let boot: Vec<f64> = resampled.iter().map(|rows| stats(rows, i).1).collect();
            let half = 1.96 * sd(&boot);
            MorrisIndex {
                mu,
                mu_star,
                mu_star_ci: (mu_star - half, mu_star + half),
                sigma,
            }
        })
        .collect()
}

/// The sample standard deviation of the finite values of `v`; NaN (shown empty) when fewer
/// than two are finite.
pub(super) fn sd(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return f64::NAN;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// First-order and total Sobol indices of one factor, with 95% bootstrap intervals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SobolIndex {
    /// First order (Saltelli 2010): the share of the output's variance the factor explains
    /// alone.
    pub s1: f64,
    /// Its interval.
    pub s1_ci: (f64, f64),
    /// Total (Jansen 1999): the share it explains with all its interactions.
    pub st: f64,
    /// Its interval.
    pub st_ci: (f64, f64),
}

/// The Sobol indices of `k` factors from the outputs `y` of a [`saltelli_design`] of `n` base
/// points: `S1_i = mean((f(B) - c) (f(AB_i) - f(A))) / V` and `ST_i = mean((f(A) -
/// f(AB_i))^2) / 2V`, V the variance of f(A) and f(B) together and c their mean; base points
/// with an undefined output are left out. Centring f(B) leaves S1's expectation unchanged
/// (`f(AB_i) - f(A)` has mean 0) and removes the term `c x mean(f(AB_i) - f(A))` from its
/// noise, as SALib does by centring the outputs (docs/model.md §16.2). Intervals: estimate
/// +/- 1.96 sd over `resamples` bootstrap resamples of base points, the centre held at its
/// value on all of them.
///
/// [`saltelli_design`]: super::saltelli_design
pub fn sobol_indices(
    y: &[f64],
    k: usize,
    n: usize,
    resamples: usize,
    seed: u64,
) -> Vec<SobolIndex> {
    let block = k + 2;
    let rows: Vec<usize> = (0..n)
        .filter(|&j| y[j * block..(j + 1) * block].iter().all(|v| v.is_finite()))
        .collect();
    if rows.len() < 2 {
        let none = (f64::NAN, f64::NAN);
        return vec![
            SobolIndex {
                s1: f64::NAN,
                s1_ci: none,
                st: f64::NAN,
                st_ci: none,
            };
            k
        ];
    }
    let (fa, fb) = (|j: usize| y[j * block], |j: usize| y[j * block + k + 1]);
    let centre = rows.iter().map(|&j| fa(j) + fb(j)).sum::<f64>() / (2 * rows.len()) as f64;
    let estimate = |rows: &[usize], i: usize| -> (f64, f64) {
        let m = rows.len() as f64;
        let fab = |j: usize| y[j * block + 1 + i];
        let all: Vec<f64> = rows.iter().flat_map(|&j| [fa(j), fb(j)]).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / all.len() as f64;
        if var <= 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let s1 = rows
            .iter()
            .map(|&j| (fb(j) - centre) * (fab(j) - fa(j)))
            .sum::<f64>()
            / m
            / var;
        let st = rows.iter().map(|&j| (fa(j) - fab(j)).powi(2)).sum::<f64>() / (2.0 * m) / var;
        (s1, st)
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0073_6f62_6f6c);
    let resampled: Vec<Vec<usize>> = (0..resamples)
        .map(|_| {
            (0..rows.len())
                .map(|_| rows[rng.random_range(0..rows.len().max(1))])
                .collect()
        })
        .collect();
    (0..k)
        .map(|i| {
            let (s1, st) = estimate(&rows, i);
            let boot: Vec<(f64, f64)> = resampled.iter().map(|r| estimate(r, i)).collect();
            let h1 = 1.96 * sd(&boot.iter().map(|b| b.0).collect::<Vec<_>>());
            let ht = 1.96 * sd(&boot.iter().map(|b| b.1).collect::<Vec<_>>());
            SobolIndex {
                s1,
                s1_ci: (s1 - h1, s1 + h1),
                st,
                st_ci: (st - ht, st + ht),
            }
        })
        .collect()
}

/// Ranks of `v` (1-based, ties averaged).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = rank;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation of `x` and `y`; NaN when either is constant.
fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        f64::NAN
    }
}

/// Spearman's rank correlation of `x` and `y` over the pairs where `y` is finite.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (x, y): (Vec<f64>, Vec<f64>) = x
        .iter()
        .zip(y)
        .filter(|(_, b)| b.is_finite())
        .map(|(a, b)| (*a, *b))
        .unzip();
    if x.len() < 3 {
        return f64::NAN;
    }
    correlation(&ranks(&x), &ranks(&y))
}

/// The `q` quantile of the finite values of `v` (linear between order statistics, as numpy's
/// default); NaN if none.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let h = q * (s.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

/// One measure of one factor's effect on one output: under `lhs` Spearman's rank
/// correlation; under `grid` the main-effect swing (the largest less the smallest mean of the
/// output over the factor's levels); under `morris` mu* (with its interval), mu and sigma;
/// under `sobol` the first-order and total indices (with intervals).
#[derive(Clone, Debug)]
pub struct Effect {
    /// The output's column name.
    pub output: String,
    /// The factor.
    pub factor: String,
    /// `spearman_rho`, `main_effect_swing`, `mu_star`, `mu`, `sigma`, `S1` or `ST`.
    pub measure: &'static str,
    /// Its value.
    pub value: f64,
    /// Its 95% interval, where it has one (NaN otherwise).
    pub lo: f64,
    /// Its 95% interval, where it has one (NaN otherwise).
    pub hi: f64,
}

/// The effects of every factor on every output: per output, the factors strongest first by
/// the design's main measure (the first of each factor's rows).
pub fn effects(study: &Study, outputs: &[Vec<f64>]) -> Vec<Effect> {
    let names = study.output_names();
    let k = study.names.len();
    let resamples = study.plan.bootstrap.unwrap_or(500) as usize;
    let seed = study.plan.design_seed;
    let mut out = Vec::new();
    for (o, name) in names.iter().enumerate() {
        let y: Vec<f64> = outputs.iter().map(|r| r[o]).collect();
        let effect = |f: usize, measure: &'static str, value: f64, (lo, hi): (f64, f64)| Effect {
            output: name.clone(),
            factor: study.names[f].clone(),
            measure,
            value,
            lo,
            hi,
        };
        let none = (f64::NAN, f64::NAN);
        let mut per_factor: Vec<Vec<Effect>> = match study.plan.design {
            Design::Lhs | Design::Grid => (0..k)
                .map(|f| {
                    let x: Vec<f64> = study.points.iter().map(|p| p[f]).collect();
                    vec![if study.plan.design == Design::Lhs {
                        effect(f, "spearman_rho", spearman(&x, &y), none)
                    } else {
                        effect(f, "main_effect_swing", swing(&x, &y), none)
                    }]
                })
                .collect(),
            Design::Morris => morris_indices(&study.units, &y, k, resamples, seed)
                .into_iter()
                .enumerate()
                .map(|(f, m)| {
                    vec![
                        effect(f, "mu_star", m.mu_star, m.mu_star_ci),
                        effect(f, "mu", m.mu, none),
                        effect(f, "sigma", m.sigma, none),
                    ]
                })
                .collect(),
            Design::Sobol => {
                let n = study.points.len() / (k + 2);
                sobol_indices(&y, k, n, resamples, seed)
                    .into_iter()
                    .enumerate()
                    .map(|(f, s)| {
                        vec![
                            effect(f, "ST", s.st, s.st_ci),
                            effect(f, "S1", s.s1, s.s1_ci),
                        ]
                    })
                    .collect()
            }
        };
        per_factor.sort_by(|a, b| {
            let key = |e: &[Effect]| e[0].value.abs();
            // Strongest first; an undefined measure (NaN) last.
            match (key(a).is_nan(), key(b).is_nan()) {
                (false, true) => std::cmp::Ordering::Less,
                (true, false) => std::cmp::Ordering::Greater,
                _ => key(b).total_cmp(&key(a)),
            }
        });
        out.extend(per_factor.into_iter().flatten());
    }
    out
}

/// The largest less the smallest mean of `y` over the distinct values of `x`.
fn swing(x: &[f64], y: &[f64]) -> f64 {
    let mut levels: Vec<f64> = x.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let means: Vec<f64> = levels
        .iter()
        .map(|l| {
            let v: Vec<f64> = x
                .iter()
                .zip(y)
                .filter(|(a, b)| *a == l && b.is_finite())
                .map(|(_, b)| *b)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        })
        .filter(|m| m.is_finite())
        .collect();
    let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = means.iter().copied().fold(f64::INFINITY, f64::min);
    if means.len() > 1 { max - min } else { f64::NAN }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::{morris_design, saltelli_design};

    #[test]
    fn morris_finds_a_linear_functions_coefficients_times_ranges() {
        // f = 3 x0 - 2 x1 + 0 x2 on [0, 1]^3 (unit ranges): mu* = |coefficient|, sigma = 0,
        // whatever the trajectories. Consecutive points differ in exactly one factor.
        let (k, r) = (3, 12);
        let units = morris_design(k, r, 4, 5);
        assert_eq!(units.len(), r * (k + 1));
        for t in 0..r {
            for s in 0..k {
                let (a, b) = (&units[t * (k + 1) + s], &units[t * (k + 1) + s + 1]);
                let moved: Vec<usize> = (0..k).filter(|&i| a[i] != b[i]).collect();
                assert_eq!(moved.len(), 1);
                assert!(((a[moved[0]] - b[moved[0]]).abs() - 2.0 / 3.0).abs() < 1e-12);
            }
        }
        assert!(units.iter().flatten().all(|&u| (0.0..=1.0).contains(&u)));
        let y: Vec<f64> = units.iter().map(|x| 3.0 * x[0] - 2.0 * x[1]).collect();
        let m = morris_indices(&units, &y, k, 100, 1);
        for (i, c) in [3.0, -2.0, 0.0].into_iter().enumerate() {
            assert!((m[i].mu_star - f64::abs(c)).abs() < 1e-9, "{i}: {:?}", m[i]);
            assert!((m[i].mu - c).abs() < 1e-9);
            assert!(m[i].sigma.abs() < 1e-9);
        }
        // A factor's range scales its mu*: x0 over [0, 10] is the unit value times 10.
        let y10: Vec<f64> = units.iter().map(|x| 3.0 * (10.0 * x[0])).collect();
        assert!((morris_indices(&units, &y10, k, 10, 1)[0].mu_star - 30.0).abs() < 1e-9);
    }

    #[test]
    fn sobol_indices_of_the_ishigami_function_are_the_known_ones() {
        // Ishigami (a = 7, b = 0.1) on [-pi, pi]^3: S1 = 0.314, 0.442, 0; ST = 0.558, 0.442,
        // 0.244 (Ishigami & Homma 1990; the values SALib's tests use).
        let (k, n) = (3, 4096);
        let units = saltelli_design(k, n, 3);
        assert_eq!(units.len(), n * (k + 2));
        let pi = std::f64::consts::PI;
        let y: Vec<f64> = units
            .iter()
            .map(|u| {
                let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
            })
            .collect();
        let s = sobol_indices(&y, k, n, 200, 1);
        for (i, (s1, st)) in [(0.314, 0.558), (0.442, 0.442), (0.0, 0.244)]
            .into_iter()
            .enumerate()
        {
            assert!((s[i].s1 - s1).abs() < 0.03, "S1 {i}: {:?}", s[i]);
            assert!((s[i].st - st).abs() < 0.03, "ST {i}: {:?}", s[i]);
            assert!(s[i].st_ci.0 < s[i].st && s[i].st < s[i].st_ci.1);
        }
        // A factor the function ignores has indices of exactly zero.
        let z: Vec<f64> = units.iter().map(|u| u[0] * u[0]).collect();
        let s = sobol_indices(&z, k, n, 50, 1);
        assert_eq!((s[1].s1, s[1].st), (0.0, 0.0));
        assert!((s[0].st - 1.0).abs() < 0.02, "{:?}", s[0]);
    }

    #[test]
    fn centred_first_order_intervals_have_the_analytic_width_whatever_the_outputs_mean() {
        // Ishigami plus 100: the indices do not change with a constant. The S1 estimator is a
        // mean of m terms (f(B) - c)(f(AB_i) - f(A)) / V, so its standard error is their
        // sd / sqrt(m) / V; the bootstrap's (half-width / 1.96) must lie within 1.5x of it.
        // Uncentred, the terms would carry 100 (f(AB_i) - f(A)) / V and the intervals would be
        // tens of times wider than the estimator's error (SALib centres for this reason).
        let (k, n) = (3, 2048);
        let pi = std::f64::consts::PI;
        let units = saltelli_design(k, n, 7);
        let ishigami = |shift: f64| -> Vec<f64> {
            units
                .iter()
                .map(|u| {
                    let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                    shift + x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
                })
                .collect()
        };
        let (y, plain) = (ishigami(100.0), ishigami(0.0));
        let (s, s0) = (
            sobol_indices(&y, k, n, 400, 7),
            sobol_indices(&plain, k, n, 400, 7),
        );
        let block = k + 2;
        let (fa, fb) = (|j: usize| y[j * block], |j: usize| y[j * block + k + 1]);
        let both: Vec<f64> = (0..n).flat_map(|j| [fa(j), fb(j)]).collect();
        let c = both.iter().sum::<f64>() / both.len() as f64;
        let v = both.iter().map(|x| (x - c) * (x - c)).sum::<f64>() / both.len() as f64;
        for (i, index) in s.iter().enumerate() {
            assert!(
                (index.s1 - s0[i].s1).abs() < 1e-6,
                "S1 {i} moved with the shift"
            );
            let terms: Vec<f64> = (0..n)
                .map(|j| (fb(j) - c) * (y[j * block + 1 + i] - fa(j)) / v)
                .collect();
            let analytic = sd(&terms) / (n as f64).sqrt();
            let boot = (index.s1_ci.1 - index.s1_ci.0) / 2.0 / 1.96;
            assert!(
                boot < 1.5 * analytic && analytic < 1.5 * boot,
                "S1 {i}: bootstrap se {boot}, analytic {analytic}"
            );
        }
    }

    #[test]
    fn sobol_estimates_of_ishigami_hold_for_twenty_seeds_and_their_intervals_cover() {
        // At 2048 base points, for each of 20 scramblings of the sequence: every index within
        // 0.05 of the known value, and the known value inside most 95% bootstrap intervals.
        let (k, n) = (3, 2048);
        let pi = std::f64::consts::PI;
        let truth = [(0.314, 0.558), (0.442, 0.442), (0.0, 0.244)];
        let (mut covered, mut intervals) = (0, 0);
        for seed in 1..=20u32 {
            let units = saltelli_design(k, n, seed);
            let y: Vec<f64> = units
                .iter()
                .map(|u| {
                    let x: Vec<f64> = u.iter().map(|v| -pi + 2.0 * pi * v).collect();
                    x[0].sin() + 7.0 * x[1].sin().powi(2) + 0.1 * x[2].powi(4) * x[0].sin()
                })
                .collect();
            let s = sobol_indices(&y, k, n, 200, u64::from(seed));
            for (i, (s1, st)) in truth.into_iter().enumerate() {
                assert!(
                    (s[i].s1 - s1).abs() < 0.05,
                    "seed {seed}, S1 {i}: {:?}",
                    s[i]
                );
                assert!(
                    (s[i].st - st).abs() < 0.05,
                    "seed {seed}, ST {i}: {:?}",
                    s[i]
                );
                for (value, (lo, hi)) in [(s1, s[i].s1_ci), (st, s[i].st_ci)] {
                    intervals += 1;
                    covered += usize::from(lo <= value && value <= hi);
                }
            }
        }
        assert!(
            covered * 10 >= intervals * 8,
            "{covered} of {intervals} intervals cover the known value"
        );
    }

    #[test]
    fn rank_correlation_and_quantiles_match_hand_figures() {
        // Monotone: rho = 1 whatever the shape; reversed: -1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&x, &[1.0, 4.0, 9.0, 16.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ranks of y = [2, 1, 4, 3, 5]: d = [1, 1, 1, 1, 0], rho = 1 - 6 * 4 / (5 * 24) = 0.8.
        assert!((spearman(&x, &[2.0, 1.0, 4.0, 3.0, 5.0]) - 0.8).abs() < 1e-12);
        // Ties share their mean rank.
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
        // numpy.quantile([1, 2, 3, 4], 0.25) = 1.75; NaN is ignored.
        assert!((quantile(&[4.0, 1.0, f64::NAN, 3.0, 2.0], 0.25) - 1.75).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan());
        assert!((swing(&[0.0, 0.0, 1.0, 1.0], &[1.0, 3.0, 10.0, 12.0]) - 9.0).abs() < 1e-12);
    }
}
