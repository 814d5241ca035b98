//! Revenue (docs/model.md §8): expected clicks times each segment's value per click, anchored
//! per S region.
//!
//! One factor per region and replication makes the `none` arm, scaled from N simulated users
//! to M's real user count, equal the published Q2 2016 ARPU times those S accounts, times the
//! advertising share of revenue (ARPU includes payments). Other arms and rates move it in
//! proportion to the sum of clicks times value per click (the segment's `cpc_usd`, or
//! `cost_per_click_usd` for untargeted clicks). S's revenue from people who are not
//! on M does not change with sharing. The computation itself is in [`crate::metrics`].

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;

/// `[revenue]`: anchoring figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevenueConfig {
    /// M's real user count, millions, that results are scaled to. Feb 2016: 1000 (docs/model.md §14).
    pub m_users_millions: f64,
    /// S's advertising revenue in the quarter, millions of dollars. Q2 2016: 6239 (docs/model.md §14).
    pub s_ad_revenue_musd: f64,
    /// S's total revenue in the quarter, millions of dollars. Q2 2016: 6436; the advertising
    /// share is 6239 / 6436 (docs/model.md §8).
    pub s_total_revenue_musd: f64,
    /// Value of an untargeted click, and of a click on a segment without `cpc_usd` in the
    /// segment table, dollars. 1.72: WordStream 2017's average Facebook cost per click over
    /// all industries (docs/model.md §8). Only its ratio to the segments' values matters:
    /// revenue is anchored per region.
    pub cost_per_click_usd: f64,
}

impl Default for RevenueConfig {
    fn default() -> Self {
        RevenueConfig {
            m_users_millions: 1000.0,
            s_ad_revenue_musd: 6239.0,
            s_total_revenue_musd: 6436.0,
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
        ensure!(
            self.s_ad_revenue_musd <= self.s_total_revenue_musd,
            file,
            "revenue.s_ad_revenue_musd",
            self.s_ad_revenue_musd,
            format!(
                "at most revenue.s_total_revenue_musd = {}",
                self.s_total_revenue_musd
            )
        );
        Ok(())
    }

    /// The advertising share of revenue.
    pub fn ad_share(&self) -> f64 {
        self.s_ad_revenue_musd / self.s_total_revenue_musd
    }
}
