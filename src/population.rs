//! The synthetic M population (docs/model.md §3): any user, regenerated on demand from its id.
//!
//! [`Population::new`] turns a resolved scenario into per-country samplers for one
//! replication: exact country counts as contiguous id ranges, integer thresholds for every
//! Bernoulli draw, and the keyed permutations that give each user a unique phone number and a
//! previous holder. [`Population::user`] is then a pure function of the id: the engine calls
//! it from any thread, in any order, and gets the same user.
//!
//! Phone numbers: user `i`, the `k`-th user of country `c`, holds the number at position
//! `phi_c(k)` of `c`'s number space, where `phi_c` is a keyed bijection of the space. Numbers
//! are unique because `phi_c` is a bijection, and [`Population::holder_of`] inverts the map:
//! that is S's phone index, never stored.
//!
//! Previous holders (docs/model.md §5): a keyed permutation `sigma_c` of `c`'s users orders them in a
//! cycle; `pi_c(i) = sigma_c^-1(sigma_c(i) + 1)` is the user who held `i`'s number before (if
//! `i`'s number is recycled) or who registered `i`'s shared phone on S (if it is shared).
//! `pi_c` has no fixed point, and each account has exactly one candidate sender,
//! `pi_c^-1(j)`: an account holds at most one foreign number.

use crate::data::{ReferenceData, Segment};
use crate::error::{Error, Result};
use crate::permutation::Permutation;
use crate::phone::{NumberSpace, POW10, PhoneNumber};
use crate::rng::{
    Categorical, Key, Lanes, PermutationKind, Stream, Threshold, UserKey, UserRng, country_tag,
};
use crate::scenario::Resolved;

/// Where the user's current number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NumberHistory {
    /// The number was new to the user (no one else's S account holds it).
    #[default]
    Fresh,
    /// The number belonged to another user before (recycled).
    Recycled,
    /// The phone is shared with a household member, who registered it on S.
    Shared,
}

impl NumberHistory {
    /// The labels used in exported tables, by [`NumberHistory::code`].
    pub const LABELS: [&'static str; 3] = ["fresh", "recycled", "shared"];

    /// The label used in exported tables.
    pub fn label(self) -> &'static str {
        Self::LABELS[self.code()]
    }

    /// The index of its label in [`NumberHistory::LABELS`].
    pub fn code(self) -> usize {
        match self {
            NumberHistory::Fresh => 0,
            NumberHistory::Recycled => 1,
            NumberHistory::Shared => 2,
        }
    }
}

/// `[known_numbers]`: numbers S held for an account besides its phone on file, before any
/// sharing (docs/model.md §3.5). Venkatadri et al. (PETS 2019) found both used for ad targeting.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnownNumbersConfig {
    /// Probability that an S account without its holder's current number on file holds it as a
    /// number given for two-factor authentication or to Messenger. Assumption: 0.25.
    pub security_or_messenger: f64,
    /// Probability that S matched the holder's current number to the account from other users'
    /// uploaded address books, where no source above gave it. Assumption: 0.30.
    pub contact_uploads: f64,
}

impl Default for KnownNumbersConfig {
    fn default() -> Self {
        KnownNumbersConfig {
            security_or_messenger: 0.25,
            contact_uploads: 0.30,
        }
    }
}

impl KnownNumbersConfig {
    /// Checks the section; `file` names the scenario.
    pub fn validate(&self, file: &str) -> Result<()> {
        for (k, v) in [
            ("security_or_messenger", self.security_or_messenger),
            ("contact_uploads", self.contact_uploads),
        ] {
            crate::ensure!(
                (0.0..=1.0).contains(&v),
                file,
                format!("known_numbers.{k}"),
                v,
                "a probability in [0, 1]"
            );
        }
        Ok(())
    }
}

/// How S knew an account holder's current number before any sharing (docs/model.md §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KnownNumber {
    /// S did not have it (or the user has no S account).
    #[default]
    Unknown,
    /// The account's phone on file is the user's current number.
    OnFile,
    /// Given for two-factor authentication or to Messenger.
    SecurityOrMessenger,
    /// Matched from other users' uploaded contacts.
    ContactUploads,
}

impl KnownNumber {
    /// Whether S had the number on the user's own account.
    pub fn known(self) -> bool {
        self != KnownNumber::Unknown
    }

    /// The labels used in exported tables, by [`KnownNumber::code`].
    pub const LABELS: [&'static str; 4] = [
        "unknown",
        "on_file",
        "security_or_messenger",
        "contact_uploads",
    ];

    /// The index of its label in [`KnownNumber::LABELS`].
    pub fn code(self) -> usize {
        match self {
            KnownNumber::Unknown => 0,
            KnownNumber::OnFile => 1,
            KnownNumber::SecurityOrMessenger => 2,
            KnownNumber::ContactUploads => 3,
        }
    }
}

/// The user's S account and the phone number it holds on file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SAccount {
    /// The user has no S account.
    #[default]
    None,
    /// An S account with no phone number on file.
    NoPhone,
    /// The account holds the user's own current number.
    Own,
    /// The account holds the user's old number, now recycled to `sender`.
    Stale {
        /// The user who holds the number now.
        sender: u64,
    },
    /// The account holds the number of a phone shared with `sender`, its M user.
    Household {
        /// The M user of the shared phone.
        sender: u64,
    },
}

impl SAccount {
    /// Whether the user has an S account.
    pub fn exists(self) -> bool {
        self != SAccount::None
    }

    /// The labels used in exported tables, by [`SAccount::code`].
    pub const LABELS: [&'static str; 5] = ["none", "no_phone", "own", "stale", "household"];

    /// The label used in exported tables.
    pub fn label(self) -> &'static str {
        Self::LABELS[self.code()]
    }

    /// The index of its label in [`SAccount::LABELS`].
    pub fn code(self) -> usize {
        match self {
            SAccount::None => 0,
            SAccount::NoPhone => 1,
            SAccount::Own => 2,
            SAccount::Stale { .. } => 3,
            SAccount::Household { .. } => 4,
        }
    }

    /// The M user whose number this account holds, when it is not the account holder's own.
    pub fn foreign_sender(self) -> Option<u64> {
        match self {
            SAccount::Stale { sender } | SAccount::Household { sender } => Some(sender),
            _ => None,
        }
    }
}

/// One synthetic M user.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct User {
    /// Global user id, `0..N`.
    pub id: u64,
    /// The key of the user's random streams: its country's tag plus its index within the
    /// country ([`crate::rng::country_tag`], docs/model.md §2.1).
    pub draw: u64,
    /// The user's stream keys, from `draw` ([`Key::user`]).
    pub streams: UserKey,
    /// Index of the country in the country table.
    pub country: u16,
    /// Index of the age band.
    pub age_band: u8,
    /// The user's current mobile number.
    pub phone: PhoneNumber,
    /// Bit `s` set: interested in segment `s`.
    pub interests: u64,
    /// Bit `s` set: a customer of a business in segment `s` (which holds the user's number).
    pub customer_of: u64,
    /// Bit `s` set: messages businesses of segment `s` on M.
    pub messages_business: u64,
    /// Where the user's number came from.
    pub number_history: NumberHistory,
    /// The user whose S account holds this user's number (previous owner or household
    /// member), when the number is recycled or shared and that account has a phone on file.
    pub number_on_file_of: Option<u64>,
    /// The user's S account.
    pub s_account: SAccount,
    /// How S knew the user's current number on its own account before any sharing.
    pub number_known: KnownNumber,
    /// Latent propensity to opt out (docs/model.md §4), logistic scale.
    pub privacy_score: f64,
}

impl Default for PhoneNumber {
    fn default() -> Self {
        PhoneNumber {
            calling_code: 0,
            national: crate::phone::National { number: 0, len: 0 },
        }
    }
}

/// Which optional parts of a user to build.
#[derive(Clone, Copy, Debug)]
struct Parts {
    phone: bool,
    on_file: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        phone: true,
        on_file: true,
    };
}

/// Per-country samplers of one replication.
#[derive(Clone, Debug)]
struct CountryModel {
    start: u64,
    count: u64,
    /// The country's stream tag ([`country_tag`]): user `start + k` draws as `tag + k`.
    tag: u64,
    calling_code: u16,
    space: NumberSpace,
    phones: Permutation,
    /// `sigma_c`, absent for a country with fewer than 2 users.
    cycle: Option<Permutation>,
    age: Categorical,
    on_s: Threshold,
    phone_on_file: Threshold,
    recycled: Threshold,
    shared: Threshold,
    privacy_shift: f64,
}

/// Bernoulli thresholds of the segments, one lane per segment.
#[derive(Clone, Debug)]
struct SegmentModel {
    /// How many segments.
    count: usize,
    /// `interest[band]`: prevalence of each segment in that band.
    interest: Vec<Lanes<32>>,
    /// Customer of a business of the segment: if not interested, if interested.
    customer: [Lanes<16>; 2],
    /// Messages businesses of the segment on M: if not interested, if interested.
    messages: [Lanes<16>; 2],
    /// Opt-out shift of each segment's interested users.
    privacy_shift: Vec<f64>,
}

/// A population of `N` users for one replication of a resolved scenario.
#[derive(Clone, Debug)]
pub struct Population {
    users: u64,
    key: Key,
    countries: Vec<CountryModel>,
    segments: SegmentModel,
    band_shifts: Vec<f64>,
    heterogeneity: f64,
    /// The numbers S knew besides those on file: security or Messenger, contact uploads.
    known: [Threshold; 2],
    /// The countries of each calling code below 1000, in table order, and those of longer
    /// codes: the candidates [`Population::holder_of_digits`] tries for a number's prefix.
    by_code: Vec<Vec<usize>>,
    long_codes: Vec<usize>,
}

/// Splits `n` users over countries by the largest-remainder method: every count is within 1 of
/// `n * share`, and the counts sum to `n`.
pub fn country_counts(n: u64, shares: &[f64]) -> Vec<u64> {
    let total: f64 = shares.iter().sum();
    let exact: Vec<f64> = shares.iter().map(|s| n as f64 * s / total).collect();
    let mut counts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let assigned: u64 = counts.iter().sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Largest fractional part first; ties to the earlier country.
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &c in order
        .iter()
        .cycle()
        .take(n.saturating_sub(assigned) as usize)
    {
        counts[c] += 1;
    }
    counts
}

impl Population {
    /// The population of replication `replication` of `resolved`, with its own size and seed.
    pub fn new(resolved: &Resolved, replication: u32) -> Result<Self> {
        let s = &resolved.scenario;
        let mut population = Self::with(
            &resolved.data,
            &resolved.spaces,
            s.population.users,
            s.population.seed,
            replication,
            s.opt_out.heterogeneity,
        )?;
        let k = &s.known_numbers;
        population.known = [
            Threshold::new(k.security_or_messenger),
            Threshold::new(k.contact_uploads),
        ];
        Ok(population)
    }

    /// The population of `users` users from validated data and number spaces.
    pub fn with(
        data: &ReferenceData,
        spaces: &[NumberSpace],
        users: u64,
        seed: u64,
        replication: u32,
        heterogeneity: f64,
    ) -> Result<Self> {
        let key = Key::new(seed, replication);
        let bands = &data.age_bands.band;
        let global_age: Vec<f64> = bands.iter().map(|b| b.share).collect();
        let table = &data.countries.country;
        let counts = country_counts(users, &table.iter().map(|c| c.m_share).collect::<Vec<_>>());
        let mut start = 0;
        let mut countries = Vec::with_capacity(table.len());
        for (i, ((c, space), &count)) in table.iter().zip(spaces).zip(&counts).enumerate() {
            if count > space.capacity() {
                return Err(Error::invalid(
                    data.countries_file.clone(),
                    format!("country[{i}].blocks"),
                    format!("{} numbers", space.capacity()),
                    format!(
                        "room for the {count} users of {} at {users} users: add blocks or simulate fewer users",
                        c.code
                    ),
                ));
            }
            let tag = country_tag(&c.code);
            countries.push(CountryModel {
                start,
                count,
                tag,
                calling_code: c.calling_code,
                space: space.clone(),
                phones: Permutation::new(
                    space.capacity(),
                    key.permutation_key(PermutationKind::PhoneNumbers, tag),
                ),
                cycle: (count >= 2).then(|| {
                    Permutation::new(
                        count,
                        key.permutation_key(PermutationKind::PreviousHolder, tag),
                    )
                }),
                age: Categorical::new(c.age_shares.as_deref().unwrap_or(&global_age)),
                on_s: Threshold::new(c.also_on_s),
                phone_on_file: Threshold::new(c.phone_on_file),
                recycled: Threshold::new(c.recycled_rate),
                shared: Threshold::new(c.shared_phone_rate),
                privacy_shift: c.privacy_shift,
            });
            start += count;
        }
        // Two countries' stream keys must not meet: `tag .. tag + count` are disjoint (a
        // collision of 64-bit hashes within 10^9 of each other: about 10^-8 for 22 countries).
        let mut spans: Vec<(u64, u64, &str)> = countries
            .iter()
            .zip(table)
            .map(|(m, c)| (m.tag, m.count, c.code.as_str()))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].0.checked_add(w[0].1).is_none_or(|end| end > w[1].0) {
                return Err(Error::invalid(
                    data.countries_file.clone(),
                    "country.code",
                    format!("{} and {}", w[0].2, w[1].2),
                    "codes whose random-stream tags do not overlap (docs/model.md §2.1): rename one",
                ));
            }
        }
        let segs = &data.segments.segment;
        fn lanes<const B: usize>(segs: &[Segment], f: impl Fn(&Segment) -> f64) -> Lanes<B> {
            Lanes::new(&segs.iter().map(f).collect::<Vec<_>>())
        }
        let segments = SegmentModel {
            count: segs.len(),
            interest: (0..bands.len())
                .map(|b| {
                    lanes(segs, |s| {
                        s.prevalence * s.age_multipliers.as_ref().map_or(1.0, |m| m[b])
                    })
                })
                .collect(),
            customer: [
                lanes(segs, |s| s.customer_if_not),
                lanes(segs, |s| s.customer_if_interested),
            ],
            messages: [
                lanes(segs, |s| s.messages_if_not),
                lanes(segs, |s| s.messages_if_interested),
            ],
            privacy_shift: segs.iter().map(|s| s.privacy_shift).collect(),
        };
        let mut by_code = vec![Vec::new(); 1000];
        let mut long_codes = Vec::new();
        for (ci, c) in countries.iter().enumerate() {
            match by_code.get_mut(usize::from(c.calling_code)) {
                Some(list) => list.push(ci),
                None => long_codes.push(ci),
            }
        }
        Ok(Population {
            users,
            key,
            by_code,
            long_codes,
            countries,
            segments,
            band_shifts: bands.iter().map(|b| b.privacy_shift).collect(),
            heterogeneity,
            // No other source unless the scenario names one ([`Population::new`]).
            known: [Threshold::new(0.0), Threshold::new(0.0)],
        })
    }

    /// How many users.
    pub fn len(&self) -> u64 {
        self.users
    }

    /// Whether there are no users (never: scenarios have at least one).
    pub fn is_empty(&self) -> bool {
        self.users == 0
    }

    /// The key of this population's replication.
    pub fn key(&self) -> Key {
        self.key
    }

    /// How many segments the interest sets use.
    pub fn segments(&self) -> usize {
        self.segments.count
    }

    /// The id range and count of each country, in table order.
    pub fn country_ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.countries
            .iter()
            .map(|c| c.start..c.start + c.count)
            .collect()
    }

    /// The country index of user `id`.
    #[inline]
    pub fn country_of(&self, id: u64) -> usize {
        self.countries.partition_point(|c| c.start + c.count <= id)
    }

    /// User `id` (below [`Population::len`]), generated from its id alone.
    pub fn user(&self, id: u64) -> User {
        self.build(id, self.country_of(id), Parts::ALL)
    }

    /// User `id` of country `country` (which must be [`Population::country_of`]`(id)`): as
    /// [`Population::user`], for callers that walk ids country by country.
    #[inline]
    pub fn user_in(&self, id: u64, country: usize) -> User {
        debug_assert_eq!(country, self.country_of(id));
        self.build(id, country, Parts::ALL)
    }

    /// User `id` of country `country` (which must be [`Population::country_of`]`(id)`: the
    /// simulation walks its chunks country by country) without what the simulation does not
    /// read: the phone number (left at its default) and, unless `on_file`, the account that
    /// holds its number (`number_on_file_of` left `None`). Every other field equals
    /// [`Population::user`]'s.
    #[inline]
    pub fn user_for_sweep(&self, id: u64, country: usize, on_file: bool) -> User {
        debug_assert_eq!(country, self.country_of(id));
        self.build(
            id,
            country,
            Parts {
                phone: false,
                on_file,
            },
        )
    }

    #[inline(always)]
    fn build(&self, id: u64, ci: usize, parts: Parts) -> User {
        let c = &self.countries[ci];
        let k = id - c.start;

        let draw = c.tag.wrapping_add(k);
        let streams = self.key.user(draw);
        let mut demo = streams.rng(Stream::Demographics);
        let age_band = c.age.draw(&mut demo) as u8; // at most MAX_AGE_BANDS (validated)

        // One lane per segment (bit-sliced draws, [`Lanes`]): the interests, then the customer
        // relationships and the business messaging, both conditional on the interest, each in
        // its own stream (a bit-sliced draw uses as many words as its lanes need: a change of
        // one segment's prevalence must not shift the words the other draws read).
        let segs = &self.segments;
        let all = u64::MAX.checked_shr(64 - segs.count as u32).unwrap_or(0);
        let interests =
            segs.interest[age_band as usize].draw(&mut streams.rng(Stream::Interests), all);
        let [c0, c1] = &segs.customer;
        let customer_of = c0.draw_either(c1, interests, &mut streams.rng(Stream::Customers), all);
        let [m0, m1] = &segs.messages;
        let messages_business =
            m0.draw_either(m1, interests, &mut streams.rng(Stream::Messaging), all);
        let shift = self.privacy_shift(c, age_band, interests);

        let number_history = self.number_history(c, streams);
        let number_on_file_of = match (number_history, &c.cycle) {
            _ if !parts.on_file => None,
            (NumberHistory::Fresh, _) | (_, None) => None,
            (_, Some(cycle)) => {
                let n = c.count;
                let next = cycle.forward(k) + 1;
                let holder = c.start + cycle.inverse(if next == n { 0 } else { next });
                (self.account_phone(c, self.streams_of(c, holder)) == Some(true)).then_some(holder)
            }
        };
        let s_account = match self.account_phone(c, streams) {
            None => SAccount::None,
            Some(false) => SAccount::NoPhone,
            Some(true) => match &c.cycle {
                None => SAccount::Own,
                Some(cycle) => {
                    let n = c.count;
                    let at = cycle.forward(k);
                    let sender = c.start + cycle.inverse(if at == 0 { n - 1 } else { at - 1 });
                    match self.number_history(c, self.streams_of(c, sender)) {
                        NumberHistory::Fresh => SAccount::Own,
                        NumberHistory::Recycled => SAccount::Stale { sender },
                        NumberHistory::Shared => SAccount::Household { sender },
                    }
                }
            },
        };

        let number_known = match s_account {
            SAccount::None => KnownNumber::Unknown,
            SAccount::Own => KnownNumber::OnFile,
            _ => self.known_number(streams),
        };

        let national = if parts.phone {
            c.space.national(c.phones.forward(k))
        } else {
            crate::phone::National { number: 0, len: 0 }
        };
        let noise = self.privacy_noise(streams);
        User {
            id,
            draw,
            streams,
            country: ci as u16,
            age_band,
            phone: PhoneNumber {
                calling_code: c.calling_code,
                national,
            },
            interests,
            customer_of,
            messages_business,
            number_history,
            number_on_file_of,
            s_account,
            number_known,
            privacy_score: self.heterogeneity * shift + noise,
        }
    }

    /// The shift of a user's opt-out propensity: its country's, its age band's, and those of
    /// the segments it is interested in, added in that order.
    #[inline(always)]
    fn privacy_shift(&self, c: &CountryModel, age_band: u8, interests: u64) -> f64 {
        let mut shift = c.privacy_shift + self.band_shifts[age_band as usize];
        let mut bits = interests;
        while bits != 0 {
            shift += self.segments.privacy_shift[bits.trailing_zeros() as usize];
            bits &= bits - 1;
        }
        shift
    }

    /// The Logistic(0, 1) noise of the privacy score of the user with stream keys `streams`.
    #[inline(always)]
    fn privacy_noise(&self, streams: UserKey) -> f64 {
        streams.rng(Stream::Privacy).logistic()
    }

    /// User `id`'s privacy score alone (country `country`, which must be
    /// [`Population::country_of`]`(id)`), drawing only what it depends on: the age band and
    /// the interests, skipped when heterogeneity is 0, and the noise. Equals
    /// [`Population::user`]`(id).privacy_score` exactly.
    #[inline]
    pub fn privacy_score(&self, id: u64, country: usize) -> f64 {
        let c = &self.countries[country];
        let streams = self.streams_of(c, id);
        let noise = self.privacy_noise(streams);
        if self.heterogeneity == 0.0 {
            return noise;
        }
        let age_band = c.age.draw(&mut streams.rng(Stream::Demographics)) as u8;
        let segs = &self.segments;
        let all = u64::MAX.checked_shr(64 - segs.count as u32).unwrap_or(0);
        let interests =
            segs.interest[age_band as usize].draw(&mut streams.rng(Stream::Interests), all);
        self.heterogeneity * self.privacy_shift(c, age_band, interests) + noise
    }

    /// The stream keys of user `id` of country `c`: its stream key is the country's tag plus
    /// its index within the country (docs/model.md §2.1).
    #[inline(always)]
    fn streams_of(&self, c: &CountryModel, id: u64) -> UserKey {
        self.key.user(c.tag.wrapping_add(id - c.start))
    }

    /// Whether the user with stream keys `streams` (of country `c`) has an S account, and if
    /// so whether it holds a phone.
    #[inline]
    fn account_phone(&self, c: &CountryModel, streams: UserKey) -> Option<bool> {
        let mut rng: UserRng = streams.rng(Stream::SocialAccount);
        let on_s = rng.bernoulli(c.on_s);
        let phone = rng.bernoulli(c.phone_on_file);
        on_s.then_some(phone)
    }

    /// How S knew the current number of the user with stream keys `streams`, whose S account
    /// does not hold it on file: given for security or to Messenger, else matched from contact
    /// uploads, else not at all (docs/model.md §3.5). Its own stream.
    #[inline]
    fn known_number(&self, streams: UserKey) -> KnownNumber {
        let mut rng = streams.rng(Stream::KnownNumbers);
        let security = rng.bernoulli(self.known[0]);
        let contacts = rng.bernoulli(self.known[1]);
        if security {
            KnownNumber::SecurityOrMessenger
        } else if contacts {
            KnownNumber::ContactUploads
        } else {
            KnownNumber::Unknown
        }
    }

    /// Whether the number of the user with stream keys `streams` is recycled, shared or fresh
    /// (recycling wins if both).
    #[inline]
    fn number_history(&self, c: &CountryModel, streams: UserKey) -> NumberHistory {
        let mut rng = streams.rng(Stream::PhoneHistory);
        let recycled = rng.bernoulli(c.recycled);
        let shared = rng.bernoulli(c.shared);
        if recycled {
            NumberHistory::Recycled
        } else if shared {
            NumberHistory::Shared
        } else {
            NumberHistory::Fresh
        }
    }

    /// The M user who holds `phone` now, if any: the inverse of the number map (S's phone
    /// index, computed rather than stored).
    pub fn holder_of(&self, phone: &PhoneNumber) -> Option<u64> {
        self.countries
            .iter()
            .filter(|c| c.calling_code == phone.calling_code)
            .find_map(|c| {
                let position = c.space.position(phone.national)?;
                let k = c.phones.inverse(position);
                (k < c.count).then_some(c.start + k)
            })
    }
}

impl Population {
    /// The current number of user `id` of country `country` (what [`Population::user`] gives,
    /// without the rest of the user).
    pub fn phone_of(&self, id: u64, country: usize) -> PhoneNumber {
        let c = &self.countries[country];
        PhoneNumber {
            calling_code: c.calling_code,
            national: c.space.national(c.phones.forward(id - c.start)),
        }
    }

    /// The M user whose number is the E.164 digit string `digits` (calling code first, no
    /// `+`), if any: how a typed number that S normalized is looked up (docs/model.md §7).
    /// Arithmetic on the digits' value: no string is built.
    ///
    /// Only the countries whose calling code is the digits' first one, two or three digits
    /// are tried (a number's code is its prefix), the first in table order that holds the
    /// number winning, as if every country were tried in order.
    pub fn holder_of_digits(&self, digits: &[u8]) -> Option<u64> {
        let n = digits.len();
        if !(2..=19).contains(&n) || digits[0] == b'0' {
            return None;
        }
        let value = digits.iter().try_fold(0u64, |v, &d| {
            d.is_ascii_digit().then(|| v * 10 + u64::from(d - b'0'))
        })?;
        let mut found: Option<(usize, u64)> = None;
        let mut try_country = |ci: usize| {
            if found.is_none_or(|(first, _)| ci < first)
                && let Some(id) = self.holder_in(ci, value, n)
            {
                found = Some((ci, id));
            }
        };
        let mut code = 0usize;
        for &d in &digits[..3.min(n - 1)] {
            code = code * 10 + usize::from(d - b'0');
            for &ci in &self.by_code[code] {
                try_country(ci);
            }
        }
        for &ci in &self.long_codes {
            try_country(ci);
        }
        found.map(|(_, id)| id)
    }

    /// The user of country `ci` whose number is the `n`-digit E.164 value `value`, if any.
    #[inline]
    fn holder_in(&self, ci: usize, value: u64, n: usize) -> Option<u64> {
        let c = &self.countries[ci];
        let cc = u64::from(c.calling_code);
        let national_len = n.checked_sub(decimal_digits(cc)).filter(|&l| l > 0)?;
        let scale = POW10[national_len];
        if value / scale != cc {
            return None;
        }
        let national = crate::phone::National {
            number: value % scale,
            len: national_len as u32,
        };
        let k = c.phones.inverse(c.space.position(national)?);
        (k < c.count).then_some(c.start + k)
    }
}

/// Decimal digits of `x` (1 for 0).
fn decimal_digits(x: u64) -> usize {
    POW10[1..].iter().take_while(|&&p| x >= p).count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::path::Path;

    fn population(users: u64) -> Population {
        let mut s = Scenario::default();
        s.population.users = users;
        let r = s.resolve("test", Path::new(".")).unwrap();
        Population::new(&r, 0).unwrap()
    }

    #[test]
    fn counts_are_within_one_and_sum_to_n() {
        let shares = [0.5, 0.3, 0.2 / 3.0, 0.2 / 3.0, 0.2 / 3.0];
        for n in [1u64, 2, 7, 100, 12_345, 1_000_000_007] {
            let counts = country_counts(n, &shares);
            assert_eq!(counts.iter().sum::<u64>(), n);
            for (c, s) in counts.iter().zip(shares) {
                assert!((*c as f64 - n as f64 * s).abs() < 1.0, "n={n}: {counts:?}");
            }
        }
    }

    #[test]
    fn privacy_scores_alone_equal_the_whole_users() {
        let p = population(5000);
        for id in (0..5000).step_by(7) {
            assert_eq!(
                p.privacy_score(id, p.country_of(id)).to_bits(),
                p.user(id).privacy_score.to_bits()
            );
        }
    }

    #[test]
    fn users_are_pure_functions_of_their_id() {
        let p = population(10_000);
        let q = population(10_000);
        for id in [0, 1, 4_999, 9_999] {
            assert_eq!(p.user(id), q.user(id));
        }
    }

    #[test]
    fn holder_of_inverts_the_number_map() {
        let p = population(50_000);
        for id in (0..50_000).step_by(97) {
            assert_eq!(p.holder_of(&p.user(id).phone), Some(id));
        }
    }

    #[test]
    fn foreign_numbers_on_file_point_both_ways() {
        // j's account holds i's number exactly when i's number is on file with j.
        let p = population(20_000);
        let mut found = 0;
        for id in 0..20_000 {
            let u = p.user(id);
            if let Some(sender) = u.s_account.foreign_sender() {
                found += 1;
                let s = p.user(sender);
                assert_ne!(sender, id);
                assert_eq!(s.number_on_file_of, Some(id));
                assert_eq!(s.country, u.country);
                let expected = if s.number_history == NumberHistory::Recycled {
                    "stale"
                } else {
                    "household"
                };
                assert_eq!(u.s_account.label(), expected);
            }
            if let Some(holder) = u.number_on_file_of {
                assert_eq!(p.user(holder).s_account.foreign_sender(), Some(id));
            }
        }
        assert!(found > 200, "only {found} foreign numbers on file");
    }
}
