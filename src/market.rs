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
    /// The least a click sells for, dollars. A bidder whose bid per click falls below it
    /// takes no part in the auction, and the winner pays at least it per click. Per click,
    /// so that scaling every predicted CTR of a class changes no outcome (docs/model.md §17.2).
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
    /// Impressions on which no bidder's bid reached the reserve.
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

    /// Without spread: among the bidders whose bid per click reaches the reserve, the highest
    /// rank wins (ties split the impressions evenly) and pays per click the larger of the
    /// reserve and the runner-up's rank over its own predicted CTR.
    fn clear_exact(&self, class: &Class, pacing: &[f64], out: &mut Outcome) {
        let ranks: Vec<f64> = class
            .eligible
            .iter()
            .map(|e| {
                let bid = pacing[e.bidder] * self.bidders[e.bidder].value_per_click;
                if bid > 0.0 && bid >= self.reserve {
                    bid * e.predicted_ctr
                } else {
                    0.0
                }
            })
            .collect();
        let top = ranks.iter().copied().fold(0.0, f64::max);
        if top <= 0.0 {
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
        let share = class.impressions / winners.len() as f64;
        for &k in &winners {
            let e = &class.eligible[k];
            let clicks = share * e.ctr;
            let price = (runner_up / e.predicted_ctr).max(self.reserve);
            out.impressions[e.bidder] += share;
            out.clicks[e.bidder] += clicks;
            out.spend[e.bidder] += clicks * price;
            out.value[e.bidder] += clicks * self.bidders[e.bidder].value_per_click;
        }
    }

    /// With spread: each eligible bidder's log-rank is `ln(rank) + spread x G` with `G`
    /// standard Gumbel, independent across bidders and auctions; bidder `j` takes part when
    /// its bid per click reaches the reserve `r`, that is when its log-rank reaches
    /// `rho_j = ln(r x predicted CTR_j)`. So the others' highest participating log-rank has
    /// CDF `M(z) = prod_j F_j(max(z, rho_j))`. Bidder `i` wins where its log-rank `y` reaches
    /// `rho_i` and the others' lies below `y`; it then pays, in rank units, the larger of
    /// `R_i = r x predicted CTR_i` and the others' rank: `R_i M(rho_i) + integral from rho_i
    /// to y of exp(z) dM(z)` in expectation. Its value per click is scaled by
    /// `exp(y - ln(rank_i))`. Each expectation is an integral over `y` against `i`'s density, on
    /// a grid of step `spread / 32` from `rho_i` (trapezoids; relative error about 3e-5).
    fn clear_spread(&self, class: &Class, pacing: &[f64], out: &mut Outcome) {
        let s = self.spread;
        let mus: Vec<f64> = class
            .eligible
            .iter()
            .map(|e| self.rank(e, pacing))
            .map(|r| if r > 0.0 { r.ln() } else { f64::NEG_INFINITY })
            .collect();
        let live: Vec<usize> = (0..mus.len()).filter(|&k| mus[k].is_finite()).collect();
        let reserve = self.reserve.max(0.0);
        let rhos: Vec<f64> = class
            .eligible
            .iter()
            .map(|e| {
                if reserve > 0.0 {
                    (reserve * e.predicted_ctr).ln()
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let hi_mu = live
            .iter()
            .map(|&k| mus[k])
            .fold(f64::NEG_INFINITY, f64::max);
        let lo_mu = live.iter().map(|&k| mus[k]).fold(f64::INFINITY, f64::min);
        // Below lo_mu - 4s a Gumbel's CDF is exp(-e^4), nil; right of the highest mu the
        // payment integrand decays as exp(-(1 - s) z), below 1e-13 at z = 30 / (1 - s).
        let hi = hi_mu + 30.0 * s / (1.0 - s);
        let h = s / GRID_PER_SPREAD;
        let cdf = |j: usize, z: f64| (-(-(z.max(rhos[j]) - mus[j]) / s).exp()).exp();
        let mut sold = 0.0;
        for &i in &live {
            let lo = (lo_mu - 4.0 * s).max(rhos[i]);
            if lo >= hi {
                continue;
            }
            let points = ((hi - lo) / h).ceil() as usize + 1;
            let others = |z: f64| -> f64 {
                live.iter()
                    .filter(|&&j| j != i)
                    .map(|&j| cdf(j, z))
                    .product()
            };
            // The others all below the grid's start (the reserve, if it binds): pay R_i.
            let m0 = others(lo);
            let base = if rhos[i].is_finite() {
                reserve * class.eligible[i].predicted_ctr * m0
            } else {
                0.0
            };
            let (mut win, mut pay, mut value) = (0.0, 0.0, 0.0);
            let (mut above, mut m_prev, mut y_prev) = (0.0, m0, lo);
            for k in 0..points {
                let y = lo + k as f64 * h;
                let m = others(y);
                if k > 0 {
                    above += 0.5 * (y_prev.exp() + y.exp()) * (m - m_prev);
                }
                (m_prev, y_prev) = (m, y);
                let z = (y - mus[i]) / s;
                // Trapezoids: the grid's ends carry half a step.
                let end = if k == 0 || k + 1 == points { 0.5 } else { 1.0 };
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

/// A group of identical advertisers in a [`Pooled`] market.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tier {
    /// How many advertisers (at least 1).
    pub count: u32,
    /// What a click is worth to each, dollars.
    pub value_per_click: f64,
    /// Each one's budget over the horizon, dollars (`f64::INFINITY`: no limit).
    pub budget: f64,
}

/// A market whose every impression is open to every bidder, with one predicted CTR per
/// impression class shared by all of them: by the scaling property of docs/model.md §17.2 its
/// classes clear as one, so it is described by its expected clicks alone, and with spread its
/// outcome has a closed form (§17.3). Its bidders come in tiers of identical advertisers.
#[derive(Clone, Debug, PartialEq)]
pub struct Pooled {
    /// The advertisers, by tier.
    pub tiers: Vec<Tier>,
    /// Expected clicks of every impression on sale, were each shown an ad.
    pub clicks: f64,
    /// The least a click sells for, dollars.
    pub reserve: f64,
    /// Scale of the log-Gumbel factor on values, in (0, 1).
    pub spread: f64,
}

/// What a [`Pooled`] market clears to, per advertiser of each tier (not per tier).
#[derive(Clone, Debug, PartialEq)]
pub struct PooledOutcome {
    /// Each advertiser's payments, dollars.
    pub spend: Vec<f64>,
    /// Each advertiser's clicks.
    pub clicks: Vec<f64>,
    /// What each advertiser's clicks are worth to it, dollars.
    pub value: Vec<f64>,
    /// Clicks of impressions no bid reached the reserve on.
    pub unsold: f64,
}

impl PooledOutcome {
    /// The platform's revenue.
    pub fn revenue(&self, tiers: &[Tier]) -> f64 {
        self.spend
            .iter()
            .zip(tiers)
            .map(|(s, t)| s * f64::from(t.count))
            .sum()
    }
}

/// The regularized lower incomplete gamma function P(a, x), with P(a, 0) = 0 and
/// P(a, inf) = 1.
fn lower_gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if !x.is_finite() || x > a + 50.0 {
        // The upper tail is below x^(a-1) e^(-x) < e^(-50) for a <= 1.
        1.0
    } else {
        statrs::function::gamma::checked_gamma_lr(a, x).unwrap_or(1.0)
    }
}

impl Pooled {
    /// Clears the market with one pacing multiplier per tier, in closed form (docs/model.md
    /// §17.3). A bidder's rank per click is `a = pacing x value x exp(s G)`: Fréchet with scale
    /// `a` and shape `1/s`. With `A` the sum of every bidder's `a^(1/s)`, `C` the same without
    /// the bidder and `x = reserve^(-1/s)`, a bidder wins a share `(a^(1/s) / A)(1 - e^(-A x))`,
    /// pays per click-unit `r e^(-C x)(1 - e^(-a^(1/s) x)) + Gamma(1-s) [C^s P(1-s, C x) -
    /// C A^(s-1) P(1-s, A x)]` (the reserve when it alone binds, else the others' highest rank
    /// above it) and gains `(a^(1/s) / A) A^s Gamma(1-s) P(1-s, A x) / pacing` in value.
    pub fn clear(&self, pacing: &[f64]) -> PooledOutcome {
        let n = self.tiers.len();
        let mut out = PooledOutcome {
            spend: vec![0.0; n],
            clicks: vec![0.0; n],
            value: vec![0.0; n],
            unsold: self.clicks,
        };
        let s = self.spread;
        let alpha = 1.0 / s;
        // Ranks in units of the largest, so that powers 1/s neither overflow nor underflow.
        let ranks: Vec<f64> = self
            .tiers
            .iter()
            .zip(pacing)
            .map(|(t, p)| p * t.value_per_click)
            .collect();
        let top = ranks.iter().copied().fold(0.0, f64::max);
        if !(top > 0.0 && self.clicks > 0.0) {
            return out;
        }
        let powers: Vec<f64> = ranks.iter().map(|a| (a / top).powf(alpha)).collect();
        let total: f64 = powers
            .iter()
            .zip(&self.tiers)
            .map(|(w, t)| w * f64::from(t.count))
            .sum();
        let r = self.reserve.max(0.0) / top;
        let x = if r > 0.0 {
            r.powf(-alpha)
        } else {
            f64::INFINITY
        };
        let g = statrs::function::gamma::gamma(1.0 - s);
        let e = |y: f64| if y.is_finite() { (-y).exp() } else { 0.0 };
        let p_all = lower_gamma_p(1.0 - s, total * x);
        let sold = 1.0 - e(total * x);
        for k in 0..n {
            let w = powers[k];
            if w <= 0.0 {
                continue;
            }
            let others: f64 = w * f64::from(self.tiers[k].count - 1)
                + powers
                    .iter()
                    .zip(&self.tiers)
                    .enumerate()
                    .filter(|&(j, _)| j != k)
                    .map(|(_, (v, t))| v * f64::from(t.count))
                    .sum::<f64>();
            let reserve_part = if r > 0.0 {
                r * e(others * x) * (1.0 - e(w * x))
            } else {
                0.0
            };
            let runner_up = if others > 0.0 {
                g * (others.powf(s) * lower_gamma_p(1.0 - s, others * x)
                    - others * total.powf(s - 1.0) * p_all)
            } else {
                0.0
            };
            let win = w / total * sold;
            let value = w / total * total.powf(s) * g * p_all / (ranks[k] / top);
            out.clicks[k] = self.clicks * win;
            out.spend[k] = self.clicks * (reserve_part + runner_up).max(0.0) * top;
            out.value[k] = self.clicks * value * self.tiers[k].value_per_click;
        }
        out.unsold = self.clicks * (1.0 - sold);
        out
    }

    /// Multiplicative pacing of each tier to its advertisers' budgets, as
    /// [`Market::pace`], starting from `start` (one multiplier per tier; a previous solution
    /// makes a warm start). Returns the multipliers, the outcome, and whether every budget
    /// holds.
    pub fn pace(
        &self,
        start: &[f64],
        tolerance: f64,
        max_rounds: usize,
    ) -> (Vec<f64>, PooledOutcome, bool) {
        let n = self.tiers.len();
        let mut alpha: Vec<f64> = start.iter().map(|a| a.clamp(MIN_PACING, 1.0)).collect();
        let mut out = self.clear(&alpha);
        let step = (self.spread / 2.0).clamp(0.05, 0.5);
        let holds = |k: usize, a: &[f64], o: &PooledOutcome| {
            let b = self.tiers[k].budget;
            o.spend[k] <= b && (a[k] >= 1.0 || o.spend[k] >= b * (1.0 - tolerance))
        };
        let mut rounds = 0;
        while rounds < max_rounds && !(0..n).all(|k| holds(k, &alpha, &out)) {
            rounds += 1;
            let sold = self.clicks - out.unsold;
            for (k, a) in alpha.iter_mut().enumerate() {
                let tier = &self.tiers[k];
                if !tier.budget.is_finite() {
                    continue;
                }
                let spent = out.spend[k];
                let ratio = if spent > 0.0 {
                    tier.budget / spent
                } else {
                    f64::INFINITY
                };
                // A Newton step in the logs: a tier winning a share W of the clicks spends
                // about as its multiplier to the power (1 - W) / s + W (its wins move as the
                // power 1/s of its rank against the others; what it pays the runner-ups of
                // its own tier moves with it). Far from the budget, at least the damped step.
                let w = if sold > 0.0 {
                    (out.clicks[k] * f64::from(tier.count) / sold).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let elasticity = (1.0 - w) / self.spread + w;
                let power = if (0.25..4.0).contains(&ratio) {
                    1.0 / elasticity
                } else {
                    step.max(1.0 / elasticity)
                };
                *a = (*a * ratio.powf(power)).clamp(MIN_PACING, 1.0);
            }
            out = self.clear(&alpha);
        }
        for _ in 0..50 {
            let over: Vec<usize> = (0..n)
                .filter(|&k| out.spend[k] > self.tiers[k].budget)
                .collect();
            if over.is_empty() {
                break;
            }
            for k in over {
                let ratio = self.tiers[k].budget / out.spend[k];
                alpha[k] = (alpha[k] * ratio * (1.0 - 1e-9)).max(MIN_PACING);
            }
            out = self.clear(&alpha);
        }
        let converged = (0..n).all(|k| holds(k, &alpha, &out));
        (alpha, out, converged)
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
        // A bid of $2 a click against a reserve of $0.50: 1000 impressions at CTR 0.01 make
        // 10 clicks at $0.50.
        let class = || Class {
            impressions: 1000.0,
            eligible: vec![at(0, 0.01, 0.01)],
        };
        let m = market(vec![bidder(2.0)], vec![class()], 0.5, 0.0);
        let o = m.clear(&[1.0]);
        assert_eq!(
            (o.impressions[0], o.clicks[0], o.unsold),
            (1000.0, 10.0, 0.0)
        );
        assert!(close(o.spend[0], 5.0, 1e-12), "{}", o.spend[0]);
        assert!(close(o.value[0], 20.0, 1e-12));
        let o = market(vec![bidder(2.0)], vec![class()], 2.5, 0.0).clear(&[1.0]);
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
            0.1,
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
        // log-rank mu + s G reaches ln R, R = reserve x predicted CTR = 1.5 x 0.01, with
        // probability 1 - exp(-exp(-(ln R - mu) / s)), and then pays R per impression.
        let (s, r) = (0.3, 0.015);
        let m = market(
            vec![bidder(2.0)],
            vec![Class {
                impressions: 1.0,
                eligible: vec![at(0, 0.01, 0.01)],
            }],
            r / 0.01,
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
        // Reserves below every bid, above the last one's, and above all but the first: the
        // first then pays the reserve.
        for reserve in [0.1, 1.5, 2.5] {
            let exact = market(bidders.clone(), classes.clone(), reserve, 0.0).clear(&[1.0; 3]);
            let smooth = market(bidders.clone(), classes.clone(), reserve, 0.01).clear(&[1.0; 3]);
            assert!(
                close(smooth.revenue(), exact.revenue(), 0.02),
                "{reserve}: {} vs {}",
                smooth.revenue(),
                exact.revenue()
            );
            assert!(close(smooth.impressions[0], exact.impressions[0], 0.01));
        }
        let at_reserve = market(bidders, classes, 2.5, 0.0).clear(&[1.0; 3]);
        assert!(close(at_reserve.spend[0], 500.0 * 0.01 * 2.5, 1e-12));
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
        let free = market(bidders.clone(), classes.clone(), 0.1, 0.3).clear(&[1.0; 3]);
        bidders[0].budget = free.spend[0] * 0.4;
        bidders[2].budget = free.spend[2] * 10.0;
        let m = market(bidders.clone(), classes, 0.1, 0.3);
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
    fn scaling_the_predicted_ctrs_of_a_class_changes_no_outcome() {
        // Ranks and the reserve (per click, so in rank units R = r x predicted CTR) scale
        // together: who wins, what each pays and gets are the same. So a market's classes that
        // share their bidders can be cleared once, whatever their predicted CTRs.
        let class = |k: f64| Class {
            impressions: 800.0,
            eligible: vec![
                at(0, 0.010 * k, 0.012),
                at(1, 0.015 * k, 0.014),
                at(2, 0.008 * k, 0.009),
            ],
        };
        let bidders = vec![bidder(1.5), bidder(1.2), bidder(2.0)];
        for spread in [0.0, 0.3] {
            let a = market(bidders.clone(), vec![class(1.0)], 0.4, spread).clear(&[1.0, 0.8, 0.9]);
            let b = market(bidders.clone(), vec![class(3.7)], 0.4, spread).clear(&[1.0, 0.8, 0.9]);
            for i in 0..3 {
                assert!(close(a.spend[i], b.spend[i], 1e-9), "{spread}: {a:?} {b:?}");
                assert!(close(a.impressions[i], b.impressions[i], 1e-9));
            }
        }
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
            market(bidders, classes, 0.005, 0.0)
                .clear(&vec![1.0; n])
                .revenue()
        };
        assert!(revenue(1, true) < revenue(1, false));
        assert!(revenue(3, true) > revenue(3, false));
    }
    /// The grid market of a pooled one: every advertiser a bidder on one class whose
    /// impressions make the pooled clicks at CTR 0.02.
    fn expanded(p: &Pooled) -> Market {
        let mut bidders = Vec::new();
        for t in &p.tiers {
            for _ in 0..t.count {
                bidders.push(Bidder {
                    value_per_click: t.value_per_click,
                    budget: t.budget,
                });
            }
        }
        let eligible = (0..bidders.len()).map(|b| at(b, 0.02, 0.02)).collect();
        Market {
            bidders,
            classes: vec![Class {
                impressions: p.clicks / 0.02,
                eligible,
            }],
            reserve: p.reserve,
            spread: p.spread,
        }
    }

    #[test]
    fn the_pooled_closed_form_equals_the_grid_auction() {
        // Tiers of unequal values and pacing, with and without a binding reserve, thin and
        // thick: the closed form and the integral on the grid agree bidder by bidder.
        let tier = |count, value_per_click| Tier {
            count,
            value_per_click,
            budget: f64::INFINITY,
        };
        for (tiers, reserve, spread, pacing) in [
            (vec![tier(1, 2.0)], 0.5, 0.3, vec![1.0]),
            (vec![tier(2, 1.0)], 0.0, 0.4, vec![1.0]),
            (vec![tier(1, 2.0), tier(3, 1.2)], 0.0, 0.3, vec![0.7, 1.0]),
            (vec![tier(1, 2.0), tier(3, 1.2)], 0.9, 0.3, vec![0.7, 1.0]),
            (vec![tier(2, 3.0), tier(5, 1.0)], 1.5, 0.15, vec![0.4, 0.9]),
            (
                vec![tier(1, 1.0), tier(1, 1.0), tier(6, 0.8)],
                0.2,
                0.5,
                vec![1.0, 0.5, 1.0],
            ),
        ] {
            let p = Pooled {
                tiers,
                clicks: 40.0,
                reserve,
                spread,
            };
            let m = expanded(&p);
            let each: Vec<f64> = p
                .tiers
                .iter()
                .zip(&pacing)
                .flat_map(|(t, &a)| std::iter::repeat_n(a, t.count as usize))
                .collect();
            let grid = m.clear(&each);
            let closed = p.clear(&pacing);
            let mut b = 0;
            for (k, t) in p.tiers.iter().enumerate() {
                for (what, c, g) in [
                    ("spend", closed.spend[k], grid.spend[b]),
                    ("clicks", closed.clicks[k], grid.clicks[b]),
                    ("value", closed.value[k], grid.value[b]),
                ] {
                    assert!(
                        (c - g).abs() <= 2e-4 * g.abs().max(1e-3),
                        "{what} of tier {k} at reserve {reserve}: closed {c}, grid {g}"
                    );
                }
                b += t.count as usize;
            }
            let grid_unsold_clicks = grid.unsold * 0.02;
            assert!(
                (closed.unsold - grid_unsold_clicks).abs() <= 1e-3,
                "{} {grid_unsold_clicks}",
                closed.unsold
            );
        }
    }

    #[test]
    fn pooled_pacing_keeps_budgets_and_is_the_grid_markets_equilibrium() {
        // Two large advertisers with room and six small ones held to a tenth of what they
        // would spend unpaced.
        let free = Pooled {
            tiers: vec![
                Tier {
                    count: 2,
                    value_per_click: 1.5,
                    budget: f64::INFINITY,
                },
                Tier {
                    count: 6,
                    value_per_click: 1.5,
                    budget: f64::INFINITY,
                },
            ],
            clicks: 1000.0,
            reserve: 0.1,
            spread: 0.3,
        };
        let unpaced = free.clear(&[1.0, 1.0]);
        let mut p = free.clone();
        p.tiers[1].budget = unpaced.spend[1] / 10.0;
        let (alpha, out, converged) = p.pace(&[1.0, 1.0], 1e-6, 500);
        assert!(converged, "{alpha:?}");
        assert_eq!(alpha[0], 1.0, "the unconstrained tier is not paced");
        assert!(alpha[1] < 1.0);
        assert!(out.spend[1] <= p.tiers[1].budget);
        assert!(out.spend[1] >= p.tiers[1].budget * (1.0 - 1e-6));
        assert!(
            out.clicks[0] > unpaced.clicks[0],
            "the large ones win what the small give up"
        );
        // The grid market at the same multipliers spends the same.
        let m = expanded(&p);
        let each: Vec<f64> = [alpha[0]; 2].into_iter().chain([alpha[1]; 6]).collect();
        let grid = m.clear(&each);
        assert!((grid.revenue() - out.revenue(&p.tiers)).abs() < 2e-4 * grid.revenue());
        // A warm start from the solution is already there.
        let (again, _, ok) = p.pace(&alpha, 1e-6, 500);
        assert!(ok && again == alpha);
    }
}
