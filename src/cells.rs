//! The engine's output: integer counts ("cells", SPEC §10), and their layout.
//!
//! Counts are kept per arm as one flat vector indexed by `(level, country, age band,
//! measure)`, where a measure is either per segment ([`SEGMENT_MEASURES`]) or for all
//! segments together ([`ALL_MEASURES`]). The engine adds each user's contribution to a level
//! range `[k0, k1)` as `+c` at `k0` and `-c` at `k1` (difference arrays); [`Counts::finish`]
//! takes prefix sums. Merging is addition, so chunks, threads, replications and shards combine
//! exactly in any order. The long form written to `cells.parquet` has one row per non-zero
//! count: `(arm, level, rate, replication, country, age_band, segment, measure, count)`, with
//! `segment = "all"` for the measures of [`ALL_MEASURES`].

use rayon::prelude::*;

/// Measures counted per segment, in index order.
pub const SEGMENT_MEASURES: &[&str] = &[
    "interested",
    "audience",
    "true_positive",
    "impressions_interested_linked",
    "impressions_other_linked",
    "impressions_interested_unlinked",
    "impressions_other_unlinked",
    "ca_uploaded",
    "ca_matched_right",
    "ca_matched_wrong",
];

/// What each per-segment measure counts, in index order (the data dictionary's text).
pub const SEGMENT_MEASURE_DOCS: &[&str] = &[
    "S accounts whose holder is interested in the segment",
    "S accounts in the segment's campaign audience (flagged)",
    "flagged accounts whose holder is interested",
    "impression units (1/720720 of an account's supply) to interested holders of accounts with M data in ad use",
    "impression units to uninterested holders of accounts with M data in ad use",
    "impression units to interested holders of accounts without M data in ad use",
    "impression units to uninterested holders of accounts without M data in ad use",
    "numbers of the segment's customers uploaded to Custom Audiences",
    "uploads matched to the customer's own account",
    "uploads matched only to someone else's account (stale or household number)",
];

/// Index of a per-segment measure.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum Seg {
    Interested,
    Audience,
    TruePositive,
    ImpInterestedLinked,
    ImpOtherLinked,
    ImpInterestedUnlinked,
    ImpOtherUnlinked,
    CaUploaded,
    CaRight,
    CaWrong,
}

/// Measures counted over all segments (`segment = "all"`), in index order.
pub const ALL_MEASURES: &[&str] = &[
    "users",
    "accounts",
    "opted_out",
    "shared",
    "shared_with_account",
    "ad_use",
    "link_true",
    "link_metadata",
    "link_mislink_recycled",
    "link_mislink_shared",
    "link_none",
    "mislink_received",
    "exposure_days",
    "linked_accounts",
    "impressions_untargeted_linked",
    "impressions_untargeted_unlinked",
];

/// What each all-segment measure counts, in index order (the data dictionary's text).
pub const ALL_MEASURE_DOCS: &[&str] = &[
    "M users",
    "M users with an S account",
    "users who opted out (did not opt in, or left)",
    "users whose number went to S",
    "users with an S account whose number went to S",
    "users whose data is in ad use after the window",
    "shared users linked to their own account by their number",
    "shared users linked to their own account through metadata (S adds their number)",
    "shared users whose data landed on the previous owner's account (recycled number)",
    "shared users whose data landed on a household member's account (shared phone)",
    "shared users not linked to any account",
    "accounts that received someone else's data",
    "days of ad use before an opt-out took effect, summed over users",
    "accounts with M data in ad use (own or someone else's)",
    "impression units of untargeted ads on accounts with M data in ad use",
    "impression units of untargeted ads on accounts without M data in ad use",
];

/// Index of an all-segment measure.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum All {
    Users,
    Accounts,
    OptedOut,
    Shared,
    SharedWithAccount,
    AdUse,
    LinkTrue,
    LinkMetadata,
    LinkMislinkRecycled,
    LinkMislinkShared,
    LinkNone,
    MislinkReceived,
    ExposureDays,
    LinkedAccounts,
    ImpUntargetedLinked,
    ImpUntargetedUnlinked,
}

/// Timeline channels: the day a user acted at the notice or in Settings (opting out, opting
/// in or leaving, by arm), and the users whose data is in ad use that day.
pub const TIMELINE_CHANNELS: &[&str] = &["notice", "settings", "in_ad_use"];

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
}

impl Layout {
    /// Measures per (country, age band) cell.
    pub fn measures(&self) -> usize {
        self.segments * SEGMENT_MEASURES.len() + ALL_MEASURES.len()
    }

    /// Index of a per-segment measure within a cell.
    #[inline]
    pub fn seg(&self, segment: usize, m: Seg) -> usize {
        segment * SEGMENT_MEASURES.len() + m as usize
    }

    /// Index of an all-segment measure within a cell.
    #[inline]
    pub fn all(&self, m: All) -> usize {
        self.segments * SEGMENT_MEASURES.len() + m as usize
    }

    /// Offset of cell (country, age) within a level.
    #[inline]
    pub fn cell(&self, country: usize, age: usize) -> usize {
        (country * self.ages + age) * self.measures()
    }

    /// Values per level.
    pub fn per_level(&self) -> usize {
        self.countries * self.ages * self.measures()
    }

    /// Values per timeline level.
    pub fn timeline_per_level(&self) -> usize {
        (self.days + 1) * TIMELINE_CHANNELS.len()
    }
}

/// Counts of one replication (or a part of it): per arm, levels x cells x measures, and the
/// timeline, levels x days x channels. During accumulation they hold differences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Per arm, `(levels + 1) * per_level` values.
    pub arms: Vec<Vec<i64>>,
    /// Per arm, `(levels + 1) * timeline_per_level` values.
    pub timeline: Vec<Vec<i64>>,
}

impl Counts {
    /// All zero.
    pub fn zeros(layout: &Layout) -> Self {
        Counts {
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

    /// Adds `other` to `self`, an arm per rayon task (arms are tens of megabytes at 101 levels).
    pub fn merge(mut self, other: Counts) -> Self {
        self.arms
            .par_iter_mut()
            .zip(other.arms)
            .chain(self.timeline.par_iter_mut().zip(other.timeline))
            .for_each(|(a, b)| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            });
        self
    }

    /// Turns differences over levels (and, for `in_ad_use`, over days) into counts, an arm
    /// per rayon task.
    pub fn finish(mut self, layout: &Layout) -> Self {
        let per = layout.per_level();
        self.arms
            .par_iter_mut()
            .for_each(|v| prefix_over_levels(v, per));
        let tper = layout.timeline_per_level();
        let ch = TIMELINE_CHANNELS.len();
        for v in &mut self.timeline {
            prefix_over_levels(v, tper);
            for level in v.chunks_mut(tper) {
                let mut acc = 0;
                for day in 0..=layout.days {
                    acc += level[day * ch + 2];
                    level[day * ch + 2] = acc;
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
}

fn prefix_over_levels(v: &mut [i64], per: usize) {
    let levels = v.len() / per;
    for k in 1..levels {
        let (before, after) = v.split_at_mut(k * per);
        for (x, p) in after[..per].iter_mut().zip(&before[(k - 1) * per..]) {
            *x += *p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_ranges_become_counts() {
        let layout = Layout {
            countries: 1,
            ages: 1,
            segments: 1,
            levels: vec![4],
            days: 2,
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
}
