//! Counter-based randomness: every random quantity is a pure function of
//! `(seed, replication, user, stream)` (docs/model.md §2).
//!
//! There is no sequential generator threaded through the engine. A [`Key`] mixes the scenario
//! seed and the replication; [`Key::user_rng`] derives, from the key, a user id and a
//! [`Stream`], the seed of a small generator ([`UserRng`], wyrand) used for that user's draws
//! of that stream only. Results therefore do not depend on thread count, chunk size or shard
//! layout, and any user can be regenerated from its id alone. Adding draws to one stream never
//! changes another stream's values.

/// SplitMix64's finalizer: a bijective 64-bit mixing function with full avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes two words into one (not symmetric): used to derive keys and stream seeds.
#[inline(always)]
pub fn hash2(a: u64, b: u64) -> u64 {
    mix64(a ^ hash2_inner(b))
}

/// The half of [`hash2`] that depends only on its second word.
#[inline(always)]
fn hash2_inner(b: u64) -> u64 {
    mix64(b.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// The stream tag of a country, from its ISO code: a user's streams are keyed by its country's
/// tag plus its index within the country (docs/model.md §2.1), so that a change of one
/// country's size (its share, or the users simulated) leaves every other country's users'
/// draws as they were, and the order of the countries' rows does not matter.
pub fn country_tag(code: &str) -> u64 {
    // FNV-1a over the code's bytes, then mixed.
    let fnv = code.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash2(fnv, 0x636f_756e_7472_7900)
}

/// The version of the stream layout ([`Stream`], [`country_tag`], [`Key::user_rng`]): raised
/// whenever a change moves any draw, so that a study's progress log or shard of another
/// layout is not mixed with this one's (docs/model.md §2.1). 2: users keyed by country tag and
/// index, customers and messaging in streams of their own.
pub const STREAM_LAYOUT: u32 = 2;

/// The named random streams of a user. Each stream has its own generator, so draws in one
/// never shift another. The discriminants are part of the output contract: changing one
/// changes every result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Age band.
    Demographics = 1,
    /// Interests (one lane per segment).
    Interests = 2,
    /// S account, phone on file.
    SocialAccount = 3,
    /// Whether the user's number is recycled or on a shared phone.
    PhoneHistory = 4,
    /// The logistic noise of the privacy score.
    Privacy = 5,
    /// Whether the user reads the policy notice, and its Settings day.
    Timing = 6,
    /// Whether S links the user's shared data through metadata.
    Linking = 7,
    /// The detectors of the user's S account, per segment.
    Detection = 8,
    /// Formatting faults of the user's number in businesses' customer lists, per segment.
    Audiences = 9,
    /// Customer relationships with businesses, per segment (given the interests).
    Customers = 10,
    /// M-side business messaging, per segment (given the interests).
    Messaging = 11,
    /// Whether S knew the user's current number besides its phone on file.
    KnownNumbers = 12,
}

/// Keys of the permutations (number maps, previous-holder maps) of one country.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum PermutationKind {
    /// Index within the country to position in the country's number space.
    PhoneNumbers = 101,
    /// The cyclic order that pairs each user with the previous holder of its number.
    PreviousHolder = 102,
}

/// The key of one replication of one scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(u64);

impl Key {
    /// The key of replication `replication` of a scenario with seed `seed`.
    pub fn new(seed: u64, replication: u32) -> Self {
        Key(hash2(
            hash2(seed, 0x6164_7369_6d00_0000),
            u64::from(replication),
        ))
    }

    /// The generator of `stream` for user `user`.
    #[inline(always)]
    pub fn user_rng(self, user: u64, stream: Stream) -> UserRng {
        self.user(user).rng(stream)
    }

    /// The stream keys of user `user` (its stream key, as [`Population`] numbers them):
    /// the user's half of every one of its stream seeds, worked out once.
    ///
    /// [`Population`]: crate::population::Population
    #[inline(always)]
    pub fn user(self, user: u64) -> UserKey {
        UserKey {
            key: self.0,
            user: hash2_inner(user),
        }
    }

    /// The key of a per-country permutation; `country` is the country's stream tag
    /// ([`country_tag`]).
    pub fn permutation_key(self, kind: PermutationKind, country: u64) -> u64 {
        hash2(hash2(self.0, kind as u64), country)
    }

    /// A derived key for a purpose outside the per-user streams (calibration samples, block
    /// checks), named by a constant tag.
    pub fn derive(self, tag: u64) -> u64 {
        hash2(self.0, tag)
    }
}

/// One user's stream keys ([`Key::user`]). A stream's seed is
/// `hash2(key ^ stream x C, user)`; its inner hash of the user is the same for every stream,
/// so it is hashed once a user, not once a stream. The seeds are those of [`Key::user_rng`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserKey {
    key: u64,
    /// The half of [`hash2`] that depends only on the user.
    user: u64,
}

impl UserKey {
    /// The generator of this user's stream `stream`.
    #[inline(always)]
    pub fn rng(self, stream: Stream) -> UserRng {
        // hash2(key ^ stream x C, user), its inner half already made.
        UserRng::new(mix64(
            self.key ^ (stream as u64).wrapping_mul(0xd1b5_4a32_d192_ed03) ^ self.user,
        ))
    }
}

/// wyrand: a 64-bit generator with one word of state, seeded per user and stream.
#[derive(Clone, Debug)]
pub struct UserRng {
    state: u64,
}

impl UserRng {
    /// A generator from a 64-bit seed.
    #[inline(always)]
    pub fn new(seed: u64) -> Self {
        UserRng { state: seed }
    }

    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A Bernoulli draw with a probability given as a [`Threshold`] (uses 32 fresh bits of a
    /// 64-bit output; the other 32 are dropped).
    #[inline(always)]
    pub fn bernoulli(&mut self, p: Threshold) -> bool {
        p.hit(self.next_u64() as u32)
    }

    /// A uniform draw in the open interval (0, 1), with 53 bits of resolution.
    #[inline(always)]
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// A draw of the standard logistic distribution, Logistic(0, 1).
    #[inline(always)]
    pub fn logistic(&mut self) -> f64 {
        let u = self.open01();
        (u / (1.0 - u)).ln()
    }
}

/// A user's generator is a generator of rand's traits (rand 0.10: [`rand::TryRng`] with an
/// infallible error, so [`rand::Rng`] and [`rand::RngExt`] come with it), so rand's and
/// rand_distr's distributions can draw from a user's stream. Its keys stay counter-based
/// ([`Key::user_rng`]): a user's draws depend on (seed, replication, country, index, stream)
/// alone. `next_u32` takes the high half of a word, as rand's own 64-bit generators do.
impl rand::TryRng for UserRng {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((UserRng::next_u64(self) >> 32) as u32)
    }

    #[inline(always)]
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(UserRng::next_u64(self))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let word = UserRng::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

/// A probability as an integer threshold on a 32-bit uniform: `p` is drawn as
/// `u32 < round(p * 2^32)`, exact to 2^-32, with 0 and 1 exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Threshold(u64);

impl Threshold {
    /// The threshold of probability `p`, clamped to [0, 1].
    pub fn new(p: f64) -> Self {
        Threshold((p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64)
    }

    /// Whether the 32-bit uniform `u` falls below the threshold (probability `p`).
    #[inline(always)]
    pub fn hit(self, u: u32) -> bool {
        u64::from(u) < self.0
    }

    /// The probability this threshold stands for.
    pub fn probability(self) -> f64 {
        self.0 as f64 / 4_294_967_296.0
    }
}

/// Bernoulli draws of up to 64 lanes at once, bit-sliced: lane `s` is a hit when a `BITS`-bit
/// uniform falls below its threshold `round(p_s * 2^BITS)`, as with [`Threshold`] at 32 bits.
///
/// The uniforms of all lanes are compared with their thresholds one bit at a time, most
/// significant first, one random word giving that bit to every lane: a lane is decided at the
/// first bit where its uniform and its threshold differ (a hit if the threshold's bit is 1).
/// Each lane's draw is exact and independent of the others', and 29 lanes take about
/// log2(29) + 2 words on average instead of a word for every one or few lanes.
///
/// Hand-written because it is faster than rand's draws, measured (`cargo bench --bench
/// population`, group `interest_draws`: a user's 29 interests from its own stream, 2-core
/// Intel Xeon, 2026-11-30): 28.0 M users/s bit-sliced, 16.4 M with rand's
/// `distr::Bernoulli` per segment (1.71 times slower), 15.7 M with one [`Threshold`] per
/// segment. rand's `Bernoulli` would also change every draw (a 64-bit threshold), so the
/// per-user generator implements rand's traits for the draws that are not on this path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lanes<const BITS: usize> {
    /// `planes[i]`: bit `s` is bit `BITS - 1 - i` of lane `s`'s threshold.
    planes: [u64; BITS],
    /// Lanes of probability 1 (threshold `2^BITS`, whose low `BITS` bits are 0).
    always: u64,
}

impl<const BITS: usize> Lanes<BITS> {
    /// Lanes with probabilities `p` (lane `s` has `p[s]`, clamped to [0, 1]; at most 64).
    pub fn new(p: &[f64]) -> Self {
        let mut lanes = Lanes {
            planes: [0; BITS],
            always: 0,
        };
        for (s, &p) in p.iter().enumerate().take(64) {
            let t = (p.clamp(0.0, 1.0) * (1u64 << BITS) as f64).round() as u64;
            if t >> BITS != 0 {
                lanes.always |= 1 << s;
            }
            for (i, plane) in lanes.planes.iter_mut().enumerate() {
                *plane |= (t >> (BITS - 1 - i) & 1) << s;
            }
        }
        lanes
    }

    /// All 64 lanes with probability `p`.
    pub fn uniform(p: f64) -> Self {
        Self::new(&[p; 64])
    }

    /// Draws the lanes set in `lanes`: the set of hits.
    #[inline(always)]
    pub fn draw(&self, rng: &mut UserRng, lanes: u64) -> u64 {
        self.draw_either(self, 0, rng, lanes)
    }

    /// Draws the lanes set in `lanes`, each with `if_set`'s probability where `select` has
    /// its bit and with this one's elsewhere: the set of hits.
    #[inline(always)]
    pub fn draw_either(&self, if_set: &Self, select: u64, rng: &mut UserRng, lanes: u64) -> u64 {
        let mut hit = ((select & if_set.always) | (!select & self.always)) & lanes;
        let mut open = lanes & !hit;
        for (mine, theirs) in self.planes.iter().zip(&if_set.planes) {
            if open == 0 {
                break;
            }
            let plane = (select & theirs) | (!select & mine);
            let w = rng.next_u64();
            hit |= open & plane & !w;
            open &= !(plane ^ w);
        }
        hit
    }
}

/// A discrete distribution, drawn by comparing one 32-bit uniform with cumulative thresholds
/// (a binary search: the Settings day has up to 365 outcomes).
#[derive(Clone, Debug, PartialEq)]
pub struct Categorical {
    cumulative: Vec<u64>,
}

impl Categorical {
    /// A distribution from weights (need not sum to 1; must not all be zero).
    pub fn new(weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cumulative: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                Threshold::new(acc).0
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            *last = 1 << 32;
        }
        Categorical { cumulative }
    }

    /// The probability of each outcome as drawn (its share of the 2^32 uniforms).
    pub fn probabilities(&self) -> Vec<f64> {
        let mut below = 0;
        self.cumulative
            .iter()
            .map(|&c| {
                let p = (c - below) as f64 / 4_294_967_296.0;
                below = c;
                p
            })
            .collect()
    }

    /// Draws an outcome index.
    #[inline(always)]
    pub fn draw(&self, rng: &mut UserRng) -> usize {
        let u = rng.next_u64() >> 32;
        self.cumulative.partition_point(|&c| u >= c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden draws: the output contract's randomness, pinned. A change here changes every
    /// result (a documented stream change, docs/model.md §2.1), whether it comes from this
    /// file or from a new version of rand (its distributions are not promised value-stable
    /// across versions: Cargo.toml pins it).
    #[test]
    fn golden_draws_do_not_move() {
        use rand::RngExt;
        let key = Key::new(2016, 0);
        let mut rng = key.user_rng(country_tag("IN").wrapping_add(12_345), Stream::Interests);
        let words: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let uniform: f64 = rng.random();
        let die: u32 = rng.random_range(1..=6);
        let mut bytes = [0u8; 5];
        rand::Rng::fill_bytes(&mut rng, &mut bytes);
        let got = format!(
            "{:016x} {words:016x?} {uniform:.17} {die} {bytes:02x?}",
            country_tag("IN")
        );
        assert_eq!(
            got,
            "7afdbe557fb16d69 [2a6e7d0ff6109b8a, 4e661e4de07568ef, 8925bd4de2ffe5bb] \
             0.21458134778776472 3 [df, 33, 1b, 84, 38]"
        );
    }

    #[test]
    fn a_users_stream_keys_give_the_seeds_of_the_layout() {
        // A stream's seed is hash2(key ^ stream x C, user), whether the user's half is
        // hashed once ([`Key::user`]) or with every stream.
        let key = Key::new(11, 3);
        for user in [0, 1, country_tag("BR").wrapping_add(77), u64::MAX] {
            let streams = key.user(user);
            for stream in [Stream::Demographics, Stream::Timing, Stream::Messaging] {
                let seed = hash2(
                    key.0 ^ (stream as u64).wrapping_mul(0xd1b5_4a32_d192_ed03),
                    user,
                );
                assert_eq!(
                    streams.rng(stream).next_u64(),
                    UserRng::new(seed).next_u64(),
                    "user {user}, {stream:?}"
                );
            }
        }
    }

    #[test]
    fn streams_and_users_are_independent_generators() {
        let key = Key::new(7, 0);
        let a = key.user_rng(1, Stream::Interests).next_u64();
        assert_ne!(a, key.user_rng(2, Stream::Interests).next_u64());
        assert_ne!(a, key.user_rng(1, Stream::Demographics).next_u64());
        assert_ne!(a, Key::new(7, 1).user_rng(1, Stream::Interests).next_u64());
        assert_eq!(a, key.user_rng(1, Stream::Interests).next_u64());
    }

    #[test]
    fn thresholds_are_exact_at_the_ends() {
        let mut rng = UserRng::new(3);
        assert!((0..10_000).all(|_| rng.bernoulli(Threshold::new(1.0))));
        assert!((0..10_000).all(|_| !rng.bernoulli(Threshold::new(0.0))));
    }

    #[test]
    fn uniform_bits_are_balanced() {
        // 64 * 20_000 bits: each bit position's mean within 5 sigma of 1/2.
        let mut rng = UserRng::new(11);
        let mut ones = [0u32; 64];
        let n = 20_000;
        for _ in 0..n {
            let x = rng.next_u64();
            for (b, count) in ones.iter_mut().enumerate() {
                *count += ((x >> b) & 1) as u32;
            }
        }
        let sigma = (n as f64 * 0.25).sqrt();
        for count in ones {
            assert!((f64::from(count) - n as f64 / 2.0).abs() < 5.0 * sigma);
        }
    }

    #[test]
    fn lanes_hit_at_their_probabilities() {
        // 40 lanes with probabilities from 0 to 1, and a selected second set: each lane's
        // frequency within 5 sigma, the ends exact, and lanes outside the mask never hit.
        let p: Vec<f64> = (0..40).map(|s| f64::from(s) / 39.0).collect();
        let q: Vec<f64> = p.iter().map(|x| 1.0 - x).collect();
        let (a, b) = (Lanes::<16>::new(&p), Lanes::<16>::new(&q));
        let select = 0x5555_5555_5555_5555u64;
        let mask = (1u64 << 40) - 1;
        let mut rng = UserRng::new(17);
        let n = 40_000;
        let mut hits = [0u32; 64];
        for _ in 0..n {
            let h = a.draw_either(&b, select, &mut rng, mask);
            assert_eq!(h & !mask, 0);
            for (s, count) in hits.iter_mut().enumerate() {
                *count += (h >> s & 1) as u32;
            }
        }
        for s in 0..40 {
            let p = if select >> s & 1 == 1 { q[s] } else { p[s] };
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            let off = (f64::from(hits[s]) - n as f64 * p).abs();
            if p == 0.0 || p == 1.0 {
                assert_eq!(off, 0.0, "lane {s}");
            } else {
                assert!(off < 5.0 * sd, "lane {s}: {} hits, p {p}", hits[s]);
            }
        }
        // And without a selection, a lane's threshold is the 32-bit one of `Threshold`.
        let t = Lanes::<32>::new(&[0.3]);
        let mut rng = UserRng::new(3);
        let n = 100_000;
        let got = (0..n).filter(|_| t.draw(&mut rng, 1) == 1).count() as f64;
        assert!((got - 0.3 * n as f64).abs() < 5.0 * (n as f64 * 0.21).sqrt());
    }

    #[test]
    fn categorical_matches_its_weights() {
        let dist = Categorical::new(&[0.5, 0.25, 0.25]);
        let mut rng = UserRng::new(5);
        let mut counts = [0u32; 3];
        let n = 100_000;
        for _ in 0..n {
            counts[dist.draw(&mut rng)] += 1;
        }
        for (count, p) in counts.iter().zip([0.5, 0.25, 0.25]) {
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (f64::from(*count) - n as f64 * p).abs() < 5.0 * sd,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn logistic_has_median_zero_and_scale_one() {
        let mut rng = UserRng::new(9);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| rng.logistic()).collect();
        let below = draws.iter().filter(|&&x| x < 0.0).count() as f64 / n as f64;
        assert!((below - 0.5).abs() < 0.005);
        // P(X < ln 3) = 3/4 for Logistic(0, 1).
        let q = draws.iter().filter(|&&x| x < 3f64.ln()).count() as f64 / n as f64;
        assert!((q - 0.75).abs() < 0.005);
    }
}
