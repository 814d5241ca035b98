//! Estimation (docs/model.md §10): every rate, lift, revenue and interval derived from the
//! count tables.
//!
//! A replication's finished counts are first summed, exactly, into small margin tables in
//! Rust: per arm and level, per segment, per country, and per day of the timeline (the
//! smallest audience cell is found on the way). One polars query per output table turns each
//! margin into that replication's metrics, each a ratio of summed counts; differences against
//! the `none` arm are paired within the replication (same population), so their intervals are
//! tight, and revenue is anchored per region within it. The metrics are then folded across
//! replications as they come (Welford's running mean and sum of squared deviations, in
//! replication order), so memory does not grow with the number of replications. The tables
//! give the mean and a 95% interval, `mean +/- t(0.975, n-1) sd / sqrt(n)`, over the `n`
//! replications where the metric is defined; with fewer than two there is no interval and the
//! bounds are empty. Intervals cover Monte Carlo noise only, not uncertainty in the assumed
//! parameters.

use polars::prelude::*;
use polars_arrow::bitmap::MutableBitmap;

use crate::cells::{All, Channel, Counts, Layout, Names, Seg};
use crate::revenue::RevenueConfig;
use crate::targeting::TargetingConfig;

/// Version of the summary, segment, country and timeline tables' schemas.
pub const SCHEMA_VERSION: &str = "results/7";

/// Everything the estimation needs besides the count tables.
#[derive(Clone, Debug)]
pub struct Context {
    /// Users simulated per replication.
    pub users: u64,
    /// Replications.
    pub replications: u32,
    /// Name of the `none` arm.
    pub none_arm: String,
    /// Name of the arm `revenue_change_vs_baseline_musd` is measured against (one level):
    /// `policy.baseline`, else the `none` arm.
    pub baseline_arm: String,
    /// Click-through rates.
    pub targeting: TargetingConfig,
    /// Revenue anchoring.
    pub revenue: RevenueConfig,
    /// Per country: code, S region, and that region's anchor of each day of the horizon:
    /// advertising revenue per S account, dollars ([`RevenueConfig::day_anchors`]).
    pub regions: Vec<(String, String, Vec<f64>)>,
    /// k of the k-anonymity count (docs/model.md §9): 100.
    pub k_anonymity: f64,
    /// Days of the horizon: the day measures are sums over them.
    pub horizon_days: u32,
    /// Value of a click per segment, dollars (docs/model.md §8); untargeted clicks are valued
    /// at `revenue.cost_per_click_usd`.
    pub cpc: Vec<f64>,
    /// Quanta per dollar of the timeline's `value_gain` ([`crate::revenue::DayValue`]).
    pub value_quantum: f64,
    /// The advertisers of the markets (docs/model.md §17.5).
    pub market: crate::demand::MarketConfig,
}

impl Context {
    /// Real people per simulated user.
    pub fn scale(&self) -> f64 {
        self.revenue.m_users_millions * 1e6 / self.users as f64
    }
}

/// The metrics of the summary, segment and country tables, in column order. Each has a mean
/// column `<name>` and, with two or more replications, `<name>_lo` and `<name>_hi`.
pub const METRICS: &[(&str, &str)] = &[
    (
        "achieved_rate",
        "share of M users who opted out (did not opt in, or left)",
    ),
    (
        "share_in_ad_use",
        "share of M users whose data is in ad use",
    ),
    (
        "precision",
        "audience precision: flagged accounts that are interested / flagged accounts",
    ),
    (
        "recall",
        "audience recall: interested accounts flagged / interested accounts",
    ),
    ("f1", "harmonic mean of precision and recall"),
    (
        "ctr",
        "expected click-through rate of all impressions (interest, Custom Audience and untargeted)",
    ),
    (
        "ca_impression_share",
        "share of impressions in Custom Audience campaigns",
    ),
    (
        "ca_click_share",
        "share of expected clicks from Custom Audience campaigns",
    ),
    (
        "value_ratio_linked",
        "expected clicks per impression on accounts with M data in ad use / without",
    ),
    (
        "value_ratio_targeted",
        "expected clicks per targeted impression / per untargeted impression",
    ),
    (
        "value_ratio_in_ad_use",
        "value (clicks x cost per click) per account-day with M data in ad use / per account-day of all accounts (selection, docs/model.md §9)",
    ),
    (
        "value_ratio_not_in_ad_use",
        "value per account-day without M data in ad use / per account-day of all accounts",
    ),
    (
        "value_ratio_in_ad_use_change",
        "value_ratio_in_ad_use minus the same arm's at its first level, paired by replication (selection, docs/model.md §9.3)",
    ),
    (
        "ca_match_rate",
        "Custom Audience uploads matched to any account / uploads",
    ),
    (
        "ca_right_rate",
        "uploads matched to the right person / uploads",
    ),
    (
        "ca_wrong_rate",
        "uploads matched to the wrong person only / uploads",
    ),
    (
        "link_precision",
        "links to the sender's own account / all links",
    ),
    (
        "link_recall",
        "shared users with an S account linked to it / shared users with an S account",
    ),
    (
        "people",
        "M users, at full scale (revenue.m_users_millions spread by country share)",
    ),
    (
        "people_shared",
        "people whose number went to S, at full scale",
    ),
    (
        "people_in_ad_use",
        "people whose data is in ad use, at full scale",
    ),
    (
        "people_mislinked",
        "people whose data landed on someone else's account, at full scale",
    ),
    (
        "accounts_received_foreign",
        "S accounts that received someone else's data, at full scale",
    ),
    (
        "exposure_person_days",
        "person-days of ad use before an opt-out took effect, at full scale",
    ),
    (
        "revenue_musd",
        "S's ad revenue from M users' accounts, $M per quarter, at full scale",
    ),
    (
        "ca_revenue_musd",
        "the part of revenue_musd earned by Custom Audience campaigns, $M per quarter",
    ),
    (
        "revenue_change_musd",
        "revenue_musd minus the none arm's, paired by replication",
    ),
    (
        "revenue_change_share",
        "revenue_change_musd / S's quarterly ad revenue",
    ),
    (
        "revenue_change_new_number_musd",
        "the part of revenue_change_musd from numbers S did not have: M data linked by metadata to accounts with no number (docs/model.md §8.4)",
    ),
    (
        "revenue_change_replaced_number_musd",
        "the part from numbers that replace a stale or household one: M data linked by metadata to accounts holding such a number",
    ),
    (
        "revenue_change_known_number_musd",
        "the part from M data on accounts whose number S already had (true links): M's interest evidence only",
    ),
    (
        "revenue_change_foreign_musd",
        "the part from M data that landed on someone else's account (mislinks)",
    ),
    (
        "revenue_change_vs_baseline_musd",
        "revenue change less the baseline arm's, $M (policy.baseline, one level; without one, the none arm, and it equals revenue_change_musd)",
    ),
    ("people_opted_out", "people who opted out, at full scale"),
    (
        "opted_out_share",
        "users interested in the segment who opted out / users interested in it",
    ),
    (
        "min_audience_cell",
        "smallest non-empty audience cell (country x age x segment, average audience of a day), people",
    ),
    (
        "cells_under_k",
        "audience cells with fewer than k = 100 people",
    ),
];

/// Metrics also given against `none` within each replication: the difference
/// `<name>_vs_none` and the ratio (relevance lift, docs/model.md §6) `<name>_lift`, with bounds.
pub const PAIRED: &[&str] = &[
    "precision",
    "recall",
    "f1",
    "ctr",
    "ca_match_rate",
    "ca_right_rate",
];

/// The metrics of the segment table: the relevance metrics that are also paired, and who
/// opted out (selection).
pub const SEGMENT_METRICS: &[&str] = &[
    "precision",
    "recall",
    "f1",
    "ctr",
    "ca_match_rate",
    "ca_right_rate",
    "opted_out_share",
];

/// The metrics of the age band table (selection, docs/model.md §9).
pub const AGE_METRICS: &[&str] = &["achieved_rate", "share_in_ad_use", "people_opted_out"];

/// The metrics of the country table.
pub const COUNTRY_METRICS: &[&str] = &[
    "achieved_rate",
    "share_in_ad_use",
    "precision",
    "recall",
    "ctr",
    "ca_match_rate",
    "link_precision",
    "link_recall",
    "people",
    "people_mislinked",
    "people_opted_out",
];

/// A non-negative float rounded to a whole number (half up), still as a float; `None` where
/// it is not a number or beyond 64-bit integers.
fn whole(x: f64) -> Option<f64> {
    // 2^63: a float below it and at least -2^63 truncates into a 64-bit integer.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let y = x + 0.5;
    (y.is_finite() && (-LIMIT..LIMIT).contains(&y)).then_some(y as i64 as f64)
}

/// `a / b` where both are defined and `b` is positive, else undefined.
fn ratio(a: impl Into<Option<f64>>, b: impl Into<Option<f64>>) -> Option<f64> {
    match (a.into(), b.into()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Derived sums of a margin table, computed with the counts (per segment, where the click
/// value differs): expected clicks and value (clicks x cost per click, dollars) in impression
/// units, on account-days with and without M data in ad use, and of Custom Audience campaigns.
const DERIVED: [&str; 6] = [
    "clicks_linked",
    "clicks_unlinked",
    "ca_clicks",
    "value_linked",
    "value_unlinked",
    "ca_value",
];

/// The metric columns of a margin table whose count columns are every measure and
/// [`DERIVED`] sum (as floats, without nulls), row by row: the rates, ratios and scaled counts
/// the output tables report. Computed directly rather than through a polars plan, whose
/// building and optimising cost more than the arithmetic at the table sizes of one
/// replication; each is the same sequence of float operations as polars made of the
/// expressions before (which divides by a constant as a product with its reciprocal), so the
/// outputs kept their bits.
fn rate_columns<'g>(
    get: impl Fn(&str) -> PolarsResult<&'g [f64]>,
    n: usize,
    ctx: &Context,
) -> PolarsResult<Vec<Column>> {
    let c = |m: Seg| get(m.measure().name);
    let a = |m: All| get(m.measure().name);
    let scale = ctx.scale();
    let h = f64::from(ctx.horizon_days);
    let ctr_untargeted = ctx.targeting.ctr_untargeted;
    let [cl, cu, il, iu, ol, ou] = [
        Seg::CaImpCustomerLinked,
        Seg::CaImpCustomerUnlinked,
        Seg::CaImpInterestedLinked,
        Seg::CaImpInterestedUnlinked,
        Seg::CaImpOtherLinked,
        Seg::CaImpOtherUnlinked,
    ]
    .map(c);
    let [cl, cu, il, iu, ol, ou] = [cl?, cu?, il?, iu?, ol?, ou?];
    let [imp_il, imp_ol, imp_iu, imp_ou] = [
        Seg::ImpInterestedLinked,
        Seg::ImpOtherLinked,
        Seg::ImpInterestedUnlinked,
        Seg::ImpOtherUnlinked,
    ]
    .map(c);
    let [imp_il, imp_ol, imp_iu, imp_ou] = [imp_il?, imp_ol?, imp_iu?, imp_ou?];
    let (tp, audience, interested) = (
        c(Seg::TruePositiveDays)?,
        c(Seg::AudienceDays)?,
        c(Seg::InterestedDays)?,
    );
    let (right, wrong, uploaded) = (
        c(Seg::CaRightDays)?,
        c(Seg::CaWrongDays)?,
        c(Seg::CaUploadedDays)?,
    );
    let (out_interested, users_interested) =
        (c(Seg::OptedOutInterested)?, c(Seg::UsersInterested)?);
    let (ul, uu) = (a(All::ImpUntargetedLinked)?, a(All::ImpUntargetedUnlinked)?);
    let (users, opted_out, ad_use, shared) = (
        a(All::Users)?,
        a(All::OptedOut)?,
        a(All::AdUse)?,
        a(All::Shared)?,
    );
    let (accounts, linked_days) = (a(All::Accounts)?, a(All::LinkedAccountDays)?);
    let (link_true, link_metadata, mis_recycled, mis_shared) = (
        a(All::LinkTrue)?,
        a(All::LinkMetadata)?,
        a(All::LinkMislinkRecycled)?,
        a(All::LinkMislinkShared)?,
    );
    let (with_account, received, exposure) = (
        a(All::SharedWithAccount)?,
        a(All::MislinkReceived)?,
        a(All::ExposureDays)?,
    );
    let [
        clicks_linked,
        clicks_unlinked,
        ca_clicks,
        value_linked,
        value_unlinked,
        ca_value,
    ] = DERIVED.map(get);
    let [
        clicks_linked,
        clicks_unlinked,
        ca_clicks,
        value_linked,
        value_unlinked,
        ca_value,
    ] = [
        clicks_linked?,
        clicks_unlinked?,
        ca_clicks?,
        value_linked?,
        value_unlinked?,
        ca_value?,
    ];

    const NAMES: [&str; 28] = [
        "achieved_rate",
        "share_in_ad_use",
        "precision",
        "recall",
        "f1",
        "ctr",
        "ca_impression_share",
        "ca_click_share",
        "value_ratio_linked",
        "value_ratio_targeted",
        "value_ratio_in_ad_use",
        "value_ratio_not_in_ad_use",
        "clicks",
        "value",
        "ca_value_whole",
        "ca_match_rate",
        "ca_right_rate",
        "ca_wrong_rate",
        "link_precision",
        "link_recall",
        "people",
        "people_shared",
        "people_in_ad_use",
        "people_mislinked",
        "accounts_received_foreign",
        "exposure_person_days",
        "people_opted_out",
        "opted_out_share",
    ];
    // Values and validity apart (an undefined value is a null over 0.0), as polars holds them.
    let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(n); NAMES.len()];
    let mut valid: Vec<MutableBitmap> = vec![MutableBitmap::with_capacity(n); NAMES.len()];
    for i in 0..n {
        let ca_imp = cl[i] + cu[i] + il[i] + iu[i] + ol[i] + ou[i];
        let interest_imp = imp_il[i] + imp_ol[i] + imp_iu[i] + imp_ou[i];
        let all_imp = interest_imp + ca_imp + ul[i] + uu[i];
        let linked_imp = imp_il[i] + imp_ol[i] + cl[i] + il[i] + ol[i] + ul[i];
        let unlinked_imp = all_imp - linked_imp;
        let clicks = clicks_linked[i] + clicks_unlinked[i];
        let value = value_linked[i] + value_unlinked[i];
        let account_days = accounts[i] * h;
        let unlinked_days = account_days - linked_days[i];
        let links = link_true[i] + link_metadata[i];
        let mislinks = mis_recycled[i] + mis_shared[i];
        let targeted_clicks = clicks - ca_clicks[i] - (ul[i] + uu[i]) * ctr_untargeted;
        // One value per name, in the order of NAMES.
        let row: [Option<f64>; NAMES.len()] = [
            ratio(opted_out[i], users[i]),
            ratio(ad_use[i], users[i]),
            ratio(tp[i], audience[i]),
            ratio(tp[i], interested[i]),
            ratio(2.0 * tp[i], audience[i] + interested[i]),
            ratio(clicks, all_imp),
            ratio(ca_imp, all_imp),
            ratio(ca_clicks[i], clicks),
            ratio(
                ratio(clicks_linked[i], linked_imp),
                ratio(clicks_unlinked[i], unlinked_imp),
            ),
            ratio(targeted_clicks, interest_imp)
                .filter(|_| ctr_untargeted > 0.0)
                .map(|r| r * (1.0 / ctr_untargeted)),
            ratio(
                ratio(value_linked[i], linked_days[i]),
                ratio(value, account_days),
            ),
            ratio(
                ratio(value_unlinked[i], unlinked_days),
                ratio(value, account_days),
            ),
            // Whole units: sums of integer-valued floats are exact in any order.
            whole(clicks),
            whole(value),
            whole(ca_value[i]),
            ratio(right[i] + wrong[i], uploaded[i]),
            ratio(right[i], uploaded[i]),
            ratio(wrong[i], uploaded[i]),
            ratio(links, links + mislinks),
            ratio(links, with_account[i]),
            Some(users[i] * scale),
            Some(shared[i] * scale),
            Some(ad_use[i] * scale),
            Some(mislinks * scale),
            Some(received[i] * scale),
            Some(exposure[i] * scale),
            Some(opted_out[i] * scale),
            ratio(out_interested[i], users_interested[i]),
        ];
        for ((column, valid), v) in out.iter_mut().zip(&mut valid).zip(row) {
            column.push(v.unwrap_or(0.0));
            valid.push(v.is_some());
        }
    }
    Ok(NAMES
        .iter()
        .zip(out)
        .zip(valid)
        .map(|((name, v), valid)| {
            let valid = (valid.unset_bits() > 0).then(|| valid.into());
            Float64Chunked::from_vec_validity((*name).into(), v, valid).into_column()
        })
        .collect())
}

/// One replication's margins: its counts summed over the keys an output table drops.
struct Margins {
    /// Per (arm, level): every measure, and the k-anonymity figures.
    level: DataFrame,
    /// Per (arm, level, segment): the segment measures (the all-segment ones are zero).
    segment: DataFrame,
    /// Per (arm, level, country): every measure.
    country: DataFrame,
    /// Per (arm, level, age band): every measure.
    age: DataFrame,
    /// Per (arm, level, day, channel): users.
    timeline: DataFrame,
    /// Per (arm, level, region, day): the revenue change, $M (region `all`: their sum).
    revenue_days: DataFrame,
    /// Per (arm, level): the revenue change by how M's data reached the account, $M.
    revenue_routes: DataFrame,
    /// The markets cleared (docs/model.md §17.5).
    market: crate::demand::MarketTables,
}

/// The key columns of one replication's margin tables, which are the same in every
/// replication (a function of the arms, levels and labels alone): built for the first and
/// shared with the others (a column's clone shares its buffers), by table name.
#[derive(Clone, Debug, Default)]
struct KeyColumns(std::collections::HashMap<&'static str, Vec<Column>>);

impl KeyColumns {
    /// The key columns of `table`, of `rows` rows, built by `build` unless already built.
    fn of(
        &mut self,
        table: &'static str,
        rows: usize,
        build: impl Fn() -> PolarsResult<Vec<Column>>,
    ) -> PolarsResult<Vec<Column>> {
        match self.0.get(table) {
            Some(c) if c.first().map_or(0, |c| c.len()) == rows => Ok(c.clone()),
            _ => {
                let columns = build()?;
                self.0.insert(table, columns.clone());
                Ok(columns)
            }
        }
    }
}

/// What a (country, age) cell adds to a margin row, one value per sum of [`MarginRows`] (in
/// `out`, which it overwrites): segment measures summed over `segments`, all-segment measures
/// as they are (with `all`, else zero), and the [`DERIVED`] sums: the segments' clicks and
/// value, and with `all` the untargeted ones. A segment with no count adds nothing. Computed
/// once per cell and added to each row the cell belongs to; the measures are integer-valued
/// floats, whose sums are exact below 2^53 in any grouping, and the derived sums are the same
/// sequence of operations for every row, so the rows' sums keep their bits.
fn contribution(
    out: &mut [f64],
    layout: &Layout,
    cell: &[i64],
    segments: std::ops::Range<usize>,
    all: bool,
    ctx: &Context,
) {
    out.fill(0.0);
    let t = &ctx.targeting;
    let mut derived = [0.0; DERIVED.len()];
    for s in segments {
        let block = &cell[s * Seg::COUNT..(s + 1) * Seg::COUNT];
        if block.iter().all(|&x| x == 0) {
            continue;
        }
        let v = |m: Seg| block[m as usize] as f64;
        // The segment measures are the first sums, in measure order.
        for (sum, &x) in out.iter_mut().zip(block) {
            *sum += x as f64;
        }
        let ca_linked = v(Seg::CaImpCustomerLinked) * t.ctr_customer
            + v(Seg::CaImpInterestedLinked) * t.ctr_relevant
            + v(Seg::CaImpOtherLinked) * t.ctr_irrelevant;
        let ca_unlinked = v(Seg::CaImpCustomerUnlinked) * t.ctr_customer
            + v(Seg::CaImpInterestedUnlinked) * t.ctr_relevant
            + v(Seg::CaImpOtherUnlinked) * t.ctr_irrelevant;
        let linked = v(Seg::ImpInterestedLinked) * t.ctr_relevant
            + v(Seg::ImpOtherLinked) * t.ctr_irrelevant
            + ca_linked;
        let unlinked = v(Seg::ImpInterestedUnlinked) * t.ctr_relevant
            + v(Seg::ImpOtherUnlinked) * t.ctr_irrelevant
            + ca_unlinked;
        let cpc = ctx
            .cpc
            .get(s)
            .copied()
            .unwrap_or(ctx.revenue.cost_per_click_usd);
        let ca = ca_linked + ca_unlinked;
        for (d, x) in
            derived
                .iter_mut()
                .zip([linked, unlinked, ca, linked * cpc, unlinked * cpc, ca * cpc])
        {
            *d += x;
        }
    }
    if all {
        let base = layout.segments * Seg::COUNT;
        for m in 0..All::COUNT {
            out[Seg::COUNT + m] = cell[base + m] as f64;
        }
        let cpc = ctx.revenue.cost_per_click_usd;
        let linked = cell[base + All::ImpUntargetedLinked as usize] as f64 * t.ctr_untargeted;
        let unlinked = cell[base + All::ImpUntargetedUnlinked as usize] as f64 * t.ctr_untargeted;
        derived[0] += linked;
        derived[1] += unlinked;
        derived[3] += linked * cpc;
        derived[4] += unlinked * cpc;
    }
    out[Seg::COUNT + All::COUNT..].copy_from_slice(&derived);
}

/// Rows of a margin table under construction: keys (as indices) and one sum per measure.
struct MarginRows {
    arm: Vec<u32>,
    level: Vec<u32>,
    key: Vec<u32>,
    sums: Vec<Vec<f64>>,
}

impl MarginRows {
    fn new() -> Self {
        MarginRows {
            arm: Vec::new(),
            level: Vec::new(),
            key: Vec::new(),
            sums: vec![Vec::new(); Seg::COUNT + All::COUNT + DERIVED.len()],
        }
    }

    /// Starts a row of (arm `a`, level `k`, key label `key`) with zero sums; returns the
    /// row's index.
    fn row(&mut self, a: usize, k: usize, key: usize) -> usize {
        self.arm.push(a as u32);
        self.level.push(k as u32);
        self.key.push(key as u32);
        for s in &mut self.sums {
            s.push(0.0);
        }
        self.arm.len() - 1
    }

    /// Adds a contribution ([`contribution`]) to row `i`, sum by sum.
    fn add(&mut self, i: usize, contribution: &[f64]) {
        for (sum, &x) in self.sums.iter_mut().zip(contribution) {
            sum[i] += x;
        }
    }

    /// Row `i`'s click value (linked and unlinked), dollars per impression unit.
    fn value(&self, i: usize) -> f64 {
        let at = Seg::COUNT + All::COUNT;
        self.sums[at + 3][i] + self.sums[at + 4][i]
    }

    /// The rows as a frame: keys (`arm`, `level`, `rate` and, with `key`, the column of that
    /// name whose labels the rows index), sums and their [`rate_columns`].
    fn frame(
        self,
        table: &'static str,
        key: Option<(&str, &[String])>,
        names: &Names,
        keys: &mut KeyColumns,
        ctx: &Context,
    ) -> PolarsResult<DataFrame> {
        let n = self.arm.len();
        let measures: Vec<&str> = Seg::ALL
            .iter()
            .chain(All::ALL)
            .map(|m| m.name)
            .chain(DERIVED)
            .collect();
        let rates = rate_columns(
            |name| match measures.iter().position(|m| *m == name) {
                Some(i) => Ok(self.sums[i].as_slice()),
                None => polars_bail!(ColumnNotFound: "{name}"),
            },
            n,
            ctx,
        )?;
        let mut columns = keys.of(table, n, || {
            let arms = self.arm.iter().map(|&a| names.arms[a as usize].as_str());
            let rates: Vec<f64> = self
                .arm
                .iter()
                .zip(&self.level)
                .map(|(&a, &k)| names.rates[a as usize][k as usize])
                .collect();
            let mut columns = vec![
                StringChunked::from_iter_values("arm".into(), arms).into_column(),
                Series::from_vec("level".into(), self.level.clone()).into_column(),
                Series::from_vec("rate".into(), rates).into_column(),
            ];
            if let Some((name, labels)) = key {
                let values = self.key.iter().map(|&i| labels[i as usize].as_str());
                columns.push(StringChunked::from_iter_values(name.into(), values).into_column());
            }
            Ok(columns)
        })?;
        for (name, v) in measures.into_iter().zip(self.sums) {
            columns.push(Series::from_vec(name.into(), v).into_column());
        }
        columns.extend(rates);
        DataFrame::new(n, columns)
    }
}

/// Sums one replication's finished counts into its margins, in a fixed order (so the float
/// sums, exact below 2^53, are the same bits for every thread count and shard layout).
fn margins(
    names: &Names,
    layout: &Layout,
    counts: &Counts,
    ctx: &Context,
    keys: &mut KeyColumns,
) -> PolarsResult<Margins> {
    let (mut level, mut segment, mut country, mut age) = (
        MarginRows::new(),
        MarginRows::new(),
        MarginRows::new(),
        MarginRows::new(),
    );
    let (mut min_cell, mut under_k) = (Vec::new(), Vec::new());
    // The timeline's people per (arm, level, day, channel) of the arms with one; its keys
    // are the same in every replication ([`timeline_keys`]).
    let mut t_count = Vec::new();
    let measures = layout.measures();
    let scale = ctx.scale();
    // Per region: the `none` arm's value and accounts, which anchor its revenue.
    let region_of: Vec<usize> = ctx
        .regions
        .iter()
        .map(|(_, r, _)| names.regions.iter().position(|n| n == r).unwrap_or(0))
        .collect();
    let mut day_anchor = vec![Vec::new(); layout.regions];
    for (c, (_, _, days)) in ctx.regions.iter().enumerate() {
        day_anchor[region_of[c]].clone_from(days);
    }
    let (mut none_value, mut none_accounts) =
        (vec![0.0; layout.regions], vec![0.0; layout.regions]);
    let touched = counts.touched_cells(layout);
    // Each reached cell's contribution to a row ([`contribution`]), by cell, for the level,
    // country and age rows it belongs to; and one segment's, for the segment rows.
    let width = Seg::COUNT + All::COUNT + DERIVED.len();
    let mut parts = vec![0.0; layout.countries * layout.ages * width];
    let mut one = vec![0.0; width];
    let mut reached = vec![false; layout.countries * layout.ages];
    for a in 0..layout.levels.len() {
        for k in 0..layout.levels[a] {
            let values = counts.level(layout, a, k);
            let cell =
                |c: usize, g: usize| &values[layout.cell(c, g)..layout.cell(c, g) + measures];
            // A cell with no count adds nothing to any row (every sum starts at +0.0 and adding
            // +0.0 leaves a sum as it is), so the cells no user reached are skipped: at a few
            // users, most of them.
            for &x in &touched {
                let (c, g) = (x / layout.ages, x % layout.ages);
                reached[x] = cell(c, g).iter().any(|&v| v != 0);
                if reached[x] {
                    let part = &mut parts[x * width..(x + 1) * width];
                    contribution(part, layout, cell(c, g), 0..layout.segments, true, ctx);
                }
            }
            let reached = |c: usize, g: usize| reached[c * layout.ages + g];
            let part = |c: usize, g: usize| {
                let x = c * layout.ages + g;
                &parts[x * width..(x + 1) * width]
            };
            let i = level.row(a, k, 0);
            // The k-anonymity figures on a day's average audience (audience-days / H).
            let days = f64::from(ctx.horizon_days.max(1));
            let (mut smallest, mut small) = (f64::INFINITY, 0u64);
            for c in 0..layout.countries {
                let j = country.row(a, k, c);
                for g in (0..layout.ages).filter(|&g| reached(c, g)) {
                    level.add(i, part(c, g));
                    country.add(j, part(c, g));
                }
                if names.is_none[a] {
                    let r = region_of.get(c).copied().unwrap_or(0);
                    none_value[r] += country.value(j).round();
                    none_accounts[r] += country.sums[Seg::COUNT + All::Accounts as usize][j];
                }
                // A cell no user reached has no audience.
                for g in (0..layout.ages).filter(|&g| reached(c, g)) {
                    for s in 0..layout.segments {
                        let audience = cell(c, g)[layout.seg(s, Seg::AudienceDays)].max(0) as f64;
                        if audience > 0.0 {
                            let people = audience / days * scale;
                            smallest = smallest.min(people);
                            small += u64::from(people < ctx.k_anonymity);
                        }
                    }
                }
            }
            min_cell.push(smallest.is_finite().then_some(smallest));
            under_k.push(small as f64);
            for g in 0..layout.ages {
                let j = age.row(a, k, g);
                for c in (0..layout.countries).filter(|&c| reached(c, g)) {
                    age.add(j, part(c, g));
                }
            }
            for s in 0..layout.segments {
                let j = segment.row(a, k, s);
                for c in 0..layout.countries {
                    for g in (0..layout.ages).filter(|&g| reached(c, g)) {
                        let cell = cell(c, g);
                        if cell[s * Seg::COUNT..(s + 1) * Seg::COUNT]
                            .iter()
                            .any(|&x| x != 0)
                        {
                            contribution(&mut one, layout, cell, s..s + 1, false, ctx);
                            segment.add(j, &one);
                        }
                    }
                }
            }
            if !names.is_none[a] {
                let t = counts.timeline_level(layout, a, k);
                for d in 0..=layout.days {
                    for ch in TIMELINE_CHANNELS {
                        let people: i64 =
                            (0..layout.regions).map(|r| t[layout.day(r, d, ch)]).sum();
                        t_count.push(people as f64);
                    }
                }
            }
        }
    }
    let mut level = level.frame("summary", None, names, keys, ctx)?;
    level.with_column(Column::new("min_audience_cell".into(), min_cell))?;
    level.with_column(Series::from_vec("cells_under_k".into(), under_k).into_column())?;
    let n = t_count.len();
    let mut columns = keys.of("timeline", n, || timeline_keys(names, layout))?;
    columns.push(Series::from_vec("people".into(), t_count).into_column());
    let timeline = DataFrame::new(n, columns)?;
    let anchor: Vec<f64> = (0..layout.regions)
        .map(|r| none_accounts[r] * scale * day_anchor[r].iter().sum::<f64>())
        .collect();
    let market = crate::demand::clear(names, layout, counts, ctx, &anchor)?;
    let (revenue_days, revenue_routes) = revenue_days(
        names,
        layout,
        counts,
        ctx,
        &day_anchor,
        (&none_value, &none_accounts),
        keys,
    )?;
    Ok(Margins {
        level,
        segment: segment.frame(
            "segments",
            Some(("segment", &names.segments)),
            names,
            keys,
            ctx,
        )?,
        country: country.frame(
            "countries",
            Some(("country", &names.countries)),
            names,
            keys,
            ctx,
        )?,
        age: age.frame("ages", Some(("age_band", &names.ages)), names, keys, ctx)?,
        timeline,
        revenue_days,
        revenue_routes,
        market,
    })
}

/// The channels of the timeline table, in row order within a day.
const TIMELINE_CHANNELS: [Channel; 3] = [Channel::Notice, Channel::Settings, Channel::InAdUse];

/// The key columns of one replication's timeline margin (`arm`, `level`, `rate`, `day`,
/// `channel`): a row per arm with a timeline (not the `none` arm), level, day and channel.
fn timeline_keys(names: &Names, layout: &Layout) -> PolarsResult<Vec<Column>> {
    let (mut arm, mut level, mut rate, mut day, mut channel) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in (0..layout.levels.len()).filter(|&a| !names.is_none[a]) {
        for k in 0..layout.levels[a] {
            for d in 0..=layout.days {
                for ch in TIMELINE_CHANNELS {
                    arm.push(names.arms[a].as_str());
                    level.push(k as u32);
                    rate.push(names.rates[a][k]);
                    day.push(d as u32);
                    channel.push(ch.measure().name);
                }
            }
        }
    }
    Ok(vec![
        StringChunked::from_iter_values("arm".into(), arm.into_iter()).into_column(),
        Series::from_vec("level".into(), level).into_column(),
        Series::from_vec("rate".into(), rate).into_column(),
        Series::from_vec("day".into(), day).into_column(),
        StringChunked::from_iter_values("channel".into(), channel.into_iter()).into_column(),
    ])
}

/// The label of the rows of `revenue_days` that sum every region.
pub const ALL_REGIONS: &str = "all";

/// The revenue change per (arm, level, region, day) of one replication, $M (docs/model.md §8):
/// a region's day of `value_gain`, in dollars, times the anchoring of that day (the day's
/// anchor per account, times its accounts, scaled, over the `none` arm's value of a day).
/// Summed over the days, it is the horizon's revenue change of the region. The `none` arm has
/// no rows; region [`ALL_REGIONS`] sums the others. Also returns, per (arm, level), the
/// horizon's change (`revenue_change_musd`) and its parts by how M's data reached the account
/// ([`Channel::ROUTES`]); the `none` arm's are 0.
fn revenue_days(
    names: &Names,
    layout: &Layout,
    counts: &Counts,
    ctx: &Context,
    day_anchor: &[Vec<f64>],
    (none_value, none_accounts): (&[f64], &[f64]),
    keys: &mut KeyColumns,
) -> PolarsResult<(DataFrame, DataFrame)> {
    // The `none` arm's value of a day is the same every day: its quarter over H.
    let h = f64::from(ctx.horizon_days.max(1));
    let per_quantum: Vec<Vec<f64>> = (0..layout.regions)
        .map(|r| {
            (0..layout.days)
                .map(|d| {
                    let anchor = day_anchor[r].get(d).copied().unwrap_or(0.0);
                    if none_value[r] > 0.0 {
                        anchor * h * none_accounts[r] * ctx.scale()
                            / none_value[r]
                            / ctx.value_quantum
                            / 1e6
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let mut region_labels: Vec<&str> = names.regions.iter().map(String::as_str).collect();
    region_labels.push(ALL_REGIONS);
    // Rows: (arm, level) of the arms with a timeline, then region, then day.
    let rows = || {
        (0..layout.levels.len())
            .filter(|&a| !names.is_none[a])
            .flat_map(|a| (0..layout.levels[a]).map(move |k| (a, k)))
            .flat_map(|(a, k)| (0..region_labels.len()).map(move |r| (a, k, r)))
            .flat_map(|(a, k, r)| (0..layout.days).map(move |d| (a, k, r, d)))
    };
    let mut change = Vec::with_capacity(rows().count());
    for a in (0..layout.levels.len()).filter(|&a| !names.is_none[a]) {
        for k in 0..layout.levels[a] {
            let t = counts.timeline_level(layout, a, k);
            for r in 0..region_labels.len() {
                for d in 0..layout.days {
                    let value = |r: usize| {
                        t[layout.day(r, d, Channel::ValueGain)] as f64 * per_quantum[r][d]
                    };
                    change.push(if r < layout.regions {
                        value(r)
                    } else {
                        (0..layout.regions).map(value).sum()
                    });
                }
            }
        }
    }
    let n = change.len();
    // The key columns are the same in every replication: built for the first.
    let mut columns = keys.of("revenue_days", n, || {
        let arms = rows().map(|(a, ..)| names.arms[a].as_str());
        let regions = rows().map(|(_, _, r, _)| region_labels[r]);
        Ok(vec![
            StringChunked::from_iter_values("arm".into(), arms).into_column(),
            Series::from_vec(
                "level".into(),
                rows().map(|(_, k, ..)| k as u32).collect::<Vec<_>>(),
            )
            .into_column(),
            Series::from_vec(
                "rate".into(),
                rows()
                    .map(|(a, k, ..)| names.rates[a][k])
                    .collect::<Vec<_>>(),
            )
            .into_column(),
            StringChunked::from_iter_values("region".into(), regions).into_column(),
            Series::from_vec(
                "day".into(),
                rows().map(|(.., d)| d as u32).collect::<Vec<_>>(),
            )
            .into_column(),
        ])
    })?;
    columns.push(Series::from_vec("revenue_change_musd".into(), change).into_column());
    let days = DataFrame::new(n, columns)?;
    let (mut r_arm, mut r_level) = (Vec::new(), Vec::new());
    let mut routes: [Vec<f64>; 5] = Default::default();
    let channels = [Channel::ValueGain]
        .into_iter()
        .chain(Channel::ROUTES)
        .collect::<Vec<_>>();
    for a in 0..layout.levels.len() {
        for k in 0..layout.levels[a] {
            r_arm.push(names.arms[a].as_str());
            r_level.push(k as u32);
            for (&ch, column) in channels.iter().zip(&mut routes) {
                let total = if names.is_none[a] {
                    0.0
                } else {
                    let t = counts.timeline_level(layout, a, k);
                    (0..layout.regions)
                        .flat_map(|r| (0..layout.days).map(move |d| (r, d)))
                        .map(|(r, d)| t[layout.day(r, d, ch)] as f64 * per_quantum[r][d])
                        .sum()
                };
                column.push(total);
            }
        }
    }
    let n = r_arm.len();
    let mut columns = vec![
        StringChunked::from_iter_values("arm".into(), r_arm.into_iter()).into_column(),
        Series::from_vec("level".into(), r_level).into_column(),
    ];
    for (name, v) in ["revenue_change_musd"]
        .iter()
        .chain(&ROUTE_METRICS)
        .zip(routes)
    {
        columns.push(Series::from_vec((*name).into(), v).into_column());
    }
    Ok((days, DataFrame::new(n, columns)?))
}

/// The summary's revenue change by route, in the order of [`Channel::ROUTES`].
const ROUTE_METRICS: [&str; 4] = [
    "revenue_change_new_number_musd",
    "revenue_change_replaced_number_musd",
    "revenue_change_known_number_musd",
    "revenue_change_foreign_musd",
];

/// Revenue per (arm, level) of one replication, anchored per region on the `none` arm:
/// `arm`, `level`, `ca_revenue_musd` and `revenue_none_musd`, one row per (arm, level) of
/// `per_country` (its `country` rows with [`rate_columns`]) in their order of first
/// appearance. Regions without a `none` row, and countries without a region, add nothing.
fn revenue(per_country: &DataFrame, ctx: &Context) -> PolarsResult<DataFrame> {
    let arms = per_country.column("arm")?.str()?;
    let levels = per_country.column("level")?.u32()?;
    let countries = per_country.column("country")?.str()?;
    let f64s = |name: &str| -> PolarsResult<Vec<Option<f64>>> {
        Ok(per_country
            .column(name)?
            .as_materialized_series()
            .cast(&DataType::Float64)?
            .f64()?
            .iter()
            .collect())
    };
    let (value, ca_value, accounts) = (
        f64s("value")?,
        f64s("ca_value_whole")?,
        f64s(All::Accounts.measure().name)?,
    );
    // Per country: its region and the horizon's advertising revenue per S account (ARPU
    // times the advertising share, summed over the days, docs/model.md §8.2).
    let region_of: std::collections::HashMap<&str, (&str, f64)> = ctx
        .regions
        .iter()
        .rev()
        .map(|r| (r.0.as_str(), (r.1.as_str(), r.2.iter().sum::<f64>())))
        .collect();
    // Sums per (arm, level, region), in order of first appearance: value, the Custom
    // Audience part of it, accounts; and the region's revenue per account.
    type Key<'k> = (Option<&'k str>, Option<u32>, &'k str);
    let mut groups: Vec<(Key, [f64; 3], f64)> = Vec::new();
    let mut index: std::collections::HashMap<Key, usize> = Default::default();
    for i in 0..per_country.height() {
        let Some(&(region, arpu)) = countries.get(i).and_then(|c| region_of.get(c)) else {
            continue;
        };
        let key = (arms.get(i), levels.get(i), region);
        let g = *index.entry(key).or_insert_with(|| {
            groups.push((key, [0.0; 3], arpu));
            groups.len() - 1
        });
        // Whole numbers: their sums are exact in any order.
        for (sum, v) in groups[g]
            .1
            .iter_mut()
            .zip([value[i], ca_value[i], accounts[i]])
        {
            *sum += v.unwrap_or(0.0);
        }
    }
    let none: std::collections::HashMap<&str, (f64, f64)> = groups
        .iter()
        .rev()
        .filter(|((arm, _, _), _, _)| *arm == Some(ctx.none_arm.as_str()))
        .map(|((_, _, region), sums, _)| (*region, (sums[0], sums[2])))
        .collect();
    let scale = ctx.scale();
    // Whole dollars per region (in $M after the sum): the sum over regions is exact. The
    // Custom Audience part is the value share of the horizon's anchor.
    type ArmLevel<'k> = (Option<&'k str>, Option<u32>);
    let mut rows: Vec<(ArmLevel, [f64; 2])> = Vec::new();
    let mut at: std::collections::HashMap<ArmLevel, usize> = Default::default();
    for ((arm, level, region), sums, arpu) in &groups {
        let Some(&(value_none, accounts_none)) = none.get(region) else {
            continue;
        };
        let share = ratio(sums[1], value_none).unwrap_or(0.0);
        let parts = [
            whole(arpu * accounts_none * scale * share),
            whole(arpu * accounts_none * scale),
        ];
        let r = *at.entry((*arm, *level)).or_insert_with(|| {
            rows.push(((*arm, *level), [0.0; 2]));
            rows.len() - 1
        });
        for (sum, v) in rows[r].1.iter_mut().zip(parts) {
            *sum += v.unwrap_or(0.0);
        }
    }
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new("arm".into(), rows.iter().map(|r| r.0.0).collect::<Vec<_>>()),
            Column::new(
                "level".into(),
                rows.iter().map(|r| r.0.1).collect::<Vec<_>>(),
            ),
            Column::new(
                "ca_revenue_musd".into(),
                rows.iter()
                    .map(|r| r.1[0] * (1.0 / 1e6))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "revenue_none_musd".into(),
                rows.iter()
                    .map(|r| r.1[1] * (1.0 / 1e6))
                    .collect::<Vec<_>>(),
            ),
        ],
    )
}

/// `left` with every column of `right` but `arm` and `level`, as floats, matched on (arm,
/// level) as a left join: a row of `left` with no row of `right` gets nulls. `right` has one
/// row per (arm, level).
fn join_on_arm_level(left: &mut DataFrame, right: &DataFrame) -> PolarsResult<()> {
    let (l_arm, l_level) = (left.column("arm")?.str()?, left.column("level")?.u32()?);
    let (r_arm, r_level) = (right.column("arm")?.str()?, right.column("level")?.u32()?);
    let at: std::collections::HashMap<(Option<&str>, Option<u32>), usize> = (0..right.height())
        .rev()
        .map(|j| ((r_arm.get(j), r_level.get(j)), j))
        .collect();
    let rows: Vec<Option<usize>> = (0..left.height())
        .map(|i| {
            let key = (l_arm.get(i), l_level.get(i));
            key.0.and(key.1).and_then(|_| at.get(&key).copied())
        })
        .collect();
    let mut added = Vec::new();
    for column in right.columns() {
        let name = column.name().as_str();
        if name == "arm" || name == "level" {
            continue;
        }
        let values = column.as_materialized_series().cast(&DataType::Float64)?;
        let values = values.f64()?;
        let joined: Vec<Option<f64>> = rows.iter().map(|j| j.and_then(|j| values.get(j))).collect();
        added.push(Column::new(column.name().clone(), joined));
    }
    for column in added {
        left.with_column(column)?;
    }
    Ok(())
}

/// One replication's metric tables, rows in the order of its margins.
fn per_replication(m: Margins, ctx: &Context) -> PolarsResult<[DataFrame; 7]> {
    let country = m.country;
    let mut summary = m.level;
    join_on_arm_level(&mut summary, &revenue(&country, ctx)?)?;
    join_on_arm_level(&mut summary, &m.revenue_routes)?;
    join_on_arm_level(&mut summary, &m.market.summary)?;
    // The revenue change is the sum of its days, each at its own anchor (docs/model.md
    // §8.2, §8.4).
    let change: Vec<Option<f64>> = summary
        .column("revenue_change_musd")?
        .f64()?
        .iter()
        .collect();
    let none: Vec<Option<f64>> = summary.column("revenue_none_musd")?.f64()?.iter().collect();
    let over = ctx.revenue.ad_revenue_over(ctx.horizon_days);
    let total: Vec<Option<f64>> = none
        .iter()
        .zip(&change)
        .map(|(n, c)| n.zip(*c).map(|(n, c)| n + c))
        .collect();
    let share: Vec<Option<f64>> = change.iter().map(|c| c.map(|c| c * (1.0 / over))).collect();
    summary.with_column(Column::new("revenue_musd".into(), total))?;
    summary.with_column(Column::new("revenue_change_share".into(), share))?;
    paired(&mut summary, &ctx.none_arm)?;
    against_baseline(&mut summary, &ctx.baseline_arm)?;
    against_first_level(&mut summary, "value_ratio_in_ad_use")?;
    let mut timeline = m.timeline;
    let people: Vec<Option<f64>> = timeline
        .column("people")?
        .f64()?
        .iter()
        .map(|p| p.map(|p| p * ctx.scale()))
        .collect();
    timeline.with_column(Column::new("people".into(), people))?;
    Ok([
        summary,
        m.segment,
        country,
        timeline,
        m.age,
        m.revenue_days,
        m.market.rows,
    ])
}

/// Adds the paired comparisons with the `none` arm (the scenario has exactly one, with one
/// level) to one replication's summary: `<metric>_vs_none` and `<metric>_lift` of each
/// [`PAIRED`] metric. Computed here rather than in polars, whose division by a broadcast
/// column may round differently with the number of its threads.
fn paired(summary: &mut DataFrame, none_arm: &str) -> PolarsResult<()> {
    let arms = summary.column("arm")?.str()?.clone();
    let none = arms.iter().position(|a| a == Some(none_arm));
    for p in PAIRED {
        let values: Vec<Option<f64>> = summary.column(p)?.f64()?.iter().collect();
        let base = none.and_then(|i| values[i]);
        let (diff, lift): (Vec<Option<f64>>, Vec<Option<f64>>) = values
            .iter()
            .map(|v| match (v, base) {
                (Some(x), Some(b)) => (Some(x - b), (b > 0.0).then(|| x / b)),
                _ => (None, None),
            })
            .unzip();
        summary.with_column(Column::new(format!("{p}_vs_none").into(), diff))?;
        summary.with_column(Column::new(format!("{p}_lift").into(), lift))?;
    }
    Ok(())
}

/// Adds `revenue_change_vs_baseline_musd` to one replication's summary: each row's revenue
/// change less that of the baseline arm's one level, within the replication, so that its
/// interval is that of a paired difference (docs/model.md §10.2).
fn against_baseline(summary: &mut DataFrame, baseline: &str) -> PolarsResult<()> {
    let arms = summary.column("arm")?.str()?.clone();
    let values: Vec<Option<f64>> = summary
        .column("revenue_change_musd")?
        .f64()?
        .iter()
        .collect();
    let base = arms
        .iter()
        .position(|a| a == Some(baseline))
        .and_then(|i| values[i]);
    let diff: Vec<Option<f64>> = values
        .iter()
        .map(|v| v.zip(base).map(|(x, b)| x - b))
        .collect();
    summary.with_column(Column::new("revenue_change_vs_baseline_musd".into(), diff))?;
    Ok(())
}

/// Adds `<metric>_change` to one replication's summary: each row's value less that of the
/// same arm's first level (its lowest rate), within the replication, so that its interval is
/// that of a paired difference (the selection case, docs/model.md §13.2).
fn against_first_level(summary: &mut DataFrame, metric: &str) -> PolarsResult<()> {
    let arms = summary.column("arm")?.str()?.clone();
    let levels: Vec<Option<u32>> = summary.column("level")?.u32()?.iter().collect();
    let values: Vec<Option<f64>> = summary.column(metric)?.f64()?.iter().collect();
    let first = |arm: Option<&str>| {
        (0..values.len())
            .find(|&j| arms.get(j) == arm && levels[j] == Some(0))
            .and_then(|j| values[j])
    };
    let diff: Vec<Option<f64>> = (0..values.len())
        .map(|i| values[i].zip(first(arms.get(i))).map(|(x, b)| x - b))
        .collect();
    summary.with_column(Column::new(format!("{metric}_change").into(), diff))?;
    Ok(())
}

/// Student's t quantile at 0.975 with `df` degrees of freedom (statrs); NaN at 0.
pub fn t975(df: u32) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    StudentsT::new(0.0, 1.0, f64::from(df))
        .map(|t| t.inverse_cdf(0.975))
        .unwrap_or(f64::NAN)
}

/// Running moments of one metric column across replications (Welford): per row, how many
/// replications defined it, their mean, their sum of squared deviations, and their smallest
/// and largest value.
#[derive(Clone, Debug)]
struct Moments {
    n: Vec<u32>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

/// The metrics that are extremes or counts of a replication's cells rather than ratios of
/// summed counts: a t-interval over a handful of minima can fall below zero and says nothing
/// about a mean, so their bounds are the smallest and largest value over the replications
/// (docs/model.md §10.3).
pub const RANGE_METRICS: [&str; 2] = ["min_audience_cell", "cells_under_k"];

impl Moments {
    fn new(rows: usize) -> Self {
        Moments {
            n: vec![0; rows],
            mean: vec![0.0; rows],
            m2: vec![0.0; rows],
            min: vec![f64::INFINITY; rows],
            max: vec![f64::NEG_INFINITY; rows],
        }
    }

    fn add(&mut self, values: impl Iterator<Item = Option<f64>>) {
        for (i, v) in values.enumerate() {
            if let Some(x) = v {
                self.add_one(i, x);
            }
        }
    }

    /// Adds the value `x` of row `i`, if it is finite.
    #[inline(always)]
    fn add_one(&mut self, i: usize, x: f64) {
        if x.is_finite() {
            self.n[i] += 1;
            let delta = x - self.mean[i];
            self.mean[i] += delta / f64::from(self.n[i]);
            self.m2[i] += delta * (x - self.mean[i]);
            self.min[i] = self.min[i].min(x);
            self.max[i] = self.max[i].max(x);
        }
    }

    /// Mean, low and high bound of each row: the t-interval of the mean, or with `range` the
    /// smallest and largest value (with at least two replications, as the t-interval).
    fn bounds(&self, range: bool) -> [Vec<Option<f64>>; 3] {
        let mut out = [Vec::new(), Vec::new(), Vec::new()];
        // The quantile of the last row's degrees of freedom: rows mostly share one.
        let mut t = (0, f64::NAN);
        for i in 0..self.n.len() {
            let n = self.n[i];
            let mean = (n > 0).then_some(self.mean[i]);
            let (lo, hi) = if n < 2 {
                (None, None)
            } else if range {
                (Some(self.min[i]), Some(self.max[i]))
            } else {
                let sd = (self.m2[i].max(0.0) / f64::from(n - 1)).sqrt();
                if t.0 != n - 1 {
                    t = (n - 1, t975(n - 1));
                }
                let half = t.1 * sd / f64::from(n).sqrt();
                (mean.map(|m| m - half), mean.map(|m| m + half))
            };
            out[0].push(mean);
            out[1].push(lo);
            out[2].push(hi);
        }
        out
    }
}

/// One output table folded across replications: its key columns (from the first
/// replication; every replication has the same rows in the same order) and the moments of
/// each metric.
#[derive(Clone, Debug)]
struct Fold {
    keys: Vec<&'static str>,
    metrics: Vec<String>,
    key_columns: Option<Vec<Column>>,
    moments: Vec<Moments>,
}

impl Fold {
    fn new(keys: &[&'static str], metrics: Vec<String>) -> Self {
        Fold {
            keys: keys.to_vec(),
            metrics,
            key_columns: None,
            moments: Vec::new(),
        }
    }

    fn add(&mut self, df: &DataFrame) -> PolarsResult<()> {
        if self.key_columns.is_none() {
            self.key_columns = Some(
                self.keys
                    .iter()
                    .map(|k| df.column(k).cloned())
                    .collect::<PolarsResult<_>>()?,
            );
            let rows = df.height();
            self.moments = vec![Moments::new(rows); self.metrics.len()];
        }
        polars_ensure!(
            self.moments.first().is_none_or(|m| m.n.len() == df.height()),
            ShapeMismatch: "a replication's table has {} rows, the first had {}",
            df.height(),
            self.moments.first().map_or(0, |m| m.n.len())
        );
        for (name, moments) in self.metrics.iter().zip(&mut self.moments) {
            let s = df
                .column(name)?
                .as_materialized_series()
                .cast(&DataType::Float64)?;
            let s = s.f64()?;
            // Without nulls, the values alone (most columns): the same sums, faster.
            match s.cont_slice() {
                Ok(values) => {
                    for (i, &x) in values.iter().enumerate() {
                        moments.add_one(i, x);
                    }
                }
                Err(_) => moments.add(s.iter()),
            }
        }
        Ok(())
    }

    fn finish(self) -> PolarsResult<DataFrame> {
        let mut columns = self.key_columns.unwrap_or_default();
        let n = columns.first().map_or(0, |c| c.len());
        for (name, moments) in self.metrics.iter().zip(&self.moments) {
            let [mean, lo, hi] = moments.bounds(RANGE_METRICS.contains(&name.as_str()));
            for (suffix, v) in [("", mean), ("_lo", lo), ("_hi", hi)] {
                columns.push(Column::new(format!("{name}{suffix}").into(), v));
            }
        }
        DataFrame::new(n, columns)
    }
}

/// The estimated tables of a run.
#[derive(Clone, Debug)]
pub struct Estimates {
    /// Per arm and level.
    pub summary: DataFrame,
    /// Per arm, level and segment.
    pub segments: DataFrame,
    /// Per arm, level and country.
    pub countries: DataFrame,
    /// Per arm, level, day and channel.
    pub timeline: DataFrame,
    /// Per arm, level and age band.
    pub ages: DataFrame,
    /// Per arm, level, S region and day: the revenue change.
    pub revenue_days: DataFrame,
    /// Per arm, level, S region and advertiser size: the markets (docs/model.md §17.5).
    pub market: DataFrame,
}

/// Folds replications' counts into estimates, one replication at a time.
#[derive(Clone, Debug)]
pub struct Estimator {
    ctx: Context,
    names: Names,
    layout: Layout,
    tables: [Fold; 7],
    /// The margins' key columns, built for the first replication.
    keys: KeyColumns,
}

impl Estimator {
    /// An estimator for counts of `layout`, labelled by `names`.
    pub fn new(ctx: Context, names: Names, layout: Layout) -> Self {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Estimator {
            ctx,
            names,
            layout,
            keys: KeyColumns::default(),
            tables: [
                Fold::new(&["arm", "level", "rate"], summary_metric_names()),
                Fold::new(&["arm", "level", "rate", "segment"], list(SEGMENT_METRICS)),
                Fold::new(&["arm", "level", "rate", "country"], list(COUNTRY_METRICS)),
                Fold::new(
                    &["arm", "level", "rate", "day", "channel"],
                    list(&["people"]),
                ),
                Fold::new(&["arm", "level", "rate", "age_band"], list(AGE_METRICS)),
                Fold::new(
                    &["arm", "level", "rate", "region", "day"],
                    list(&["revenue_change_musd"]),
                ),
                Fold::new(
                    &["arm", "level", "rate", "region", "size"],
                    crate::demand::TABLE_METRICS
                        .iter()
                        .map(|(n, _)| n.to_string())
                        .collect(),
                ),
            ],
        }
    }

    /// Adds one replication's finished counts.
    pub fn add(&mut self, counts: &Counts) -> PolarsResult<()> {
        let m = margins(&self.names, &self.layout, counts, &self.ctx, &mut self.keys)?;
        for (fold, df) in self.tables.iter_mut().zip(per_replication(m, &self.ctx)?) {
            fold.add(&df)?;
        }
        Ok(())
    }

    /// The estimated tables.
    pub fn finish(self) -> PolarsResult<Estimates> {
        let [
            summary,
            segments,
            countries,
            timeline,
            ages,
            revenue_days,
            market,
        ] = self.tables.map(Fold::finish);
        Ok(Estimates {
            summary: summary?,
            segments: segments?,
            countries: countries?,
            timeline: timeline?,
            ages: ages?,
            revenue_days: revenue_days?,
            market: market?,
        })
    }
}

/// Every metric column of the summary table, in order (each with `_lo` and `_hi`).
pub fn summary_metric_names() -> Vec<String> {
    let mut names: Vec<String> = METRICS
        .iter()
        .chain(crate::demand::SUMMARY_METRICS)
        .map(|(n, _)| n.to_string())
        .collect();
    for p in PAIRED {
        names.push(format!("{p}_vs_none"));
        names.push(format!("{p}_lift"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q2_days(arpu: f64) -> Vec<f64> {
        let r = RevenueConfig {
            anchor: crate::revenue::Anchor::Q22016,
            ..RevenueConfig::default()
        };
        r.day_anchors([arpu, 0.0, 0.0], 10)
    }

    fn context(users: u64) -> Context {
        Context {
            users,
            replications: 2,
            none_arm: "none".into(),
            baseline_arm: "none".into(),
            targeting: TargetingConfig::default(),
            // 1,000M real users: the tests' hand-computed scales.
            revenue: RevenueConfig {
                m_users_millions: 1000.0,
                ..RevenueConfig::default()
            },
            // Per-day anchors of 10 days, ARPU x the Q2 2016 advertising share over the days.
            regions: vec![
                ("AA".into(), "North".into(), q2_days(10.0)),
                ("BB".into(), "South".into(), q2_days(2.0)),
            ],
            k_anonymity: 100.0,
            horizon_days: 10,
            cpc: vec![1.0, 3.0],
            value_quantum: 1.0,
            market: crate::demand::MarketConfig::default(),
        }
    }

    #[test]
    fn t_quantiles_are_the_published_ones() {
        // Student's t at 0.975 (any statistics table).
        for (df, t) in [
            (1, 12.7062),
            (4, 2.7764),
            (30, 2.0423),
            (60, 2.0003),
            (120, 1.9799),
        ] {
            assert!((t975(df) - t).abs() < 5e-4, "df {df}: {}", t975(df));
        }
        assert!(t975(0).is_nan());
    }

    #[test]
    fn intervals_are_mean_plus_minus_t_sd_over_root_n() {
        let mut m = Moments::new(2);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            // Row 1 is defined in one replication only.
            m.add([Some(x), (x == 3.0).then_some(7.0)].into_iter());
        }
        // A range metric's bounds are the smallest and largest value.
        let [mean, lo, hi] = m.bounds(true);
        assert_eq!((mean[0], lo[0], hi[0]), (Some(3.0), Some(1.0), Some(5.0)));
        assert_eq!((lo[1], hi[1]), (None, None));
        let [mean, lo, hi] = m.bounds(false);
        // Mean 3, sd sqrt(2.5) = 1.58114, half-width 2.77645 x 1.58114 / sqrt(5) = 1.96324.
        assert_eq!(mean[0], Some(3.0));
        assert!((lo[0].unwrap() - 1.03676).abs() < 1e-4, "{lo:?}");
        assert!((hi[0].unwrap() - 4.96324).abs() < 1e-4, "{hi:?}");
        assert_eq!((mean[1], lo[1], hi[1]), (Some(7.0), None, None));
    }

    #[test]
    fn paired_differences_and_lifts_are_against_none_in_the_same_replication() {
        let mut df = df!(
            "arm" => ["none", "a", "a"],
            "precision" => [0.5, 0.6, 0.5],
            "recall" => [0.2, 0.3, 0.1],
            "f1" => [0.0, 0.1, 0.2],
            "ctr" => [0.01, 0.012, 0.01],
            "ca_match_rate" => [0.4, 0.5, 0.4],
            "ca_right_rate" => [0.3, 0.35, 0.3],
        )
        .unwrap();
        paired(&mut df, "none").unwrap();
        let f =
            |c: &str| -> Vec<Option<f64>> { df.column(c).unwrap().f64().unwrap().iter().collect() };
        let close = |a: Vec<Option<f64>>, b: [Option<f64>; 3]| {
            a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() < 1e-12,
                (None, None) => true,
                _ => false,
            })
        };
        assert!(close(
            f("precision_vs_none"),
            [Some(0.0), Some(0.1), Some(0.0)]
        ));
        assert!(close(
            f("precision_lift"),
            [Some(1.0), Some(1.2), Some(1.0)]
        ));
        assert!(close(f("recall_lift"), [Some(1.0), Some(1.5), Some(0.5)]));
        // A base of zero has a difference but no lift.
        assert!(close(f("f1_vs_none"), [Some(0.0), Some(0.1), Some(0.2)]));
        assert!(close(f("f1_lift"), [None, None, None]));
    }

    #[test]
    fn the_none_revenue_and_its_custom_audience_part_are_anchored_per_region() {
        // 1000 simulated users stand for 10^9: a scale of 10^6 people each.
        let ctx = context(1000);
        let per_country = df!(
            "arm" => ["none", "none", "a", "a"],
            "level" => [0u32, 0, 0, 0],
            "country" => ["AA", "BB", "AA", "BB"],
            "value" => [100.0, 50.0, 150.0, 50.0],
            "ca_value_whole" => [20.0, 0.0, 30.0, 10.0],
            "accounts" => [300.0, 200.0, 300.0, 200.0],
        )
        .unwrap();
        let r = revenue(&per_country, &ctx).unwrap();
        let get = |c: &str, i: usize| r.column(c).unwrap().f64().unwrap().get(i).unwrap();
        // none: ARPU x accounts x scale x ad share, summed over regions, in every arm:
        // (10 x 300 + 2 x 200) x 10^6 x 6239/6436 = 3,295.96 $M. (The change comes from the
        // days' value, `revenue_days`.)
        let share = 6239.0 / 6436.0;
        let none = (10.0 * 300.0 + 2.0 * 200.0) * share;
        assert!((get("revenue_none_musd", 0) - none).abs() < 1e-3, "{r}");
        assert!((get("revenue_none_musd", 1) - none).abs() < 1e-3, "{r}");
        // Custom Audience revenue: each region's revenue x its CA share of none's value.
        let ca = (10.0 * 300.0 * 30.0 / 100.0 + 2.0 * 200.0 * 10.0 / 50.0) * share;
        assert!((get("ca_revenue_musd", 1) - ca).abs() < 1e-3, "{r}");
    }

    #[test]
    fn metric_columns_are_the_ratios_of_their_sums_and_undefined_over_nothing() {
        // Two rows: row 0 with hand-picked sums, row 1 all zero. Context: 10 days, 1000
        // simulated users for 10^9 people (a scale of 10^6).
        let ctx = context(1000);
        let mut sums: std::collections::HashMap<&str, Vec<f64>> = Seg::ALL
            .iter()
            .chain(All::ALL)
            .map(|m| m.name)
            .chain(DERIVED)
            .map(|n| (n, vec![0.0; 2]))
            .collect();
        let mut set = |name: &'static str, v: f64| sums.get_mut(name).unwrap()[0] = v;
        set(All::Users.measure().name, 10.0);
        set(All::OptedOut.measure().name, 3.0);
        set(Seg::TruePositiveDays.measure().name, 4.0);
        set(Seg::AudienceDays.measure().name, 8.0);
        set(Seg::InterestedDays.measure().name, 16.0);
        set(Seg::CaRightDays.measure().name, 3.0);
        set(Seg::CaWrongDays.measure().name, 1.0);
        set(Seg::CaUploadedDays.measure().name, 8.0);
        // 100 interest impressions, 40 of them linked; no Custom Audience or untargeted ones.
        set(Seg::ImpInterestedLinked.measure().name, 40.0);
        set(Seg::ImpOtherUnlinked.measure().name, 60.0);
        set("clicks_linked", 0.8);
        set("clicks_unlinked", 0.6);
        set("value_linked", 2.5);
        let columns = rate_columns(|n| Ok(sums[n].as_slice()), 2, &ctx).unwrap();
        let get = |name: &str| -> Vec<Option<f64>> {
            let c: Vec<&Column> = columns.iter().filter(|c| c.name() == name).collect();
            assert_eq!(c.len(), 1, "{name} once");
            c[0].f64().unwrap().iter().collect()
        };
        let close = |name: &str, want: f64| {
            let got = get(name)[0].unwrap();
            assert!((got - want).abs() < 1e-12, "{name}: {got} against {want}");
        };
        close("achieved_rate", 0.3);
        close("precision", 0.5);
        close("recall", 0.25);
        close("f1", 1.0 / 3.0);
        close("ca_match_rate", 0.5);
        close("ca_wrong_rate", 0.125);
        close("ctr", 0.014);
        // Linked: 0.8 clicks on 40 impressions against 0.6 on 60: twice the rate.
        close("value_ratio_linked", 2.0);
        // Targeted clicks per impression over the untargeted rate: 0.014 / 0.0035.
        close("value_ratio_targeted", 0.014 / ctx.targeting.ctr_untargeted);
        close("people", 10.0 * 1e6);
        close("people_opted_out", 3.0 * 1e6);
        // Whole units, half up: 1.4 clicks are 1, 2.5 dollars of value are 3.
        close("clicks", 1.0);
        close("value", 3.0);
        // Nothing to divide by: undefined, not zero; counts scale to zero.
        for name in [
            "achieved_rate",
            "precision",
            "ctr",
            "value_ratio_linked",
            "ca_match_rate",
        ] {
            assert_eq!(get(name)[1], None, "{name}");
        }
        assert_eq!(get("people")[1], Some(0.0));
        assert_eq!(columns.len(), 28);
    }

    #[test]
    fn k_anonymity_counts_cells_of_a_days_average_audience_under_k() {
        // One country, two age bands, two segments, one level of one arm; 10 days.
        let layout = Layout {
            countries: 1,
            ages: 2,
            segments: 2,
            levels: vec![1],
            days: 10,
            regions: 1,
        };
        let names = Names {
            arms: vec!["none".into()],
            rates: vec![vec![0.0]],
            is_none: vec![true],
            countries: vec!["AA".into()],
            ages: vec!["young".into(), "old".into()],
            segments: vec!["s0".into(), "s1".into()],
            regions: vec!["North".into()],
        };
        let mut counts = Counts::zeros(&layout);
        let at = |age: usize, s: usize| layout.cell(0, age) + layout.seg(s, Seg::AudienceDays);
        // Audiences of 3, 0.5 (five account-days over ten days), 20 and 0 accounts a day.
        counts.arms[0][at(0, 0)] = 30;
        counts.arms[0][at(0, 1)] = 5;
        counts.arms[0][at(1, 0)] = 200;
        let ctx = context(1_000_000_000 / 40); // 40 people per simulated account
        let m = margins(&names, &layout, &counts, &ctx, &mut KeyColumns::default()).unwrap();
        let get = |c: &str| m.level.column(c).unwrap().f64().unwrap().get(0);
        // Smallest non-empty: 0.5 x 40 = 20 people; under 100: 3 x 40 = 120 no, 20 yes,
        // 800 no: one cell.
        assert_eq!(get("min_audience_cell"), Some(20.0));
        assert_eq!(get("cells_under_k"), Some(1.0));
    }
}
