//! A study's plan (docs/model.md §16): the types a plan's TOML reads into, the built-in plans
//! and the default outputs. [`super::Study::new`] checks a plan and makes it ready.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The built-in study plans: name and text.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "assumptions",
        include_str!("../../data/studies/assumptions.toml"),
    ),
    (
        "uncertainty",
        include_str!("../../data/studies/uncertainty.toml"),
    ),
    (
        "heterogeneity-x-notice",
        include_str!("../../data/studies/heterogeneity-x-notice.toml"),
    ),
    (
        "screening",
        include_str!("../../data/studies/screening.toml"),
    ),
    (
        "sobol-targeting",
        include_str!("../../data/studies/sobol-targeting.toml"),
    ),
];

/// The name of the dummy factor of an `lhs` design.
pub const DUMMY: &str = "dummy";

/// A study design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// Every combination of the factors' levels.
    Grid,
    /// A Latin hypercube of `samples` points.
    Lhs,
    /// Morris elementary effects: `trajectories` one-at-a-time paths on a grid of
    /// `morris_levels` levels.
    Morris,
    /// Sobol indices: Saltelli's sampling of `samples` base points of a scrambled Sobol
    /// sequence.
    Sobol,
}

impl Design {
    /// Its name in a plan (`design = "lhs"`).
    pub fn key(self) -> &'static str {
        match self {
            Design::Grid => "grid",
            Design::Lhs => "lhs",
            Design::Morris => "morris",
            Design::Sobol => "sobol",
        }
    }
}

/// How a factor's values spread over its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Evenly.
    Uniform,
    /// Evenly in the logarithm (both bounds above 0).
    Loguniform,
}

/// One factor: a scalar scenario key and the values it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor {
    /// The scenario key (`targeting.m_recall`).
    pub key: String,
    /// Low end of its range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// High end of its range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// The values it takes: under `grid` each in turn (instead of `points` values from `low`
    /// to `high`), under the other designs one of them, evenly (a discrete factor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<f64>>,
    /// Under `grid` without `levels`: how many evenly spaced values from `low` to `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u32>,
    /// Under `lhs`: how values spread over the range (default uniform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// For a key that takes one of several words (`targeting.m_evidence`): the words it
    /// takes, a structural alternative; its value in the design is the index of the word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
}

/// One output: a metric of `summary.csv` at an arm and the level nearest a rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The metric (a column of `summary.csv`: `revenue_change_musd`, `precision_lift`...).
    pub metric: String,
    /// The arm (default: the scenario's first sharing arm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The target opt-out rate (the level nearest it is read).
    pub rate: f64,
}

/// A study plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name (the folder's, by default).
    pub name: String,
    /// What it asks.
    #[serde(default)]
    pub description: String,
    /// The base scenario: a built-in name or a TOML file (relative to the plan).
    pub scenario: String,
    /// Users per replication of each evaluation.
    pub users: u64,
    /// Replications of each evaluation.
    pub replications: u32,
    /// `grid` or `lhs`.
    pub design: Design,
    /// Under `lhs`: the number of points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// Under `morris`: the number of trajectories (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<u32>,
    /// Under `morris`: the levels of its grid, even (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub morris_levels: Option<u32>,
    /// Under `morris` and `sobol`: bootstrap resamples of the intervals (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<u32>,
    /// Seed of the design's draws (not of the simulation: every evaluation uses the
    /// scenario's seed).
    #[serde(default = "one")]
    pub design_seed: u64,
    /// The simulation's seed, in place of the scenario's `population.seed` (every evaluation
    /// uses it: common random numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Simulation seeds to repeat the study with: it runs once per seed (as `seed`, the same
    /// design each time) into `seed-<n>/`, and the report gives every index's spread across
    /// them ([`batch::run_seeds`], docs/model.md §16.8).
    ///
    /// [`batch::run_seeds`]: super::batch::run_seeds
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Add every scalar assumption of the registry that the scenario reads, at its plausible
    /// range and spread.
    #[serde(default)]
    pub assumptions: bool,
    /// The factors.
    #[serde(default)]
    pub factor: Vec<Factor>,
    /// The outputs (default: revenue change, precision lift, Custom Audience match rate and
    /// people mislinked of the first sharing arm at rates 0 and 0.5).
    #[serde(default)]
    pub output: Vec<Output>,
    /// Under `lhs`: a calibration folder (`adsim calibrate`, relative to the plan) whose kept
    /// points give the values of the factors it calibrated (docs/model.md §18.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Under `morris`: a second stage, Sobol indices on the factors the screening ranks
    /// highest ([`batch::run_staged`]).
    ///
    /// [`batch::run_staged`]: super::batch::run_staged
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Then>,
}

/// The second stage of a two-stage plan: Sobol indices on the `factors` factors that the
/// Morris screening ranks highest, at `samples` base points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    /// `sobol`, the only second stage.
    pub design: Design,
    /// How many of the screened factors it carries, strongest first.
    pub factors: u32,
    /// Its base points: a power of two.
    pub samples: u32,
    /// A third stage: a Latin hypercube of this many points over every factor of the
    /// screening, whose rank correlations the report sets beside the Morris and Sobol
    /// rankings (and whose spread is the parameter-uncertainty interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lhs_samples: Option<u32>,
}

fn one() -> u64 {
    1
}

/// The metrics studied when a plan names none.
pub const DEFAULT_METRICS: [&str; 5] = [
    "revenue_change_musd",
    "market_revenue_change_musd",
    "precision_lift",
    "ca_match_rate",
    "people_mislinked",
];

impl Plan {
    /// Parses a plan; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Plan> {
        toml::from_str(text).map_err(|e| {
            Error::invalid(
                file,
                "plan",
                e.message(),
                "a study plan (docs/model.md §16)",
            )
        })
    }

    /// A built-in plan by name.
    pub fn builtin(name: &str) -> Result<(Plan, String)> {
        let (text, source) = crate::data::builtin_text(BUILTINS, name, "plan", "study", "studies")?;
        Ok((Plan::parse(text, &source)?, source))
    }

    /// The plan as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialize the plan: {e}\n"))
    }
}
