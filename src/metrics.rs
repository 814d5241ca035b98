//! Estimation (SPEC §8-§10): every rate, lift, revenue and interval derived from the count
//! tables with polars.
//!
//! Each metric is first computed per replication as a ratio of summed counts; the tables then
//! give its mean over replications and a 95% interval, `mean +/- t(0.975, R-1) sd / sqrt(R)`.
//! Differences against the `none` arm are paired within a replication (same population), so
//! their intervals are tight. With one replication there is no interval: the bounds are empty.
//! Intervals cover Monte Carlo noise only, not uncertainty in the assumed parameters.

use polars::prelude::*;

use crate::cells::{ALL_MEASURES, SEGMENT_MEASURES};
use crate::revenue::RevenueConfig;
use crate::targeting::TargetingConfig;

/// Version of the summary, segment, country and timeline tables' schemas.
pub const SCHEMA_VERSION: &str = "results/1";

/// Everything the estimation needs besides the count tables.
#[derive(Clone, Debug)]
pub struct Context {
    /// Users simulated per replication.
    pub users: u64,
    /// Replications.
    pub replications: u32,
    /// Name of the `none` arm.
    pub none_arm: String,
    /// Click-through rates.
    pub targeting: TargetingConfig,
    /// Revenue anchoring.
    pub revenue: RevenueConfig,
    /// Per country: code, S region, and that region's ARPU.
    pub regions: Vec<(String, String, f64)>,
    /// k of the k-anonymity count (SPEC §9): 100.
    pub k_anonymity: f64,
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
    ("ctr", "expected click-through rate of all impressions"),
    (
        "value_ratio_linked",
        "expected clicks per impression on accounts with M data in ad use / without",
    ),
    (
        "value_ratio_targeted",
        "expected clicks per targeted impression / per untargeted impression",
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
        "revenue_change_musd",
        "revenue_musd minus the none arm's, paired by replication",
    ),
    (
        "revenue_change_share",
        "revenue_change_musd / S's quarterly ad revenue",
    ),
    (
        "min_audience_cell",
        "smallest non-empty audience cell (country x age x segment), people",
    ),
    (
        "cells_under_k",
        "audience cells with fewer than k = 100 people",
    ),
];

/// Metrics also given against `none` within each replication: the difference
/// `<name>_vs_none` and the ratio (relevance lift, SPEC §6) `<name>_lift`, with bounds.
pub const PAIRED: &[&str] = &[
    "precision",
    "recall",
    "f1",
    "ctr",
    "ca_match_rate",
    "ca_right_rate",
];

fn m(name: &str) -> Expr {
    col("count")
        .filter(col("measure").eq(lit(name)))
        .sum()
        .cast(DataType::Float64)
        .alias(name)
}

/// A non-negative float rounded to a whole number (half up), still as a float.
fn whole(x: Expr) -> Expr {
    (x + lit(0.5)).cast(DataType::Int64).cast(DataType::Float64)
}

fn ratio(a: Expr, b: Expr) -> Expr {
    when(b.clone().gt(lit(0.0)))
        .then(a / b)
        .otherwise(lit(NULL).cast(DataType::Float64))
}

/// Per-replication metrics of groups `keys` (always with arm, level, rate, replication).
fn per_replication(cells: LazyFrame, keys: &[&str], ctx: &Context) -> LazyFrame {
    let t = &ctx.targeting;
    let scale = ctx.scale();
    let group: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    let c = |n: &str| col(n);
    let clicks = |int: &str, oth: &str, unt: Option<&str>| {
        let e = c(int) * lit(t.ctr_relevant) + c(oth) * lit(t.ctr_irrelevant);
        match unt {
            Some(u) => e + c(u) * lit(t.ctr_untargeted),
            None => e,
        }
    };
    let linked_clicks = clicks(
        "impressions_interested_linked",
        "impressions_other_linked",
        Some("impressions_untargeted_linked"),
    );
    let unlinked_clicks = clicks(
        "impressions_interested_unlinked",
        "impressions_other_unlinked",
        Some("impressions_untargeted_unlinked"),
    );
    let linked_imp = c("impressions_interested_linked")
        + c("impressions_other_linked")
        + c("impressions_untargeted_linked");
    let unlinked_imp = c("impressions_interested_unlinked")
        + c("impressions_other_unlinked")
        + c("impressions_untargeted_unlinked");
    // Sum over the other keys first (one hash pass), then spread measures into columns.
    let mut with_measure = group.clone();
    with_measure.push(col("measure"));
    cells
        .group_by_stable(with_measure)
        .agg([col("count").sum()])
        .group_by_stable(group)
        .agg(
            SEGMENT_MEASURES
                .iter()
                .chain(ALL_MEASURES)
                .map(|n| m(n))
                .collect::<Vec<_>>(),
        )
        .with_columns([
            ratio(c("opted_out"), c("users")).alias("achieved_rate"),
            ratio(c("ad_use"), c("users")).alias("share_in_ad_use"),
            ratio(c("true_positive"), c("audience")).alias("precision"),
            ratio(c("true_positive"), c("interested")).alias("recall"),
            ratio(
                lit(2.0) * c("true_positive"),
                c("audience") + c("interested"),
            )
            .alias("f1"),
            ratio(
                linked_clicks.clone() + unlinked_clicks.clone(),
                linked_imp.clone() + unlinked_imp.clone(),
            )
            .alias("ctr"),
            ratio(
                ratio(linked_clicks.clone(), linked_imp.clone()),
                ratio(unlinked_clicks.clone(), unlinked_imp.clone()),
            )
            .alias("value_ratio_linked"),
            ratio(
                ratio(
                    clicks(
                        "impressions_interested_linked",
                        "impressions_other_linked",
                        None,
                    ) + clicks(
                        "impressions_interested_unlinked",
                        "impressions_other_unlinked",
                        None,
                    ),
                    c("impressions_interested_linked")
                        + c("impressions_other_linked")
                        + c("impressions_interested_unlinked")
                        + c("impressions_other_unlinked"),
                ),
                lit(t.ctr_untargeted),
            )
            .alias("value_ratio_targeted"),
            // Whole click units: sums of integer-valued floats are exact in any order.
            whole(linked_clicks + unlinked_clicks).alias("clicks"),
            ratio(
                c("ca_matched_right") + c("ca_matched_wrong"),
                c("ca_uploaded"),
            )
            .alias("ca_match_rate"),
            ratio(c("ca_matched_right"), c("ca_uploaded")).alias("ca_right_rate"),
            ratio(c("ca_matched_wrong"), c("ca_uploaded")).alias("ca_wrong_rate"),
            ratio(
                c("link_true") + c("link_metadata"),
                c("link_true")
                    + c("link_metadata")
                    + c("link_mislink_recycled")
                    + c("link_mislink_shared"),
            )
            .alias("link_precision"),
            ratio(
                c("link_true") + c("link_metadata"),
                c("shared_with_account"),
            )
            .alias("link_recall"),
            (c("shared") * lit(scale)).alias("people_shared"),
            (c("ad_use") * lit(scale)).alias("people_in_ad_use"),
            ((c("link_mislink_recycled") + c("link_mislink_shared")) * lit(scale))
                .alias("people_mislinked"),
            (c("mislink_received") * lit(scale)).alias("accounts_received_foreign"),
            (c("exposure_days") * lit(scale)).alias("exposure_person_days"),
        ])
}

/// Revenue per (arm, level, rate, replication): anchored per region on the `none` arm.
fn revenue(cells: LazyFrame, ctx: &Context) -> PolarsResult<LazyFrame> {
    let regions = df!(
        "country" => ctx.regions.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        "region" => ctx.regions.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        "arpu" => ctx.regions.iter().map(|r| r.2).collect::<Vec<_>>(),
    )?;
    let by_country = per_replication(
        cells,
        &["arm", "level", "rate", "replication", "country"],
        ctx,
    )
    .select([
        col("arm"),
        col("level"),
        col("rate"),
        col("replication"),
        col("country").cast(DataType::String),
        col("clicks"),
        col("accounts"),
    ])
    .join(
        regions.lazy(),
        [col("country")],
        [col("country")],
        join_args(JoinType::Inner),
    )
    .group_by_stable([
        col("arm"),
        col("level"),
        col("rate"),
        col("replication"),
        col("region"),
    ])
    .agg([
        col("clicks").sum(),
        col("accounts").sum(),
        col("arpu").first(),
    ]);
    let none = by_country
        .clone()
        .filter(col("arm").eq(lit(ctx.none_arm.as_str())))
        .select([
            col("replication"),
            col("region"),
            col("clicks").alias("clicks_none"),
            col("accounts").alias("accounts_none"),
        ]);
    let anchor = lit(ctx.revenue.ad_share() * ctx.scale());
    Ok(by_country
        .join(
            none,
            [col("replication"), col("region")],
            [col("replication"), col("region")],
            join_args(JoinType::Inner),
        )
        .with_columns([
            // Whole dollars per region (named in $M after the sum): the sum over regions is exact.
            whole(
                col("arpu")
                    * col("accounts_none")
                    * anchor.clone()
                    * ratio(col("clicks"), col("clicks_none")).fill_null(lit(1.0)),
            )
            .alias("revenue_musd"),
            whole(col("arpu") * col("accounts_none") * anchor).alias("revenue_none_musd"),
        ])
        .group_by_stable([col("arm"), col("level"), col("rate"), col("replication")])
        .agg([
            col("revenue_musd").sum() / lit(1e6),
            col("revenue_none_musd").sum() / lit(1e6),
        ])
        .with_columns([
            (col("revenue_musd") - col("revenue_none_musd")).alias("revenue_change_musd"),
            ((col("revenue_musd") - col("revenue_none_musd")) / lit(ctx.revenue.s_ad_revenue_musd))
                .alias("revenue_change_share"),
        ])
        .select([
            col("arm"),
            col("level"),
            col("rate"),
            col("replication"),
            col("revenue_musd"),
            col("revenue_change_musd"),
            col("revenue_change_share"),
        ]))
}

/// k-anonymity per (arm, level, rate, replication): the smallest non-empty audience cell.
fn anonymity(cells: LazyFrame, ctx: &Context) -> LazyFrame {
    let people = (col("count").cast(DataType::Float64) * lit(ctx.scale())).alias("people");
    cells
        .filter(col("measure").eq(lit("audience")))
        .select([
            col("arm"),
            col("level"),
            col("rate"),
            col("replication"),
            people,
        ])
        .group_by_stable([col("arm"), col("level"), col("rate"), col("replication")])
        .agg([
            col("people").min().alias("min_audience_cell"),
            col("people")
                .lt(lit(ctx.k_anonymity))
                .cast(DataType::Float64)
                .sum()
                .alias("cells_under_k"),
        ])
}

/// Student's t quantile at 0.975 with `df` degrees of freedom.
pub fn t975(df: u32) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df as usize - 1],
        31..=60 => 2.042 - (f64::from(df) - 30.0) * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (f64::from(df) - 60.0) * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

/// Mean and interval across replications of every metric in `names`, per group `keys`.
fn across_replications(
    per_rep: LazyFrame,
    keys: &[&str],
    names: &[String],
    replications: u32,
) -> LazyFrame {
    let mut aggs: Vec<Expr> = Vec::new();
    for n in names {
        aggs.push(col(n.as_str()).mean().alias(n.as_str()));
        // Sum of squared deviations from the group mean, written out: polars' own std kernel
        // can differ in the last bit between runs, and identical values must give exactly 0.
        let dev = col(n.as_str()) - col(n.as_str()).mean();
        let var = (dev.clone() * dev).sum() / lit(f64::from(replications.saturating_sub(1).max(1)));
        aggs.push(var.sqrt().alias(format!("{n}_sd")));
    }
    let half = t975(replications.saturating_sub(1)) / f64::from(replications).sqrt();
    let mut bounds: Vec<Expr> = Vec::new();
    let mut order: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    for n in names {
        let sd = col(format!("{n}_sd"));
        let (lo, hi) = if replications > 1 {
            (
                col(n.as_str()) - sd.clone() * lit(half),
                col(n.as_str()) + sd * lit(half),
            )
        } else {
            (
                lit(NULL).cast(DataType::Float64),
                lit(NULL).cast(DataType::Float64),
            )
        };
        bounds.push(lo.alias(format!("{n}_lo")));
        bounds.push(hi.alias(format!("{n}_hi")));
        order.push(col(n.as_str()));
        order.push(col(format!("{n}_lo")));
        order.push(col(format!("{n}_hi")));
    }
    // A fixed row order, so that each group's values are added in the same order every run.
    let mut by: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    by.push(col("replication"));
    per_rep
        .sort_by_exprs(by, SortMultipleOptions::default())
        .group_by_stable(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
        .agg(aggs)
        .with_columns(bounds)
        .select(order)
        .sort_by_exprs(
            keys.iter().map(|k| col(*k)).collect::<Vec<_>>(),
            SortMultipleOptions::default(),
        )
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
}

/// Derives the summary, segment, country and timeline tables from the count tables.
pub fn estimate(
    cells: &DataFrame,
    timeline_cells: &DataFrame,
    ctx: &Context,
) -> PolarsResult<Estimates> {
    let keys = ["arm", "level", "rate", "replication"];
    // One pass over the full table drops the age bands; every table but k-anonymity reads
    // the result, which is several times smaller.
    let full = cells.clone().lazy();
    let lf = full
        .clone()
        .group_by_stable([
            col("arm"),
            col("level"),
            col("rate"),
            col("replication"),
            col("country"),
            col("segment"),
            col("measure"),
        ])
        .agg([col("count").sum()])
        .collect()?
        .lazy();
    let per_rep = per_replication(lf.clone(), &keys, ctx)
        .join(
            revenue(lf.clone(), ctx)?,
            key_cols(&keys),
            key_cols(&keys),
            join_args(JoinType::Left),
        )
        .join(
            anonymity(full, ctx),
            key_cols(&keys),
            key_cols(&keys),
            join_args(JoinType::Left),
        );
    // Paired differences against none, within each replication.
    let none = per_rep
        .clone()
        .filter(col("arm").eq(lit(ctx.none_arm.as_str())))
        .select(
            std::iter::once(col("replication"))
                .chain(PAIRED.iter().map(|p| col(*p).alias(format!("{p}_none"))))
                .collect::<Vec<_>>(),
        );
    let per_rep = per_rep
        .join(
            none,
            [col("replication")],
            [col("replication")],
            join_args(JoinType::Left),
        )
        .with_columns(
            PAIRED
                .iter()
                .flat_map(|p| {
                    [
                        (col(*p) - col(format!("{p}_none"))).alias(format!("{p}_vs_none")),
                        ratio(col(*p), col(format!("{p}_none"))).alias(format!("{p}_lift")),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    let names = summary_metric_names();
    let summary = across_replications(per_rep, &keys[..3], &names, ctx.replications).collect()?;

    let seg_names: Vec<String> = [
        "precision",
        "recall",
        "f1",
        "ctr",
        "ca_match_rate",
        "ca_right_rate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let seg_keys = ["arm", "level", "rate", "replication", "segment"];
    let segments = across_replications(
        per_replication(
            lf.clone().filter(col("segment").neq(lit("all"))),
            &seg_keys,
            ctx,
        ),
        &["arm", "level", "rate", "segment"],
        &seg_names,
        ctx.replications,
    )
    .collect()?;
    let country_names: Vec<String> = [
        "achieved_rate",
        "share_in_ad_use",
        "precision",
        "recall",
        "ctr",
        "ca_match_rate",
        "link_precision",
        "link_recall",
        "people_mislinked",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let country_keys = ["arm", "level", "rate", "replication", "country"];
    let countries = across_replications(
        per_replication(lf, &country_keys, ctx),
        &["arm", "level", "rate", "country"],
        &country_names,
        ctx.replications,
    )
    .collect()?;
    let timeline = across_replications(
        timeline_cells
            .clone()
            .lazy()
            .with_columns([
                (col("count").cast(DataType::Float64) * lit(ctx.scale())).alias("people")
            ]),
        &["arm", "level", "rate", "day", "channel"],
        &["people".to_string()],
        ctx.replications,
    )
    .collect()?;
    Ok(Estimates {
        summary,
        segments,
        countries,
        timeline,
    })
}

/// Join arguments that keep the left frame's row order, so that later float sums add in a
/// fixed order and results are identical from run to run.
fn join_args(how: JoinType) -> JoinArgs {
    let mut args = JoinArgs::new(how);
    args.maintain_order = MaintainOrderJoin::Left;
    args
}

/// Every metric column of the summary table, in order (each with `_lo` and `_hi`).
pub fn summary_metric_names() -> Vec<String> {
    let mut names: Vec<String> = METRICS.iter().map(|(n, _)| n.to_string()).collect();
    for p in PAIRED {
        names.push(format!("{p}_vs_none"));
        names.push(format!("{p}_lift"));
    }
    names
}

fn key_cols(keys: &[&str]) -> Vec<Expr> {
    keys.iter().map(|k| col(*k)).collect()
}
