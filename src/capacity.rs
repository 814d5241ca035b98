//! A stylised advertising market in which revenue first rises, then falls, with the
//! platform's targeting capacity (docs/model.md §17.6, after Bergemann and Bonatti 2011).
//!
//! `segments` equal segments of consumers (mass 1 in all) each see `supply` impressions.
//! Every segment has the same advertisers, each valuing a consumer of its own segment that
//! its ads reach at least once (a second ad to the same consumer is worth nothing: the
//! diminishing returns per consumer that make the fall). With targeting capacity `q` an ad
//! aimed at a segment lands on a pool of consumers of mass `w = 1 - q (1 - 1/segments)`, of
//! which the segment is the share `1 / (segments w)`; `n` ads spread over the pool reach a
//! pool consumer with probability `1 - exp(-n / w)`. Advertisers take the price per
//! impression as given and buy ads until an ad's marginal value falls to it; the price clears
//! the supply. Revenue is price times supply.
//!
//! Better targeting raises the value of each ad (fewer land outside the segment), but it also
//! concentrates each segment's advertisers on its own consumers, where their reach saturates:
//! with more impressions per consumer than advertisers per segment, the price of the last
//! impression falls.

/// The stylised market.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    /// Segments of consumers of equal size.
    pub segments: usize,
    /// Impressions per consumer (the supply).
    pub supply: f64,
    /// Each segment's advertisers' values of reaching one consumer of the segment.
    pub values: Vec<f64>,
}

/// What the market clears to at one targeting capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleared {
    /// Targeting capacity, 0 (none) to 1 (every ad on its segment).
    pub capacity: f64,
    /// Price per impression.
    pub price: f64,
    /// Revenue per consumer: price times supply.
    pub revenue: f64,
    /// Consumers reached per consumer, summed over advertisers (the matches).
    pub matches: f64,
    /// Advertisers' value of the matches, per consumer.
    pub value: f64,
}

impl Capacity {
    /// The pool an ad lands on at capacity `q`, as a share of all consumers.
    fn pool(&self, q: f64) -> f64 {
        1.0 - q * (1.0 - 1.0 / self.segments as f64)
    }

    /// Clears the market at capacity `q` in [0, 1].
    ///
    /// An advertiser of value `v` buys `n = w ln(v s / p)` ads while `v s > p`, where `s` is
    /// the segment's share of the pool; in the effective price `e = p / s` the supply is
    /// cleared by `sum ln(v / e)^+ = supply / (segments w)`, a decreasing function of `e`
    /// solved by bisection in its logarithm.
    pub fn clear(&self, q: f64) -> Cleared {
        let k = self.segments as f64;
        let w = self.pool(q);
        let share = 1.0 / (k * w);
        let demand = self.supply / (k * w);
        let excess = |log_e: f64| -> f64 {
            self.values
                .iter()
                .map(|&v| (v.ln() - log_e).max(0.0))
                .sum::<f64>()
                - demand
        };
        let top = self.values.iter().cloned().fold(f64::MIN, f64::max).ln();
        // At e = the top value nothing is bought; demand then grows without bound as e falls.
        let (mut lo, mut hi) = (top - 1.0, top);
        while excess(lo) < 0.0 {
            lo -= 2.0 * (hi - lo);
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if excess(mid) > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let e = (0.5 * (lo + hi)).exp();
        let price = e * share;
        let (mut matches, mut value) = (0.0, 0.0);
        for &v in self.values.iter().filter(|&&v| v > e) {
            // Reach of one segment's consumers: 1 - exp(-n / w) = 1 - e / v, times the
            // segment's mass 1 / k, over k segments.
            matches += 1.0 - e / v;
            value += v * (1.0 - e / v);
        }
        Cleared {
            capacity: q,
            price,
            revenue: price * self.supply,
            matches,
            value,
        }
    }

    /// The market cleared at `points` capacities evenly from 0 to 1.
    pub fn sweep(&self, points: usize) -> Vec<Cleared> {
        let n = points.max(2) - 1;
        (0..=n).map(|i| self.clear(i as f64 / n as f64)).collect()
    }
}

/// The figure of docs/model.md §17.6: revenue against targeting capacity for three supplies
/// of impressions per consumer, each as an index of its revenue without targeting.
pub fn figure(segments: usize, values: &[f64], supplies: &[f64]) -> crate::charts::Chart {
    use crate::charts::{Chart, Line, LineChart, Style, Unit};
    let lines = supplies
        .iter()
        .enumerate()
        .map(|(i, &supply)| {
            let m = Capacity {
                segments,
                supply,
                values: values.to_vec(),
            };
            let points = m.sweep(41);
            let base = points[0].revenue;
            Line {
                label: format!("{supply} impressions per consumer"),
                points: points
                    .iter()
                    .map(|c| (100.0 * c.capacity, 100.0 * c.revenue / base, None))
                    .collect(),
                style: Style {
                    colour: i,
                    dashed: false,
                },
            }
        })
        .collect();
    Chart::Lines(LineChart {
        title: format!(
            "Revenue against targeting capacity ({segments} segments, {} advertisers each)",
            values.len()
        ),
        x_label: "targeting capacity (share of an ad's misdirection removed)".into(),
        x_unit: Unit::Percent,
        y_label: "revenue (no targeting = 100)".into(),
        y_unit: Unit::Plain,
        x_from_zero: true,
        y_from_zero: true,
        lines,
        scatter: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(supply: f64) -> Capacity {
        Capacity {
            segments: 10,
            supply,
            values: vec![1.0, 0.8, 0.6, 0.4],
        }
    }

    #[test]
    fn with_equal_values_revenue_has_the_closed_form_and_peaks_where_demand_per_advertiser_is_one()
    {
        // M advertisers of value v: M ln(v / e) = y with y = supply / (k w), so
        // e = v exp(-y / M) and revenue = e y = v y exp(-y / M), largest at y = M.
        let (k, m, v, supply) = (10usize, 3usize, 2.0, 12.0);
        let c = Capacity {
            segments: k,
            supply,
            values: vec![v; m],
        };
        for q in [0.0, 0.2, 0.5, 0.9, 1.0] {
            let w = 1.0 - q * (1.0 - 1.0 / k as f64);
            let y = supply / (k as f64 * w);
            let expected = v * y * (-y / m as f64).exp();
            let got = c.clear(q).revenue;
            assert!(
                (got - expected).abs() < 1e-9 * expected,
                "{q}: {got} {expected}"
            );
        }
        // y = M at w = supply / (k M) = 0.4, q = 0.6 / 0.9.
        let peak = c.clear(0.6 / 0.9).revenue;
        for q in [0.6, 0.7] {
            assert!(c.clear(q).revenue < peak);
        }
    }

    #[test]
    fn revenue_rises_then_falls_when_consumers_see_more_ads_than_a_segment_has_advertisers() {
        let s = market(12.0).sweep(101);
        let top = (0..s.len())
            .max_by(|&a, &b| s[a].revenue.total_cmp(&s[b].revenue))
            .unwrap();
        assert!(top > 5 && top < 95, "peak at {top}");
        assert!(s[..=top].windows(2).all(|p| p[1].revenue > p[0].revenue));
        assert!(s[top..].windows(2).all(|p| p[1].revenue < p[0].revenue));
        assert!(s[100].revenue < s[0].revenue);
    }

    #[test]
    fn scarce_impressions_make_targeting_pay_and_abundant_ones_make_it_cost() {
        let rising = market(0.5).sweep(51);
        assert!(rising.windows(2).all(|p| p[1].revenue > p[0].revenue));
        let falling = market(200.0).sweep(51);
        assert!(falling.windows(2).all(|p| p[1].revenue < p[0].revenue));
    }

    #[test]
    fn targeting_always_makes_more_matches_and_the_market_clears() {
        for supply in [0.5, 12.0, 200.0] {
            let m = market(supply);
            let s = m.sweep(51);
            assert!(s.windows(2).all(|p| p[1].matches >= p[0].matches - 1e-12));
            assert!(s.windows(2).all(|p| p[1].value >= p[0].value - 1e-12));
            for c in &s {
                // Ads bought equal the supply: each advertiser's n = w ln(v s / p)^+ per
                // segment, k segments.
                let k = m.segments as f64;
                let w = m.pool(c.capacity);
                let share = 1.0 / (k * w);
                let bought: f64 = m
                    .values
                    .iter()
                    .map(|&v| k * w * (v * share / c.price).ln().max(0.0))
                    .sum();
                assert!((bought - supply).abs() < 1e-9 * supply, "{bought} {supply}");
            }
        }
    }
}
