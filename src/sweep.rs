//! The simulation pass (docs/model.md §4-§9): every arm and every rate level in one pass over the users.
//!
//! For each user the pass finds, per arm, the level at which its opt-out status flips, and the
//! flip level of the one foreign sender whose number its S account may hold (docs/model.md §5). Its
//! outcomes are piecewise constant between those levels, so the pass evaluates each piece once
//! and adds it to the level range with difference arrays ([`crate::cells`]). Each user is
//! counted once per arm and level, in its own (country, age band) cell: as an M user (sharing,
//! links, exposure, Custom Audience uploads of its number) and as an S account holder
//! (targeting, data received from someone else).
//!
//! Linking (docs/model.md §5), for a user whose number goes to S, in this order:
//! - true link: its own S account holds its current number;
//! - mislink: another user's account holds it (previous owner of a recycled number, or the
//!   household member who registered a shared phone): the data lands on that account;
//! - metadata link: it has an account (no phone, or a stale or household one) and S links it
//!   through device and account metadata, with the country's probability; S then adds the M
//!   number to that account's phone index;
//! - no link.
//!
//! What is written per user: the counts that no arm or level changes (the user, its account,
//! its interests, its customer-list uploads and their matches, except a metadata link's) go
//! once into a per-cell table shared by every arm. Per arm and piece of levels, the few
//! counts of its state (opted out, shared, link, exposure) are written as differences; its
//! targeting counts (audiences, impressions, linked accounts) depend only on whether its own
//! and its sender's data are in ad use, so they are written only where that changes. Arms
//! with the same ad use at every level (scopes `ads` and `all` of one design) have equal
//! targeting counts: the first counts them and the others copy them at the end.
//!
//! Memory: the accumulators are the main cost, one per rayon thread, each holding
//! `(levels + 1) x countries x age bands x measures` 64-bit counts per arm (8.3 MB for a
//! 21-level arm with the built-in data). Users of a chunk are consecutive ids, hence mostly one
//! country, so a chunk touches one country's slice (about 0.4 MB per arm), which stays in
//! cache. Memory does not grow with the number of users.

use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::audiences::Uploads;
use crate::calibration::calibration_thresholds;
use crate::cells::{All, Channel, Counts, Layout, Seg};
use crate::error::Result;
use crate::policy::{Arm, ArmKind, Thresholds, TimingModel, resolve_arms};
use crate::population::{NumberHistory, Population, SAccount, User};
use crate::revenue::DayValue;
use crate::rng::{Stream, Threshold};
use crate::scenario::Resolved;
use crate::targeting::{Detectors, Flags, IMPRESSION_UNITS, MEvidence, split};

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
    /// Per arm, the first arm with the same ad use at every level (same kind, rates, regional
    /// rules and M evidence; the scope may differ): their targeting counts are equal, so only
    /// that arm counts them.
    targeting_source: Vec<usize>,
    /// Per arm, the first arm with the same rates (so the same opt-out thresholds).
    flip_source: Vec<usize>,
    /// Per country, its S region (an index into the country table's `arpu_region`).
    region_of: Vec<usize>,
    /// Click values of an account-day, for the timeline's `value_gain`.
    values: DayValue,
}

impl<'a> Sweep<'a> {
    /// Prepares the simulation of `resolved`.
    pub fn new(resolved: &'a Resolved) -> Self {
        let s = &resolved.scenario;
        let codes = resolved.data.country_codes();
        let arms = resolve_arms(&s.policy, &codes, s.targeting.m_evidence);
        let layout = Layout {
            countries: codes.len(),
            ages: resolved.data.age_bands.band.len(),
            segments: resolved.data.segments.segment.len(),
            levels: arms.iter().map(|a| a.rates.len()).collect(),
            days: s.policy.horizon_days as usize,
            regions: resolved.data.countries.arpu_region.len(),
        };
        let region_of = resolved
            .data
            .countries
            .country
            .iter()
            .map(|c| {
                let regions = &resolved.data.countries.arpu_region;
                regions
                    .iter()
                    .position(|r| r.name == c.arpu_region)
                    .unwrap_or(0)
            })
            .collect();
        let cpc = resolved.click_values();
        let targeting_source = arms
            .iter()
            .map(|a| {
                arms.iter()
                    .position(|b| {
                        b.kind == a.kind
                            && b.rates == a.rates
                            && b.ad_use_ends == a.ad_use_ends
                            && b.m_evidence == a.m_evidence
                    })
                    .unwrap_or(0)
            })
            .collect();
        // M's detectors draw if any arm reads M's interest evidence.
        let m_read = arms
            .iter()
            .any(|a| a.m_evidence == MEvidence::BusinessMessaging);
        let flip_source = arms
            .iter()
            .map(|a| arms.iter().position(|b| b.rates == a.rates).unwrap_or(0))
            .collect();
        Sweep {
            resolved,
            targeting_source,
            flip_source,
            arms,
            layout,
            timing: TimingModel::new(&s.policy),
            detectors: Detectors::new(&s.targeting, m_read),
            uploads: Uploads::new(&s.audiences),
            metadata: resolved
                .data
                .countries
                .country
                .iter()
                .map(|c| Threshold::new(c.metadata_link_rate))
                .collect(),
            horizon: s.policy.horizon_days,
            region_of,
            values: DayValue::new(&s.targeting, &s.revenue, &cpc, s.population.users),
        }
    }

    /// The score thresholds of every arm in replication `replication`.
    pub fn thresholds(&self, replication: u32) -> Result<Vec<Thresholds>> {
        let rates: Vec<Vec<f64>> = self.arms.iter().map(|a| a.rates.clone()).collect();
        calibration_thresholds(self.resolved, replication, &rates)
    }

    /// The counts of users `range` of replication `replication`, with one rayon task per
    /// `chunk_size` users. Identical for every thread count and chunk size.
    pub fn run(&self, replication: u32, range: Range<u64>) -> Result<Counts> {
        self.run_with_progress(replication, range, |_| {})
    }

    /// [`Sweep::run`], calling `progress` with the number of users of each chunk done.
    ///
    /// Each rayon thread folds the chunks it runs into its own accumulator, so there are as
    /// many accumulators as threads however fine the chunks: an accumulator is megabytes of
    /// counts to zero, merge and sum (38 MB an arm at 101 levels). The counts are integers,
    /// so which thread ran which chunk does not change the result.
    pub fn run_with_progress(
        &self,
        replication: u32,
        range: Range<u64>,
        progress: impl Fn(u64) + Sync,
    ) -> Result<Counts> {
        crate::cancel::check()?;
        let population = Population::new(self.resolved, replication)?;
        let thresholds = self.thresholds(replication)?;
        let chunk = self.resolved.scenario.engine.chunk_size.max(1);
        let n_chunks = (range.end - range.start).div_ceil(chunk);
        let country_ends: Vec<u64> = population.country_ranges().iter().map(|r| r.end).collect();
        let slots: Vec<Mutex<Option<Accumulator>>> = (0..rayon::current_num_threads())
            .map(|_| Mutex::new(None))
            .collect();
        (0..n_chunks).into_par_iter().for_each(|k| {
            if crate::cancel::requested() {
                return;
            }
            let t = rayon::current_thread_index().unwrap_or(0) % slots.len();
            // Only thread `t` takes slot `t`, and the chunk makes no rayon call while it holds
            // it, so the lock never waits; a poisoned slot is still a valid accumulator.
            let mut slot = slots[t].lock().unwrap_or_else(|e| e.into_inner());
            let acc = slot.get_or_insert_with(|| Accumulator::zeros(&self.layout));
            let first = range.start + k * chunk;
            let last = (first + chunk).min(range.end);
            // Countries are consecutive id ranges: walk them instead of searching per user.
            let mut country = population.country_of(first);
            for id in first..last {
                while id >= country_ends[country] {
                    country += 1;
                }
                self.user(&population, &thresholds, id, country, acc);
            }
            drop(slot);
            progress(last - first);
        });
        crate::cancel::check()?;
        let total = slots
            .into_iter()
            .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .reduce(|a, b| a.merge(b, &self.layout))
            .unwrap_or_else(|| Accumulator::zeros(&self.layout));
        Ok(self.complete(total).finish(&self.layout))
    }

    /// Turns an accumulator into difference counts: the counts common to every arm go to each
    /// arm's first level, and an arm that shares its targeting with an earlier one gets that
    /// arm's targeting measures.
    fn complete(&self, acc: Accumulator) -> Counts {
        let Accumulator { mut counts, common } = acc;
        let l = &self.layout;
        let per = l.per_level();
        let targeting = [
            0..l.segments * Seg::COUNT,
            l.all(All::LinkedAccountDays)..l.all(All::ImpUntargetedUnlinked) + 1,
        ];
        let value_gain: Vec<usize> = (0..l.regions)
            .flat_map(|r| (0..=l.days).map(move |d| (r, d)))
            .flat_map(|(r, d)| {
                Channel::EACH
                    .into_iter()
                    .filter(|c| c.is_value())
                    .map(move |c| l.day(r, d, c))
            })
            .collect();
        let tper = l.timeline_per_level();
        // Cells no user fell in are zero everywhere: skipped.
        let cells = counts.touched_cells(l);
        for a in 0..counts.arms.len() {
            let source = self.targeting_source[a];
            if source != a {
                let (before, after) = counts.timeline.split_at_mut(a);
                for (f, t) in before[source].chunks(tper).zip(after[0].chunks_mut(tper)) {
                    for &i in &value_gain {
                        t[i] += f[i];
                    }
                }
                let (before, after) = counts.arms.split_at_mut(a);
                let (from, to) = (&before[source], &mut after[0]);
                for (f_level, t_level) in from.chunks(per).zip(to.chunks_mut(per)) {
                    for &c in &cells {
                        let (f_cell, t_cell) = (&f_level[l.block(c)], &mut t_level[l.block(c)]);
                        for r in &targeting {
                            for (t, f) in t_cell[r.clone()].iter_mut().zip(&f_cell[r.clone()]) {
                                *t += f;
                            }
                        }
                    }
                }
            }
        }
        for arm in &mut counts.arms {
            for &c in &cells {
                for (x, y) in arm[l.block(c)].iter_mut().zip(&common[l.block(c)]) {
                    *x += y;
                }
            }
        }
        counts
    }

    /// How user `u`'s shared data is linked.
    fn link(&self, u: &User) -> Link {
        // S's index holds the number on the user's own account: on file, or from another
        // source (docs/model.md §3.5).
        if u.number_known.known() {
            Link::True
        } else if u.number_on_file_of.is_some() {
            Link::Mislink
        } else if u.s_account.exists()
            && u.streams
                .rng(Stream::Linking)
                .bernoulli(self.metadata[u.country as usize])
        {
            Link::Metadata
        } else {
            Link::None
        }
    }

    /// Adds user `id` of country `country` to `acc`, for every arm and level.
    fn user(
        &self,
        population: &Population,
        thresholds: &[Thresholds],
        id: u64,
        country: usize,
        acc: &mut Accumulator,
    ) {
        let u = population.user_for_sweep(id, country, true);
        let timing = self.timing.draw(u.streams);
        let link = self.link(&u);
        // The sender whose number this account holds, if its data would land here.
        let sender = u
            .s_account
            .foreign_sender()
            // The sender holds a number of the same country: it is a user of that country.
            .map(|sid| population.user_for_sweep(sid, country, false))
            .filter(|v| !v.number_known.known());
        let sender_timing = sender.as_ref().map(|v| self.timing.draw(v.streams));
        let l = &self.layout;
        let flags = u.s_account.exists().then(|| {
            let foreign = sender.as_ref().map(|v| v.messages_business);
            self.detectors.flags(
                u.streams,
                l.segments,
                u.interests,
                u.messages_business,
                foreign,
            )
        });

        let cell = l.cell(country, u.age_band as usize);
        acc.counts.touch(country * l.ages + u.age_band as usize);
        let region = self.region_of[country];
        // The value of an account-day per variant, by whether the arm reads M's evidence.
        let mut day_values = [[None; 4]; 2];
        let measures = l.measures();
        let per_level = l.per_level();
        let tper = l.timeline_per_level();

        // What every arm and level counts alike; day measures over the H days of the horizon.
        let days = i64::from(self.horizon);
        let common = &mut acc.common[cell..cell + measures];
        common[l.all(All::Users)] += 1;
        if flags.is_some() {
            common[l.all(All::Accounts)] += 1;
            for_bits(u.interests, |s| {
                common[l.seg(s, Seg::UsersInterested)] += 1;
                common[l.seg(s, Seg::InterestedDays)] += days;
            });
        } else {
            for_bits(u.interests, |s| common[l.seg(s, Seg::UsersInterested)] += 1);
        }
        // Custom Audiences: the user's number in its businesses' customer lists. A metadata
        // link's match depends on the level (the number reaches S's index only on the days
        // the user's data is in ad use): the targeting counts it.
        // An upload typed with a fault that S does not recover is hashed as another string:
        // it matches only if that string is another user's number on file (a typo).
        let foreign_has = u.number_on_file_of.is_some();
        let mut usable = 0u64;
        let phone = || population.phone_of(id, country);
        self.uploads.each(u.streams, u.customer_of, |s, typo| {
            common[l.seg(s, Seg::CaUploadedDays)] += days;
            match self.uploads.landing(typo, phone) {
                None => {
                    usable |= 1 << s;
                    if u.number_known.known() {
                        common[l.seg(s, Seg::CaRightDays)] += days;
                    } else if foreign_has {
                        common[l.seg(s, Seg::CaWrongDays)] += days;
                    }
                }
                Some(digits) if typo_matches(population, id, digits.as_bytes()) => {
                    common[l.seg(s, Seg::CaWrongDays)] += days;
                }
                Some(_) => {}
            }
        });
        let account = flags.map(|flags| Account {
            flags,
            interests: u.interests,
            ca_own: if u.number_known.known() { usable } else { 0 },
            ca_metadata: if link == Link::Metadata { usable } else { 0 },
            // The account holds the sender's number: the sender's businesses' uploads match
            // it, the wrong person.
            ca_foreign: sender.as_ref().map_or(0, |v| {
                let phone = || population.phone_of(v.id, country);
                v.customer_of & self.uploads.correct(v.streams, v.customer_of, phone)
            }),
            route: match (link, u.s_account) {
                (Link::Metadata, SAccount::NoPhone) => Channel::GainNewNumber,
                (Link::Metadata, _) => Channel::GainReplacedNumber,
                // A true link (S had the number), or no own data on the account at all.
                _ => Channel::GainKnownNumber,
            },
        });
        // The account as arms without M's interest evidence see it: M's flags cleared.
        let plain = account.map(|a| Account {
            flags: Flags {
                own: 0,
                foreign: 0,
                ..a.flags
            },
            ..a
        });

        // The measure of the user's link, counted while its number is shared.
        let has_account = account.is_some();
        let link_measure = l.all(match link {
            Link::True => All::LinkTrue,
            Link::Metadata => All::LinkMetadata,
            Link::Mislink if u.number_history == NumberHistory::Shared => All::LinkMislinkShared,
            Link::Mislink => All::LinkMislinkRecycled,
            Link::None => All::LinkNone,
        });
        // The measures of a user's state, in the order its values are listed per piece.
        let state_measures = [
            l.all(All::OptedOut),
            l.all(All::Shared),
            l.all(All::AdUse),
            link_measure,
            l.all(All::SharedWithAccount),
            l.all(All::MislinkReceived),
            l.all(All::ExposureDays),
            l.all(All::AdUseDays),
        ];
        // Flip levels of the last arm computed: arms with equal rates have equal thresholds.
        let mut flips: Option<(usize, usize, usize)> = None;
        for (ai, arm) in self.arms.iter().enumerate() {
            let reads_m = usize::from(arm.m_evidence == MEvidence::BusinessMessaging);
            let account = if reads_m == 1 { &account } else { &plain };
            let day_values = &mut day_values[reads_m];
            let diff = &mut acc.counts.arms[ai];
            let targets = self.targeting_source[ai] == ai;
            if arm.kind == ArmKind::None {
                // Nothing is shared at any level: every state count is zero, the timeline
                // gets nothing, and the account is shown without M data (variant 0) on all H
                // days, written at the first level.
                if let Some(account) = account.as_ref().filter(|_| targets) {
                    let row = &mut diff[cell..cell + measures];
                    let value = self.targeting(row, account, Variant::ALL[0], days);
                    day_values[0].get_or_insert(value);
                }
                continue;
            }
            let levels = arm.rates.len();
            let never = levels;
            let source = self.flip_source[ai];
            let (f_user, f_sender) = match flips {
                Some((s, f_user, f_sender)) if s == source => (f_user, f_sender),
                _ => {
                    let t = &thresholds[source];
                    let f_user = t.flip(u.privacy_score);
                    let f_sender = sender.as_ref().map_or(never, |v| t.flip(v.privacy_score));
                    flips = Some((source, f_user, f_sender));
                    (f_user, f_sender)
                }
            };
            let mut cuts = [0, f_user.min(levels), f_sender.min(levels), levels];
            cuts.sort_unstable();
            let mut spans = [(0, 0, (0, 0), (0, 0)); 3];
            let mut n_spans = 0;
            let mut shown: Option<[i64; 4]> = None;
            let mut state = [0i64; 8];
            let mut was_out = 0i64;
            for w in cuts.windows(2) {
                let (k0, k1) = (w[0], w[1]);
                if k0 == k1 {
                    continue;
                }
                let st = arm.state(country, k0 >= f_user, timing, self.horizon);
                let sender_state =
                    sender_timing.map(|t| arm.state(country, k0 >= f_sender, t, self.horizon));
                // The state's counts, written where they change: at each piece's first level,
                // the new values less the previous piece's.
                let start = k0 * per_level + cell;
                let values = [
                    i64::from(st.out),
                    i64::from(st.shared),
                    i64::from(st.ad_use),
                    i64::from(st.shared),
                    i64::from(st.shared && has_account),
                    i64::from(has_account && sender_state.is_some_and(|s| s.shared)),
                    i64::from(st.exposure_days),
                    span(st.ad_use_days, self.horizon),
                ];
                let row = &mut diff[start..start + measures];
                for ((&m, v), p) in state_measures.iter().zip(values).zip(&mut state) {
                    if v != *p {
                        row[m] += v - *p;
                        *p = v;
                    }
                }
                if targets {
                    // Opt-outs by interest (selection, docs/model.md §9), where they change.
                    let out = i64::from(st.out);
                    if out != was_out {
                        let row = &mut diff[start..start + measures];
                        for_bits(u.interests, |s| {
                            row[l.seg(s, Seg::OptedOutInterested)] += out - was_out
                        });
                        was_out = out;
                    }
                }
                if let Some(account) = account.as_ref().filter(|_| targets) {
                    // The account's days by variant: whether its holder's own M data and its
                    // foreign sender's are in ad use that day. Targeting changes only where
                    // these days do: written at the first level of new days, as the counts of
                    // the days that moved between variants. Arms that share their targeting
                    // with an earlier one copy it instead ([`Sweep::complete`]).
                    let own = if matches!(link, Link::True | Link::Metadata) {
                        st.ad_use_days
                    } else {
                        (0, 0)
                    };
                    let foreign = sender_state.map_or((0, 0), |s| s.ad_use_days);
                    let by_variant = variant_days(self.horizon, own, foreign);
                    if shown != Some(by_variant) {
                        let row = &mut diff[start..start + measures];
                        let before = shown.unwrap_or([0; 4]);
                        for (v, (now, was)) in by_variant.iter().zip(before).enumerate() {
                            if *now != was {
                                let value =
                                    self.targeting(row, account, Variant::ALL[v], now - was);
                                day_values[v].get_or_insert(value);
                            }
                        }
                        shown = Some(by_variant);
                    }
                    // The value gain's days, written once the pieces are known (so that
                    // targeting has valued the variants), pieces with the same days merged.
                    match spans[..n_spans].last_mut() {
                        Some(last) if last.1 == k0 && (last.2, last.3) == (own, foreign) => {
                            last.1 = k1;
                        }
                        _ => {
                            spans[n_spans] = (k0, k1, own, foreign);
                            n_spans += 1;
                        }
                    }
                }
                // Timeline: the day the user acted, and its days of ad use.
                let acted = match arm.kind {
                    // Standing opt-outs came before the horizon.
                    ArmKind::None | ArmKind::Standing => false,
                    ArmKind::OptIn => !st.out,
                    ArmKind::OptOutWindow | ArmKind::NoChoice => st.out,
                };
                let tl = &mut acc.counts.timeline[ai];
                let mut add = |day: usize, ch: Channel, a: i64| {
                    let at = l.day(region, day, ch);
                    tl[k0 * tper + at] += a;
                    // As for the counts, the row past the last level is never read.
                    if k1 < levels {
                        tl[k1 * tper + at] -= a;
                    }
                };
                if acted {
                    let channel = if timing.at_notice() {
                        Channel::Notice
                    } else {
                        Channel::Settings
                    };
                    add(timing.day() as usize, channel, 1);
                }
                let (start, end) = st.ad_use_days;
                if start < end {
                    add(start as usize, Channel::InAdUse, 1);
                    if end <= self.horizon {
                        add(end as usize, Channel::InAdUse, -1);
                    }
                }
            }
            if let Some(account) = account.as_ref() {
                for &(k0, k1, own, foreign) in &spans[..n_spans] {
                    self.value_gain(
                        &mut acc.counts.timeline[ai],
                        (k0, k1, levels),
                        region,
                        account,
                        own,
                        foreign,
                        day_values,
                    );
                }
            }
        }
    }

    /// Adds `days` account-days of an account's targeting counts in `variant` to its cell
    /// `row`: its interest and Custom Audience campaigns and their impressions, whether it is
    /// linked, and the Custom Audience matches that a metadata link makes. `days` is negative
    /// to take days away. Returns the value of one of its days in `variant`, in quanta
    /// (as [`Sweep::day_value`]).
    #[inline]
    fn targeting(&self, row: &mut [i64], account: &Account, variant: Variant, days: i64) -> i64 {
        let l = &self.layout;
        let linked = variant.own || variant.foreign;
        row[l.all(All::LinkedAccountDays)] += days * i64::from(linked);
        let mut value = 0.0;
        let campaigns = account.campaigns(variant, |s, campaign, interested, units| {
            value += self
                .values
                .targeted(s, campaign == Campaign::Customer, interested, units);
            let m = match campaign {
                Campaign::Interest => {
                    row[l.seg(s, Seg::AudienceDays)] += days;
                    row[l.seg(s, Seg::TruePositiveDays)] += days * i64::from(interested);
                    match (interested, linked) {
                        (true, true) => Seg::ImpInterestedLinked,
                        (false, true) => Seg::ImpOtherLinked,
                        (true, false) => Seg::ImpInterestedUnlinked,
                        (false, false) => Seg::ImpOtherUnlinked,
                    }
                }
                Campaign::Customer if linked => Seg::CaImpCustomerLinked,
                Campaign::Customer => Seg::CaImpCustomerUnlinked,
                Campaign::WrongPerson => match (interested, linked) {
                    (true, true) => Seg::CaImpInterestedLinked,
                    (true, false) => Seg::CaImpInterestedUnlinked,
                    (false, true) => Seg::CaImpOtherLinked,
                    (false, false) => Seg::CaImpOtherUnlinked,
                },
            };
            row[l.seg(s, m)] += days * units as i64;
        });
        if campaigns == 0 {
            let m = if linked {
                All::ImpUntargetedLinked
            } else {
                All::ImpUntargetedUnlinked
            };
            row[l.all(m)] += days * IMPRESSION_UNITS as i64;
            value = self.values.untargeted(IMPRESSION_UNITS);
        }
        if variant.own {
            for_bits(account.ca_metadata, |s| {
                row[l.seg(s, Seg::CaRightDays)] += days
            });
        }
        value.round() as i64
    }

    /// The click value of one of the account's days in `variant`, in quanta (docs/model.md §8).
    #[inline]
    fn day_value(&self, account: &Account, variant: Variant) -> i64 {
        let v = &self.values;
        let mut total = 0.0;
        let campaigns = account.campaigns(variant, |s, campaign, interested, units| {
            total += v.targeted(s, campaign == Campaign::Customer, interested, units);
        });
        if campaigns == 0 {
            total = v.untargeted(IMPRESSION_UNITS);
        }
        total.round() as i64
    }

    /// Adds to the timeline `tl` of an arm, at levels `[k0, k1)` of `levels`, the value that
    /// M data adds to `account` on each day (docs/model.md §8): the value of its day in the
    /// day's variant less its value with no M data in ad use, on the days its holder's own data
    /// (`own`) and its foreign sender's (`foreign`) are in ad use. `values` caches the
    /// account's day value per variant.
    #[allow(clippy::too_many_arguments)]
    fn value_gain(
        &self,
        tl: &mut [i64],
        (k0, k1, levels): (usize, usize, usize),
        region: usize,
        account: &Account,
        own: (u32, u32),
        foreign: (u32, u32),
        values: &mut [Option<i64>; 4],
    ) {
        let h = self.horizon;
        let clip = |(a, b): (u32, u32)| (a.min(h), b.min(h));
        let (own, foreign) = (clip(own), clip(foreign));
        let both = (own.0.max(foreign.0), own.1.min(foreign.1));
        let mut value =
            |v: usize| *values[v].get_or_insert_with(|| self.day_value(account, Variant::ALL[v]));
        let has = |(a, b): (u32, u32)| a < b;
        if !has(own) && !has(foreign) {
            return;
        }
        let base = value(0);
        let g_own = if has(own) { value(1) - base } else { 0 };
        let g_foreign = if has(foreign) { value(2) - base } else { 0 };
        let g_both = if has(both) {
            value(3) - base - g_own - g_foreign
        } else {
            0
        };
        let l = &self.layout;
        let tper = l.timeline_per_level();
        // The total, and its part by how M's data reached the account (docs/model.md §8.4):
        // the holder's own data by its route, someone else's (with the overlap) as foreign.
        for ((start, end), g, route) in [
            (own, g_own, account.route),
            (foreign, g_foreign, Channel::GainForeign),
            (both, g_both, Channel::GainForeign),
        ] {
            if g == 0 || start >= end {
                continue;
            }
            for (day, amount) in [(start, g), (end, -g)] {
                for ch in [Channel::ValueGain, route] {
                    let at = l.day(region, day as usize, ch);
                    tl[k0 * tper + at] += amount;
                    if k1 < levels {
                        tl[k1 * tper + at] -= amount;
                    }
                }
            }
        }
    }
}

/// The kind of campaign an account-day's impression units go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    /// A segment's interest campaign (the account is flagged).
    Interest,
    /// A business's Custom Audience campaign, on its customer's account (right person).
    Customer,
    /// A business's Custom Audience campaign, on an account that holds its customer's number
    /// but is someone else's.
    WrongPerson,
}

/// What an account's targeting depends on on one day: whether its holder's own M data and
/// its foreign sender's are in ad use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Variant {
    own: bool,
    foreign: bool,
}

impl Account {
    /// Calls `f(segment, campaign, interested, units)` for each campaign the account is in on
    /// a day in `variant`, with the units of the day's supply it gets (they add up to
    /// [`IMPRESSION_UNITS`], split exactly: docs/model.md §6) and whether the holder is
    /// interested in the segment; returns how many (0: the day is untargeted).
    #[inline(always)]
    fn campaigns(&self, variant: Variant, mut f: impl FnMut(usize, Campaign, bool, u64)) -> u32 {
        let flags = &self.flags;
        let flagged = flags.platform
            | if variant.own { flags.own } else { 0 }
            | if variant.foreign { flags.foreign } else { 0 };
        // Custom Audience campaigns the account is in: its holder's own businesses' (the
        // right person; by metadata only while its data is in ad use), and those of the
        // sender whose number it holds (the wrong person).
        let right = self.ca_own | if variant.own { self.ca_metadata } else { 0 };
        let wrong = self.ca_foreign & !right;
        let n = flagged.count_ones() + (right | wrong).count_ones();
        if n == 0 {
            return 0;
        }
        let (each, extra) = split(n);
        let interested = |s: usize| self.interests >> s & 1 == 1;
        // Interest campaigns first, then Custom Audience ones, through one call of `f` (so
        // that it is inlined once).
        let mut k = 0;
        for (interest, bits) in [(true, flagged), (false, right | wrong)] {
            for_bits(bits, |s| {
                let campaign = if interest {
                    Campaign::Interest
                } else if right >> s & 1 == 1 {
                    Campaign::Customer
                } else {
                    Campaign::WrongPerson
                };
                k += 1;
                f(s, campaign, interested(s), each + u64::from(k <= extra));
            });
        }
        n
    }
}

impl Variant {
    /// The four variants, in the order of [`variant_days`].
    const ALL: [Variant; 4] = [
        Variant {
            own: false,
            foreign: false,
        },
        Variant {
            own: true,
            foreign: false,
        },
        Variant {
            own: false,
            foreign: true,
        },
        Variant {
            own: true,
            foreign: true,
        },
    ];
}

/// Whether the normalized `digits` of an upload of user `id`'s number are the number of
/// another M user that an S account holds (its own, or a stale or household one): a
/// wrong-person match by a typo (docs/model.md §7.2). Numbers S added through metadata links
/// are not looked up here (docs/model.md §15).
fn typo_matches(population: &Population, id: u64, digits: &[u8]) -> bool {
    population
        .holder_of_digits(digits)
        .filter(|&w| w != id)
        .is_some_and(|w| {
            let holder = population.user(w);
            holder.number_known.known() || holder.number_on_file_of.is_some()
        })
}

/// Days of `[start, end)` within the horizon's days 0 to `horizon - 1`.
fn span((start, end): (u32, u32), horizon: u32) -> i64 {
    i64::from(end.min(horizon).saturating_sub(start.min(horizon)))
}

/// An account's days 0 to `horizon - 1` by variant ([`Variant::ALL`]), from the days its
/// holder's own data (`own`) and its sender's (`foreign`) are in ad use.
fn variant_days(horizon: u32, own: (u32, u32), foreign: (u32, u32)) -> [i64; 4] {
    let both = span((own.0.max(foreign.0), own.1.min(foreign.1)), horizon);
    let own = span(own, horizon);
    let foreign = span(foreign, horizon);
    [
        i64::from(horizon) - own - foreign + both,
        own - both,
        foreign - both,
        both,
    ]
}

/// An account's fixed inputs to targeting.
#[derive(Clone, Copy, Debug)]
struct Account {
    flags: Flags,
    interests: u64,
    /// Custom Audience uploads of its holder's number that match its own number on file.
    ca_own: u64,
    /// Uploads of its holder's number that match once S adds the number by a metadata link
    /// (on the days the holder's data is in ad use).
    ca_metadata: u64,
    /// Uploads of the number it holds that belong to another user (stale or household).
    ca_foreign: u64,
    /// The timeline channel of the value its holder's own data adds: how M's data reached
    /// the account ([`Channel::ROUTES`]).
    route: Channel,
}

/// One thread's counts: per arm, differences over levels; and the counts every arm and
/// level share, per cell.
#[derive(Debug)]
struct Accumulator {
    counts: Counts,
    common: Vec<i64>,
}

impl Accumulator {
    fn zeros(layout: &Layout) -> Self {
        Accumulator {
            counts: Counts::zeros_untouched(layout),
            common: vec![0; layout.per_level()],
        }
    }

    /// The sum of two accumulators: only the cells `other` touched are added.
    fn merge(self, other: Accumulator, layout: &Layout) -> Self {
        let mut common = self.common;
        for c in other.counts.touched_cells(layout) {
            for (x, y) in common[layout.block(c)]
                .iter_mut()
                .zip(&other.common[layout.block(c)])
            {
                *x += y;
            }
        }
        let mut counts = self.counts;
        counts.add(&other.counts, layout);
        crate::cells::recycle(other.counts);
        Accumulator { counts, common }
    }
}

/// Calls `f` with the index of every set bit of `bits`, lowest first.
#[inline(always)]
fn for_bits(mut bits: u64, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}
