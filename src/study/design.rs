//! A study's designs: the points in the unit cube (or a grid's levels) at which a study
//! evaluates its scenario, and a factor's value at a point of the cube.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{Factor, Spread};

/// The most base points of a `sobol` design: the length of the Sobol sequence (sobol_burley).
pub const SOBOL_MAX_POINTS: u32 = 1 << 16;
/// Dimensions of the Sobol sequence: a `sobol` design uses two per factor.
pub const SOBOL_MAX_DIMENSIONS: usize = sobol_burley::NUM_DIMENSIONS as usize;

impl Factor {
    /// The value at `u` in [0, 1] of its range: evenly, or evenly in the logarithm; for a
    /// discrete factor, its level (or choice index) number `floor(u n)` of `n`.
    pub fn at(&self, u: f64) -> f64 {
        // A discrete factor: the level (or the choice's index) of u's share of them.
        let pick = |n: usize| ((u * n as f64).floor() as usize).min(n.saturating_sub(1));
        if let Some(levels) = &self.levels {
            return levels[pick(levels.len())];
        }
        if let Some(choices) = &self.choices {
            return pick(choices.len()) as f64;
        }
        let (low, high) = (self.low.unwrap_or(0.0), self.high.unwrap_or(1.0));
        match self.spread {
            Some(Spread::Loguniform) => (low.ln() + u * (high.ln() - low.ln())).exp(),
            _ => low + u * (high - low),
        }
        .clamp(low, high)
    }
}

/// The values a factor takes in a grid.
pub(super) fn grid_levels(f: &Factor) -> Vec<f64> {
    if let Some(l) = &f.levels {
        return l.clone();
    }
    if let Some(c) = &f.choices {
        return (0..c.len()).map(|i| i as f64).collect();
    }
    let (low, high) = (f.low.unwrap_or(0.0), f.high.unwrap_or(1.0));
    let n = f.points.unwrap_or(3).max(2);
    (0..n)
        .map(|j| low + (high - low) * f64::from(j) / f64::from(n - 1))
        .collect()
}

/// Every combination of `levels`, the first factor varying slowest.
pub(super) fn cartesian(levels: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new()];
    for l in levels {
        out = out
            .into_iter()
            .flat_map(|row| {
                l.iter().map(move |v| {
                    let mut r = row.clone();
                    r.push(*v);
                    r
                })
            })
            .collect();
    }
    out
}

/// A Latin hypercube of `n` points in the unit cube of `k` dimensions: each axis cut into `n`
/// strata, each stratum used by exactly one point, at a uniform position inside it; strata
/// paired across axes by independent random permutations (McKay, Beckman & Conover 1979).
/// Xoshiro256++ seeded with `seed` (a stream rand documents as stable).
pub fn latin_hypercube(k: usize, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut columns = Vec::with_capacity(k);
    for _ in 0..k {
        let mut strata: Vec<usize> = (0..n).collect();
        shuffle(&mut strata, &mut rng);
        let column: Vec<f64> = strata
            .into_iter()
            .map(|s| ((s as f64 + rng.random::<f64>()) / n as f64).min(1.0))
            .collect();
        columns.push(column);
    }
    (0..n)
        .map(|i| columns.iter().map(|c| c[i]).collect())
        .collect()
}

/// Fisher-Yates.
fn shuffle<T>(v: &mut [T], rng: &mut Xoshiro256PlusPlus) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// A Morris design (Morris 1991, as in SALib): `r` trajectories of `k + 1` points in the unit
/// cube on a grid of `p` levels. A trajectory starts at a random grid point and moves one
/// factor at a time, in a random order, by `delta = p / (2 (p - 1))` (up if that stays inside
/// the cube, else down), so consecutive points differ in exactly one factor.
pub fn morris_design(k: usize, r: usize, p: u32, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let step = 1.0 / f64::from(p - 1);
    let delta = f64::from(p) / (2.0 * f64::from(p - 1));
    let mut out = Vec::with_capacity(r * (k + 1));
    for _ in 0..r {
        let mut x: Vec<f64> = (0..k)
            .map(|_| f64::from(rng.random_range(0..p)) * step)
            .collect();
        let mut order: Vec<usize> = (0..k).collect();
        shuffle(&mut order, &mut rng);
        out.push(x.clone());
        for i in order {
            x[i] = if x[i] + delta <= 1.0 + 1e-12 {
                (x[i] + delta).min(1.0)
            } else {
                (x[i] - delta).max(0.0)
            };
            out.push(x.clone());
        }
    }
    out
}

/// Saltelli's design for Sobol indices (Saltelli et al. 2010) on an Owen-scrambled Sobol
/// sequence (sobol_burley, seeded with `seed`): base point `j` takes matrix A's row from
/// dimensions 0 to k-1 and B's from k to 2k-1, and contributes `k + 2` evaluations in this
/// order: A, then A with factor i's value from B for each i, then B. At most 2^16 base points
/// and 128 factors; the sequence's values are 32-bit floats (24 bits of each value's place in
/// its range, far finer than any plausible range needs).
pub fn saltelli_design(k: usize, n: usize, seed: u32) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(n * (k + 2));
    for j in 0..n as u32 {
        let a: Vec<f64> = (0..k as u32)
            .map(|d| f64::from(sobol_burley::sample(j, d, seed)))
            .collect();
        let b: Vec<f64> = (0..k as u32)
            .map(|d| f64::from(sobol_burley::sample(j, k as u32 + d, seed)))
            .collect();
        out.push(a.clone());
        for i in 0..k {
            let mut ab = a.clone();
            ab[i] = b[i];
            out.push(ab);
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(key: &str, low: f64, high: f64, spread: Option<Spread>) -> Factor {
        Factor {
            key: key.into(),
            low: Some(low),
            high: Some(high),
            levels: None,
            points: None,
            spread,
            choices: None,
        }
    }

    /// Golden: a design's points, pinned, so a new rand (whose Xoshiro256++ seeding and
    /// uniform floats are not promised value-stable) cannot move a study's design unseen.
    #[test]
    fn golden_designs_do_not_move() {
        let lhs = latin_hypercube(2, 3, 7);
        let morris = morris_design(2, 1, 4, 7);
        let got = format!("{lhs:.12?} {morris:.12?}");
        assert_eq!(
            got,
            "[[0.572525376120, 0.109946476518], [0.809069939764, 0.994107550404], \
             [0.321219840627, 0.357761263681]] [[0.000000000000, 0.000000000000], \
             [0.666666666667, 0.000000000000], [0.666666666667, 0.666666666667]]"
        );
    }

    #[test]
    fn a_latin_hypercube_uses_each_stratum_of_each_factor_once() {
        let n = 50;
        let points = latin_hypercube(3, n, 7);
        assert_eq!(points.len(), n);
        for j in 0..3 {
            let mut seen = vec![0; n];
            for p in &points {
                seen[((p[j] * n as f64) as usize).min(n - 1)] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "factor {j}: {seen:?}");
        }
        // The same seed, the same design; another seed, another.
        assert_eq!(latin_hypercube(3, n, 7), points);
        assert_ne!(latin_hypercube(3, n, 8), points);
        // Mapped to a range evenly, or evenly in the logarithm.
        let f = factor("a", 10.0, 20.0, None);
        assert_eq!(f.at(0.25), 12.5);
        let g = factor("b", 0.001, 1.0, Some(Spread::Loguniform));
        assert!((g.at(0.5) - 0.001f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_grid_is_every_combination_first_factor_slowest() {
        let g = cartesian(&[vec![1.0, 2.0], vec![10.0, 20.0, 30.0]]);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![1.0, 10.0]);
        assert_eq!(g[2], vec![1.0, 30.0]);
        assert_eq!(g[3], vec![2.0, 10.0]);
        let mut f = factor("a", 0.0, 1.0, None);
        f.points = Some(5);
        assert_eq!(grid_levels(&f), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }
}
