//! Keyed bijections on `[0, n)`: a binary Feistel network with cycle walking.
//!
//! docs/model.md §3 gives every user a unique phone number without a set of all numbers: the index of a
//! user within its country is mapped through a keyed bijection onto the country's number
//! space. docs/model.md §5 pairs each user with the previous holder of its number through a keyed
//! permutation of the country's users. Both are a [`Permutation`].
//!
//! The network works on `b = ceil(log2 n)` bits split into halves of `b/2` and `b - b/2` bits,
//! alternating as in NIST FF1 (so odd widths need no padding), with 4 rounds whose round
//! function keeps the top bits of a keyed multiply (one multiplication a round, so a map
//! costs a few nanoseconds). Values that land in `[n, 2^b)` are encrypted
//! again (cycle walking), which keeps the map a bijection of `[0, n)`; since `2^b < 2n`, fewer
//! than two rounds of walking are needed on average. This is a statistical mixing device,
//! not cryptography.

use crate::rng::hash2;

const ROUNDS: usize = 4;

/// A keyed bijection of `[0, n)` and its inverse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    /// Bits of the first (`A`) half at the start.
    left_bits: u32,
    /// Bits of the second (`B`) half at the start.
    right_bits: u32,
    round_keys: [u64; ROUNDS],
}

impl Permutation {
    /// A permutation of `[0, n)` keyed by `key`. `n` must be at least 1 and below 2^62.
    pub fn new(n: u64, key: u64) -> Self {
        assert!(
            (1..1 << 62).contains(&n),
            "permutation domain out of range: {n}"
        );
        let bits = (64 - (n - 1).leading_zeros()).max(2);
        let left_bits = bits / 2;
        let mut round_keys = [0; ROUNDS];
        for (i, k) in round_keys.iter_mut().enumerate() {
            *k = hash2(key, i as u64 + 1);
        }
        Permutation {
            n,
            left_bits,
            right_bits: bits - left_bits,
            round_keys,
        }
    }

    /// The size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether the domain is empty (never: `n >= 1`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Round function: the top `m` bits of a keyed odd multiply of the other half.
    #[inline(always)]
    fn round(&self, i: usize, x: u64, m: u32) -> u64 {
        ((x ^ self.round_keys[i]).wrapping_mul(0x9e37_79b9_7f4a_7c15 | 1)
            ^ self.round_keys[i].rotate_left(17))
            >> (64 - m)
    }

    #[inline(always)]
    fn encrypt(&self, x: u64) -> u64 {
        let (u, v) = (self.left_bits, self.right_bits);
        let mut a = x >> v;
        let mut b = x & ((1 << v) - 1);
        for i in 0..ROUNDS {
            let m = if i % 2 == 0 { u } else { v };
            let c = (a.wrapping_add(self.round(i, b, m))) & ((1 << m) - 1);
            a = b;
            b = c;
        }
        // After an even number of rounds, `a` holds u bits and `b` holds v bits again.
        (a << v) | b
    }

    #[inline(always)]
    fn decrypt(&self, y: u64) -> u64 {
        let (u, v) = (self.left_bits, self.right_bits);
        let mut a = y >> v;
        let mut b = y & ((1 << v) - 1);
        for i in (0..ROUNDS).rev() {
            let m = if i % 2 == 0 { u } else { v };
            let prev_b = a;
            let prev_a = b.wrapping_sub(self.round(i, prev_b, m)) & ((1 << m) - 1);
            a = prev_a;
            b = prev_b;
        }
        (a << v) | b
    }

    /// The image of `x` (which must be below `n`).
    #[inline]
    pub fn forward(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.encrypt(x);
        while y >= self.n {
            y = self.encrypt(y);
        }
        y
    }

    /// The preimage of `y` (which must be below `n`).
    #[inline]
    pub fn inverse(&self, y: u64) -> u64 {
        debug_assert!(y < self.n);
        let mut x = self.decrypt(y);
        while x >= self.n {
            x = self.decrypt(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn is_a_bijection_on_small_domains() {
        for n in [1u64, 2, 3, 5, 17, 64, 100, 1000, 4097] {
            let p = Permutation::new(n, 42 + n);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.forward(x);
                assert!(y < n);
                assert!(!seen[y as usize], "n={n}: {y} hit twice");
                seen[y as usize] = true;
                assert_eq!(p.inverse(y), x);
            }
        }
    }

    #[test]
    fn different_keys_give_different_maps() {
        let a = Permutation::new(1_000_000, 1);
        let b = Permutation::new(1_000_000, 2);
        let same = (0..1000).filter(|&x| a.forward(x) == b.forward(x)).count();
        assert!(same < 5);
    }

    #[test]
    fn scatters_consecutive_inputs() {
        // Images of 0..10_000 in a domain of 10^9 spread over all ten deciles.
        let p = Permutation::new(1_000_000_000, 9);
        let mut deciles = [0u32; 10];
        for x in 0..10_000 {
            deciles[(p.forward(x) / 100_000_000) as usize] += 1;
        }
        assert!(
            deciles.iter().all(|&c| (800..1200).contains(&c)),
            "{deciles:?}"
        );
    }

    proptest! {
        #[test]
        fn inverse_undoes_forward(n in 1u64..(1 << 40), key: u64, x_frac in 0.0f64..1.0) {
            let p = Permutation::new(n, key);
            let x = ((n as f64 * x_frac) as u64).min(n - 1);
            let y = p.forward(x);
            prop_assert!(y < n);
            prop_assert_eq!(p.inverse(y), x);
        }
    }
}
