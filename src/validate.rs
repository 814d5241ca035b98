//! `adsim validate` (docs/model.md §13): the published findings and calibration figures as
//! named cases. Each runs a built-in scenario, reads the model quantity that stands for the
//! published one (defined in docs/model.md §13 before the case was first run), and judges it
//! by its criterion: a range or a direction. Figures the model takes as inputs are listed as
//! anchored; a figure the model cannot produce is not comparable, with the reason; a known
//! miss is a published figure the model misses for a stated mechanism, and a known miss that
//! starts passing is a failure too (the list must stay true).

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::document::Block;
use crate::error::{Error, Result};
use crate::metrics::Estimates;
use crate::scenario::{Resolved, Scenario};
use crate::table::{floats, texts};

/// How a case is judged.
#[derive(Clone, Debug, PartialEq)]
pub enum Criterion {
    /// The model's mean lies in `[low, high]`.
    Range(f64, f64),
    /// The model's quantity is above zero.
    Positive,
    /// The model takes the figure as an input: listed, not tested.
    Anchored,
    /// A calibration target: parameters were set so that the model reproduces the published
    /// point (given in the quantity's units); reported as fitted, with its residual, and never
    /// a pass.
    Fitted(f64),
    /// The model has no quantity that stands for the figure: the reason.
    NotComparable(&'static str),
}

/// Where a case's model quantity comes from: a metric of the summary, at an arm and the
/// level nearest a rate, or the difference of two such.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantity {
    /// `metric` of `arm` at the level nearest `rate`.
    At {
        /// The arm.
        arm: &'static str,
        /// The target rate whose nearest level is read.
        rate: f64,
        /// The summary metric.
        metric: &'static str,
    },
    /// The first minus the second.
    Difference(Box<Quantity>, Box<Quantity>),
    /// The largest relative deviation, |model / published - 1|, of the `people` of `arm`'s
    /// first level in the country table from published counts (code, people).
    CountryPeople {
        /// The arm.
        arm: &'static str,
        /// Published counts: country code and people.
        published: &'static [(&'static str, f64)],
    },
    /// None (anchored and not comparable cases).
    Nothing,
}

/// One validation case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short name (a key in docs/model.md §13).
    pub name: &'static str,
    /// The published finding or figure, in words.
    pub published: &'static str,
    /// Its source.
    pub source: &'static str,
    /// The built-in scenario it runs.
    pub scenario: &'static str,
    /// What in the model stands for it.
    pub model_quantity: &'static str,
    /// How to read it from the estimates.
    pub quantity: Quantity,
    /// Scale of the shown value (100 for percent).
    pub shown_scale: f64,
    /// How it is judged.
    pub criterion: Criterion,
    /// A known miss: the mechanism and a reference (docs/model.md §15).
    pub known_miss: Option<&'static str>,
}

fn at(arm: &'static str, rate: f64, metric: &'static str) -> Quantity {
    Quantity::At { arm, rate, metric }
}

/// Every case, in report order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "m-users",
            published: "M had 1 billion users (Feb 2016); the 22 listed countries, 673M by their 2016 counts",
            source: "WhatsApp, Feb 2016; data/countries.toml",
            scenario: "whatsapp-2016",
            model_quantity: "revenue.m_users_millions, the scale of every people figure (the 22 countries; the rest of the world is not spread over them)",
            quantity: Quantity::Nothing,
            shown_scale: 1.0,
            criterion: Criterion::Anchored,
            known_miss: None,
        },
        Case {
            name: "country-counts",
            published: "M users in 2016: India 160M, Brazil 100M, Germany 35M, Italy 25M",
            source: "WhatsApp, Nov 2016; Ibope, Dec 2015; Hamburg DPA, Sep 2016; AGCOM, Mar 2017",
            scenario: "whatsapp-2016",
            model_quantity: "people of the none arm in the country table: the largest deviation from the published counts, percent",
            quantity: Quantity::CountryPeople {
                arm: "none",
                published: &[("IN", 160e6), ("BR", 100e6), ("DE", 35e6), ("IT", 25e6)],
            },
            shown_scale: 100.0,
            criterion: Criterion::Range(0.0, 0.01),
            known_miss: None,
        },
        Case {
            name: "arpu",
            published: "S's Q3 and Q4 2016 ARPU by region and ad revenue ($6,816M, $8,629M), each day at its quarter's",
            source: "Facebook Q3 and Q4 2016 earnings",
            scenario: "whatsapp-2016",
            model_quantity: "the none arm's revenue, anchored per region to ARPU x accounts x ad share",
            quantity: Quantity::Nothing,
            shown_scale: 1.0,
            criterion: Criterion::Anchored,
            known_miss: None,
        },
        Case {
            name: "ca-match-rate",
            published: "Custom Audience match rates typically 30-50%",
            source: "advertiser reports (docs/model.md §14)",
            scenario: "whatsapp-2016",
            model_quantity: "ca_match_rate of the none arm (matched upload-days / uploaded upload-days)",
            quantity: at("none", 0.0, "ca_match_rate"),
            shown_scale: 100.0,
            criterion: Criterion::Range(0.30, 0.50),
            known_miss: None,
        },
        Case {
            name: "average-ctr",
            published: "Facebook ad CTR about 0.9% on average",
            source: "WordStream 2017 (all industries)",
            scenario: "whatsapp-2016",
            model_quantity: "ctr of the none arm (expected clicks / impressions, all campaigns)",
            quantity: at("none", 0.0, "ctr"),
            shown_scale: 100.0,
            criterion: Criterion::Fitted(0.009),
            known_miss: Some(
                "Every business runs a Custom Audience campaign to all its matched accounts, and customers click at ctr_customer (2.5%): Custom Audience campaigns take about 35% of impressions and 60% of the clicks (more since S's index holds numbers from security, Messenger and contact uploads), which lifts the average CTR to about 1.43%. The share of businesses that run such campaigns is not in the model (docs/model.md §15).",
            ),
        },
        Case {
            name: "interest-accuracy",
            published: "59% of US users found their interest categories accurate",
            source: "Pew Research Center 2019",
            scenario: "whatsapp-2016",
            model_quantity: "precision of the none arm's interest audiences (interested / flagged account-days)",
            quantity: at("none", 0.0, "precision"),
            shown_scale: 100.0,
            criterion: Criterion::Fitted(0.59),
            known_miss: None,
        },
        Case {
            name: "targeting-premium",
            published: "behaviourally targeted impressions sold at 2.68x run-of-network (the unweighted mean over networks); about 2.08x weighted by impressions",
            source: "Beales 2010",
            scenario: "whatsapp-2016",
            model_quantity: "market_targeted_price_ratio of the none arm (price per 1000 interest and Custom Audience impressions / per 1000 untargeted, weighted by impressions, from the markets); the criterion is 25% either side of the weighted 2.08",
            quantity: at("none", 0.0, "market_targeted_price_ratio"),
            shown_scale: 1.0,
            criterion: Criterion::Range(1.56, 2.6),
            known_miss: None,
        },
        Case {
            name: "opted-out-impressions",
            published: "impressions of users who opted out of behavioural ads sold at 52% lower prices (a ratio of 0.48)",
            source: "Johnson, Shriver & Du 2020",
            scenario: "whatsapp-2016",
            model_quantity: "market_unlinked_price_ratio of opt_out_window at 50% (price per 1000 impressions without M data in ad use / with, from the markets)",
            quantity: at("opt_out_window", 0.5, "market_unlinked_price_ratio"),
            shown_scale: 1.0,
            criterion: Criterion::Range(0.36, 0.6),
            known_miss: Some(
                "An account without M data keeps S's own evidence, so its impressions are still targeted and sell in the same markets at the same price per click; AdChoices opt-outs lose all behavioural targeting. M data is one source among S's, so the price gap it makes is far smaller than that of tracking as a whole (docs/model.md §13.3).",
            ),
        },
        Case {
            name: "cost-per-customer",
            published: "without off-site data the median advertiser's cost per incremental customer is about 37% higher",
            source: "Wernerfelt, Tuchman, Shapiro & Moakler (Meta experiments, about 107,000 advertisers)",
            scenario: "whatsapp-2016",
            model_quantity: "market_cost_per_customer_usd of the none arm minus opt_out_window at 0%, dollars (targeted spend per click by an interested person or customer, without M data less with it): an analogue, M data being one source among S's as off-site data is; the direction is judged",
            quantity: Quantity::Difference(
                Box::new(at("none", 0.0, "market_cost_per_customer_usd")),
                Box::new(at("opt_out_window", 0.0, "market_cost_per_customer_usd")),
            ),
            shown_scale: 1.0,
            criterion: Criterion::Positive,
            known_miss: None,
        },
        Case {
            name: "opt-out-default",
            published: "opt-out defaults keep most users sharing (organ donation 82%; AdChoices opt-outs 0.23%)",
            source: "Johnson & Goldstein 2003; Johnson, Shriver & Du 2020",
            scenario: "opt-in",
            model_quantity: "share_in_ad_use of opt_out_window (behavioral mode)",
            quantity: at("opt_out_window", 0.0, "share_in_ad_use"),
            shown_scale: 100.0,
            criterion: Criterion::Anchored,
            known_miss: None,
        },
        Case {
            name: "opt-in-default",
            published: "opt-in loses most (organ donation 42%; app tracking opt-in 15-26%)",
            source: "Johnson & Goldstein 2003; Flurry 2021",
            scenario: "opt-in",
            model_quantity: "share_in_ad_use of opt_in (behavioral mode)",
            quantity: at("opt_in", 0.0, "share_in_ad_use"),
            shown_scale: 100.0,
            criterion: Criterion::Anchored,
            known_miss: None,
        },
        Case {
            name: "selection",
            published: "after GDPR opt-outs, those who remained were worth more each",
            source: "Aridor, Che & Salz 2023",
            scenario: "whatsapp-2016",
            model_quantity: "value_ratio_in_ad_use_change of opt_out_window at 10% (value per account-day in ad use relative to the base, minus the same at 0%, paired by replication)",
            quantity: at("opt_out_window", 0.1, "value_ratio_in_ad_use_change"),
            shown_scale: 1.0,
            criterion: Criterion::Positive,
            known_miss: None,
        },
        Case {
            name: "cutting-the-link",
            published: "cutting the data link cuts ad effectiveness (EU privacy directive: about -65%)",
            source: "Goldfarb & Tucker 2011",
            scenario: "eu-pause-2016",
            model_quantity: "revenue_change_musd of opt_out_window minus opt_out_window_eu_pause at 0%, $M per quarter (the value the EU pause takes away)",
            quantity: Quantity::Difference(
                Box::new(at("opt_out_window", 0.0, "revenue_change_musd")),
                Box::new(at("opt_out_window_eu_pause", 0.0, "revenue_change_musd")),
            ),
            shown_scale: 1.0,
            criterion: Criterion::Positive,
            known_miss: None,
        },
        Case {
            name: "att-cost",
            published: "Meta's estimate of about $10B of 2022 revenue lost to app tracking opt-in",
            source: "Meta Q4 2021 earnings call",
            scenario: "whatsapp-2016",
            model_quantity: "none",
            quantity: Quantity::Nothing,
            shown_scale: 1.0,
            criterion: Criterion::NotComparable(
                "app tracking transparency removed off-platform tracking on iOS in 2022; the model removes one source (M's numbers) in 2016",
            ),
            known_miss: None,
        },
        Case {
            name: "leave-2021",
            published: "2021: no opt-out, and users left (25M new Telegram users in 72 hours)",
            source: "Telegram, Jan 2021",
            scenario: "whatsapp-2021",
            model_quantity: "policy.behavior.leave_rate, an input",
            quantity: Quantity::Nothing,
            shown_scale: 1.0,
            criterion: Criterion::Anchored,
            known_miss: None,
        },
    ]
}

/// "Calibration": the validation cases (docs/model.md §13) that run this scenario, judged on
/// this run: the same cases, criteria and statuses as `adsim validate`.
pub fn run_blocks(resolved: &Resolved, e: &Estimates) -> Vec<Block> {
    let s = &resolved.scenario;
    let mut b = vec![Block::Heading(2, "Calibration".into())];
    let outcomes: Vec<_> = cases()
        .iter()
        .filter(|c| c.scenario == s.name)
        .map(|c| judge(c, Some(e)))
        .collect();
    if outcomes.is_empty() {
        b.push(Block::Para(format!(
            "No validation case runs the scenario `{}`; `adsim validate` checks the built-in scenarios against the published findings (docs/model.md §13).",
            s.name
        )));
        return b;
    }
    b.push(Block::Table(
        [
            "case",
            "role",
            "published",
            "source",
            "model",
            "criterion",
            "status",
        ]
        .map(String::from)
        .to_vec(),
        outcomes
            .iter()
            .map(|o| {
                vec![
                    format!("`{}`", o.case.name),
                    o.case.role().into(),
                    o.case.published.into(),
                    o.case.source.into(),
                    shown(o),
                    criterion_text(&o.case),
                    if o.note.is_empty() {
                        o.status.label().into()
                    } else {
                        format!("{} ({})", o.status.label(), o.note)
                    },
                ]
            })
            .collect(),
    ));
    b.push(Block::Para(
        "The cases of `adsim validate` that run this scenario, judged on this run; their model quantities are defined in docs/model.md §13. Only held-out cases can pass; a calibration target is a figure parameters were set to reproduce, shown with its residual. A known miss is a published figure the model misses for a stated mechanism (validation.md explains each).".into(),
    ));
    b
}

/// A case's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Inside its criterion.
    Pass,
    /// Outside it (or a known miss that now passes).
    Fail,
    /// A known miss, still missed.
    KnownMiss,
    /// An input of the model.
    Anchored,
    /// No model quantity stands for it.
    NotComparable,
    /// A calibration target: reported with its residual, not judged.
    Fitted,
}

impl Status {
    /// The label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::KnownMiss => "known miss",
            Status::Anchored => "anchored",
            Status::NotComparable => "not comparable",
            Status::Fitted => "fitted",
        }
    }
}

impl Case {
    /// What the case is to the model: an input, a calibration target, a held-out finding, or
    /// not comparable. Only held-out cases can pass (docs/model.md §13.1).
    pub fn role(&self) -> &'static str {
        match self.criterion {
            Criterion::Anchored => "input",
            Criterion::Fitted(_) => "calibration target",
            Criterion::Range(..) | Criterion::Positive => "held out",
            Criterion::NotComparable(_) => "not comparable",
        }
    }
}

/// A case's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// The model's mean, low and high (NaN where none).
    pub value: [f64; 3],
    /// Its status.
    pub status: Status,
    /// Why it failed, if it did.
    pub note: String,
}

/// The row of `metric` of `arm` at the level nearest `rate`: (mean, lo, hi).
fn read(summary: &DataFrame, arm: &str, rate: f64, metric: &str) -> Option<[f64; 3]> {
    let (arms, rates) = (texts(summary, "arm"), floats(summary, "rate"));
    let i = (0..summary.height())
        .filter(|&i| arms[i] == arm)
        .min_by(|&a, &b| (rates[a] - rate).abs().total_cmp(&(rates[b] - rate).abs()))?;
    let get = |c: &str| floats(summary, c).get(i).copied().unwrap_or(f64::NAN);
    Some([
        get(metric),
        get(&format!("{metric}_lo")),
        get(&format!("{metric}_hi")),
    ])
}

/// The largest |model / published - 1| over `published`, from the first level of `arm` in
/// the country table.
fn country_deviation(countries: &DataFrame, arm: &str, published: &[(&str, f64)]) -> Option<f64> {
    let (arms, codes) = (texts(countries, "arm"), texts(countries, "country"));
    let (levels, people) = (floats(countries, "level"), floats(countries, "people"));
    published
        .iter()
        .map(|&(code, count)| {
            let i = (0..countries.height())
                .find(|&i| arms[i] == arm && codes[i] == code && levels[i] == 0.0)?;
            Some((people[i] / count - 1.0).abs())
        })
        .try_fold(0.0f64, |worst, d| Some(worst.max(d?)))
}

fn evaluate_quantity(q: &Quantity, e: &Estimates) -> Option<[f64; 3]> {
    let summary = &e.summary;
    match q {
        Quantity::At { arm, rate, metric } => read(summary, arm, *rate, metric),
        Quantity::CountryPeople { arm, published } => {
            country_deviation(&e.countries, arm, published).map(|d| [d, f64::NAN, f64::NAN])
        }
        // The difference's interval is not the difference of intervals: only the mean.
        Quantity::Difference(a, b) => {
            let (a, b) = (evaluate_quantity(a, e)?, evaluate_quantity(b, e)?);
            Some([a[0] - b[0], f64::NAN, f64::NAN])
        }
        Quantity::Nothing => None,
    }
}

/// Judges one case on its scenario's estimates.
pub fn judge(case: &Case, estimates: Option<&Estimates>) -> Outcome {
    let value = estimates
        .and_then(|e| evaluate_quantity(&case.quantity, e))
        .unwrap_or([f64::NAN; 3]);
    let inside = match case.criterion {
        Criterion::Range(lo, hi) => Some((lo..=hi).contains(&value[0])),
        Criterion::Positive => Some(value[0] > 0.0),
        Criterion::Anchored | Criterion::NotComparable(_) | Criterion::Fitted(_) => None,
    };
    if let Criterion::Fitted(target) = case.criterion {
        let note = if value[0].is_finite() {
            let digits = if case.shown_scale > 1.0 { 2 } else { 3 };
            format!(
                "residual {:+.digits$}",
                (value[0] - target) * case.shown_scale
            )
        } else {
            "the model quantity is missing".into()
        };
        return Outcome {
            case: case.clone(),
            value,
            status: Status::Fitted,
            note,
        };
    }
    let (status, note) = match (inside, case.known_miss) {
        (None, _) if matches!(case.criterion, Criterion::Anchored) => {
            (Status::Anchored, String::new())
        }
        (None, _) => (Status::NotComparable, String::new()),
        (Some(true), None) => (Status::Pass, String::new()),
        (Some(false), None) => (
            Status::Fail,
            if value[0].is_finite() {
                "outside the criterion".into()
            } else {
                "the model quantity is missing".into()
            },
        ),
        (Some(false), Some(_)) => (Status::KnownMiss, String::new()),
        (Some(true), Some(_)) => (
            Status::Fail,
            "a known miss now passes: update the list of known misses (docs/model.md §15)".into(),
        ),
    };
    Outcome {
        case: case.clone(),
        value,
        status,
        note,
    }
}

/// Runs every case's scenario once at `users` x `replications` (seed `seed`) through
/// `evaluate` (the run's evaluation path, [`crate::run::evaluate`], handed in so that the
/// validation does not depend on the run) and judges the cases.
pub fn validate(
    users: u64,
    replications: u32,
    seed: u64,
    progress: &dyn Fn(&str),
    evaluate: &dyn Fn(&Resolved) -> Result<Estimates>,
) -> Result<Vec<Outcome>> {
    let all = cases();
    let mut estimates: BTreeMap<&str, Estimates> = BTreeMap::new();
    for case in &all {
        if matches!(case.quantity, Quantity::Nothing) || estimates.contains_key(case.scenario) {
            continue;
        }
        progress(case.scenario);
        let (mut s, source) = Scenario::builtin(case.scenario)?;
        s.population.users = users;
        s.population.replications = replications;
        s.population.seed = seed;
        let resolved = s.resolve(&source, Path::new("."))?;
        let e = evaluate(&resolved)?;
        estimates.insert(case.scenario, e);
    }
    Ok(all
        .iter()
        .map(|c| judge(c, estimates.get(c.scenario)))
        .collect())
}

/// The shown value of an outcome: mean with interval, scaled.
pub fn shown(o: &Outcome) -> String {
    let [m, lo, hi] = o.value.map(|x| x * o.case.shown_scale);
    if !m.is_finite() {
        return "-".into();
    }
    let digits = if m.abs() >= 100.0 { 1 } else { 3 };
    if lo.is_finite() && hi.is_finite() {
        format!("{m:.digits$} [{lo:.digits$}, {hi:.digits$}]")
    } else {
        format!("{m:.digits$}")
    }
}

/// The criterion in words.
pub fn criterion_text(c: &Case) -> String {
    match c.criterion {
        Criterion::Range(lo, hi) => {
            // Bounds as written (0.7, not 0.7000000000000001).
            let num = |x: f64| format!("{}", (x * c.shown_scale * 1e6).round() / 1e6);
            format!("in [{}, {}]", num(lo), num(hi))
        }
        Criterion::Positive => "above 0".into(),
        Criterion::Anchored => "input".into(),
        Criterion::Fitted(target) => {
            format!("fitted to {}", (target * c.shown_scale * 1e6).round() / 1e6)
        }
        Criterion::NotComparable(_) => "-".into(),
    }
}

/// The validation report: known misses first, then every case.
pub fn blocks(outcomes: &[Outcome], users: u64, replications: u32) -> Vec<Block> {
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let mut b = vec![
        Block::Heading(1, "adsim validation".into()),
        Block::Para(format!(
            "{} cases at {users} users x {replications} replications. Held out (no parameter was set to reproduce them; only these can pass): {} pass, {} fail, {} known misses. Calibration targets (parameters were set to reproduce them; reported with their residual, not judged): {}. Inputs of the model (listed, not tested): {}. Not comparable: {}. Each case's model quantity is defined in docs/model.md §13; intervals cover Monte Carlo noise only.",
            outcomes.len(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::KnownMiss),
            count(Status::Fitted),
            count(Status::Anchored),
            count(Status::NotComparable),
        )),
        Block::Heading(2, "Known misses and residuals".into()),
    ];
    for o in outcomes.iter().filter(|o| o.case.known_miss.is_some()) {
        b.push(Block::Para(format!(
            "`{}` ({}): the model gives {}, published {} ({}). {}",
            o.case.name,
            o.status.label(),
            shown(o),
            o.case.published,
            o.case.source,
            o.case.known_miss.unwrap_or_default()
        )));
    }
    b.push(Block::Heading(2, "Cases".into()));
    b.push(Block::Table(
        ["case", "role", "scenario", "model", "criterion", "status"]
            .map(String::from)
            .to_vec(),
        outcomes
            .iter()
            .map(|o| {
                vec![
                    format!("`{}`", o.case.name),
                    o.case.role().into(),
                    o.case.scenario.into(),
                    shown(o),
                    criterion_text(&o.case),
                    if o.note.is_empty() {
                        o.status.label().into()
                    } else {
                        format!("{}: {}", o.status.label(), o.note)
                    },
                ]
            })
            .collect(),
    ));
    b.push(Block::Heading(2, "What each case compares".into()));
    for o in outcomes {
        let why = match o.case.criterion {
            Criterion::NotComparable(reason) => format!(" Not comparable: {reason}."),
            _ => String::new(),
        };
        b.push(Block::Para(format!(
            "`{}`: published: {} ({}). Model: {}.{why}",
            o.case.name, o.case.published, o.case.source, o.case.model_quantity
        )));
    }
    b
}

/// The outcomes as a table (validation.csv).
pub fn frame(outcomes: &[Outcome]) -> PolarsResult<DataFrame> {
    let col = |f: &dyn Fn(&Outcome) -> String| outcomes.iter().map(f).collect::<Vec<_>>();
    let num = |k: usize| {
        outcomes
            .iter()
            .map(|o| o.value[k] * o.case.shown_scale)
            .map(|x| x.is_finite().then_some(x))
            .collect::<Vec<_>>()
    };
    df!(
        "case" => col(&|o| o.case.name.into()),
        "role" => col(&|o| o.case.role().into()),
        "scenario" => col(&|o| o.case.scenario.into()),
        "published" => col(&|o| o.case.published.into()),
        "source" => col(&|o| o.case.source.into()),
        "model_quantity" => col(&|o| o.case.model_quantity.into()),
        "model" => num(0),
        "model_lo" => num(1),
        "model_hi" => num(2),
        "criterion" => col(&|o| criterion_text(&o.case)),
        "status" => col(&|o| o.status.label().into()),
        "note" => col(&|o| o.note.clone()),
    )
}

/// Writes validation.md, .html and .csv into `out` (atomically).
pub fn write(
    outcomes: &[Outcome],
    users: u64,
    replications: u32,
    out: &Path,
    force: bool,
) -> Result<()> {
    let blocks = blocks(outcomes, users, replications);
    crate::folder::write_dir(out, force, |tmp| {
        crate::folder::write_text(
            &tmp.join("validation.md"),
            &crate::document::markdown(&blocks),
        )?;
        crate::folder::write_text(
            &tmp.join("validation.html"),
            &crate::document::html(&blocks, tmp)?,
        )?;
        let mut df = frame(outcomes).map_err(|source| Error::Table {
            path: tmp.join("validation.csv"),
            source,
        })?;
        crate::folder::write_csv(&tmp.join("validation.csv"), &mut df)
    })
}

/// Whether every case passed or is a known miss, anchored or not comparable.
pub fn all_hold(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| o.status != Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(criterion: Criterion, known_miss: Option<&'static str>) -> Case {
        Case {
            name: "x",
            published: "p",
            source: "s",
            scenario: "whatsapp-2016",
            model_quantity: "q",
            quantity: at("none", 0.0, "ctr"),
            shown_scale: 1.0,
            criterion,
            known_miss,
        }
    }

    fn estimates(ctr: f64) -> Estimates {
        let summary = df!(
            "arm" => ["none", "a"],
            "rate" => [0.0, 0.5],
            "ctr" => [ctr, 0.5],
            "ctr_lo" => [ctr - 0.001, 0.4],
            "ctr_hi" => [ctr + 0.001, 0.6],
        )
        .unwrap();
        Estimates {
            summary,
            segments: DataFrame::empty(),
            countries: DataFrame::empty(),
            timeline: DataFrame::empty(),
            ages: DataFrame::empty(),
            revenue_days: DataFrame::empty(),
            market: DataFrame::empty(),
        }
    }

    #[test]
    fn statuses_follow_the_criterion_and_the_known_misses() {
        let e = estimates(0.009);
        let range = Criterion::Range(0.007, 0.011);
        assert_eq!(
            judge(&case(range.clone(), None), Some(&e)).status,
            Status::Pass
        );
        assert_eq!(
            judge(&case(Criterion::Range(0.01, 0.02), None), Some(&e)).status,
            Status::Fail
        );
        // A known miss that is missed is fine; one that passes fails: the list must stay true.
        assert_eq!(
            judge(&case(Criterion::Range(0.01, 0.02), Some("m")), Some(&e)).status,
            Status::KnownMiss
        );
        let o = judge(&case(range, Some("m")), Some(&e));
        assert_eq!(o.status, Status::Fail);
        assert!(o.note.contains("known miss now passes"));
        assert_eq!(
            judge(&case(Criterion::Anchored, None), None).status,
            Status::Anchored
        );
        assert_eq!(
            judge(&case(Criterion::NotComparable("r"), None), None).status,
            Status::NotComparable
        );
        // The value is read at the level nearest the case's rate, with its interval.
        let v = judge(&case(Criterion::Positive, None), Some(&e)).value;
        assert!(
            v.iter()
                .zip([0.009, 0.008, 0.010])
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{v:?}"
        );
        assert!(!all_hold(&[o]));
    }

    #[test]
    fn a_calibration_target_never_passes_and_reports_its_residual() {
        // The model lands exactly on the target and inside any range: still only "fitted".
        let e = estimates(0.009);
        let o = judge(&case(Criterion::Fitted(0.009), None), Some(&e));
        assert_eq!(o.status, Status::Fitted);
        assert_eq!(o.case.role(), "calibration target");
        let o = judge(&case(Criterion::Fitted(0.007), Some("m")), Some(&e));
        assert_eq!(
            o.status,
            Status::Fitted,
            "a fitted case is not a known miss either"
        );
        assert!(o.note.contains("residual +0.002"), "{}", o.note);
        assert!(all_hold(&[o]));
        // The built-in split: the cases the document says were fitted are calibration targets,
        // the price, selection, country-count and cutting-the-link cases are held out.
        let role = |n: &str| {
            cases()
                .into_iter()
                .find(|c| c.name == n)
                .map(|c| c.role())
                .unwrap_or("missing")
        };
        for n in ["average-ctr", "interest-accuracy"] {
            assert_eq!(role(n), "calibration target", "{n}");
        }
        for n in [
            "targeting-premium",
            "opted-out-impressions",
            "cost-per-customer",
            "selection",
            "country-counts",
            "cutting-the-link",
            "ca-match-rate",
        ] {
            assert_eq!(role(n), "held out", "{n}");
        }
    }

    #[test]
    fn case_names_are_unique_and_every_scenario_is_built_in() {
        let all = cases();
        let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for c in &all {
            assert!(Scenario::builtin(c.scenario).is_ok(), "{}", c.scenario);
            let tested = matches!(c.criterion, Criterion::Range(..) | Criterion::Positive);
            let has = !matches!(c.quantity, Quantity::Nothing);
            assert!(!tested || has, "{}: a tested case needs a quantity", c.name);
            assert!(
                !matches!(c.criterion, Criterion::NotComparable(_)) || !has,
                "{}: a case that is not comparable has no quantity",
                c.name
            );
        }
    }
}
