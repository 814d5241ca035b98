//! The demand side fed from a run's counts (docs/model.md §17.5): per S region, a market per
//! segment for its interest campaigns, one per segment for its Custom Audience campaigns and a
//! run-of-network market for untargeted ads, each with advertisers in two tiers (large and
//! small) whose budgets are set on the `none` arm and held (or moved by their return, with an
//! elasticity) in the other arms. Every class of impressions of a market is open to all its
//! advertisers with one predicted CTR, so the market clears as one ([`crate::market::Pooled`]):
//! what M's data changes is which market an impression is sold in and how many clicks it
//! makes, and the budgets decide how much of that reaches S's revenue.

use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cells::{All, Counts, Layout, Names, Seg};
use crate::ensure;
use crate::error::Result;
use crate::market::{Pooled, PooledOutcome, Tier};
use crate::metrics::Context;

/// `[market]`: the advertisers of each market and how they bid (docs/model.md §17.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// Advertisers competing for a segment's interest-targeted impressions in one S region.
    pub bidders_interest: u32,
    /// Businesses competing with customer lists (Custom Audiences) in a segment and region.
    pub bidders_custom_audience: u32,
    /// Advertisers competing for untargeted (run-of-network) impressions in a region.
    pub bidders_run_of_network: u32,
    /// Share of a market's budgets held by its large advertisers (the largest fifth of them).
    pub large_budget_share: f64,
    /// Value of a click above its published price: an advertiser's value per click is the
    /// segment's cost per click times one plus this.
    pub margin: f64,
    /// Scale of the log-Gumbel spread of an advertiser's value from auction to auction.
    pub spread: f64,
    /// The reserve per click, as a share of the market's value per click.
    pub reserve_share: f64,
    /// A market's budgets over what its advertisers would spend unpaced in the `none` arm.
    pub budget_ratio: f64,
    /// Elasticity of an advertiser's budget to its return (value over spend) against the
    /// `none` arm's: 0 holds budgets fixed over the horizon.
    pub budget_elasticity: f64,
    /// Which pricing the headline revenue change reads (docs/model.md §17.7): the auctions
    /// (`market_revenue_change_musd`) or the fixed price per click (`revenue_change_musd`).
    /// Both are computed and written in either case.
    pub pricing: Pricing,
}

/// How the headline revenue change is priced (docs/model.md §17.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pricing {
    /// Prices from the advertisers' auctions (§17.5).
    #[default]
    Auction,
    /// A fixed value per click per segment (§8).
    Fixed,
}

impl Pricing {
    /// The summary column of the headline revenue change, and of the other pricing's.
    pub fn columns(self) -> [&'static str; 2] {
        match self {
            Pricing::Auction => ["market_revenue_change_musd", "revenue_change_musd"],
            Pricing::Fixed => ["revenue_change_musd", "market_revenue_change_musd"],
        }
    }

    /// How the headline and the other revenue change are labelled in tables.
    pub fn labels(self) -> [&'static str; 2] {
        match self {
            Pricing::Auction => ["with auctions", "at fixed prices"],
            Pricing::Fixed => ["at fixed prices", "with auctions"],
        }
    }
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            bidders_interest: 8,
            bidders_custom_audience: 3,
            bidders_run_of_network: 20,
            large_budget_share: 0.5,
            margin: 0.5,
            spread: 0.3,
            reserve_share: 0.05,
            budget_ratio: 1.0,
            budget_elasticity: 0.0,
            pricing: Pricing::Auction,
        }
    }
}

impl MarketConfig {
    /// Checks the section.
    pub fn validate(&self, file: &str) -> Result<()> {
        for (k, v) in [
            ("bidders_interest", self.bidders_interest),
            ("bidders_custom_audience", self.bidders_custom_audience),
            ("bidders_run_of_network", self.bidders_run_of_network),
        ] {
            ensure!(
                (1..=1000).contains(&v),
                file,
                format!("market.{k}"),
                v,
                "an integer from 1 to 1000"
            );
        }
        for (k, v, lo, hi, what) in [
            (
                "large_budget_share",
                self.large_budget_share,
                0.0,
                1.0,
                "a share from 0 to 1",
            ),
            ("margin", self.margin, 0.0, 100.0, "a number from 0 to 100"),
            (
                "reserve_share",
                self.reserve_share,
                0.0,
                1.0,
                "a share from 0 to 1",
            ),
            (
                "budget_elasticity",
                self.budget_elasticity,
                0.0,
                5.0,
                "a number from 0 to 5",
            ),
        ] {
            ensure!(
                v.is_finite() && (lo..=hi).contains(&v),
                file,
                format!("market.{k}"),
                v,
                what
            );
        }
        ensure!(
            self.spread.is_finite() && (0.02..=0.9).contains(&self.spread),
            file,
            "market.spread",
            self.spread,
            "a number from 0.02 to 0.9 (the expected payment is finite below 1)"
        );
        ensure!(
            self.budget_ratio.is_finite() && self.budget_ratio > 0.0 && self.budget_ratio <= 100.0,
            file,
            "market.budget_ratio",
            self.budget_ratio,
            "a number above 0, at most 100"
        );
        Ok(())
    }

    /// The large and small advertisers of a market of `n`: the largest fifth (at least one)
    /// and the rest.
    fn sizes(n: u32) -> [u32; 2] {
        let large = n.div_ceil(5).max(1).min(n);
        [large, n - large]
    }
}

/// Advertiser sizes, as labelled in the market table.
pub const SIZES: [&str; 2] = ["large", "small"];
/// The label of rows summing both sizes.
pub const ALL_SIZES: &str = "all";

/// The kinds of market of a region, as labelled in docs/model.md §17.5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Interest,
    CustomAudience,
    RunOfNetwork,
}

/// What a region's counts put on sale in one market, in one arm and level.
#[derive(Clone, Copy, Debug, Default)]
struct Supply {
    /// Expected clicks of impressions on accounts with M's data in use, and without.
    clicks: [f64; 2],
    /// Impression units, with M's data in use and without.
    impressions: [f64; 2],
    /// Expected clicks by people interested in the segment or the business's customers.
    relevant: f64,
}

impl Supply {
    fn total_clicks(&self) -> f64 {
        self.clicks[0] + self.clicks[1]
    }
}

/// One market's outcome in one arm and level: per size, summed over its advertisers.
#[derive(Clone, Copy, Debug, Default)]
struct Cleared {
    spend: [f64; 2],
    value: [f64; 2],
    clicks: [f64; 2],
    /// Advertisers paced below 1, and all of them.
    paced: [f64; 2],
    advertisers: [f64; 2],
    /// Share of the market's clicks sold.
    sold: f64,
}

/// The per-replication market tables: summary columns per (arm, level), and rows per (arm,
/// level, region, size).
pub struct MarketTables {
    /// `arm`, `level` and the `market_*` columns of [`SUMMARY_METRICS`].
    pub summary: DataFrame,
    /// `arm`, `level`, `rate`, `region`, `size` and the columns of [`TABLE_METRICS`].
    pub rows: DataFrame,
}

/// The summary's market columns and what each is.
pub const SUMMARY_METRICS: &[(&str, &str)] = &[
    (
        "market_revenue_musd",
        "S's ad revenue from M users' accounts when prices come from the auctions (docs/model.md §17), $M over the horizon; the none arm's equals revenue_musd",
    ),
    (
        "market_revenue_change_musd",
        "market_revenue_musd minus the none arm's, paired by replication",
    ),
    (
        "market_surplus_musd",
        "advertisers' value of their clicks minus their spend, $M over the horizon (anchored as revenue)",
    ),
    (
        "market_surplus_change_musd",
        "market_surplus_musd minus the none arm's, paired by replication",
    ),
    (
        "market_price_per_click_usd",
        "average price of a click sold, dollars at the segments' published cost per click",
    ),
    (
        "market_cpm_usd",
        "price per 1000 impressions sold, all campaigns, dollars",
    ),
    (
        "market_cpm_targeted_usd",
        "price per 1000 impressions of interest and Custom Audience campaigns, dollars",
    ),
    (
        "market_cpm_untargeted_usd",
        "price per 1000 untargeted (run-of-network) impressions, dollars",
    ),
    (
        "market_targeted_price_ratio",
        "market_cpm_targeted_usd / market_cpm_untargeted_usd (Beales 2010: 2.68 unweighted, about 2.08 weighted)",
    ),
    (
        "market_cpm_linked_usd",
        "price per 1000 impressions on accounts with M data in ad use, dollars",
    ),
    (
        "market_cpm_unlinked_usd",
        "price per 1000 impressions on accounts without M data in ad use, dollars",
    ),
    (
        "market_unlinked_price_ratio",
        "market_cpm_unlinked_usd / market_cpm_linked_usd (Johnson, Shriver and Du 2020: opted-out impressions 52% cheaper, 0.48)",
    ),
    (
        "market_cost_per_customer_usd",
        "targeted spend per click by an interested person or the business's customer, dollars",
    ),
    (
        "market_paced_share",
        "share of advertisers whose budget binds (paced below 1)",
    ),
];

/// The market table's columns and what each is.
pub const TABLE_METRICS: &[(&str, &str)] = &[
    ("spend_musd", "advertisers' spend, $M over the horizon"),
    (
        "value_musd",
        "what their clicks are worth to them, $M over the horizon",
    ),
    ("surplus_musd", "value_musd minus spend_musd"),
    (
        "clicks_m",
        "clicks bought, millions over the horizon (spend_musd over price_per_click_usd)",
    ),
    (
        "customers_reached_m",
        "clicks by interested people or the businesses' customers on targeted campaigns, millions over the horizon",
    ),
    (
        "price_per_click_usd",
        "spend per click, dollars at the published cost per click",
    ),
    (
        "cost_per_customer_usd",
        "targeted spend per click by an interested person or the business's customer, dollars",
    ),
    ("paced_share", "share of the advertisers whose budget binds"),
    (
        "spend_change_musd",
        "spend_musd minus the none arm's (same region and size), paired by replication",
    ),
    (
        "surplus_change_musd",
        "surplus_musd minus the none arm's (same region and size), paired by replication",
    ),
];

/// Tolerance of pacing: a paced advertiser spends its budget to this share.
const PACING_TOLERANCE: f64 = 1e-6;
/// Rounds of pacing at most.
const PACING_ROUNDS: usize = 400;
/// Rounds of the budgets' response to return at most.
const ELASTICITY_ROUNDS: usize = 40;

/// Clears one replication's markets (docs/model.md §17.5). `anchor[r]` is region `r`'s
/// advertising revenue over the horizon from the `none` arm's accounts, dollars at full scale:
/// the `none` arm's spend in the region is scaled to it, and every arm's by the same factor.
pub fn clear(
    names: &Names,
    layout: &Layout,
    counts: &Counts,
    ctx: &Context,
    anchor: &[f64],
) -> PolarsResult<MarketTables> {
    let cfg = &ctx.market;
    let t = &ctx.targeting;
    let segments = layout.segments;
    let kinds: Vec<(Kind, usize)> = (0..segments)
        .map(|s| (Kind::Interest, s))
        .chain((0..segments).map(|s| (Kind::CustomAudience, s)))
        .chain([(Kind::RunOfNetwork, 0)])
        .collect();
    let region_of: Vec<usize> = ctx
        .regions
        .iter()
        .map(|(_, r, _)| names.regions.iter().position(|n| n == r).unwrap_or(0))
        .collect();
    let cells: Vec<(usize, usize)> = (0..layout.levels.len())
        .flat_map(|a| (0..layout.levels[a]).map(move |k| (a, k)))
        .collect();
    let measures = layout.measures();
    // supply[cell][region * kinds + market]
    let per = layout.regions * kinds.len();
    let mut supply = vec![vec![Supply::default(); per]; cells.len()];
    // A cell no user fell in adds +0.0 to every sum, which leaves it as it is: skipped.
    let touched = counts.touched_cells(layout);
    for (i, &(a, k)) in cells.iter().enumerate() {
        let values = counts.level(layout, a, k);
        for &x in &touched {
            let (c, g) = (x / layout.ages, x % layout.ages);
            let r = region_of.get(c).copied().unwrap_or(0);
            let at = layout.cell(c, g);
            let cell = &values[at..at + measures];
            let v = |s: usize, m: Seg| cell[layout.seg(s, m)] as f64;
            // A segment with no count adds +0.0 to every sum, too.
            let zero = |s: usize| {
                cell[s * Seg::COUNT..(s + 1) * Seg::COUNT]
                    .iter()
                    .all(|&x| x == 0)
            };
            for s in (0..segments).filter(|&s| !zero(s)) {
                let q = &mut supply[i][r * kinds.len() + s];
                let (il, ol) = (v(s, Seg::ImpInterestedLinked), v(s, Seg::ImpOtherLinked));
                let (iu, ou) = (
                    v(s, Seg::ImpInterestedUnlinked),
                    v(s, Seg::ImpOtherUnlinked),
                );
                q.clicks[0] += il * t.ctr_relevant + ol * t.ctr_irrelevant;
                q.clicks[1] += iu * t.ctr_relevant + ou * t.ctr_irrelevant;
                q.impressions[0] += il + ol;
                q.impressions[1] += iu + ou;
                q.relevant += (il + iu) * t.ctr_relevant;
                let q = &mut supply[i][r * kinds.len() + segments + s];
                let linked = [
                    Seg::CaImpCustomerLinked,
                    Seg::CaImpInterestedLinked,
                    Seg::CaImpOtherLinked,
                ];
                let unlinked = [
                    Seg::CaImpCustomerUnlinked,
                    Seg::CaImpInterestedUnlinked,
                    Seg::CaImpOtherUnlinked,
                ];
                let ctrs = [t.ctr_customer, t.ctr_relevant, t.ctr_irrelevant];
                for (side, list) in [linked, unlinked].iter().enumerate() {
                    for (m, ctr) in list.iter().zip(ctrs) {
                        q.clicks[side] += v(s, *m) * ctr;
                        q.impressions[side] += v(s, *m);
                    }
                    q.relevant += v(s, list[0]) * t.ctr_customer + v(s, list[1]) * t.ctr_relevant;
                }
            }
            let q = &mut supply[i][r * kinds.len() + 2 * segments];
            let (l, u) = (
                cell[layout.all(All::ImpUntargetedLinked)] as f64,
                cell[layout.all(All::ImpUntargetedUnlinked)] as f64,
            );
            q.clicks[0] += l * t.ctr_untargeted;
            q.clicks[1] += u * t.ctr_untargeted;
            q.impressions[0] += l;
            q.impressions[1] += u;
        }
    }
    let none = cells
        .iter()
        .position(|&(a, _)| names.is_none[a])
        .unwrap_or(0);
    let value_of = |kind: Kind, s: usize| {
        let cpc = match kind {
            Kind::RunOfNetwork => ctx.revenue.cost_per_click_usd,
            _ => ctx
                .cpc
                .get(s)
                .copied()
                .unwrap_or(ctx.revenue.cost_per_click_usd),
        };
        cpc * (1.0 + cfg.margin)
    };
    // Each (region, market) clears every arm and level in order, independently of the
    // others: the result does not depend on how rayon splits them.
    let cleared: Vec<Vec<Cleared>> = (0..per)
        .into_par_iter()
        .map(|j| {
            let (kind, s) = kinds[j % kinds.len()];
            let n = match kind {
                Kind::Interest => cfg.bidders_interest,
                Kind::CustomAudience => cfg.bidders_custom_audience,
                Kind::RunOfNetwork => cfg.bidders_run_of_network,
            };
            let column: Vec<Supply> = supply.iter().map(|row| row[j]).collect();
            clear_market(cfg, n, value_of(kind, s), &column, none)
        })
        .collect();
    tables(
        names,
        &cells,
        &kinds,
        &supply,
        &cleared,
        anchor,
        none,
        layout.regions,
    )
}

/// One market over every arm and level: budgets from the `none` arm's unpaced spend, then
/// each arm and level paced to them (moved by their return with an elasticity).
fn clear_market(
    cfg: &MarketConfig,
    n: u32,
    value_per_click: f64,
    supply: &[Supply],
    none: usize,
) -> Vec<Cleared> {
    let sizes = MarketConfig::sizes(n);
    let tiers: Vec<Tier> = sizes
        .iter()
        .filter(|&&c| c > 0)
        .map(|&count| Tier {
            count,
            value_per_click,
            budget: f64::INFINITY,
        })
        .collect();
    let mut market = Pooled {
        tiers,
        clicks: supply[none].total_clicks(),
        reserve: cfg.reserve_share * value_per_click,
        spread: cfg.spread,
    };
    let unpaced = market.clear(&vec![1.0; market.tiers.len()]);
    let total = unpaced.revenue(&market.tiers) * cfg.budget_ratio;
    let shares = if market.tiers.len() == 2 {
        vec![cfg.large_budget_share, 1.0 - cfg.large_budget_share]
    } else {
        vec![1.0]
    };
    let base: Vec<f64> = market
        .tiers
        .iter()
        .zip(&shares)
        .map(|(t, sh)| total * sh / f64::from(t.count))
        .collect();
    for (t, b) in market.tiers.iter_mut().zip(&base) {
        t.budget = *b;
    }
    let start = vec![1.0; market.tiers.len()];
    let (alpha0, out0, _) = market.pace(&start, PACING_TOLERANCE, PACING_ROUNDS);
    let return0: Vec<f64> = (0..market.tiers.len())
        .map(|k| ratio(out0.value[k], out0.spend[k]))
        .collect();
    // An arm and level's outcome depends on its supply only through its clicks: levels and
    // arms with the clicks of one solved before take its outcome (at a few users, most).
    let mut solved_at: std::collections::HashMap<u64, Cleared> = Default::default();
    supply
        .iter()
        .enumerate()
        .map(|(i, q)| {
            if i == none {
                return summarize(&market, &alpha0, &out0);
            }
            market.clicks = q.total_clicks();
            if let Some(c) = solved_at.get(&market.clicks.to_bits()) {
                return *c;
            }
            let mut budgets = base.clone();
            let mut solved = (
                alpha0.clone(),
                PooledOutcome::default_for(market.tiers.len()),
            );
            for round in 0..ELASTICITY_ROUNDS.max(1) {
                for (t, b) in market.tiers.iter_mut().zip(&budgets) {
                    t.budget = *b;
                }
                let (alpha, out, _) = market.pace(&solved.0, PACING_TOLERANCE, PACING_ROUNDS);
                solved = (alpha, out);
                if cfg.budget_elasticity == 0.0 || round + 1 == ELASTICITY_ROUNDS {
                    break;
                }
                let next: Vec<f64> = (0..budgets.len())
                    .map(|k| {
                        let r = ratio(solved.1.value[k], solved.1.spend[k]);
                        if return0[k] > 0.0 && r > 0.0 {
                            base[k] * (r / return0[k]).powf(cfg.budget_elasticity)
                        } else {
                            base[k]
                        }
                    })
                    .collect();
                let moved = next
                    .iter()
                    .zip(&budgets)
                    .map(|(a, b)| (a - b).abs() / b.max(1e-300))
                    .fold(0.0, f64::max);
                budgets = next;
                if moved < 1e-9 {
                    break;
                }
            }
            let c = summarize(&market, &solved.0, &solved.1);
            solved_at.insert(market.clicks.to_bits(), c);
            c
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A market's outcome per size (large first; a market of one advertiser has no small ones).
fn summarize(market: &Pooled, alpha: &[f64], out: &PooledOutcome) -> Cleared {
    let mut c = Cleared::default();
    for (k, t) in market.tiers.iter().enumerate() {
        let n = f64::from(t.count);
        c.spend[k] = out.spend[k] * n;
        c.value[k] = out.value[k] * n;
        c.clicks[k] = out.clicks[k] * n;
        c.paced[k] = if alpha[k] < 1.0 { n } else { 0.0 };
        c.advertisers[k] = n;
    }
    c.sold = if market.clicks > 0.0 {
        1.0 - out.unsold / market.clicks
    } else {
        0.0
    };
    c
}

impl PooledOutcome {
    fn default_for(n: usize) -> Self {
        PooledOutcome {
            spend: vec![0.0; n],
            clicks: vec![0.0; n],
            value: vec![0.0; n],
            unsold: 0.0,
        }
    }
}

/// Sums over markets of one (arm, level), region and size.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    /// Spend and value at full scale, dollars.
    spend_usd: f64,
    value_usd: f64,
    /// Spend in auction dollars of the simulated population, and the clicks it bought.
    spend: f64,
    clicks: f64,
    /// Clicks, and clicks by interested people or customers, at the scale of `spend_usd`.
    clicks_full: f64,
    relevant_full: f64,
    /// Spend on targeted campaigns (auction dollars) and the clicks of interested people or
    /// customers it bought.
    targeted_spend: f64,
    relevant: f64,
    /// Advertisers paced below 1, and all advertisers.
    paced: f64,
    advertisers: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.spend_usd += o.spend_usd;
        self.value_usd += o.value_usd;
        self.spend += o.spend;
        self.clicks += o.clicks;
        self.clicks_full += o.clicks_full;
        self.relevant_full += o.relevant_full;
        self.targeted_spend += o.targeted_spend;
        self.relevant += o.relevant;
        self.paced += o.paced;
        self.advertisers += o.advertisers;
    }

    /// The values of [`TABLE_METRICS`] but the changes against `none`.
    fn metrics(&self) -> [Option<f64>; 8] {
        let per = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        [
            Some(self.spend_usd / 1e6),
            Some(self.value_usd / 1e6),
            Some((self.value_usd - self.spend_usd) / 1e6),
            Some(self.clicks_full / 1e6),
            Some(self.relevant_full / 1e6),
            per(self.spend, self.clicks),
            per(self.targeted_spend, self.relevant),
            per(self.paced, self.advertisers),
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn tables(
    names: &Names,
    cells: &[(usize, usize)],
    kinds: &[(Kind, usize)],
    supply: &[Vec<Supply>],
    cleared: &[Vec<Cleared>],
    anchor: &[f64],
    none: usize,
    regions: usize,
) -> PolarsResult<MarketTables> {
    let nk = kinds.len();
    // The none arm's spend per region (auction dollars of the simulated population) makes
    // each region's factor to full-scale dollars.
    let factor: Vec<f64> = (0..regions)
        .map(|r| {
            let spend: f64 = (0..nk)
                .map(|m| cleared[r * nk + m][none].spend.iter().sum::<f64>())
                .sum();
            let a = anchor.get(r).copied().unwrap_or(0.0);
            if spend > 0.0 { a / spend } else { 0.0 }
        })
        .collect();
    let mut region_labels: Vec<&str> = names.regions.iter().map(String::as_str).collect();
    region_labels.push(crate::metrics::ALL_REGIONS);
    let (mut t_arm, mut t_level, mut t_rate, mut t_region, mut t_size) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut t_cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); TABLE_METRICS.len()];
    let mut s_cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); SUMMARY_METRICS.len()];
    let (mut s_arm, mut s_level) = (Vec::new(), Vec::new());
    for (i, &(a, k)) in cells.iter().enumerate() {
        // [region (last: all)][size (last: all)]
        let mut sums = vec![[Sums::default(); 3]; regions + 1];
        // Prices: spend and impressions sold, [targeted, untargeted] and [linked, unlinked].
        let (mut kind_spend, mut kind_imps) = ([0.0; 2], [0.0; 2]);
        let (mut side_spend, mut side_imps) = ([0.0; 2], [0.0; 2]);
        for r in 0..regions {
            for (m, &(kind, _)) in kinds.iter().enumerate() {
                let c = &cleared[r * nk + m][i];
                let q = &supply[i][r * nk + m];
                let spend: f64 = c.spend.iter().sum();
                let clicks = q.total_clicks();
                let targeted = kind != Kind::RunOfNetwork;
                let which = usize::from(!targeted);
                kind_spend[which] += spend;
                kind_imps[which] += (q.impressions[0] + q.impressions[1]) * c.sold;
                for side in 0..2 {
                    side_spend[side] += spend * ratio(q.clicks[side], clicks);
                    side_imps[side] += q.impressions[side] * c.sold;
                }
                let relevant_share = ratio(q.relevant, clicks);
                for z in 0..2 {
                    let part = Sums {
                        spend_usd: c.spend[z] * factor[r],
                        value_usd: c.value[z] * factor[r],
                        spend: c.spend[z],
                        clicks: c.clicks[z],
                        // Spend over the price per click: the clicks at the scale of the
                        // anchored spend.
                        clicks_full: c.clicks[z] * factor[r],
                        relevant_full: if targeted {
                            c.clicks[z] * relevant_share * factor[r]
                        } else {
                            0.0
                        },
                        targeted_spend: if targeted { c.spend[z] } else { 0.0 },
                        relevant: if targeted {
                            c.clicks[z] * relevant_share
                        } else {
                            0.0
                        },
                        paced: c.paced[z],
                        advertisers: c.advertisers[z],
                    };
                    sums[r][z].add(&part);
                    sums[r][2].add(&part);
                    sums[regions][z].add(&part);
                    sums[regions][2].add(&part);
                }
            }
        }
        for (r, label) in region_labels.iter().enumerate() {
            for (z, size) in SIZES.iter().chain([&ALL_SIZES]).enumerate() {
                t_arm.push(names.arms[a].as_str());
                t_level.push(k as u32);
                t_rate.push(names.rates[a][k]);
                t_region.push(*label);
                t_size.push(*size);
                for (col, v) in t_cols.iter_mut().zip(sums[r][z].metrics()) {
                    col.push(v);
                }
                t_cols[8].push(None);
                t_cols[9].push(None);
            }
        }
        let all = &sums[regions][2];
        let per = |x: f64, y: f64| (y > 0.0).then(|| x / y);
        let cpm = |spend: f64, imps: f64| per(1000.0 * spend, imps);
        let (targeted, untargeted) = (
            cpm(kind_spend[0], kind_imps[0]),
            cpm(kind_spend[1], kind_imps[1]),
        );
        let (linked, unlinked) = (
            cpm(side_spend[0], side_imps[0]),
            cpm(side_spend[1], side_imps[1]),
        );
        let values = [
            Some(all.spend_usd / 1e6),
            None,
            Some((all.value_usd - all.spend_usd) / 1e6),
            None,
            per(all.spend, all.clicks),
            cpm(kind_spend[0] + kind_spend[1], kind_imps[0] + kind_imps[1]),
            targeted,
            untargeted,
            targeted.zip(untargeted).and_then(|(x, y)| per(x, y)),
            linked,
            unlinked,
            unlinked.zip(linked).and_then(|(x, y)| per(x, y)),
            per(all.targeted_spend, all.relevant),
            per(all.paced, all.advertisers),
        ];
        for (col, v) in s_cols.iter_mut().zip(values) {
            col.push(v);
        }
        s_arm.push(names.arms[a].as_str());
        s_level.push(k as u32);
    }
    // The changes against the none arm, within the replication: in the table, against the
    // none arm's row of the same region and size (rows run cell by cell, each of
    // (regions + 1) x 3).
    let per_cell = (regions + 1) * 3;
    for (change, level) in [(8, 0), (9, 2)] {
        let base: Vec<Option<f64>> = t_cols[level][none * per_cell..(none + 1) * per_cell].to_vec();
        t_cols[change] = t_cols[level]
            .iter()
            .enumerate()
            .map(|(i, v)| v.zip(base[i % per_cell]).map(|(x, b)| x - b))
            .collect();
    }
    // The changes against the none arm, within the replication.
    for (change, level) in [(1, 0), (3, 2)] {
        let base = s_cols[level][none];
        s_cols[change] = s_cols[level]
            .iter()
            .map(|v| v.zip(base).map(|(x, b)| x - b))
            .collect();
    }
    let n = s_arm.len();
    let mut columns = vec![
        StringChunked::from_iter_values("arm".into(), s_arm.into_iter()).into_column(),
        Series::from_vec("level".into(), s_level).into_column(),
    ];
    for ((name, _), v) in SUMMARY_METRICS.iter().zip(s_cols) {
        columns.push(Column::new((*name).into(), v));
    }
    let summary = DataFrame::new(n, columns)?;
    let n = t_arm.len();
    let mut columns = vec![
        StringChunked::from_iter_values("arm".into(), t_arm.into_iter()).into_column(),
        Series::from_vec("level".into(), t_level).into_column(),
        Series::from_vec("rate".into(), t_rate).into_column(),
        StringChunked::from_iter_values("region".into(), t_region.into_iter()).into_column(),
        StringChunked::from_iter_values("size".into(), t_size.into_iter()).into_column(),
    ];
    for ((name, _), v) in TABLE_METRICS.iter().zip(t_cols) {
        columns.push(Column::new((*name).into(), v));
    }
    Ok(MarketTables {
        summary,
        rows: DataFrame::new(n, columns)?,
    })
}
