//! Policy arms and opt-out (docs/model.md §4): who opts out, when, and what each arm does with the data.
//!
//! Who: the latent privacy score of [`crate::population`]. At target rate `r` the users whose
//! score lies above the `1 - r` quantile of the score's distribution opt out, computed from the
//! distribution itself ([`crate::calibration`]) or, on request, taken from a calibration sample
//! of its own; either way thresholds do not depend on N or on shards.
//! Thresholds fall as the rate rises, so opt-out sets are nested across levels: a user is out
//! at every level from its *flip level* on ([`Thresholds::flip`]).
//!
//! When: a user who reads the notice acts on day 0; the others act in Settings on a day of the
//! window drawn from a decaying hazard (half-life `settings_half_life_days`).
//!
//! What: an [`Arm`] says, for a user's state at a level, whether its number went to S, whether
//! its data is in ad use (in the steady state after the window, regional rules applied), on
//! which day its ad use starts and ends, and how many person-days of ad use came before its
//! opt-out took effect.

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;
use crate::rng::{Stream, Threshold, UserKey, UserRng};
use crate::targeting::MEvidence;

/// What an arm does with M's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmKind {
    /// No sharing: the counterfactual every lift is measured against.
    None,
    /// 2016: sharing on by default; untick at the notice (day 0) or opt out in Settings on
    /// days 1..W.
    OptOutWindow,
    /// Sharing only for users who actively agree.
    OptIn,
    /// 2021: no opt-out; users who object leave M.
    NoChoice,
    /// Sharing for ads that was already on before the horizon (the 2016 status quo as 2021
    /// found it): data in ad use from day 0, or from a new user's sign-up; the users out at a
    /// level opted out before the horizon and are never in ad use; no one acts during it.
    Standing,
}

/// What an opt-out stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// 2016 reality: the data still goes to S, but is not used for ads.
    #[default]
    Ads,
    /// Nothing is shared.
    All,
}

/// A regional rule's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Ad use off from the start.
    Off,
    /// Ad use paused from day `from_day`.
    Pause,
}

/// Ad use off, or paused from a day, for listed countries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionalRule {
    /// ISO codes of the countries the rule covers.
    pub countries: Vec<String>,
    /// Off, or paused.
    pub rule: RuleKind,
    /// For `pause`: the first day without ad use (day 0 is the notice).
    #[serde(default)]
    pub from_day: u32,
}

/// One policy arm of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Name in outputs (unique).
    pub name: String,
    /// What the arm does.
    pub kind: ArmKind,
    /// What an opt-out stops (`opt_out_window` only).
    #[serde(default)]
    pub scope: Scope,
    /// Regional rules on top.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regional: Vec<RegionalRule>,
    /// The arm's one opt-out rate, in place of the sweep (rate mode) or of its design's rate
    /// (behavioral mode). Required on a `standing` arm in behavioral mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// What interest evidence M's data carries in this arm; default `targeting.m_evidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_evidence: Option<MEvidence>,
}

/// Whether rates are swept or derived from the policy design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sweep a grid of target opt-out rates.
    #[default]
    Rate,
    /// Derive each arm's rate from its design (notice, default, friction, window).
    Behavioral,
}

/// How the score thresholds of the rate levels are set (docs/model.md §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMethod {
    /// The quantiles of the score's own distribution, computed: no sampling error, the same
    /// in every replication.
    #[default]
    Exact,
    /// The order statistics of a calibration sample of `calibration_users` scores drawn for
    /// each replication (adsim before 2026-12: reproduces its results).
    Sample,
}

/// Design parameters of `behavioral` mode. Defaults reproduce the published default effects
/// (docs/model.md §13): an opt-out default keeps over 90% sharing, opt-in keeps under 30%.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviorConfig {
    /// Share of notice readers who untick the box (opt-out default). Assumption: 0.20.
    pub untick_if_read: f64,
    /// Share of the others who would opt out in Settings within the window were the path
    /// frictionless. Assumption: 0.05.
    pub settings_opt_out: f64,
    /// Share deterred by the settings path (0 = none, 1 = all). Assumption: 0.5.
    pub settings_friction: f64,
    /// Share of notice readers who tick the box (opt-in default). Assumption: 0.50.
    pub agree_if_read: f64,
    /// Share of the others who would opt in later in Settings were the path frictionless.
    /// Assumption: 0.10.
    pub agree_later: f64,
    /// Share of users who leave M when given no choice (2021). Assumption: 0.01: 25M new
    /// Telegram users in 72 hours against some 2 billion M users, most of whom kept M (0.5% of
    /// users surveyed uninstalled it; docs/model.md §4.7).
    pub leave_rate: f64,
}

impl Default for BehaviorConfig {
    fn default() -> Self {
        BehaviorConfig {
            untick_if_read: 0.20,
            settings_opt_out: 0.05,
            settings_friction: 0.5,
            agree_if_read: 0.50,
            agree_later: 0.10,
            leave_rate: 0.01,
        }
    }
}

/// `[policy]`: arms, the rate grid and the timing of opt-outs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `rate` (sweep `rates`) or `behavioral` (derive rates from `behavior`).
    pub mode: Mode,
    /// Target opt-out rates, strictly increasing, in [0, 1] (rate mode).
    pub rates: Vec<f64>,
    /// Days of the Settings window after a user's acceptance of the terms. 2016: 30.
    pub window_days: u32,
    /// Days after the notice over which existing users accept the new terms; a user's
    /// Settings window opens on its acceptance day. 2016: 30 (docs/model.md §4.4). 1 puts every
    /// acceptance on day 0.
    pub acceptance_days: u32,
    /// Half-life, in days, of the hazard of accepting the terms. Assumption: 2.
    pub acceptance_half_life_days: f64,
    /// Share of the simulated users who join M during the horizon, on a day drawn uniformly
    /// from it, under the new terms: no opt-out (`opt_out_window`), no leaving
    /// (`no_choice`), a choice at sign-up (`opt_in`). Assumption: 0.05 (docs/model.md §4.4).
    pub new_user_share: f64,
    /// Days the timeline covers (day 0 is the notice; 91 = one quarter).
    pub horizon_days: u32,
    /// Share of users who read the policy notice. Assumption: 0.35.
    pub notice_read_rate: f64,
    /// Half-life, in days, of the hazard of opting out in Settings. Assumption: 3.
    pub settings_half_life_days: f64,
    /// How the score thresholds are set: `exact` (the score distribution's quantiles) or
    /// `sample` (a calibration sample's order statistics).
    pub thresholds: ThresholdMethod,
    /// Users in the calibration sample that sets the score thresholds under `thresholds =
    /// "sample"` (at least 1024).
    pub calibration_users: u32,
    /// The arms, compared on one population.
    pub arms: Vec<ArmConfig>,
    /// The arm that `revenue_change_vs_baseline_musd` is measured against, an arm with one
    /// level (the 2016 status quo for 2021, say); default the `none` arm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Design parameters of behavioral mode.
    pub behavior: BehaviorConfig,
}

/// The default rate grid: 0.00 to 1.00 by 0.05.
pub fn default_rates() -> Vec<f64> {
    (0..=20).map(|k| f64::from(k) / 20.0).collect()
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: Mode::Rate,
            rates: default_rates(),
            window_days: 30,
            acceptance_days: 30,
            acceptance_half_life_days: 2.0,
            new_user_share: 0.05,
            horizon_days: 91,
            notice_read_rate: 0.35,
            settings_half_life_days: 3.0,
            thresholds: ThresholdMethod::Exact,
            calibration_users: 1 << 20,
            arms: vec![
                ArmConfig {
                    name: "none".into(),
                    kind: ArmKind::None,
                    scope: Scope::Ads,
                    regional: vec![],
                    rate: None,
                    m_evidence: None,
                },
                ArmConfig {
                    name: "opt_out_window".into(),
                    kind: ArmKind::OptOutWindow,
                    scope: Scope::Ads,
                    regional: vec![],
                    rate: None,
                    m_evidence: None,
                },
                ArmConfig {
                    name: "opt_out_window_all".into(),
                    kind: ArmKind::OptOutWindow,
                    scope: Scope::All,
                    regional: vec![],
                    rate: None,
                    m_evidence: None,
                },
            ],
            baseline: None,
            behavior: BehaviorConfig::default(),
        }
    }
}

fn unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

impl PolicyConfig {
    /// Checks the section; `file` names the scenario, `countries` the known country codes.
    pub fn validate(&self, file: &str, countries: &[&str]) -> Result<()> {
        ensure!(
            !self.rates.is_empty() && self.rates.len() <= 1001,
            file,
            "policy.rates",
            format!("{} rates", self.rates.len()),
            "1 to 1001 rates"
        );
        for (i, &r) in self.rates.iter().enumerate() {
            ensure!(
                unit(r),
                file,
                format!("policy.rates[{i}]"),
                r,
                "a rate in [0, 1]"
            );
            if i > 0 {
                ensure!(
                    r > self.rates[i - 1],
                    file,
                    format!("policy.rates[{i}]"),
                    r,
                    format!("rates strictly increasing (after {})", self.rates[i - 1])
                );
            }
        }
        ensure!(
            (1..=365).contains(&self.window_days),
            file,
            "policy.window_days",
            self.window_days,
            "1 to 365 days"
        );
        ensure!(
            (1..=365).contains(&self.acceptance_days),
            file,
            "policy.acceptance_days",
            self.acceptance_days,
            "1 to 365 days"
        );
        // The last user to act does so on day acceptance_days - 1 + window_days, which the
        // timeline (days 0 to H) must hold.
        let last = self.acceptance_days - 1 + self.window_days;
        ensure!(
            (last..=3650).contains(&self.horizon_days),
            file,
            "policy.horizon_days",
            self.horizon_days,
            format!(
                "{last} (policy.acceptance_days - 1 + policy.window_days: the last day a user acts) to 3650 days"
            )
        );
        for (k, share) in [
            ("new_user_share", self.new_user_share),
            ("notice_read_rate", self.notice_read_rate),
        ] {
            ensure!(
                unit(share),
                file,
                format!("policy.{k}"),
                share,
                "a share in [0, 1]"
            );
        }
        for (k, hl) in [
            ("acceptance_half_life_days", self.acceptance_half_life_days),
            ("settings_half_life_days", self.settings_half_life_days),
        ] {
            ensure!(
                hl > 0.0 && hl <= 3650.0,
                file,
                format!("policy.{k}"),
                hl,
                "days above 0 and at most 3650"
            );
        }
        ensure!(
            (1024..=1 << 26).contains(&self.calibration_users),
            file,
            "policy.calibration_users",
            self.calibration_users,
            "1024 to 2^26 users"
        );
        ensure!(
            !self.arms.is_empty() && self.arms.len() <= 16,
            file,
            "policy.arms",
            format!("{} arms", self.arms.len()),
            "1 to 16 arms"
        );
        let nones = self.arms.iter().filter(|a| a.kind == ArmKind::None).count();
        ensure!(
            nones == 1,
            file,
            "policy.arms",
            format!("{nones} arms of kind \"none\""),
            "exactly one arm of kind \"none\", the counterfactual"
        );
        for (i, arm) in self.arms.iter().enumerate() {
            let key = format!("policy.arms[{i}]");
            let valid_name = !arm.name.is_empty()
                && arm
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
            ensure!(
                valid_name,
                file,
                format!("{key}.name"),
                format!("{:?}", arm.name),
                "a name of letters, digits, '_' and '-'"
            );
            ensure!(
                !self.arms[..i].iter().any(|a| a.name == arm.name),
                file,
                format!("{key}.name"),
                format!("{:?}", arm.name),
                "a name used once"
            );
            ensure!(
                arm.scope == Scope::Ads || arm.kind == ArmKind::OptOutWindow,
                file,
                format!("{key}.scope"),
                "\"all\"",
                "scope only on arms of kind \"opt_out_window\" (what an opt-out in the window stops)"
            );
            if let Some(r) = arm.rate {
                ensure!(
                    arm.kind != ArmKind::None,
                    file,
                    format!("{key}.rate"),
                    r,
                    "no rate on a `none` arm (no one opts out of nothing)"
                );
                ensure!(unit(r), file, format!("{key}.rate"), r, "a rate in [0, 1]");
            }
            ensure!(
                arm.kind != ArmKind::None || arm.m_evidence.is_none(),
                file,
                format!("{key}.m_evidence"),
                "a value",
                "no m_evidence on a `none` arm (it uses no M data)"
            );
            ensure!(
                arm.kind != ArmKind::Standing || arm.rate.is_some() || self.mode == Mode::Rate,
                file,
                format!("{key}.rate"),
                "none",
                "a rate on a `standing` arm in behavioral mode (its opt-outs came before the \
                 horizon: no design in `policy.behavior` gives them)"
            );
            for (j, rule) in arm.regional.iter().enumerate() {
                let rk = format!("{key}.regional[{j}]");
                ensure!(
                    arm.kind != ArmKind::None,
                    file,
                    &rk,
                    "a rule",
                    "no regional rules on a `none` arm (it shares nothing)"
                );
                ensure!(
                    !rule.countries.is_empty(),
                    file,
                    format!("{rk}.countries"),
                    "[]",
                    "at least one country"
                );
                for (k, code) in rule.countries.iter().enumerate() {
                    ensure!(
                        !rule.countries[..k].contains(code),
                        file,
                        format!("{rk}.countries[{k}]"),
                        format!("{code:?}"),
                        "each country once"
                    );
                    ensure!(
                        countries.contains(&code.as_str()),
                        file,
                        format!("{rk}.countries[{k}]"),
                        format!("{code:?}"),
                        format!("a country of the country table: {}", countries.join(", "))
                    );
                }
                ensure!(
                    rule.from_day <= self.horizon_days,
                    file,
                    format!("{rk}.from_day"),
                    rule.from_day,
                    format!(
                        "a day from 0 to policy.horizon_days = {}",
                        self.horizon_days
                    )
                );
            }
        }
        if let Some(name) = &self.baseline {
            let arm = self.arms.iter().find(|a| &a.name == name);
            let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
            ensure!(
                arm.is_some(),
                file,
                "policy.baseline",
                format!("{name:?}"),
                format!("the name of an arm: {}", names.join(", "))
            );
            let one_level = arm.is_some_and(|a| {
                a.kind == ArmKind::None || a.rate.is_some() || self.mode == Mode::Behavioral
            });
            ensure!(
                one_level,
                file,
                "policy.baseline",
                format!("{name:?}"),
                "an arm with one level: the `none` arm, an arm with a `rate`, or any arm in \
                 behavioral mode"
            );
        }
        let b = &self.behavior;
        for (k, v) in [
            ("untick_if_read", b.untick_if_read),
            ("settings_opt_out", b.settings_opt_out),
            ("settings_friction", b.settings_friction),
            ("agree_if_read", b.agree_if_read),
            ("agree_later", b.agree_later),
            ("leave_rate", b.leave_rate),
        ] {
            ensure!(
                unit(v),
                file,
                format!("policy.behavior.{k}"),
                v,
                "a share in [0, 1]"
            );
        }
        Ok(())
    }

    /// Share of the hazard of a Settings opt-out that falls within the window.
    fn window_share(&self) -> f64 {
        1.0 - 0.5f64.powf(f64::from(self.window_days) / self.settings_half_life_days)
    }

    /// The opt-out rate an arm's design produces in behavioral mode ("opt-out" always means:
    /// data not in ad use by the user's own choice).
    pub fn behavioral_rate(&self, kind: ArmKind) -> f64 {
        let b = &self.behavior;
        let read = self.notice_read_rate;
        let later = (1.0 - b.settings_friction) * self.window_share();
        match kind {
            ArmKind::None => 0.0,
            ArmKind::OptOutWindow => {
                let at_notice = read * b.untick_if_read;
                at_notice + (1.0 - at_notice) * b.settings_opt_out * later
            }
            ArmKind::OptIn => {
                let at_notice = read * b.agree_if_read;
                1.0 - (at_notice + (1.0 - at_notice) * b.agree_later * later)
            }
            ArmKind::NoChoice => b.leave_rate,
            // Required to carry its own rate (validated); 0 if called without.
            ArmKind::Standing => 0.0,
        }
    }
}

/// One arm, resolved: its levels and, per country, the first day without ad use.
#[derive(Clone, Debug, PartialEq)]
pub struct Arm {
    /// Name in outputs.
    pub name: String,
    /// What the arm does.
    pub kind: ArmKind,
    /// What an opt-out stops.
    pub scope: Scope,
    /// Target opt-out rates of its levels (one level at rate 0 for `none`).
    pub rates: Vec<f64>,
    /// What interest evidence M's data carries in the arm.
    pub m_evidence: MEvidence,
    /// Per country: `None` = ad use allowed; `Some(d)` = no ad use from day `d` (0 = never).
    pub ad_use_ends: Vec<Option<u32>>,
}

/// How a user acts: when it accepts the new terms (or joins M under them), and whether it
/// acts then, at the notice, or on a day of its Settings window (docs/model.md §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Whether the user read the notice (and so acts on its acceptance day).
    pub read_notice: bool,
    /// The day of its Settings window (1..=W after acceptance) on which the user would act if
    /// it did not read the notice.
    pub settings_day: u32,
    /// The day the user accepts the terms, or, for a new user, joins M under them.
    pub accept_day: u32,
    /// The user joined M during the horizon, after the notice.
    pub new_user: bool,
}

impl Timing {
    /// The day the user acts: its acceptance day if it read the notice or joined under the new
    /// terms (a sign-up has no Settings window), else its Settings day after acceptance.
    pub fn day(self) -> u32 {
        if self.read_notice || self.new_user {
            self.accept_day
        } else {
            self.accept_day + self.settings_day
        }
    }

    /// Days of the Settings window the user waited before acting (0 at the notice).
    pub fn waited(self) -> u32 {
        self.day() - self.accept_day
    }

    /// Whether the user acts at the notice (or at sign-up) rather than in Settings.
    pub fn at_notice(self) -> bool {
        self.read_notice || self.new_user
    }
}

/// A user's state in one arm at one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// The user opted out (did not opt in, or left) at this level.
    pub out: bool,
    /// Its number and signals went to S (at some point).
    pub shared: bool,
    /// Its data is in ad use in the steady state after the window.
    pub ad_use: bool,
    /// Days of ad use before its opt-out took effect.
    pub exposure_days: u32,
    /// Days `[start, end)` on which its data was in ad use, within the horizon.
    pub ad_use_days: (u32, u32),
}

impl Arm {
    /// The state of a user of `country` that is `out` (or not) at a level, acting on `timing`.
    /// A new user has no choice under `opt_out_window` and `standing` (2016: accounts created
    /// after the notice joined under the new terms) and does not leave under `no_choice`;
    /// under `opt_in` it chooses at sign-up. Data is in ad use from the acceptance (or
    /// sign-up) day, and under `standing` from day 0 for existing users.
    pub fn state(&self, country: usize, out: bool, timing: Timing, horizon: u32) -> State {
        let end_rule = self.ad_use_ends[country]
            .unwrap_or(horizon + 1)
            .min(horizon + 1);
        // New users join under the terms: no opt-out in 2016 (also as the standing status quo
        // of 2021), no leaving in 2021.
        let out = out
            && !(timing.new_user
                && matches!(
                    self.kind,
                    ArmKind::OptOutWindow | ArmKind::NoChoice | ArmKind::Standing
                ));
        let (accept, day) = (timing.accept_day, timing.day());
        let exposure = if out { timing.waited() } else { 0 };
        let (shared, days, exposure) = match self.kind {
            ArmKind::None => (false, (0, 0), 0),
            // Notice opt-outs of scope `all` never send; later ones already had.
            ArmKind::OptOutWindow => {
                let shared = !out || self.scope == Scope::Ads || !timing.at_notice();
                let end = if out { day } else { horizon + 1 };
                (shared, (accept, end), exposure)
            }
            ArmKind::OptIn => (!out, if out { (0, 0) } else { (day, horizon + 1) }, 0),
            ArmKind::NoChoice => {
                let end = if out { day } else { horizon + 1 };
                (!out || !timing.at_notice(), (accept, end), exposure)
            }
            // Already on: from day 0 for existing users, from sign-up for new ones; the users
            // out opted out before the horizon (their number went to S, not into ad use).
            ArmKind::Standing => {
                let start = if timing.new_user { accept } else { 0 };
                (true, if out { (0, 0) } else { (start, horizon + 1) }, 0)
            }
        };
        let (start, end) = (days.0, days.1.min(end_rule));
        let ad_use_days = if start < end { (start, end) } else { (0, 0) };
        State {
            out: out && self.kind != ArmKind::None,
            shared,
            ad_use: self.kind != ArmKind::None && !out && self.ad_use_ends[country].is_none(),
            exposure_days: exposure.min(end_rule.saturating_sub(accept)),
            ad_use_days,
        }
    }
}

/// The arms of a scenario, resolved against its country table; `m_evidence` is the
/// evidence of arms that do not set their own.
pub fn resolve_arms(config: &PolicyConfig, countries: &[&str], m_evidence: MEvidence) -> Vec<Arm> {
    config
        .arms
        .iter()
        .map(|a| {
            let rates = match (a.kind, a.rate, config.mode) {
                (ArmKind::None, _, _) => vec![0.0],
                (_, Some(r), _) => vec![r],
                (_, None, Mode::Rate) => config.rates.clone(),
                (kind, None, Mode::Behavioral) => vec![config.behavioral_rate(kind)],
            };
            let mut ad_use_ends = vec![None; countries.len()];
            for rule in &a.regional {
                let day = match rule.rule {
                    RuleKind::Off => 0,
                    RuleKind::Pause => rule.from_day,
                };
                for code in &rule.countries {
                    if let Some(c) = countries.iter().position(|x| *x == code.as_str()) {
                        ad_use_ends[c] = Some(ad_use_ends[c].map_or(day, |d: u32| d.min(day)));
                    }
                }
            }
            Arm {
                name: a.name.clone(),
                kind: a.kind,
                scope: a.scope,
                rates,
                m_evidence: a.m_evidence.unwrap_or(m_evidence),
                ad_use_ends,
            }
        })
        .collect()
}

/// Score thresholds of one arm's levels: a user is out at level `k` iff its score exceeds
/// `thresholds[k]`. Thresholds do not increase with `k`, so opt-out sets are nested.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds(Vec<f64>);

impl Thresholds {
    /// Thresholds at `rates` from sorted calibration scores.
    pub fn new(rates: &[f64], sorted_scores: &[f64]) -> Self {
        Self::from_positions(rates, sorted_scores.len(), |k| sorted_scores[k])
    }

    /// The position in the sorted calibration sample of `m` scores whose value is the
    /// threshold of rate `r`: the `round(r m)` highest scores lie above it. `None` at rate 0
    /// (no one is out) and where everyone is out.
    pub fn position(r: f64, m: usize) -> Option<usize> {
        let out = (r * m as f64).round() as usize;
        (r > 0.0 && m > 0 && out < m).then(|| m - out - 1)
    }

    /// Thresholds at `rates` from a sample of `m` scores, `at(k)` giving the value of sorted
    /// position `k`.
    pub fn from_positions(rates: &[f64], m: usize, at: impl Fn(usize) -> f64) -> Self {
        Thresholds(
            rates
                .iter()
                .map(|&r| match Thresholds::position(r, m) {
                    Some(k) => at(k),
                    None if r <= 0.0 || m == 0 => f64::INFINITY,
                    None => f64::NEG_INFINITY,
                })
                .collect(),
        )
    }

    /// Thresholds from their values, one a level in order of rising rate. A value above an
    /// earlier one (a rounding difference between two rates a few ulps apart) is lowered to
    /// it, so opt-out sets stay nested.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut floor = f64::INFINITY;
        Thresholds(
            values
                .into_iter()
                .map(|v| {
                    floor = floor.min(v);
                    floor
                })
                .collect(),
        )
    }

    /// The threshold of each level, in order.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// The first level at which a user with `score` is out (the number of levels if none).
    #[inline]
    pub fn flip(&self, score: f64) -> usize {
        // The thresholds do not increase, so the levels with `score <= q` are a prefix: their
        // count is its length, and counting has no branch to mispredict.
        self.0.iter().map(|&q| usize::from(score <= q)).sum()
    }

    /// How many levels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no levels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Timing draws of users: who reads the notice, and the Settings day from a decaying hazard.
#[derive(Clone, Debug)]
pub struct TimingModel {
    read: Threshold,
    /// Cumulative day probabilities of days 1..=W as thresholds.
    days: crate::rng::Categorical,
    /// Cumulative probabilities of the acceptance days 0..A.
    accept: crate::rng::Categorical,
    new_user: Threshold,
    horizon: u64,
}

impl TimingModel {
    /// The model of a policy section.
    pub fn new(config: &PolicyConfig) -> Self {
        // A decaying hazard over `days` days: weights 0.5^(d / half-life), d = 0 to days - 1.
        let decaying = |days: u32, half_life: f64| {
            let weights: Vec<f64> = (0..days)
                .map(|d| 0.5f64.powf(f64::from(d) / half_life))
                .collect();
            crate::rng::Categorical::new(&weights)
        };
        TimingModel {
            read: Threshold::new(config.notice_read_rate),
            days: decaying(config.window_days, config.settings_half_life_days),
            accept: decaying(config.acceptance_days, config.acceptance_half_life_days),
            new_user: Threshold::new(config.new_user_share),
            horizon: u64::from(config.horizon_days),
        }
    }

    /// The timing of the user with stream keys `streams`.
    #[inline]
    pub fn draw(&self, streams: UserKey) -> Timing {
        let mut rng: UserRng = streams.rng(Stream::Timing);
        let read_notice = rng.bernoulli(self.read);
        let settings_day = 1 + self.days.draw(&mut rng) as u32;
        // Drawn after the draws above, so that one acceptance day and no new users give the
        // same timing as before the calendar existed (docs/model.md §4.4).
        let accept_day = self.accept.draw(&mut rng) as u32;
        let new_user = rng.bernoulli(self.new_user);
        // Uniform on [0, H): the top 32 bits of a word times H, shifted down.
        let join_day = (((rng.next_u64() >> 32) * self.horizon) >> 32) as u32;
        Timing {
            read_notice,
            settings_day,
            accept_day: if new_user { join_day } else { accept_day },
            new_user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_nest_and_hit_the_ends() {
        let scores: Vec<f64> = (0..1000).map(f64::from).collect();
        let t = Thresholds::new(&default_rates(), &scores);
        assert_eq!(
            t.flip(f64::MAX),
            1,
            "the top user is out from the first positive rate"
        );
        assert_eq!(t.flip(-1.0), 20, "everyone is out at rate 1");
        // Exactly 5% of the calibration sample is out at level 1, 50% at level 10.
        assert_eq!(scores.iter().filter(|&&s| t.flip(s) <= 1).count(), 50);
        assert_eq!(scores.iter().filter(|&&s| t.flip(s) <= 10).count(), 500);
        assert_eq!(
            scores.iter().filter(|&&s| t.flip(s) == 0).count(),
            0,
            "no one out at rate 0"
        );
    }

    #[test]
    fn standing_sharing_runs_from_day_zero_and_skips_earlier_opt_outs() {
        // The 2016 status quo as 2021 found it: existing users in ad use for the whole horizon
        // whatever their acceptance day, earlier opt-outs never (their number was shared),
        // new users from sign-up with no opt-out, and regional rules on top.
        let arm = Arm {
            name: "status_quo".into(),
            kind: ArmKind::Standing,
            scope: Scope::Ads,
            rates: vec![0.05],
            m_evidence: MEvidence::None,
            ad_use_ends: vec![None, Some(20)],
        };
        let h = 91;
        let existing = Timing {
            read_notice: false,
            settings_day: 5,
            accept_day: 12,
            new_user: false,
        };
        let s = arm.state(0, false, existing, h);
        assert_eq!((s.out, s.shared, s.ad_use), (false, true, true));
        assert_eq!((s.ad_use_days, s.exposure_days), ((0, h + 1), 0));
        let s = arm.state(0, true, existing, h);
        assert_eq!((s.out, s.shared, s.ad_use), (true, true, false));
        assert_eq!((s.ad_use_days, s.exposure_days), ((0, 0), 0));
        let joiner = Timing {
            new_user: true,
            accept_day: 40,
            ..existing
        };
        let s = arm.state(0, true, joiner, h);
        assert!(!s.out, "a new user has no opt-out");
        assert_eq!(s.ad_use_days, (40, h + 1));
        assert_eq!(arm.state(1, false, existing, h).ad_use_days, (0, 20));
    }

    #[test]
    fn behavioral_defaults_reproduce_published_default_effects() {
        let p = PolicyConfig::default();
        let opt_out = p.behavioral_rate(ArmKind::OptOutWindow);
        let opt_in = p.behavioral_rate(ArmKind::OptIn);
        assert!(
            1.0 - opt_out > 0.90,
            "opt-out default keeps {:.3} sharing",
            1.0 - opt_out
        );
        assert!(
            1.0 - opt_in < 0.30 && 1.0 - opt_in > 0.10,
            "opt-in keeps {:.3} sharing",
            1.0 - opt_in
        );
    }

    #[test]
    fn states_follow_the_arm() {
        let horizon = 91;
        let arm = |kind, scope| Arm {
            name: "a".into(),
            kind,
            scope,
            rates: vec![0.5],
            m_evidence: MEvidence::None,
            ad_use_ends: vec![None, Some(74)],
        };
        let late = Timing {
            read_notice: false,
            settings_day: 5,
            accept_day: 0,
            new_user: false,
        };
        let early = Timing {
            read_notice: true,
            ..late
        };
        let ads = arm(ArmKind::OptOutWindow, Scope::Ads);
        let all = arm(ArmKind::OptOutWindow, Scope::All);
        assert!(
            ads.state(0, true, early, horizon).shared,
            "scope ads still shares"
        );
        assert!(
            !all.state(0, true, early, horizon).shared,
            "scope all at the notice never shares"
        );
        assert!(
            all.state(0, true, late, horizon).shared,
            "a Settings opt-out had shared already"
        );
        assert_eq!(all.state(0, true, late, horizon).exposure_days, 5);
        assert!(!ads.state(0, true, late, horizon).ad_use);
        assert!(ads.state(0, false, late, horizon).ad_use);
        let paused = ads.state(1, false, late, horizon);
        assert!(
            !paused.ad_use && paused.ad_use_days == (0, 74),
            "{paused:?}"
        );
        let opt_in = arm(ArmKind::OptIn, Scope::Ads).state(0, false, late, horizon);
        assert_eq!((opt_in.ad_use_days, opt_in.exposure_days), ((5, 92), 0));
        let none = arm(ArmKind::None, Scope::Ads).state(0, false, late, horizon);
        assert!(!none.shared && !none.ad_use && !none.out);
    }

    /// The calendar of 2016 (docs/model.md §4.4): acceptances over the first days, each
    /// user's Settings window counted from its acceptance, new users without an opt-out.
    #[test]
    fn settings_actions_follow_acceptance_and_new_users_have_no_opt_out() {
        let config = PolicyConfig::default();
        let (a_days, w) = (config.acceptance_days, config.window_days);
        let model = TimingModel::new(&config);
        let key = crate::rng::Key::new(2016, 0);
        let arm = |kind| Arm {
            name: "a".into(),
            kind,
            scope: Scope::Ads,
            rates: vec![0.5],
            m_evidence: MEvidence::None,
            ad_use_ends: vec![None],
        };
        let window = arm(ArmKind::OptOutWindow);
        let leave = arm(ArmKind::NoChoice);
        let (mut new_users, mut late_accepts, n) = (0, 0, 100_000);
        for i in 0..n {
            let t = model.draw(key.user(i));
            let h = config.horizon_days;
            if t.new_user {
                new_users += 1;
                assert!(t.accept_day < h, "{t:?} joins within the horizon");
                for a in [&window, &leave] {
                    let st = a.state(0, true, t, h);
                    assert!(
                        !st.out,
                        "{t:?}: a new user has no opt-out under {:?}",
                        a.kind
                    );
                    assert_eq!(st.ad_use_days, (t.accept_day, h + 1));
                    assert_eq!(st.exposure_days, 0);
                }
            } else {
                assert!(t.accept_day < a_days, "{t:?}");
                assert!(t.day() <= t.accept_day + w, "{t:?} acts after its window");
                late_accepts += usize::from(t.accept_day > 0);
                let st = window.state(0, true, t, h);
                assert!(st.out);
                // Ad use from acceptance to the opt-out; none for a notice opt-out.
                let expected = if t.read_notice {
                    (0, 0)
                } else {
                    (t.accept_day, t.day())
                };
                assert_eq!(st.ad_use_days, expected, "{t:?}");
                assert_eq!(st.exposure_days, t.waited());
                assert_eq!(
                    window.state(0, false, t, h).ad_use_days,
                    (t.accept_day, h + 1)
                );
            }
        }
        let share = new_users as f64 / n as f64;
        assert!((share - config.new_user_share).abs() < 0.005, "{share}");
        assert!(
            late_accepts > n as usize / 4,
            "acceptances spread: {late_accepts}"
        );
    }

    #[test]
    fn one_acceptance_day_and_no_new_users_give_the_timing_of_a_single_notice_day() {
        let mut config = PolicyConfig::default();
        let spread = TimingModel::new(&config);
        config.acceptance_days = 1;
        config.new_user_share = 0.0;
        let single = TimingModel::new(&config);
        let key = crate::rng::Key::new(7, 3);
        for i in 0..20_000 {
            let (a, b) = (spread.draw(key.user(i)), single.draw(key.user(i)));
            // The notice and Settings draws come first, so they are the same users' draws.
            assert_eq!(
                (a.read_notice, a.settings_day),
                (b.read_notice, b.settings_day)
            );
            assert_eq!((b.accept_day, b.new_user), (0, false));
            assert_eq!(b.day(), if b.read_notice { 0 } else { b.settings_day });
        }
    }

    #[test]
    fn the_horizon_must_hold_the_last_day_a_user_acts() {
        let mut config = PolicyConfig {
            horizon_days: 58,
            ..PolicyConfig::default()
        };
        let err = config.validate("s.toml", &["IN"]).unwrap_err().to_string();
        assert!(
            err.contains("policy.horizon_days") && err.contains("59"),
            "{err}"
        );
        config.horizon_days = 59;
        config.validate("s.toml", &["IN"]).unwrap();
    }
}
