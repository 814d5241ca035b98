//! The engine's output: integer counts ("cells", docs/model.md §10.1), their layout, and the
//! wide table they are written as.
//!
//! In memory, one replication's counts are kept per arm as one flat vector indexed by
//! `(level, country, age band, measure)`, where a measure is either per segment ([`Seg`]) or
//! for all segments together ([`All`]). The engine adds each user's contribution to a level
//! range `[k0, k1)` as `+c` at `k0` and `-c` at `k1` (difference arrays); [`Counts::finish`]
//! takes prefix sums. Merging is addition, so chunks, threads, replications and shards combine
//! exactly in any order.
//!
//! On disk (`cells.parquet`, [`CELLS_SCHEMA_VERSION`]) the counts are a wide table, one column
//! per measure: a row per `(arm, level, replication, country, age band, segment)` holds the
//! segment's measures, and a row with `segment = "all"` the measures counted over all
//! segments; the measures that do not apply to a row are null, so the sum of any column over
//! any set of rows is a true total. Rows whose counts are all zero are left out. Every measure
//! is defined once, in the tables [`Seg::ALL`] and [`All::ALL`] made by [`measures!`], which the
//! engine, the estimation, the table writers and the data dictionary all read.

use polars::prelude::*;
use rayon::prelude::*;

/// Version of the `cells` and `timeline_cells` tables' schemas.
pub const CELLS_SCHEMA_VERSION: &str = "cells/5";

/// A counted measure: its column name and what it counts (the data dictionary's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measure {
    /// Column name in `cells.parquet`.
    pub name: &'static str,
    /// What it counts.
    pub doc: &'static str,
}

/// Defines an enum of measures and its table in one place: the variant's discriminant is its
/// index in the table, so names, docs and indices cannot drift apart.
macro_rules! measures {
    ($(#[$meta:meta])* $enum:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal : $doc:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $($(#[$vmeta])* #[doc = $doc] $variant,)*
        }

        impl $enum {
            /// Every measure of this kind, in index order.
            pub const ALL: &'static [Measure] = &[$(Measure { name: $name, doc: $doc },)*];
            /// How many.
            pub const COUNT: usize = Self::ALL.len();

            /// This measure's name and doc.
            pub const fn measure(self) -> Measure {
                Self::ALL[self as usize]
            }
        }
    };
}

measures! {
    /// Measures counted per segment, on the segment's rows. Targeting, Custom Audience and
    /// impression measures are summed over the days 0 to H-1 of the horizon (docs/model.md
    /// §6): an account in the audience for 91 days counts 91 account-days.
    Seg {
        InterestedDays = "interested_days": "account-days of S accounts whose holder is interested in the segment",
        AudienceDays = "audience_days": "account-days in the segment's interest campaign audience (flagged)",
        TruePositiveDays = "true_positive_days": "account-days flagged whose holder is interested",
        ImpInterestedLinked = "impressions_interested_linked": "impression units (1/720720 of an account-day's supply) of the segment's interest campaign to interested holders, on days with M data in ad use on the account",
        ImpOtherLinked = "impressions_other_linked": "impression units of the interest campaign to uninterested holders, on days with M data in ad use",
        ImpInterestedUnlinked = "impressions_interested_unlinked": "impression units of the interest campaign to interested holders, on days without M data in ad use",
        ImpOtherUnlinked = "impressions_other_unlinked": "impression units of the interest campaign to uninterested holders, on days without M data in ad use",
        CaImpCustomerLinked = "ca_impressions_customer_linked": "impression units of the segment's Custom Audience campaigns to matched customers (right person), on days with M data in ad use",
        CaImpCustomerUnlinked = "ca_impressions_customer_unlinked": "impression units of Custom Audience campaigns to matched customers, on days without M data in ad use",
        CaImpInterestedLinked = "ca_impressions_interested_linked": "impression units of Custom Audience campaigns to wrong-person matches interested in the segment, on days with M data in ad use",
        CaImpInterestedUnlinked = "ca_impressions_interested_unlinked": "impression units of Custom Audience campaigns to wrong-person matches interested in the segment, on days without M data in ad use",
        CaImpOtherLinked = "ca_impressions_other_linked": "impression units of Custom Audience campaigns to wrong-person matches not interested in the segment, on days with M data in ad use",
        CaImpOtherUnlinked = "ca_impressions_other_unlinked": "impression units of Custom Audience campaigns to wrong-person matches not interested in the segment, on days without M data in ad use",
        CaUploadedDays = "ca_uploaded_days": "upload-days: numbers of the segment's customers uploaded to Custom Audiences, times the days of the horizon",
        CaRightDays = "ca_matched_right_days": "upload-days matched to the customer's own account",
        CaWrongDays = "ca_matched_wrong_days": "upload-days matched only to someone else's account (stale or household number)",
        UsersInterested = "users_interested": "M users interested in the segment (with or without an S account)",
        OptedOutInterested = "opted_out_interested": "M users interested in the segment who opted out (did not opt in, or left)",
    }
}

measures! {
    /// Measures counted over all segments, on the rows with `segment = "all"`.
    All {
        Users = "users": "M users",
        Accounts = "accounts": "M users with an S account",
        OptedOut = "opted_out": "users who opted out (did not opt in, or left)",
        Shared = "shared": "users whose number went to S",
        SharedWithAccount = "shared_with_account": "users with an S account whose number went to S",
        AdUse = "ad_use": "users whose data is in ad use at the end of the horizon",
        AdUseDays = "ad_use_days": "person-days on which a user's data is in ad use, days 0 to H-1",
        LinkTrue = "link_true": "shared users linked to their own account by their number",
        LinkMetadata = "link_metadata": "shared users linked to their own account through metadata (S adds their number)",
        LinkMislinkRecycled = "link_mislink_recycled": "shared users whose data landed on the previous owner's account (recycled number)",
        LinkMislinkShared = "link_mislink_shared": "shared users whose data landed on a household member's account (shared phone)",
        LinkNone = "link_none": "shared users not linked to any account",
        MislinkReceived = "mislink_received": "accounts that received someone else's data",
        ExposureDays = "exposure_days": "days of ad use before an opt-out took effect, summed over users",
        LinkedAccountDays = "linked_account_days": "account-days with M data in ad use (the holder's own or someone else's)",
        ImpUntargetedLinked = "impressions_untargeted_linked": "impression units of untargeted ads, on account-days with M data in ad use",
        ImpUntargetedUnlinked = "impressions_untargeted_unlinked": "impression units of untargeted ads, on account-days without M data in ad use",
    }
}

measures! {
    /// Timeline channels (`timeline_cells.parquet`), per S region and day: the users who acted
    /// at the notice or in Settings (opting out, opting in or leaving, by arm), the users whose
    /// data is in ad use that day, and the value that M data adds to the region's accounts that
    /// day (the only signed channel).
    Channel {
        Notice = "notice": "users who acted at the notice that day: on accepting the terms (days 0 to `policy.acceptance_days` - 1), or, for users who joined after the notice, at sign-up",
        Settings = "settings": "users who acted in Settings that day (1 to `policy.window_days` days after their acceptance)",
        InAdUse = "in_ad_use": "users whose data is in ad use that day",
        ValueGain = "value_gain": "the day's expected click value of the accounts, less what the same accounts earn with no M data in ad use, in units of 1/Q dollar per impression unit (Q below); signed",
        GainNewNumber = "value_gain_new_number": "the part of value_gain from the holder's own data on accounts that had no phone on file and no number from another source, linked through metadata (numbers S did not have); signed",
        GainReplacedNumber = "value_gain_replaced_number": "the part from the holder's own data on accounts that held a stale or household number, linked through metadata (numbers that replace a stale one); signed",
        GainKnownNumber = "value_gain_known_number": "the part from the holder's own data on accounts whose number S already had (true links): M's interest evidence only; signed",
        GainForeign = "value_gain_foreign": "the part from someone else's data on the account (mislinks), with its overlap with the holder's own; signed",
    }
}

impl Channel {
    /// Whether the engine writes the channel as differences over days (a value held over a
    /// span of days), turned into daily values by [`Counts::finish`].
    pub fn held_over_days(self) -> bool {
        self == Channel::InAdUse || self.is_value()
    }

    /// Whether the channel is a value (signed, in quanta) rather than a count of people.
    pub fn is_value(self) -> bool {
        !matches!(self, Channel::Notice | Channel::Settings | Channel::InAdUse)
    }

    /// The channels, in index order.
    pub const EACH: [Channel; 8] = [
        Channel::Notice,
        Channel::Settings,
        Channel::InAdUse,
        Channel::ValueGain,
        Channel::GainNewNumber,
        Channel::GainReplacedNumber,
        Channel::GainKnownNumber,
        Channel::GainForeign,
    ];

    /// The value channels that split `value_gain` by how M's data reached the account, in the
    /// order of the summary's `revenue_change_*_musd` columns (docs/model.md §8.4).
    pub const ROUTES: [Channel; 4] = [
        Channel::GainNewNumber,
        Channel::GainReplacedNumber,
        Channel::GainKnownNumber,
        Channel::GainForeign,
    ];
}

/// The shape of the counts of one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Countries.
    pub countries: usize,
    /// Age bands.
    pub ages: usize,
    /// Segments.
    pub segments: usize,
    /// Levels of each arm.
    pub levels: Vec<usize>,
    /// Days of the timeline (day 0 to the horizon).
    pub days: usize,
    /// S reporting regions: the timeline is kept per region (revenue is anchored per region).
    pub regions: usize,
}

impl Layout {
    /// Measures per (country, age band) cell.
    pub fn measures(&self) -> usize {
        self.segments * Seg::COUNT + All::COUNT
    }

    /// Index of a per-segment measure within a cell.
    #[inline]
    pub fn seg(&self, segment: usize, m: Seg) -> usize {
        segment * Seg::COUNT + m as usize
    }

    /// Index of an all-segment measure within a cell.
    #[inline]
    pub fn all(&self, m: All) -> usize {
        self.segments * Seg::COUNT + m as usize
    }

    /// Offset of cell (country, age) within a level.
    #[inline]
    pub fn cell(&self, country: usize, age: usize) -> usize {
        (country * self.ages + age) * self.measures()
    }

    /// The values of cell `cell` (`country * ages + age`) within a level.
    #[inline]
    pub fn block(&self, cell: usize) -> std::ops::Range<usize> {
        cell * self.measures()..(cell + 1) * self.measures()
    }

    /// Values per level.
    pub fn per_level(&self) -> usize {
        self.countries * self.ages * self.measures()
    }

    /// Index of a timeline value within a level: region `region`, day `day`, channel `ch`.
    #[inline]
    pub fn day(&self, region: usize, day: usize, ch: Channel) -> usize {
        (region * (self.days + 1) + day) * Channel::COUNT + ch as usize
    }

    /// Rows of the day-by-day table per arm level (a region and day each, at most).
    pub fn timeline_rows_per_level(&self) -> usize {
        self.regions * (self.days + 1)
    }

    /// Values per timeline level.
    pub fn timeline_per_level(&self) -> usize {
        self.timeline_rows_per_level() * Channel::COUNT
    }

    /// Bytes of one replication's [`Counts`] (the engine's accumulators are this size too).
    pub fn counts_bytes(&self) -> u64 {
        let levels: usize = self.levels.iter().map(|l| l + 1).sum();
        (levels * (self.per_level() + self.timeline_per_level()) * 8) as u64
    }
}

/// Counts of one replication (or a part of it): per arm, levels x cells x measures, and the
/// timeline, levels x days x channels. During accumulation they hold differences.
///
/// The simulation also records which (country, age band) cells its users fell in: every
/// other cell is zero at every level, so merging, prefix sums and the tables skip it (at a
/// few users, almost all of them; their pages are never touched). Counts built otherwise
/// (read from a results folder, written by hand) count every cell as touched. Equality
/// compares the counts alone.
#[derive(Clone, Debug)]
pub struct Counts {
    /// Per arm, `(levels + 1) * per_level` values.
    pub arms: Vec<Vec<i64>>,
    /// Per arm, `(levels + 1) * timeline_per_level` values.
    pub timeline: Vec<Vec<i64>>,
    /// Per (country, age band) cell (`country * ages + age`), whether any count may be
    /// non-zero; `None`: every cell may be.
    touched: Option<Vec<bool>>,
}

impl PartialEq for Counts {
    fn eq(&self, other: &Self) -> bool {
        self.arms == other.arms && self.timeline == other.timeline
    }
}

impl Eq for Counts {}

impl Counts {
    /// All zero, every cell counted as touched.
    pub fn zeros(layout: &Layout) -> Self {
        Counts {
            touched: None,
            arms: layout
                .levels
                .iter()
                .map(|&l| vec![0; (l + 1) * layout.per_level()])
                .collect(),
            timeline: layout
                .levels
                .iter()
                .map(|&l| vec![0; (l + 1) * layout.timeline_per_level()])
                .collect(),
        }
    }

    /// All zero, no cell touched yet: the simulation marks the cells it writes
    /// ([`Counts::touch`]). Takes the buffers of counts handed back with [`recycle`] when
    /// their shape fits, zeroing only the cells they touched: at a few users, a replication's
    /// counts are megabytes of which a few pages were written, and allocating and zeroing
    /// them afresh was a seventh of a replication's cost.
    pub fn zeros_untouched(layout: &Layout) -> Self {
        let cells = layout.countries * layout.ages;
        let fits = |c: &Counts| {
            let lengths = |v: &Vec<Vec<i64>>| v.iter().map(Vec::len).collect::<Vec<_>>();
            let fresh = |per: usize| -> Vec<usize> {
                layout.levels.iter().map(|&l| (l + 1) * per).collect()
            };
            lengths(&c.arms) == fresh(layout.per_level())
                && lengths(&c.timeline) == fresh(layout.timeline_per_level())
        };
        let spare = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let at = pool.1.iter().position(fits);
            at.map(|i| pool.1.swap_remove(i))
        };
        match spare {
            Some(mut c) => {
                c.clear(layout);
                c.touched = Some(vec![false; cells]);
                c
            }
            None => Counts {
                touched: Some(vec![false; cells]),
                ..Counts::zeros(layout)
            },
        }
    }

    /// Sets every count to zero: only the touched cells' where they are known.
    fn clear(&mut self, layout: &Layout) {
        let per = layout.per_level();
        match &self.touched {
            Some(_) => {
                let cells = self.touched_cells(layout);
                for arm in &mut self.arms {
                    for level in arm.chunks_mut(per) {
                        for &c in &cells {
                            level[layout.block(c)].fill(0);
                        }
                    }
                }
            }
            None => self.arms.iter_mut().for_each(|a| a.fill(0)),
        }
        self.timeline.iter_mut().for_each(|t| t.fill(0));
    }

    /// Records that cell `country * ages + age` may hold counts.
    #[inline]
    pub fn touch(&mut self, cell: usize) {
        if let Some(t) = &mut self.touched {
            t[cell] = true;
        }
    }

    /// The (country, age band) cells that may hold counts, as `country * ages + age`, in order.
    pub fn touched_cells(&self, layout: &Layout) -> Vec<usize> {
        let all = layout.countries * layout.ages;
        match &self.touched {
            Some(t) => (0..all).filter(|&c| t[c]).collect(),
            None => (0..all).collect(),
        }
    }

    /// Adds `other` to `self`, an arm per rayon task (arms are tens of megabytes at 101 levels).
    pub fn merge(mut self, other: Counts, layout: &Layout) -> Self {
        self.add(&other, layout);
        self
    }

    /// Adds `other` to `self`, an arm per rayon task: only the cells `other` touched.
    pub fn add(&mut self, other: &Counts, layout: &Layout) {
        let cells = other.touched_cells(layout);
        let per = layout.per_level();
        self.arms
            .par_iter_mut()
            .zip(&other.arms)
            .for_each(|(a, b)| {
                for (a, b) in a.chunks_mut(per).zip(b.chunks(per)) {
                    for &c in &cells {
                        for (x, y) in a[layout.block(c)].iter_mut().zip(&b[layout.block(c)]) {
                            *x += y;
                        }
                    }
                }
            });
        for (a, b) in self.timeline.iter_mut().zip(&other.timeline) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.touched = match (self.touched.take(), &other.touched) {
            (Some(mut t), Some(o)) => {
                for (x, y) in t.iter_mut().zip(o) {
                    *x |= y;
                }
                Some(t)
            }
            _ => None,
        };
    }

    /// Turns differences over levels (and, for the channels held over days, over days) into
    /// counts, an arm per rayon task.
    pub fn finish(mut self, layout: &Layout) -> Self {
        let per = layout.per_level();
        let blocks: Vec<std::ops::Range<usize>> = self
            .touched_cells(layout)
            .into_iter()
            .map(|c| layout.block(c))
            .collect();
        self.arms
            .par_iter_mut()
            .for_each(|v| prefix_over_levels(v, per, &blocks));
        let tper = layout.timeline_per_level();
        for v in &mut self.timeline {
            prefix_over_levels(v, tper, std::slice::from_ref(&(0..tper)));
            for level in v.chunks_mut(tper) {
                for r in 0..layout.regions {
                    for ch in Channel::EACH.into_iter().filter(|c| c.held_over_days()) {
                        let mut acc = 0;
                        for day in 0..=layout.days {
                            let i = layout.day(r, day, ch);
                            acc += level[i];
                            level[i] = acc;
                        }
                    }
                }
            }
        }
        self
    }

    /// The count of one value after [`Counts::finish`].
    pub fn get(
        &self,
        layout: &Layout,
        arm: usize,
        level: usize,
        country: usize,
        age: usize,
        measure: usize,
    ) -> i64 {
        self.arms[arm][level * layout.per_level() + layout.cell(country, age) + measure]
    }

    /// One level's values of an arm (after [`Counts::finish`]).
    pub fn level(&self, layout: &Layout, arm: usize, level: usize) -> &[i64] {
        let per = layout.per_level();
        &self.arms[arm][level * per..(level + 1) * per]
    }

    /// One level's timeline of an arm (after [`Counts::finish`]).
    pub fn timeline_level(&self, layout: &Layout, arm: usize, level: usize) -> &[i64] {
        let per = layout.timeline_per_level();
        &self.timeline[arm][level * per..(level + 1) * per]
    }
}

/// Counts kept for [`Counts::zeros_untouched`] to reuse, at most [`POOL_SIZE`], while some
/// simulation is under way (how many: the first field).
static POOL: std::sync::Mutex<(usize, Vec<Counts>)> = std::sync::Mutex::new((0, Vec::new()));

/// How many counts [`recycle`] keeps: a replication's accumulators beyond the first (one per
/// worker thread) and the finished counts the writer hands back.
pub const POOL_SIZE: usize = 2;

/// Hands back counts no longer needed, for the next replication's accumulators to reuse
/// ([`Counts::zeros_untouched`]); dropped if [`POOL_SIZE`] are kept already or no simulation
/// is under way ([`Reuse`]).
pub fn recycle(counts: Counts) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.0 > 0 && pool.1.len() < POOL_SIZE {
        pool.1.push(counts);
    }
}

/// While one lives, [`recycle`] keeps counts for reuse; when the last is dropped, the kept
/// counts are freed, so that they do not add to the memory of what follows a simulation (the
/// estimates, the charts and the report).
pub struct Reuse(());

impl Reuse {
    /// Starts keeping counts for reuse.
    pub fn start() -> Self {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        Reuse(())
    }
}

impl Drop for Reuse {
    fn drop(&mut self) {
        let freed = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.0 = pool.0.saturating_sub(1);
            if pool.0 == 0 {
                std::mem::take(&mut pool.1)
            } else {
                Vec::new()
            }
        };
        drop(freed);
    }
}

fn prefix_over_levels(v: &mut [i64], per: usize, blocks: &[std::ops::Range<usize>]) {
    let levels = v.len() / per;
    for k in 1..levels {
        let (before, after) = v.split_at_mut(k * per);
        let previous = &before[(k - 1) * per..];
        for r in blocks {
            for (x, p) in after[r.clone()].iter_mut().zip(&previous[r.clone()]) {
                *x += *p;
            }
        }
    }
}

/// The labels of a scenario's keys: what the count tables name each index by.
#[derive(Clone, Debug, PartialEq)]
pub struct Names {
    /// Arm names, in scenario order.
    pub arms: Vec<String>,
    /// Per arm, the target rate of each level.
    pub rates: Vec<Vec<f64>>,
    /// Whether each arm is the `none` arm (no timeline).
    pub is_none: Vec<bool>,
    /// Country codes.
    pub countries: Vec<String>,
    /// Age band labels.
    pub ages: Vec<String>,
    /// Segment names.
    pub segments: Vec<String>,
    /// S reporting regions.
    pub regions: Vec<String>,
}

/// The segment label of the rows that hold the all-segment measures.
pub const ALL_SEGMENTS: &str = "all";

/// The Enum type of a list of labels, made once per list: polars keeps every set of frozen
/// categories it is given, so making one per batch would grow with the run.
fn enum_dtype<S: AsRef<str>>(labels: &[S]) -> PolarsResult<DataType> {
    use std::sync::Mutex;
    static KNOWN: Mutex<Vec<(Vec<String>, DataType)>> = Mutex::new(Vec::new());
    let key: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dtype)) = known.iter().find(|(k, _)| *k == key) {
        return Ok(dtype.clone());
    }
    let dtype =
        DataType::from_frozen_categories(FrozenCategories::new(key.iter().map(String::as_str))?);
    known.push((key, dtype.clone()));
    Ok(dtype)
}

/// A key column of labels, stored as an Enum (a dictionary of the scenario's labels in their
/// order, written to Parquet as dictionary-encoded strings) built straight from indices.
fn enum_column<S: AsRef<str>>(name: &str, labels: &[S], codes: Vec<u32>) -> PolarsResult<Column> {
    let dtype = enum_dtype(labels)?;
    let physical = DataType::from(dtype.cat_physical()?);
    let codes = Series::from_vec(name.into(), codes).cast(&physical)?;
    Ok(Series::from_cats_and_dtype(&codes, &dtype, true)?.into_column())
}

fn u64_column(name: &str, values: Vec<u64>, valid: Option<&[bool]>) -> Column {
    let bitmap = valid.map(|v| v.iter().copied().collect::<polars_arrow::bitmap::Bitmap>());
    UInt64Chunked::from_vec_validity(name.into(), values, bitmap).into_column()
}

/// At most this many rows of the count tables are built at a time (they are then gathered
/// into row groups of [`crate::folder::ROW_GROUP_ROWS`]).
pub const BATCH_ROWS: usize = 1 << 15;

/// The (arm, level) pairs of a layout in batches whose rows number at most [`BATCH_ROWS`]
/// (or one arm-level, if that is more).
pub fn level_batches(layout: &Layout) -> Vec<Vec<(usize, usize)>> {
    let per = (layout.countries * layout.ages * (layout.segments + 1)).max(1);
    let take = (BATCH_ROWS / per).max(1);
    let all: Vec<(usize, usize)> = (0..layout.levels.len())
        .flat_map(|a| (0..layout.levels[a]).map(move |k| (a, k)))
        .collect();
    all.chunks(take).map(<[_]>::to_vec).collect()
}

/// The wide `cells` rows of one replication's finished counts at (arm, level) pairs
/// `levels`: one row per (arm, level, country, age band, segment or "all") with any non-zero
/// count, in that order.
pub fn cells_frame(
    names: &Names,
    layout: &Layout,
    replication: u32,
    counts: &Counts,
    levels: &[(usize, usize)],
) -> PolarsResult<DataFrame> {
    let (nseg, nall) = (Seg::COUNT, All::COUNT);
    let measures = layout.measures();
    // Cells no user fell in have no rows.
    let touched = counts.touched_cells(layout);
    // At most a row per touched cell, segment and "all" of each level: the columns are sized
    // for that at once rather than grown (and copied) as rows come.
    let most = levels.len() * touched.len() * (layout.segments + 1);
    let keys = || Vec::<u32>::with_capacity(most);
    let column = || Vec::<u64>::with_capacity(most);
    // Keys as indices first; a row's segment index is `layout.segments` for "all".
    let (mut arm, mut level, mut country, mut age, mut segment) =
        (keys(), keys(), keys(), keys(), keys());
    let mut seg_values: Vec<Vec<u64>> = (0..nseg).map(|_| column()).collect();
    let mut all_values: Vec<Vec<u64>> = (0..nall).map(|_| column()).collect();
    for &(a, k) in levels {
        let values = counts.level(layout, a, k);
        for &x in &touched {
            let (c, g) = (x / layout.ages, x % layout.ages);
            let cell = &values[layout.cell(c, g)..layout.cell(c, g) + measures];
            let mut push =
                |s: usize, m: &mut Vec<Vec<u64>>, other: &mut Vec<Vec<u64>>, v: &[i64]| {
                    arm.push(a as u32);
                    level.push(k as u32);
                    country.push(c as u32);
                    age.push(g as u32);
                    segment.push(s as u32);
                    for (col, &x) in m.iter_mut().zip(v) {
                        col.push(x.max(0) as u64);
                    }
                    for col in other.iter_mut() {
                        col.push(0);
                    }
                };
            for s in 0..layout.segments {
                let v = &cell[s * nseg..(s + 1) * nseg];
                if v.iter().any(|&x| x != 0) {
                    push(s, &mut seg_values, &mut all_values, v);
                }
            }
            let v = &cell[layout.segments * nseg..];
            if v.iter().any(|&x| x != 0) {
                push(layout.segments, &mut all_values, &mut seg_values, v);
            }
        }
    }
    // Down to the rows written: the frames wait for a row group, so spare capacity would
    // stay allocated (shrinking in place, without a copy).
    for v in [&mut arm, &mut level, &mut country, &mut age, &mut segment] {
        v.shrink_to_fit();
    }
    seg_values
        .iter_mut()
        .chain(&mut all_values)
        .for_each(Vec::shrink_to_fit);
    let n = arm.len();
    let is_all: Vec<bool> = segment
        .iter()
        .map(|&s| s as usize == layout.segments)
        .collect();
    let mut segments = names.segments.clone();
    segments.push(ALL_SEGMENTS.into());
    let rates: Vec<f64> = arm
        .iter()
        .zip(&level)
        .map(|(&a, &k)| names.rates[a as usize][k as usize])
        .collect();
    let mut columns = vec![
        enum_column("arm", &names.arms, arm)?,
        Series::from_vec("level".into(), level).into_column(),
        Series::from_vec("rate".into(), rates).into_column(),
        Series::from_vec("replication".into(), vec![replication; n]).into_column(),
        enum_column("country", &names.countries, country)?,
        enum_column("age_band", &names.ages, age)?,
        enum_column("segment", &segments, segment)?,
    ];
    let is_segment: Vec<bool> = is_all.iter().map(|a| !a).collect();
    for (m, values) in Seg::ALL.iter().zip(seg_values) {
        columns.push(u64_column(m.name, values, Some(&is_segment)));
    }
    for (m, values) in All::ALL.iter().zip(all_values) {
        columns.push(u64_column(m.name, values, Some(&is_all)));
    }
    DataFrame::new(n, columns)
}

/// The `timeline_cells` rows of one replication: one row per (arm, level, region, day) with a
/// non-zero value, a column per channel. The `none` arm has no timeline.
pub fn timeline_frame(
    names: &Names,
    layout: &Layout,
    replication: u32,
    counts: &Counts,
) -> PolarsResult<DataFrame> {
    // At most a row per (region, day) of each level of the arms with a timeline.
    let most = (0..layout.levels.len())
        .filter(|&a| !names.is_none[a])
        .map(|a| layout.levels[a])
        .sum::<usize>()
        * layout.timeline_rows_per_level();
    let keys = || Vec::<u32>::with_capacity(most);
    let (mut arm, mut level, mut region, mut day) = (keys(), keys(), keys(), keys());
    let mut values: Vec<Vec<i64>> = (0..Channel::COUNT)
        .map(|_| Vec::with_capacity(most))
        .collect();
    for a in 0..layout.levels.len() {
        if names.is_none[a] {
            continue;
        }
        for k in 0..layout.levels[a] {
            let t = counts.timeline_level(layout, a, k);
            for (i, v) in t.chunks(Channel::COUNT).enumerate() {
                if v.iter().any(|&x| x != 0) {
                    arm.push(a as u32);
                    level.push(k as u32);
                    region.push((i / (layout.days + 1)) as u32);
                    day.push((i % (layout.days + 1)) as u32);
                    for (col, &x) in values.iter_mut().zip(v) {
                        col.push(x);
                    }
                }
            }
        }
    }
    // Down to the rows written, as in `cells_frame`.
    for v in [&mut arm, &mut level, &mut region, &mut day] {
        v.shrink_to_fit();
    }
    values.iter_mut().for_each(Vec::shrink_to_fit);
    let n = arm.len();
    let rates: Vec<f64> = arm
        .iter()
        .zip(&level)
        .map(|(&a, &k)| names.rates[a as usize][k as usize])
        .collect();
    let mut columns = vec![
        enum_column("arm", &names.arms, arm)?,
        Series::from_vec("level".into(), level).into_column(),
        Series::from_vec("rate".into(), rates).into_column(),
        Series::from_vec("replication".into(), vec![replication; n]).into_column(),
        enum_column("region", &names.regions, region)?,
        Series::from_vec("day".into(), day).into_column(),
    ];
    for (ch, v) in Channel::EACH.into_iter().zip(values) {
        let name = ch.measure().name;
        columns.push(if ch.is_value() {
            Series::from_vec(name.into(), v).into_column()
        } else {
            u64_column(name, v.into_iter().map(|x| x.max(0) as u64).collect(), None)
        });
    }
    DataFrame::new(n, columns)
}

/// A key of a count table that does not belong to the scenario, or a column that is missing:
/// what the reader met, for the caller to name the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign(pub String);

fn column_texts(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>, Foreign> {
    let c = df
        .column(name)
        .map_err(|_| Foreign(format!("no column `{name}`")))?;
    let s = c
        .as_materialized_series()
        .cast(&DataType::String)
        .map_err(|e| Foreign(format!("column `{name}` is not text ({e})")))?;
    let ca = s
        .str()
        .map_err(|e| Foreign(format!("column `{name}` is not text ({e})")))?;
    Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
}

fn column_u64(df: &DataFrame, name: &str) -> Result<Vec<Option<u64>>, Foreign> {
    let c = df
        .column(name)
        .map_err(|_| Foreign(format!("no column `{name}`")))?;
    let s = c
        .as_materialized_series()
        .cast(&DataType::UInt64)
        .map_err(|e| Foreign(format!("column `{name}` is not a count ({e})")))?;
    let ca = s
        .u64()
        .map_err(|e| Foreign(format!("column `{name}` is not a count ({e})")))?;
    Ok(ca.iter().collect())
}

fn column_i64(df: &DataFrame, name: &str) -> Result<Vec<Option<i64>>, Foreign> {
    let c = df
        .column(name)
        .map_err(|_| Foreign(format!("no column `{name}`")))?;
    let s = c
        .as_materialized_series()
        .cast(&DataType::Int64)
        .map_err(|e| Foreign(format!("column `{name}` is not a whole number ({e})")))?;
    let ca = s
        .i64()
        .map_err(|e| Foreign(format!("column `{name}` is not a whole number ({e})")))?;
    Ok(ca.iter().collect())
}

fn index_of(list: &[String], value: &Option<String>, what: &str) -> Result<usize, Foreign> {
    let v = value
        .as_deref()
        .ok_or_else(|| Foreign(format!("an empty {what}")))?;
    list.iter()
        .position(|x| x == v)
        .ok_or_else(|| Foreign(format!("{what} {v:?}, which this scenario does not have")))
}

/// Adds the wide `cells` rows of `df` (one replication) to finished `counts`.
pub fn add_cells(
    names: &Names,
    layout: &Layout,
    df: &DataFrame,
    counts: &mut Counts,
) -> Result<(), Foreign> {
    let (arm, level, country, age, segment) = (
        column_texts(df, "arm")?,
        column_u64(df, "level")?,
        column_texts(df, "country")?,
        column_texts(df, "age_band")?,
        column_texts(df, "segment")?,
    );
    let seg_cols = Seg::ALL
        .iter()
        .map(|m| column_u64(df, m.name))
        .collect::<Result<Vec<_>, _>>()?;
    let all_cols = All::ALL
        .iter()
        .map(|m| column_u64(df, m.name))
        .collect::<Result<Vec<_>, _>>()?;
    let per = layout.per_level();
    let mut all_segments = names.segments.clone();
    all_segments.push(ALL_SEGMENTS.into());
    for i in 0..df.height() {
        let a = index_of(&names.arms, &arm[i], "arm")?;
        let k = level[i].ok_or_else(|| Foreign("an empty level".into()))? as usize;
        if k >= layout.levels[a] {
            return Err(Foreign(format!(
                "level {k} of arm {}, which has {} levels",
                names.arms[a], layout.levels[a]
            )));
        }
        let c = index_of(&names.countries, &country[i], "country")?;
        let g = index_of(&names.ages, &age[i], "age band")?;
        let s = index_of(&all_segments, &segment[i], "segment")?;
        let base = k * per + layout.cell(c, g);
        let (cols, offset) = if s == layout.segments {
            (&all_cols, layout.all(All::Users))
        } else {
            (&seg_cols, layout.seg(s, Seg::InterestedDays))
        };
        for (j, col) in cols.iter().enumerate() {
            let v = col[i].ok_or_else(|| {
                Foreign(format!(
                    "a null count in row {i}, where a count is expected"
                ))
            })?;
            counts.arms[a][base + offset + j] += v as i64;
        }
    }
    Ok(())
}

/// Adds the `timeline_cells` rows of `df` (one replication) to finished `counts`.
pub fn add_timeline(
    names: &Names,
    layout: &Layout,
    df: &DataFrame,
    counts: &mut Counts,
) -> Result<(), Foreign> {
    let (arm, level, region, day) = (
        column_texts(df, "arm")?,
        column_u64(df, "level")?,
        column_texts(df, "region")?,
        column_u64(df, "day")?,
    );
    let cols = Channel::EACH
        .into_iter()
        .map(|ch| {
            let name = ch.measure().name;
            if ch.is_value() {
                column_i64(df, name)
            } else {
                Ok(column_u64(df, name)?
                    .into_iter()
                    .map(|v| v.and_then(|x| i64::try_from(x).ok()))
                    .collect())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let per = layout.timeline_per_level();
    for i in 0..df.height() {
        let a = index_of(&names.arms, &arm[i], "arm")?;
        let k = level[i].ok_or_else(|| Foreign("an empty level".into()))? as usize;
        let r = index_of(&names.regions, &region[i], "region")?;
        let d = day[i].ok_or_else(|| Foreign("an empty day".into()))? as usize;
        if k >= layout.levels[a] || d > layout.days {
            return Err(Foreign(format!(
                "level {k}, day {d} of arm {}, which has {} levels and {} days",
                names.arms[a], layout.levels[a], layout.days
            )));
        }
        for (ch, col) in Channel::EACH.into_iter().zip(&cols) {
            let v = col[i].ok_or_else(|| Foreign(format!("a null count in row {i}")))?;
            counts.timeline[a][k * per + layout.day(r, d, ch)] += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Layout, Names) {
        let layout = Layout {
            countries: 2,
            ages: 1,
            segments: 2,
            levels: vec![1, 3],
            days: 2,
            regions: 2,
        };
        let names = Names {
            arms: vec!["none".into(), "window".into()],
            rates: vec![vec![0.0], vec![0.0, 0.5, 1.0]],
            is_none: vec![true, false],
            countries: vec!["IN".into(), "BR".into()],
            ages: vec!["18-24".into()],
            segments: vec!["Books".into(), "Music".into()],
            regions: vec!["europe".into(), "asia_pacific".into()],
        };
        (layout, names)
    }

    #[test]
    fn difference_ranges_become_counts() {
        let layout = Layout {
            countries: 1,
            ages: 1,
            segments: 1,
            levels: vec![4],
            days: 2,
            regions: 1,
        };
        let mut c = Counts::zeros(&layout);
        let per = layout.per_level();
        let users = layout.all(All::Users);
        // One user in levels [1, 3), another in [0, 4): the row past the last is not read.
        c.arms[0][per + users] += 1;
        c.arms[0][3 * per + users] -= 1;
        c.arms[0][users] += 1;
        let c = c.finish(&layout);
        let users: Vec<i64> = (0..4)
            .map(|k| c.get(&layout, 0, k, 0, 0, layout.all(All::Users)))
            .collect();
        assert_eq!(users, vec![1, 2, 2, 1]);
    }

    /// Counts that track their touched cells merge and finish exactly as counts that do not:
    /// the cells they skip are zero. (A skipped cell that held a count would be lost here.)
    #[test]
    fn tracked_cells_merge_and_finish_as_untracked_ones() {
        let layout = Layout {
            countries: 3,
            ages: 2,
            segments: 2,
            levels: vec![3, 2],
            days: 2,
            regions: 1,
        };
        let per = layout.per_level();
        let users = layout.all(All::Users);
        let fill = |c: &mut Counts, cells: &[(usize, usize)], seed: i64| {
            for (j, &(country, age)) in cells.iter().enumerate() {
                c.touch(country * layout.ages + age);
                for a in 0..2 {
                    for k in 0..layout.levels[a] {
                        let at = k * per + layout.cell(country, age);
                        c.arms[a][at + users] += seed + j as i64 + k as i64;
                        c.arms[a][at + layout.seg(1, Seg::AudienceDays)] += 2 * seed;
                    }
                }
            }
            c.timeline[1][0] += seed;
        };
        let mut one = Counts::zeros_untouched(&layout);
        fill(&mut one, &[(0, 1), (2, 0)], 3);
        let mut two = Counts::zeros_untouched(&layout);
        fill(&mut two, &[(2, 0), (1, 1)], 5);
        assert_eq!(two.touched_cells(&layout), vec![3, 4]);
        let mut plain = Counts::zeros(&layout);
        plain.add(&one, &layout);
        plain.add(&two, &layout);
        let tracked = one.merge(two, &layout);
        assert_eq!(tracked.touched_cells(&layout), vec![1, 3, 4]);
        assert_eq!(tracked, plain);
        assert_eq!(plain.touched_cells(&layout).len(), 6);
        let (tracked, plain) = (tracked.finish(&layout), plain.finish(&layout));
        assert_eq!(tracked, plain);
        assert_ne!(tracked.get(&layout, 0, 2, 2, 0, users), 0);
    }

    #[test]
    fn channels_held_over_days_become_daily_values_per_region() {
        let layout = Layout {
            countries: 1,
            ages: 1,
            segments: 1,
            levels: vec![2],
            days: 5,
            regions: 2,
        };
        let mut c = Counts::zeros(&layout);
        let per = layout.timeline_per_level();
        // Region 1 gains 7 on days 1 to 3 at both levels, and loses 2 on days 2 to 4 at level 1
        // only; region 0 acts once at the notice.
        c.timeline[0][layout.day(1, 1, Channel::ValueGain)] += 7;
        c.timeline[0][layout.day(1, 4, Channel::ValueGain)] -= 7;
        c.timeline[0][per + layout.day(1, 2, Channel::ValueGain)] -= 2;
        c.timeline[0][per + layout.day(1, 5, Channel::ValueGain)] += 2;
        c.timeline[0][layout.day(0, 0, Channel::Notice)] += 1;
        let c = c.finish(&layout);
        let days = |k: usize, r: usize, ch: Channel| -> Vec<i64> {
            (0..=5)
                .map(|d| c.timeline_level(&layout, 0, k)[layout.day(r, d, ch)])
                .collect()
        };
        assert_eq!(days(0, 1, Channel::ValueGain), vec![0, 7, 7, 7, 0, 0]);
        assert_eq!(days(1, 1, Channel::ValueGain), vec![0, 7, 5, 5, -2, 0]);
        assert_eq!(days(0, 0, Channel::ValueGain), vec![0; 6]);
        // Acts are counted on their day, not held.
        assert_eq!(days(1, 0, Channel::Notice), vec![1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn measure_tables_follow_their_enums() {
        assert_eq!(Seg::CaWrongDays.measure().name, "ca_matched_wrong_days");
        assert_eq!(All::ALL[All::ExposureDays as usize].name, "exposure_days");
        assert_eq!(Channel::InAdUse as usize, 2);
        for (i, ch) in Channel::EACH.into_iter().enumerate() {
            assert_eq!(ch as usize, i);
        }
        assert_eq!(Channel::EACH.len(), Channel::COUNT);
        let mut names: Vec<&str> = Seg::ALL.iter().chain(All::ALL).map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            Seg::COUNT + All::COUNT,
            "measure names are unique"
        );
    }

    #[test]
    fn wide_tables_read_back_to_the_same_counts() {
        let (layout, names) = tiny();
        let mut c = Counts::zeros(&layout);
        // A few values scattered over arms, levels, cells, segments and the timeline.
        let per = layout.per_level();
        c.arms[0][layout.cell(1, 0) + layout.all(All::Users)] = 7;
        c.arms[1][2 * per + layout.cell(0, 0) + layout.seg(1, Seg::AudienceDays)] = 3;
        c.arms[1][per + layout.cell(1, 0) + layout.seg(0, Seg::CaRightDays)] = 11;
        c.timeline[1][layout.timeline_per_level() + layout.day(1, 2, Channel::Settings)] = 5;
        c.timeline[1][2 * layout.timeline_per_level() + layout.day(0, 1, Channel::ValueGain)] = -9;
        let all: Vec<(usize, usize)> = level_batches(&layout).concat();
        assert_eq!(all, vec![(0, 0), (1, 0), (1, 1), (1, 2)]);
        let cells = cells_frame(&names, &layout, 4, &c, &all).expect("cells");
        // Three non-zero rows: only they are written.
        assert_eq!(cells.height(), 3);
        let timeline = timeline_frame(&names, &layout, 4, &c).expect("timeline");
        assert_eq!(timeline.height(), 2);
        let mut back = Counts::zeros(&layout);
        add_cells(&names, &layout, &cells, &mut back).expect("reads");
        add_timeline(&names, &layout, &timeline, &mut back).expect("reads");
        assert_eq!(back, c);
        // Not-applicable measures are null, so a column's sum is a true total.
        let users = cells.column("users").expect("users");
        assert_eq!(users.null_count(), 2);
        let audience = cells.column("audience_days").expect("audience_days");
        assert_eq!(audience.null_count(), 1);
    }

    #[test]
    fn foreign_keys_are_named() {
        let (layout, names) = tiny();
        let mut c = Counts::zeros(&layout);
        c.arms[0][layout.all(All::Users)] = 1;
        let cells = cells_frame(&names, &layout, 0, &c, &[(0, 0)]).expect("cells");
        let mut other = names.clone();
        other.countries[0] = "DE".into();
        let err = add_cells(&other, &layout, &cells, &mut Counts::zeros(&layout)).unwrap_err();
        assert!(err.0.contains("country \"IN\""), "{}", err.0);
        let dropped = cells.drop("users").expect("drops");
        let err = add_cells(&names, &layout, &dropped, &mut Counts::zeros(&layout)).unwrap_err();
        assert!(err.0.contains("`users`"), "{}", err.0);
    }
}
