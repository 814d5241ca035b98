//! Revenue (docs/model.md §8): expected clicks times each segment's value per click, anchored
//! per S region.
//!
//! One factor per region, replication and day makes the `none` arm, scaled from N simulated
//! users to M's real user count, equal the published ARPU of the quarter each day falls in
//! (Q3 and Q4 2016; Q2 2016 under `anchor = "q2_2016"`) times those S accounts, times the
//! advertising share of revenue (ARPU includes payments). Other arms and rates move it in
//! proportion to the sum of clicks times value per click (the segment's `cpc_usd`, or
//! `cost_per_click_usd` for untargeted clicks). S's revenue from people who are not
//! on M does not change with sharing. The computation itself is in [`crate::metrics`].

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;
use crate::targeting::TargetingConfig;

/// Which quarters' figures price the horizon's days (docs/model.md §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Every day at the ARPU and advertising share of the quarter each falls in, day 0 being
    /// 25 August 2016: Q3 2016 to day 36 (30 September), Q4 2016 from day 37 to day 128
    /// (31 December). A horizon of at most 129 days.
    #[default]
    #[serde(rename = "calendar_2016")]
    Calendar2016,
    /// The whole horizon at Q2 2016's ARPU and advertising share (`s_ad_revenue_musd`,
    /// `s_total_revenue_musd`): the anchoring of earlier versions.
    #[serde(rename = "q2_2016")]
    Q22016,
}

/// The first day of the horizon (day 0 = 25 August 2016) in Q4 2016 (1 October).
pub const Q4_2016_FIRST_DAY: u32 = 37;
/// Days of Q3 and of Q4 2016 (92 each): a day's share of its quarter's ARPU.
pub const QUARTER_DAYS: f64 = 92.0;
/// The last day of the horizon with a published quarter (31 December 2016) is day 128.
pub const CALENDAR_2016_DAYS: u32 = 129;

/// `[revenue]`: anchoring figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevenueConfig {
    /// `calendar_2016` (each day at its quarter's ARPU, the default) or `q2_2016`.
    pub anchor: Anchor,
    /// M's real users, millions, that the population stands for: 673, the sum of the 22
    /// countries' 2016 counts in `data/countries.toml`, so each country's people figure is its
    /// count; 1000 (M's world total, Feb 2016) spreads the rest of the world pro rata over
    /// them (docs/model.md §3.1).
    pub m_users_millions: f64,
    /// S's advertising revenue in the quarter, millions of dollars. Q2 2016: 6239 (docs/model.md §14).
    pub s_ad_revenue_musd: f64,
    /// S's total revenue in the quarter, millions of dollars. Q2 2016: 6436; the advertising
    /// share is 6239 / 6436 (docs/model.md §8).
    pub s_total_revenue_musd: f64,
    /// S's advertising and total revenue in Q3 2016, millions of dollars: 6816 and 7011
    /// (Facebook's Q3 2016 results, docs/model.md §8.2).
    pub q3_ad_revenue_musd: f64,
    /// Total revenue in Q3 2016, millions of dollars: 7011.
    pub q3_total_revenue_musd: f64,
    /// Advertising revenue in Q4 2016, millions of dollars: 8629 (Q4 2016 results).
    pub q4_ad_revenue_musd: f64,
    /// Total revenue in Q4 2016, millions of dollars: 8809.
    pub q4_total_revenue_musd: f64,
    /// Value of an untargeted click, and of a click on a segment without `cpc_usd` in the
    /// segment table, dollars. 1.72: WordStream 2017's average Facebook cost per click over
    /// all industries (docs/model.md §8). Only its ratio to the segments' values matters:
    /// revenue is anchored per region.
    pub cost_per_click_usd: f64,
}

impl Default for RevenueConfig {
    fn default() -> Self {
        RevenueConfig {
            anchor: Anchor::Calendar2016,
            m_users_millions: 673.0,
            s_ad_revenue_musd: 6239.0,
            s_total_revenue_musd: 6436.0,
            q3_ad_revenue_musd: 6816.0,
            q3_total_revenue_musd: 7011.0,
            q4_ad_revenue_musd: 8629.0,
            q4_total_revenue_musd: 8809.0,
            cost_per_click_usd: 1.72,
        }
    }
}

impl RevenueConfig {
    /// Checks the section.
    pub fn validate(&self, file: &str) -> Result<()> {
        for (k, v) in [
            ("m_users_millions", self.m_users_millions),
            ("s_ad_revenue_musd", self.s_ad_revenue_musd),
            ("s_total_revenue_musd", self.s_total_revenue_musd),
            ("q3_ad_revenue_musd", self.q3_ad_revenue_musd),
            ("q3_total_revenue_musd", self.q3_total_revenue_musd),
            ("q4_ad_revenue_musd", self.q4_ad_revenue_musd),
            ("q4_total_revenue_musd", self.q4_total_revenue_musd),
            ("cost_per_click_usd", self.cost_per_click_usd),
        ] {
            ensure!(
                v > 0.0 && v.is_finite(),
                file,
                format!("revenue.{k}"),
                v,
                "a positive number"
            );
        }
        for (ad, total, a, t) in [
            (
                "s_ad_revenue_musd",
                "s_total_revenue_musd",
                self.s_ad_revenue_musd,
                self.s_total_revenue_musd,
            ),
            (
                "q3_ad_revenue_musd",
                "q3_total_revenue_musd",
                self.q3_ad_revenue_musd,
                self.q3_total_revenue_musd,
            ),
            (
                "q4_ad_revenue_musd",
                "q4_total_revenue_musd",
                self.q4_ad_revenue_musd,
                self.q4_total_revenue_musd,
            ),
        ] {
            ensure!(
                a <= t,
                file,
                format!("revenue.{ad}"),
                a,
                format!("at most revenue.{total} = {t}")
            );
        }
        Ok(())
    }

    /// The advertising share of Q2 2016 revenue.
    pub fn ad_share(&self) -> f64 {
        self.s_ad_revenue_musd / self.s_total_revenue_musd
    }

    /// The anchor of each day of a `horizon`-day horizon for one S account of a region whose
    /// ARPU was `arpu` = [Q2, Q3, Q4 2016], dollars of advertising revenue (docs/model.md
    /// §8.2): a day's share of its quarter's ARPU times that quarter's advertising share. Under
    /// `q2_2016` every day is a `horizon`-th of the Q2 figure, as the quarter's anchor was.
    pub fn day_anchors(&self, arpu: [f64; 3], horizon: u32) -> Vec<f64> {
        (0..horizon)
            .map(|d| match self.anchor {
                Anchor::Q22016 => arpu[0] * self.ad_share() / f64::from(horizon.max(1)),
                Anchor::Calendar2016 if d < Q4_2016_FIRST_DAY => {
                    arpu[1] * self.q3_ad_revenue_musd / self.q3_total_revenue_musd / QUARTER_DAYS
                }
                Anchor::Calendar2016 => {
                    arpu[2] * self.q4_ad_revenue_musd / self.q4_total_revenue_musd / QUARTER_DAYS
                }
            })
            .collect()
    }

    /// S's advertising revenue over the horizon's days, millions of dollars: what a revenue
    /// change is a share of. Q2 2016's under `q2_2016` (the horizon is one quarter).
    pub fn ad_revenue_over(&self, horizon: u32) -> f64 {
        match self.anchor {
            Anchor::Q22016 => self.s_ad_revenue_musd,
            Anchor::Calendar2016 => {
                (0..horizon)
                    .map(|d| {
                        if d < Q4_2016_FIRST_DAY {
                            self.q3_ad_revenue_musd
                        } else {
                            self.q4_ad_revenue_musd
                        }
                    })
                    .sum::<f64>()
                    / QUARTER_DAYS
            }
        }
    }
}

/// The click value of one account-day, in whole units of `1/quantum` dollar per impression
/// unit, for the per-day revenue (docs/model.md §8): the engine sums it per region and day as
/// integers (`value_gain` of the timeline), so it adds up exactly in any order.
#[derive(Clone, Debug)]
pub struct DayValue {
    /// Per segment, a unit's value shown to an interested holder, in quanta.
    relevant: Vec<f64>,
    /// Per segment, shown to an uninterested holder.
    irrelevant: Vec<f64>,
    /// Per segment, shown in a Custom Audience campaign to the business's customer.
    customer: Vec<f64>,
    /// An untargeted unit.
    untargeted: f64,
    /// Quanta per dollar: a power of two, the largest at which a day's sum over every user of
    /// the scenario, and the differences the engine keeps of it, stay below 2^62.
    pub quantum: f64,
}

impl DayValue {
    /// The values of a scenario of `users` users per replication, whose segments' clicks are
    /// worth `cpc` dollars (untargeted clicks `revenue.cost_per_click_usd`).
    pub fn new(t: &TargetingConfig, r: &RevenueConfig, cpc: &[f64], users: u64) -> Self {
        let untargeted = t.ctr_untargeted * r.cost_per_click_usd;
        let most = cpc
            .iter()
            .map(|c| c * t.ctr_relevant.max(t.ctr_irrelevant).max(t.ctr_customer))
            .fold(untargeted, f64::max);
        let quantum = value_quantum(users, most);
        let scaled = |ctr: f64| cpc.iter().map(|c| c * ctr * quantum).collect();
        DayValue {
            relevant: scaled(t.ctr_relevant),
            irrelevant: scaled(t.ctr_irrelevant),
            customer: scaled(t.ctr_customer),
            untargeted: untargeted * quantum,
            quantum,
        }
    }

    /// Quanta of `units` impression units of segment `segment`'s campaign: a Custom Audience
    /// campaign's to its customer (`customer`), or to a holder `interested` in the segment or
    /// not.
    #[inline]
    pub fn targeted(&self, segment: usize, customer: bool, interested: bool, units: u64) -> f64 {
        let w = if customer {
            self.customer[segment]
        } else if interested {
            self.relevant[segment]
        } else {
            self.irrelevant[segment]
        };
        w * units as f64
    }

    /// Quanta of `units` untargeted impression units.
    #[inline]
    pub fn untargeted(&self, units: u64) -> f64 {
        self.untargeted * units as f64
    }
}

/// The quanta per dollar of [`DayValue`] for `users` users whose account-day is worth at most
/// `most` dollars per impression unit: the largest power of two (from 2^-60 to 2^40) with
/// `users x 720720 x most x quantum <= 2^56`. The engine's differences of a day's sum hold at
/// most 32 such terms per user, so they stay below 2^61.
pub fn value_quantum(users: u64, most: f64) -> f64 {
    let top = (users.max(1) as f64) * crate::targeting::IMPRESSION_UNITS as f64 * most;
    if !(top.is_finite() && top > 0.0) {
        return 1.0;
    }
    let exponent = (56.0 - top.log2()).floor().clamp(-60.0, 40.0);
    exponent.exp2()
}

#[cfg(test)]
mod tests {

    #[test]
    fn each_day_is_priced_at_its_quarter() {
        // 25 August 2016 is day 0: days 0-36 fall in Q3 (to 30 September), 37-128 in Q4.
        let r = RevenueConfig::default();
        let arpu = [14.34, 15.65, 19.81];
        let days = r.day_anchors(arpu, 91);
        let q3 = 15.65 * 6816.0 / 7011.0 / 92.0;
        let q4 = 19.81 * 8629.0 / 8809.0 / 92.0;
        assert!((days[36] - q3).abs() < 1e-12 && (days[37] - q4).abs() < 1e-12);
        let total: f64 = days.iter().sum();
        assert!((total - (37.0 * q3 + 54.0 * q4)).abs() < 1e-9, "{total}");
        let ad = r.ad_revenue_over(91);
        assert!((ad - (37.0 * 6816.0 + 54.0 * 8629.0) / 92.0).abs() < 1e-9);
        // Q2 2016: the quarter's anchor spread evenly over the horizon, as before.
        let q2 = RevenueConfig {
            anchor: Anchor::Q22016,
            ..RevenueConfig::default()
        };
        let total: f64 = q2.day_anchors(arpu, 91).iter().sum();
        assert!((total - 14.34 * 6239.0 / 6436.0).abs() < 1e-9);
        assert_eq!(q2.ad_revenue_over(91), 6239.0);
    }
    use super::*;

    #[test]
    fn the_quantum_keeps_a_day_of_every_user_below_2_to_the_56() {
        for (users, most) in [
            (1u64, 0.05),
            (100_000, 0.094),
            (1_000_000_000, 0.094),
            (1 << 40, 3.0),
        ] {
            let q = value_quantum(users, most);
            let top = users as f64 * 720_720.0 * most * q;
            assert!(top <= 2f64.powi(56), "{users} users: {top}");
            // The largest such power of two: twice it would pass the bound.
            assert!(
                top * 2.0 > 2f64.powi(56) || q == 2f64.powi(40),
                "{users} users: {q}"
            );
            assert_eq!(q.log2().fract(), 0.0, "a power of two");
        }
        // 10^9 users: 2^56 / (10^9 x 720720 x 0.094) = 1064, so 2^10 quanta per dollar.
        assert_eq!(value_quantum(1_000_000_000, 0.094), 1024.0);
        // Nothing to value: any quantum will do.
        assert_eq!(value_quantum(10, 0.0), 1.0);
    }

    #[test]
    fn day_values_weigh_units_by_ctr_and_click_value() {
        let t = TargetingConfig::default();
        let r = RevenueConfig::default();
        let v = DayValue::new(&t, &r, &[2.0, 1.0], 1000);
        let q = v.quantum;
        assert!((v.targeted(0, false, true, 100) - 100.0 * 0.015 * 2.0 * q).abs() < 1e-6 * q);
        assert!((v.targeted(1, false, false, 100) - 100.0 * 0.002 * q).abs() < 1e-6 * q);
        assert!((v.targeted(1, true, false, 100) - 100.0 * 0.025 * q).abs() < 1e-6 * q);
        assert!((v.untargeted(100) - 100.0 * 0.0035 * 1.72 * q).abs() < 1e-6 * q);
    }
}
