//! The simulation pass (SPEC §4-§9): every arm and every rate level in one pass over the users.
//!
//! For each user the pass finds, per arm, the level at which its opt-out status flips, and the
//! flip level of the one foreign sender whose number its S account may hold (SPEC §5). Its
//! outcomes are piecewise constant between those levels, so the pass evaluates each piece once
//! and adds it to the level range with difference arrays ([`crate::cells`]). Each user is
//! counted once per arm and level, in its own (country, age band) cell: as an M user (sharing,
//! links, exposure, Custom Audience uploads of its number) and as an S account holder
//! (targeting, data received from someone else).
//!
//! Linking (SPEC §5), for a user whose number goes to S, in this order:
//! - true link: its own S account holds its current number;
//! - mislink: another user's account holds it (previous owner of a recycled number, or the
//!   household member who registered a shared phone): the data lands on that account;
//! - metadata link: it has an account (no phone, or a stale or household one) and S links it
//!   through device and account metadata, with the country's probability; S then adds the M
//!   number to that account's phone index;
//! - no link.
//!
//! Memory: the accumulators are the main cost, one per rayon split, each holding
//! `(levels + 1) x countries x age bands x measures` 64-bit counts per arm (8.3 MB for a
//! 21-level arm with the built-in data). Users of a chunk are consecutive ids, hence mostly one
//! country, so a chunk touches one country's slice (about 0.4 MB per arm), which stays in
//! cache. Memory does not grow with the number of users.

use std::ops::Range;

use rayon::prelude::*;

use crate::audiences::Uploads;
use crate::cells::{All, Contributions, Counts, Layout, Seg};
use crate::error::Result;
use crate::policy::{Arm, ArmKind, Thresholds, TimingModel, calibration_scores, resolve_arms};
use crate::population::{NumberHistory, Population, SAccount, User};
use crate::rng::{Stream, Threshold};
use crate::scenario::Resolved;
use crate::targeting::{Detectors, IMPRESSION_UNITS};

/// How a user's shared data is linked to an S account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Its own account, by its number.
    True,
    /// Its own account, through metadata.
    Metadata,
    /// Someone else's account, which holds its number.
    Mislink,
    /// No account.
    None,
}

/// A resolved scenario ready to simulate.
#[derive(Clone, Debug)]
pub struct Sweep<'a> {
    resolved: &'a Resolved,
    /// The arms, resolved.
    pub arms: Vec<Arm>,
    /// The shape of the counts.
    pub layout: Layout,
    timing: TimingModel,
    detectors: Detectors,
    uploads: Uploads,
    metadata: Vec<Threshold>,
    horizon: u32,
}

impl<'a> Sweep<'a> {
    /// Prepares the simulation of `resolved`.
    pub fn new(resolved: &'a Resolved) -> Self {
        let s = &resolved.scenario;
        let codes = resolved.data.country_codes();
        let arms = resolve_arms(&s.policy, &codes);
        let layout = Layout {
            countries: codes.len(),
            ages: resolved.data.age_bands.band.len(),
            segments: resolved.data.segments.segment.len(),
            levels: arms.iter().map(|a| a.rates.len()).collect(),
            days: s.policy.horizon_days as usize,
        };
        Sweep {
            resolved,
            arms,
            layout,
            timing: TimingModel::new(&s.policy),
            detectors: Detectors::new(&s.targeting),
            uploads: Uploads::new(&s.audiences),
            metadata: resolved
                .data
                .countries
                .country
                .iter()
                .map(|c| Threshold::new(c.metadata_link_rate))
                .collect(),
            horizon: s.policy.horizon_days,
        }
    }

    /// The score thresholds of every arm in replication `replication`.
    pub fn thresholds(&self, replication: u32) -> Result<Vec<Thresholds>> {
        let scores = calibration_scores(self.resolved, replication)?;
        Ok(self
            .arms
            .iter()
            .map(|a| Thresholds::new(&a.rates, &scores))
            .collect())
    }

    /// The counts of users `range` of replication `replication`, with one rayon task per
    /// `chunk_size` users. Identical for every thread count and chunk size.
    pub fn run(&self, replication: u32, range: Range<u64>) -> Result<Counts> {
        let population = Population::new(self.resolved, replication)?;
        let thresholds = self.thresholds(replication)?;
        let chunk = self.resolved.scenario.engine.chunk_size.max(1);
        let n_chunks = (range.end - range.start).div_ceil(chunk);
        // Each rayon job folds many chunks into one accumulator: at most about four jobs per
        // thread, because an accumulator is megabytes of counts to zero, merge and sum.
        let per_job = (n_chunks / (4 * rayon::current_num_threads() as u64)).max(1) as usize;
        let counts = (0..n_chunks as usize)
            .into_par_iter()
            .with_min_len(per_job)
            .fold(
                || (Counts::zeros(&self.layout), Contributions::default()),
                |(mut acc, mut buf), k| {
                    let first = range.start + k as u64 * chunk;
                    for id in first..(first + chunk).min(range.end) {
                        self.user(&population, &thresholds, id, &mut acc, &mut buf);
                    }
                    (acc, buf)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(|| Counts::zeros(&self.layout), Counts::merge);
        Ok(counts.finish(&self.layout))
    }

    /// How user `u`'s shared data is linked.
    fn link(&self, population: &Population, u: &User) -> Link {
        if u.s_account == SAccount::Own {
            Link::True
        } else if u.number_on_file_of.is_some() {
            Link::Mislink
        } else if u.s_account.exists()
            && population
                .key()
                .user_rng(u.id, Stream::Linking)
                .bernoulli(self.metadata[u.country as usize])
        {
            Link::Metadata
        } else {
            Link::None
        }
    }

    /// Adds user `id` to `acc`, for every arm and level.
    fn user(
        &self,
        population: &Population,
        thresholds: &[Thresholds],
        id: u64,
        acc: &mut Counts,
        buf: &mut Contributions,
    ) {
        let key = population.key();
        let u = population.user(id);
        let timing = self.timing.draw(key, id);
        let link = self.link(population, &u);
        // The sender whose number this account holds, if its data would land here.
        let sender = u
            .s_account
            .foreign_sender()
            .map(|sid| population.user(sid))
            .filter(|v| v.s_account != SAccount::Own);
        let sender_timing = sender.as_ref().map(|v| self.timing.draw(key, v.id));
        let segments = self.layout.segments;
        let flags = if u.s_account.exists() {
            let foreign = sender.as_ref().map_or(0, |v| v.messages_business);
            Some(
                self.detectors
                    .flags(key, id, segments, u.interests, u.messages_business, foreign),
            )
        } else {
            None
        };
        let usable = self.uploads.usable(key, id, u.customer_of);
        let c = u.country as usize;
        let base = self.layout.cell(c, u.age_band as usize);
        let per_level = self.layout.per_level();
        let tper = self.layout.timeline_per_level();
        for (ai, arm) in self.arms.iter().enumerate() {
            let levels = arm.rates.len();
            let never = levels;
            let flip = |score: f64| {
                if arm.kind == ArmKind::None {
                    never
                } else {
                    thresholds[ai].flip(score)
                }
            };
            let f_user = flip(u.privacy_score);
            let f_sender = sender.as_ref().map_or(never, |v| flip(v.privacy_score));
            let mut cuts = [0, f_user.min(levels), f_sender.min(levels), levels];
            cuts.sort_unstable();
            for w in cuts.windows(2) {
                let (k0, k1) = (w[0], w[1]);
                if k0 == k1 {
                    continue;
                }
                let st = arm.state(c, k0 >= f_user, timing, self.horizon);
                let sender_state =
                    sender_timing.map(|t| arm.state(c, k0 >= f_sender, t, self.horizon));
                buf.0.clear();
                self.contributions(&u, link, st, sender_state, flags, usable, buf);
                buf.apply(&mut acc.arms[ai], per_level, base, k0, k1);
                // Timeline: the day the user acted, and its days of ad use.
                let acted = match arm.kind {
                    ArmKind::None => false,
                    ArmKind::OptIn => !st.out,
                    ArmKind::OptOutWindow | ArmKind::NoChoice => st.out,
                };
                let tl = &mut acc.timeline[ai];
                let mut add = |day: usize, ch: usize, a: i64| {
                    tl[k0 * tper + day * 3 + ch] += a;
                    tl[k1 * tper + day * 3 + ch] -= a;
                };
                if acted {
                    add(
                        timing.day() as usize,
                        if timing.read_notice { 0 } else { 1 },
                        1,
                    );
                }
                let (start, end) = st.ad_use_days;
                if start < end {
                    add(start as usize, 2, 1);
                    if end <= self.horizon {
                        add(end as usize, 2, -1);
                    }
                }
            }
        }
    }

    /// The counts of one user in one arm at one state.
    #[allow(clippy::too_many_arguments)]
    fn contributions(
        &self,
        u: &User,
        link: Link,
        st: crate::policy::State,
        sender: Option<crate::policy::State>,
        flags: Option<crate::targeting::Flags>,
        usable: u64,
        buf: &mut Contributions,
    ) {
        let l = &self.layout;
        buf.push(l.all(All::Users), 1);
        buf.push(l.all(All::OptedOut), i64::from(st.out));
        buf.push(l.all(All::Shared), i64::from(st.shared));
        buf.push(l.all(All::AdUse), i64::from(st.ad_use));
        if st.shared {
            let m = match link {
                Link::True => All::LinkTrue,
                Link::Metadata => All::LinkMetadata,
                Link::Mislink if u.number_history == NumberHistory::Shared => {
                    All::LinkMislinkShared
                }
                Link::Mislink => All::LinkMislinkRecycled,
                Link::None => All::LinkNone,
            };
            buf.push(l.all(m), 1);
        }
        buf.push(l.all(All::ExposureDays), i64::from(st.exposure_days));
        if let Some(flags) = flags {
            buf.push(l.all(All::Accounts), 1);
            buf.push(l.all(All::SharedWithAccount), i64::from(st.shared));
            buf.push(
                l.all(All::MislinkReceived),
                i64::from(sender.is_some_and(|s| s.shared)),
            );
            let own_in = st.ad_use && matches!(link, Link::True | Link::Metadata);
            let foreign_in = sender.is_some_and(|s| s.ad_use);
            let linked = own_in || foreign_in;
            buf.push(l.all(All::LinkedAccounts), i64::from(linked));
            let flagged = flags.platform
                | if own_in { flags.own } else { 0 }
                | if foreign_in { flags.foreign } else { 0 };
            for_bits(u.interests, |s| buf.push(l.seg(s, Seg::Interested), 1));
            match IMPRESSION_UNITS.checked_div(u64::from(flagged.count_ones())) {
                None => {
                    let m = if linked {
                        All::ImpUntargetedLinked
                    } else {
                        All::ImpUntargetedUnlinked
                    };
                    buf.push(l.all(m), IMPRESSION_UNITS as i64);
                }
                Some(each) => for_bits(flagged, |s| {
                    let interested = u.interests >> s & 1 == 1;
                    buf.push(l.seg(s, Seg::Audience), 1);
                    buf.push(l.seg(s, Seg::TruePositive), i64::from(interested));
                    let m = match (interested, linked) {
                        (true, true) => Seg::ImpInterestedLinked,
                        (false, true) => Seg::ImpOtherLinked,
                        (true, false) => Seg::ImpInterestedUnlinked,
                        (false, false) => Seg::ImpOtherUnlinked,
                    };
                    buf.push(l.seg(s, m), each as i64);
                }),
            }
        }
        // Custom Audiences: the user's number in its businesses' customer lists.
        let own_has = u.s_account == SAccount::Own || (link == Link::Metadata && st.ad_use);
        let foreign_has = u.number_on_file_of.is_some();
        for_bits(u.customer_of, |s| {
            buf.push(l.seg(s, Seg::CaUploaded), 1);
            if usable >> s & 1 == 1 {
                if own_has {
                    buf.push(l.seg(s, Seg::CaRight), 1);
                } else if foreign_has {
                    buf.push(l.seg(s, Seg::CaWrong), 1);
                }
            }
        });
    }
}

/// Calls `f` with the index of every set bit of `bits`, lowest first.
#[inline]
fn for_bits(mut bits: u64, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}
