//! Prices from competition (docs/model.md §17): advertisers with a value per click and a
//! budget buy impressions in second-price auctions ranked by bid times the click-through rate
//! the platform predicts, above a reserve, their budgets kept by multiplicative pacing.
//!
//! A market is described by counts: classes of identical impressions, each with the bidders
//! eligible for it and, per bidder, the CTR the platform predicts (which ranks it) and the CTR
//! that holds (which makes clicks and payments, charged per click). Clearing is deterministic
//! and depends only on these counts, so a run's estimation can clear the markets its counts
//! describe. A bidder's value of an impression varies from auction to auction around its
//! value per click by a log-Gumbel factor of scale `spread` (0: none), so that win shares and
//! spend move smoothly with the pacing multipliers; the expectations are integrals, computed
//! on a grid in the log of the rank.

/// One advertiser's campaign.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bidder {
    /// What a click is worth to it, dollars.
    pub value_per_click: f64,
    /// The most it spends over the horizon, dollars (`f64::INFINITY`: no limit).
    pub budget: f64,
}

/// A bidder eligible for a class of impressions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eligible {
    /// Index into [`Market::bidders`].
    pub bidder: usize,
    /// The CTR the platform predicts for the bidder's ad on these impressions: it ranks the
    /// bid and converts the price per impression into a price per click.
    pub predicted_ctr: f64,
    /// The CTR that holds: clicks, and what the bidder pays (per click).
    pub ctr: f64,
}

/// A class of identical impressions.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    /// How many.
    pub impressions: f64,
    /// The bidders that may show an ad on them.
    pub eligible: Vec<Eligible>,
}

/// A market: bidders, impression classes, a reserve and the spread of values.
#[derive(Clone, Debug, PartialEq)]
pub struct Market {
    /// The advertisers.
    pub bidders: Vec<Bidder>,
    /// The impressions on sale.
    pub classes: Vec<Class>,
    /// The least an impression sells for, dollars per impression in rank units (bid per click
    /// times predicted CTR). The winner's rank must reach it, and it pays at least it.
    pub reserve: f64,
    /// Scale of the log-Gumbel factor on a bidder's value in each auction (0: none; below 0.9,
    /// where the expected payment stays finite and the grid accurate).
    pub spread: f64,
}

/// What a market clears to, per bidder, and what went unsold.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Payments, dollars (the platform's revenue is their sum).
    pub spend: Vec<f64>,
    /// Expected clicks.
    pub clicks: Vec<f64>,
    /// Impressions won.
    pub impressions: Vec<f64>,
    /// Value of the clicks to the bidder, dollars (its surplus is value - spend).
    pub value: Vec<f64>,
    /// Impressions no bidder's rank reached the reserve on.
    pub unsold: f64,
}

impl Outcome {
    /// The platform's revenue: every payment.
    pub fn revenue(&self) -> f64 {
        self.spend.iter().sum()
    }
}

/// Points of the integration grid per unit of `spread` in log-rank.
const GRID_PER_SPREAD: f64 = 32.0;

impl Market {
    /// Clears the market with pacing multipliers `pacing` (one per bidder, in (0, 1]): a
    /// bidder bids `pacing x value_per_click` per click.
    pub fn clear(&self, pacing: &[f64]) -> Outcome {
        let n = self.bidders.len();
        let mut out = Outcome {
            spend: vec![0.0; n],
            clicks: vec![0.0; n],
            impressions: vec![0.0; n],
            value: vec![0.0; n],
            unsold: 0.0,
        };
        for class in &self.classes {
            if self.spread > 0.0 {
                self.clear_spread(class, pacing, &mut out);
            } else {
                self.clear_exact(class, pacing, &mut out);
            }
        }
        out
    }

    /// A bidder's rank on an impression: bid per click times predicted CTR.
    fn rank(&self, e: &Eligible, pacing: &[f64]) -> f64 {
        pacing[e.bidder] * self.bidders[e.bidder].value_per_click * e.predicted_ctr
    }

    /// Without spread: the highest rank wins (ties split the impressions evenly) and pays the
    /// larger of the runner-up's rank and the reserve, per impression in rank units, charged
    /// per click at that over its predicted CTR.
    fn clear_exact(&self, class: &Class, pacing: &[f64], out: &mut Outcome) {
        let ranks: Vec<f64> = class
            .eligible
            .iter()
            .map(|e| self.rank(e, pacing))
            .collect();
        let top = ranks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if class.eligible.is_empty() || top <= 0.0 || top < self.reserve {
            out.unsold += class.impressions;
            return;
        }
        let winners: Vec<usize> = (0..ranks.len()).filter(|&k| ranks[k] == top).collect();
        // Among tied winners the runner-up of each is another winner: it pays the top rank.
        let runner_up = if winners.len() > 1 {
            top
        } else {
            ranks
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != winners[0])
                .map(|(_, &r)| r)
                .fold(0.0, f64::max)
        };
        let price = runner_up.max(self.reserve);
        let share = class.impressions / winners.len() as f64;
        for &k in &winners {
            let e = &class.eligible[k];
            let clicks = share * e.ctr;
            out.impressions[e.bidder] += share;
            out.clicks[e.bidder] += clicks;
            out.spend[e.bidder] += clicks * price / e.predicted_ctr;
            out.value[e.bidder] += clicks * self.bidders[e.bidder].value_per_click;
        }
    }

    /// With spread: each eligible bidder's log-rank is `ln(rank) + spread x G` with `G`
    /// standard Gumbel, independent across bidders and auctions. Bidder `i` wins where its
    /// log-rank `y` reaches the reserve and every other lies below it; it then pays the larger
    /// of the reserve and the highest other rank, `R M(rho) + integral from rho to y of
    /// exp(z) dM(z)` in expectation (`M` the CDF of the others' highest log-rank), and its
    /// value per click is scaled by `exp(y - ln(rank))`. Each expectation is an integral over
    /// `y` against `i`'s density, on a grid of step `spread / 32` (trapezoids; relative error about 3e-5).
    fn clear_spread(&self, class: &Class, pacing: &[f64], out: &mut Outcome) {
        let s = self.spread;
        let mus: Vec<f64> = class
            .eligible
            .iter()
            .map(|e| self.rank(e, pacing))
            .map(|r| if r > 0.0 { r.ln() } else { f64::NEG_INFINITY })
            .collect();
        let live: Vec<usize> = (0..mus.len()).filter(|&k| mus[k].is_finite()).collect();
        let (lo_mu, hi_mu) = live
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &k| {
                (a.min(mus[k]), b.max(mus[k]))
            });
        let reserve = self.reserve.max(0.0);
        // Below lo_mu - 4s a Gumbel's CDF is exp(-e^4), nil; right of the highest mu the
        // payment integrand decays as exp(-(1 - s) z), below 1e-13 at z = 30 / (1 - s).
        let mut lo = lo_mu - 4.0 * s;
        if reserve > 0.0 {
            lo = lo.max(reserve.ln());
        }
        let hi = hi_mu + 30.0 * s / (1.0 - s);
        if live.is_empty() || lo >= hi {
            out.unsold += class.impressions;
            return;
        }
        let h = s / GRID_PER_SPREAD;
        let points = ((hi - lo) / h).ceil() as usize + 1;
        let ys: Vec<f64> = (0..points).map(|k| lo + k as f64 * h).collect();
        let cdfs: Vec<Vec<f64>> = live
            .iter()
            .map(|&j| {
                ys.iter()
                    .map(|&y| (-(-(y - mus[j]) / s).exp()).exp())
                    .collect()
            })
            .collect();
        let mut sold = 0.0;
        for (a, &i) in live.iter().enumerate() {
            let others = |k: usize| -> f64 {
                cdfs.iter()
                    .enumerate()
                    .filter(|&(b, _)| b != a)
                    .map(|(_, c)| c[k])
                    .product()
            };
            // The others all below the grid's start (the reserve, if it binds): pay R.
            let base = reserve * others(0);
            let (mut win, mut pay, mut value) = (0.0, 0.0, 0.0);
            let (mut above, mut m_prev) = (0.0, others(0));
            for (k, &y) in ys.iter().enumerate() {
                let m = others(k);
                if k > 0 {
                    above += 0.5 * (ys[k - 1].exp() + y.exp()) * (m - m_prev);
                }
                m_prev = m;
                let z = (y - mus[i]) / s;
                // Trapezoids: the grid's ends carry half a step.
                let end = if k == 0 || k + 1 == ys.len() {
                    0.5
                } else {
                    1.0
                };
                let w = (-z - (-z).exp()).exp() / s * h * end;
                win += w * m;
                pay += w * (base + above);
                value += w * m * (y - mus[i]).exp();
            }
            let e = &class.eligible[i];
            let imps = class.impressions * win;
            sold += imps;
            out.impressions[e.bidder] += imps;
            out.clicks[e.bidder] += imps * e.ctr;
            out.spend[e.bidder] += class.impressions * pay * e.ctr / e.predicted_ctr;
            out.value[e.bidder] +=
                class.impressions * value * e.ctr * self.bidders[e.bidder].value_per_click;
        }
        out.unsold += (class.impressions - sold).max(0.0);
    }
}

/// Pacing multipliers and the market they clear.
#[derive(Clone, Debug, PartialEq)]
pub struct Pacing {
    /// One per bidder, in (0, 1].
    pub multipliers: Vec<f64>,
    /// The market cleared at them.
    pub outcome: Outcome,
    /// Rounds taken.
    pub rounds: usize,
    /// Whether every budget holds: no bidder spends more than its budget, and a bidder paced
    /// below 1 spends it within the tolerance.
    pub converged: bool,
}

/// The smallest pacing multiplier.
const MIN_PACING: f64 = 1e-9;

impl Market {
    /// Multiplicative pacing (Conitzer, Kroer, Sodomka & Stier-Moses 2022): each bidder's
    /// bids are scaled by a multiplier in (0, 1], lowered while it spends more than its budget
    /// and raised back towards 1 while it spends less, by damped multiplicative steps (the
    /// adaptive pacing of Balseiro & Gur 2019, run to its fixed point on the expected spend).
    /// A last pass scales any multiplier still above its budget down so that no bidder
    /// overspends. Needs `spread > 0` to converge: without it spend jumps as ranks cross.
    pub fn pace(&self, tolerance: f64, max_rounds: usize) -> Pacing {
        let n = self.bidders.len();
        let mut alpha = vec![1.0; n];
        let mut out = self.clear(&alpha);
        // Spend moves with a multiplier about as its power 1/spread: steps of spread / 2 in
        // the log keep the iteration from overshooting.
        let step = (self.spread / 2.0).clamp(0.05, 0.5);
        let holds = |i: usize, a: &[f64], o: &Outcome| {
            let b = self.bidders[i].budget;
            o.spend[i] <= b && (a[i] >= 1.0 || o.spend[i] >= b * (1.0 - tolerance))
        };
        let mut rounds = 0;
        while rounds < max_rounds && !(0..n).all(|i| holds(i, &alpha, &out)) {
            rounds += 1;
            for ((a, bidder), &spent) in alpha.iter_mut().zip(&self.bidders).zip(&out.spend) {
                if !bidder.budget.is_finite() {
                    continue;
                }
                let ratio = if spent > 0.0 {
                    bidder.budget / spent
                } else {
                    f64::INFINITY
                };
                *a = (*a * ratio.powf(step)).clamp(MIN_PACING, 1.0);
            }
            out = self.clear(&alpha);
        }
        // Whatever remains above budget is scaled down to it (spend falls at least in
        // proportion to the multiplier: fewer wins, each at no higher price).
        for _ in 0..50 {
            let over: Vec<usize> = (0..n)
                .filter(|&i| out.spend[i] > self.bidders[i].budget)
                .collect();
            if over.is_empty() {
                break;
            }
            for i in over {
                let ratio = self.bidders[i].budget / out.spend[i];
                alpha[i] = (alpha[i] * ratio * (1.0 - 1e-9)).max(MIN_PACING);
            }
            out = self.clear(&alpha);
        }
        let converged = (0..n).all(|i| holds(i, &alpha, &out));
        Pacing {
            multipliers: alpha,
            outcome: out,
            rounds,
            converged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bidder(value_per_click: f64) -> Bidder {
        Bidder {
            value_per_click,
            budget: f64::INFINITY,
        }
    }

    fn at(bidder: usize, predicted_ctr: f64, ctr: f64) -> Eligible {
        Eligible {
            bidder,
            predicted_ctr,
            ctr,
        }
    }

    fn market(bidders: Vec<Bidder>, classes: Vec<Class>, reserve: f64, spread: f64) -> Market {
        Market {
            bidders,
            classes,
            reserve,
            spread,
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn one_eligible_bidder_pays_the_reserve_and_below_it_nothing_sells() {
        // Rank 2 x 0.01 = 0.02 per impression against a reserve of 0.005: 1000 impressions,
        // 10 clicks at 0.005 / 0.01 = $0.50 a click.
        let class = || Class {
            impressions: 1000.0,
            eligible: vec![at(0, 0.01, 0.01)],
        };
        let m = market(vec![bidder(2.0)], vec![class()], 0.005, 0.0);
        let o = m.clear(&[1.0]);
        assert_eq!(
            (o.impressions[0], o.clicks[0], o.unsold),
            (1000.0, 10.0, 0.0)
        );
        assert!(close(o.spend[0], 5.0, 1e-12), "{}", o.spend[0]);
        assert!(close(o.value[0], 20.0, 1e-12));
        let o = market(vec![bidder(2.0)], vec![class()], 0.05, 0.0).clear(&[1.0]);
        assert_eq!(
            (o.impressions[0], o.revenue(), o.unsold),
            (0.0, 0.0, 1000.0)
        );
    }

    #[test]
    fn the_winner_pays_the_runner_ups_rank_per_click_over_its_predicted_ctr() {
        // Ranks 0.02 and 0.015: the first wins and pays 0.015 per impression, 1.5 per click
        // at its predicted CTR 0.01; it gets clicks at its true CTR 0.012.
        let m = market(
            vec![bidder(2.0), bidder(1.0)],
            vec![Class {
                impressions: 1000.0,
                eligible: vec![at(0, 0.01, 0.012), at(1, 0.015, 0.015)],
            }],
            0.001,
            0.0,
        );
        let o = m.clear(&[1.0, 1.0]);
        assert_eq!(o.impressions, vec![1000.0, 0.0]);
        assert!(
            close(o.spend[0], 1000.0 * 0.012 * 1.5, 1e-12),
            "{}",
            o.spend[0]
        );
        assert_eq!(o.spend[1], 0.0);
        // Pacing the winner below the runner-up hands the impressions over, at the paced rank.
        let o = m.clear(&[0.5, 1.0]);
        assert_eq!(o.impressions, vec![0.0, 1000.0]);
        assert!(close(o.spend[1], 1000.0 * 0.015 * (0.01 / 0.015), 1e-12));
    }

    #[test]
    fn with_spread_one_bidder_wins_as_often_as_it_clears_the_reserve() {
        // log-rank mu + s G reaches ln R with probability 1 - exp(-exp(-(ln R - mu) / s)), and
        // then pays R.
        let (s, r) = (0.3, 0.015);
        let m = market(
            vec![bidder(2.0)],
            vec![Class {
                impressions: 1.0,
                eligible: vec![at(0, 0.01, 0.01)],
            }],
            r,
            s,
        );
        let o = m.clear(&[1.0]);
        let mu = 0.02f64.ln();
        let p = 1.0 - (-(-(r.ln() - mu) / s).exp()).exp();
        assert!(
            close(o.impressions[0], p, 1e-4),
            "{} vs {p}",
            o.impressions[0]
        );
        assert!(
            close(o.spend[0], r * p, 1e-4),
            "{} vs {}",
            o.spend[0],
            r * p
        );
        assert!(close(o.unsold, 1.0 - p, 1e-3));
    }

    #[test]
    fn with_spread_two_equal_bidders_pay_the_expected_second_of_two_frechets() {
        // exp(mu + s G) is Frechet with shape 1/s: E = e^mu Gamma(1 - s), and the larger of two
        // is Frechet with scale 2^s e^mu, so the second's mean is e^mu Gamma(1 - s) (2 - 2^s).
        use statrs::function::gamma::gamma;
        let s = 0.4;
        let m = market(
            vec![bidder(1.0), bidder(1.0)],
            vec![Class {
                impressions: 1.0,
                eligible: vec![at(0, 0.02, 0.02), at(1, 0.02, 0.02)],
            }],
            0.0,
            s,
        );
        let o = m.clear(&[1.0, 1.0]);
        let mu = 0.02f64;
        let second = mu * gamma(1.0 - s) * (2.0 - 2f64.powf(s));
        let top = mu * gamma(1.0 - s) * 2f64.powf(s);
        assert!(close(o.impressions[0], 0.5, 1e-6) && close(o.impressions[1], 0.5, 1e-6));
        assert!(
            close(o.revenue(), second, 1e-4),
            "{} vs {second}",
            o.revenue()
        );
        // The winner's value: its value per click times the clicks, scaled by its draw.
        let value: f64 = o.value.iter().sum();
        assert!(close(value, top, 1e-4), "{value} vs {top}");
        assert!(o.unsold.abs() < 1e-9);
    }

    #[test]
    fn a_small_spread_approaches_the_exact_auction() {
        let classes = vec![Class {
            impressions: 500.0,
            eligible: vec![at(0, 0.01, 0.01), at(1, 0.01, 0.01), at(2, 0.008, 0.008)],
        }];
        let bidders = vec![bidder(3.0), bidder(2.0), bidder(1.0)];
        let exact = market(bidders.clone(), classes.clone(), 0.001, 0.0).clear(&[1.0; 3]);
        let smooth = market(bidders, classes, 0.001, 0.01).clear(&[1.0; 3]);
        assert!(close(smooth.revenue(), exact.revenue(), 0.02));
        assert!(close(smooth.impressions[0], exact.impressions[0], 0.01));
    }

    #[test]
    fn pacing_keeps_every_budget_and_spends_a_binding_one() {
        // Three advertisers in two classes; the richest has a small budget. Paced, no one
        // spends above its budget, the paced one spends it (to the tolerance), and the others
        // win more of the impressions it gives up.
        let classes = vec![
            Class {
                impressions: 10_000.0,
                eligible: vec![at(0, 0.02, 0.02), at(1, 0.015, 0.015), at(2, 0.01, 0.01)],
            },
            Class {
                impressions: 5_000.0,
                eligible: vec![at(0, 0.01, 0.01), at(2, 0.02, 0.02)],
            },
        ];
        let mut bidders = vec![bidder(3.0), bidder(2.0), bidder(2.5)];
        let free = market(bidders.clone(), classes.clone(), 0.002, 0.3).clear(&[1.0; 3]);
        bidders[0].budget = free.spend[0] * 0.4;
        bidders[2].budget = free.spend[2] * 10.0;
        let m = market(bidders.clone(), classes, 0.002, 0.3);
        let p = m.pace(1e-4, 500);
        assert!(p.converged, "{p:?}");
        for (i, b) in bidders.iter().enumerate() {
            assert!(p.outcome.spend[i] <= b.budget, "bidder {i} overspends");
            assert!(p.multipliers[i] > 0.0 && p.multipliers[i] <= 1.0);
        }
        assert!(p.multipliers[0] < 1.0);
        assert!(close(p.outcome.spend[0], bidders[0].budget, 1e-4));
        assert!(p.outcome.impressions[1] > free.impressions[1]);
        // Unlimited budgets: no pacing at all.
        let mut unlimited = m.clone();
        unlimited
            .bidders
            .iter_mut()
            .for_each(|b| b.budget = f64::INFINITY);
        let q = unlimited.pace(1e-4, 500);
        assert_eq!((q.multipliers, q.rounds), (vec![1.0; 3], 0));
    }

    #[test]
    fn with_unlimited_budgets_and_no_reserve_every_impression_sells() {
        let m = market(
            vec![bidder(1.0), bidder(0.5)],
            vec![
                Class {
                    impressions: 300.0,
                    eligible: vec![at(0, 0.01, 0.02), at(1, 0.03, 0.01)],
                },
                Class {
                    impressions: 200.0,
                    eligible: vec![at(1, 0.01, 0.01)],
                },
            ],
            0.0,
            0.25,
        );
        let o = m.clear(&[1.0, 1.0]);
        assert!(o.unsold.abs() < 1e-9 * 500.0, "{}", o.unsold);
        assert!(close(o.impressions.iter().sum(), 500.0, 1e-9));
    }

    #[test]
    fn thin_markets_finer_targeting_lowers_revenue_with_one_bidder_per_audience_and_raises_it_with_many()
     {
        // Four audiences of 1000 impressions. Coarse: every advertiser bids on every
        // impression at the average CTR (a quarter of the impressions are its audience's).
        // Fine: each audience's impressions go only to its own advertisers, at their CTR
        // (Levin & Milgrom 2010).
        let revenue = |per_audience: usize, fine: bool| {
            let values = [1.0, 0.9, 0.8];
            let (hit, avg) = (0.02, 0.02 / 4.0);
            let bidders: Vec<Bidder> = (0..4)
                .flat_map(|_| values[..per_audience].iter().map(|&v| bidder(v)))
                .collect();
            let classes: Vec<Class> = if fine {
                (0..4)
                    .map(|a| Class {
                        impressions: 1000.0,
                        eligible: (0..per_audience)
                            .map(|k| at(a * per_audience + k, hit, hit))
                            .collect(),
                    })
                    .collect()
            } else {
                vec![Class {
                    impressions: 4000.0,
                    eligible: (0..bidders.len()).map(|b| at(b, avg, avg)).collect(),
                }]
            };
            let n = bidders.len();
            market(bidders, classes, 1e-4, 0.0)
                .clear(&vec![1.0; n])
                .revenue()
        };
        assert!(revenue(1, true) < revenue(1, false));
        assert!(revenue(3, true) > revenue(3, false));
    }
}
