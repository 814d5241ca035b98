//! Studies (docs/model.md §16): one scenario evaluated over a design of parameter values, to see
//! which assumptions its figures depend on and how wide they are once the assumptions vary.
//!
//! A plan (`adsim study PLAN`, a TOML file or a built-in from `data/studies/`) names a base
//! scenario, its size, the factors (scalar scenario keys, each with a range or a list of
//! levels; `assumptions = true` adds every scalar assumption of the parameter registry at its
//! plausible range), a design and the outputs (metrics at an arm and a rate). Designs: `grid`
//! (full factorial) and `lhs` (Latin hypercube, with a dummy factor that touches nothing: its
//! correlation with an output is the noise floor). Every evaluation uses the base scenario's
//! seed (common random numbers, docs/model.md §16.3), runs through [`crate::run::evaluate`] and
//! writes no file of its own. The study folder holds the resolved plan, `evaluations.csv` and
//! `.parquet` (one row per evaluation), `summary.csv` (each output's spread; under `lhs` its 2.5
//! and 97.5 percentiles, the parameter-uncertainty interval), `indices.csv` (each factor's
//! effect on each output) and `report.md` / `report.html`.

use std::path::Path;

pub mod batch;
pub mod calibrate;
mod design;
mod estimators;
mod factors;
mod output;
mod plan;
mod rankings;
mod report;
pub mod seeds;

pub use design::{
    SOBOL_MAX_DIMENSIONS, SOBOL_MAX_POINTS, latin_hypercube, morris_design, saltelli_design,
};
pub use estimators::{
    Effect, MorrisIndex, SobolIndex, effects, morris_indices, quantile, sobol_indices, spearman,
};
pub use factors::assumption_factors;
pub use output::write;
pub use plan::{BUILTINS, DEFAULT_METRICS, DUMMY, Design, Factor, Output, Plan, Spread, Then};
pub use report::StudyResult;

use crate::ensure;
use crate::error::{Error, Result};
use crate::scenario::{Resolved, Scenario};
use crate::table::floats;
use crate::table::level_near;
use design::{cartesian, grid_levels};
pub use factors::set_path;
use factors::{Target, base_scenario, check_factor, get_number, get_text, targets};

/// Version of the study tables' schema.
pub const STUDY_SCHEMA_VERSION: &str = "study/1";

/// A plan made ready: its base scenario, the factors (assumptions expanded, checked), the
/// design's points and the outputs.
#[derive(Clone, Debug)]
pub struct Study {
    /// The plan, with the factors and outputs it resolved to.
    pub plan: Plan,
    /// The base scenario at the plan's size.
    pub base: Scenario,
    /// Where the scenario came from.
    pub source: String,
    /// The plan's file (or built-in), as errors name it.
    pub file: String,
    /// SHA-256 of the reference data the base scenario resolves to.
    pub data_hash: String,
    /// Factor names, in column order (the dummy last, under `lhs`).
    pub names: Vec<String>,
    /// The design: one row of factor values per evaluation.
    pub points: Vec<Vec<f64>>,
    /// The design in the unit cube (every design but `grid`): one row per evaluation.
    pub units: Vec<Vec<f64>>,
    /// What each factor sets in the scenario, in factor order.
    targets: Vec<Target>,
}

impl Study {
    /// Makes a plan ready: reads its scenario (relative to `dir`), expands and checks its
    /// factors and outputs, and draws its design. `file` names the plan in errors.
    pub fn new(mut plan: Plan, file: &str, dir: &Path) -> Result<Study> {
        let (base, source) = base_scenario(&mut plan, dir, file)?;
        Study::from_base(plan, base, source, file, dir)
    }

    /// [`Study::new`] on a base scenario already read (`source` names it; its data paths are
    /// relative to `dir`): the plan's `scenario` key is only a label here.
    pub fn from_base(
        mut plan: Plan,
        mut base: Scenario,
        source: String,
        file: &str,
        dir: &Path,
    ) -> Result<Study> {
        ensure!(
            !plan.name.is_empty()
                && plan.name.len() <= 100
                && !plan.name.starts_with('.')
                && plan
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            file,
            "name",
            format!("{:?}", plan.name),
            "1 to 100 letters, digits, '-', '_' or '.', not starting with '.'"
        );
        ensure!(
            (1..=1_000_000_000).contains(&plan.users),
            file,
            "users",
            plan.users,
            "1 to 10^9 users per evaluation"
        );
        ensure!(
            (1..=1000).contains(&plan.replications),
            file,
            "replications",
            plan.replications,
            "1 to 1000"
        );
        base.population.users = plan.users;
        if let Some(seed) = plan.seed {
            base.population.seed = seed;
        }
        ensure!(
            plan.seeds.is_empty() || plan.seed.is_none(),
            file,
            "seeds",
            format!("{:?}", plan.seeds),
            "seeds or seed, not both"
        );
        ensure!(
            plan.seeds.len() != 1
                && plan.seeds.len() <= 20
                && plan
                    .seeds
                    .iter()
                    .enumerate()
                    .all(|(i, s)| !plan.seeds[..i].contains(s)),
            file,
            "seeds",
            format!("{:?}", plan.seeds),
            "2 to 20 different simulation seeds (or none)"
        );
        base.population.replications = plan.replications;
        if plan.assumptions {
            let have: Vec<String> = plan.factor.iter().map(|f| f.key.clone()).collect();
            plan.factor.extend(
                assumption_factors(&base)
                    .into_iter()
                    .filter(|f| !have.contains(&f.key)),
            );
            plan.assumptions = false;
        }
        ensure!(
            !plan.factor.is_empty(),
            file,
            "factor",
            "none",
            "at least one [[factor]], or assumptions = true"
        );
        for (i, f) in plan.factor.iter().enumerate() {
            check_factor(f, plan.design, file, i)?;
            ensure!(
                plan.factor[..i].iter().all(|g| g.key != f.key),
                file,
                format!("factor[{i}].key"),
                &f.key,
                "a key no other factor has"
            );
        }
        let resolved_base = base.clone().resolve(file, dir)?;
        let targets = targets(&plan.factor, &resolved_base);
        let k = plan.factor.len();
        let mut names: Vec<String> = plan.factor.iter().map(|f| f.key.clone()).collect();
        let mut unit_points = Vec::new();
        let points = match plan.design {
            Design::Grid => {
                ensure!(
                    plan.samples.is_none(),
                    file,
                    "samples",
                    plan.samples.unwrap_or(0),
                    "no samples under design = \"grid\" (its size is the product of the levels)"
                );
                let levels: Vec<Vec<f64>> = plan.factor.iter().map(grid_levels).collect();
                let size: f64 = levels.iter().map(|l| l.len() as f64).product();
                ensure!(
                    size <= 100_000.0,
                    file,
                    "factor",
                    size,
                    "a grid of at most 100,000 points"
                );
                cartesian(&levels)
            }
            design => {
                let kd = k + 1;
                let units = match design {
                    Design::Lhs => {
                        let n = plan.samples.unwrap_or(0);
                        let least = (2 * (k as u32 + 1)).max(10);
                        ensure!(
                            n >= least && n <= 100_000,
                            file,
                            "samples",
                            n,
                            format!(
                                "{least} to 100,000 points for {k} factors and the dummy (at least twice the factors, and 10)"
                            )
                        );
                        latin_hypercube(kd, n as usize, plan.design_seed)
                    }
                    Design::Morris => {
                        ensure!(
                            plan.samples.is_none(),
                            file,
                            "samples",
                            plan.samples.unwrap_or(0),
                            "no samples under design = \"morris\" (give trajectories)"
                        );
                        let r = plan.trajectories.unwrap_or(10);
                        ensure!(
                            (2..=10_000).contains(&r) && r as usize * (kd + 1) <= 1_000_000,
                            file,
                            "trajectories",
                            r,
                            format!(
                                "2 to 10,000, and at most 10^6 evaluations ({} each)",
                                kd + 1
                            )
                        );
                        let p = plan.morris_levels.unwrap_or(4);
                        ensure!(
                            (4..=20).contains(&p) && p.is_multiple_of(2),
                            file,
                            "morris_levels",
                            p,
                            "an even number of levels from 4 to 20"
                        );
                        morris_design(kd, r as usize, p, plan.design_seed)
                    }
                    Design::Sobol => {
                        let n = plan.samples.unwrap_or(0);
                        ensure!(
                            n.is_power_of_two() && (16..=SOBOL_MAX_POINTS).contains(&n),
                            file,
                            "samples",
                            n,
                            format!(
                                "a power of two from 16 to {SOBOL_MAX_POINTS} base points (the Sobol sequence's limit)"
                            )
                        );
                        ensure!(
                            2 * kd <= SOBOL_MAX_DIMENSIONS,
                            file,
                            "factor",
                            k,
                            format!(
                                "at most {} factors with the dummy (the Sobol sequence has {SOBOL_MAX_DIMENSIONS} dimensions, two per factor)",
                                SOBOL_MAX_DIMENSIONS / 2
                            )
                        );
                        ensure!(
                            n as usize * (kd + 2) <= 1_000_000,
                            file,
                            "samples",
                            n,
                            format!("at most 10^6 evaluations ({} per base point)", kd + 2)
                        );
                        saltelli_design(kd, n as usize, plan.design_seed as u32)
                    }
                    Design::Grid => unreachable!("handled above"),
                };
                if matches!(design, Design::Morris | Design::Sobol) {
                    let b = plan.bootstrap.unwrap_or(500);
                    ensure!(
                        (10..=100_000).contains(&b),
                        file,
                        "bootstrap",
                        b,
                        "10 to 100,000 resamples"
                    );
                }
                names.push(DUMMY.into());
                let mut with_dummy = plan.factor.clone();
                with_dummy.push(Factor {
                    key: DUMMY.into(),
                    low: Some(0.0),
                    high: Some(1.0),
                    levels: None,
                    points: None,
                    spread: None,
                    choices: None,
                });
                let integer: Vec<bool> = targets
                    .iter()
                    .map(|t| matches!(t, Target::Scalar { integer: true, .. }))
                    .chain([false])
                    .collect();
                let points = units
                    .iter()
                    .map(|row| {
                        row.iter()
                            .zip(&with_dummy)
                            .zip(&integer)
                            .map(|((u, f), &int)| {
                                let v = f.at(*u);
                                if int { v.round() } else { v }
                            })
                            .collect()
                    })
                    .collect();
                unit_points = units;
                points
            }
        };
        let mut points = points;
        if let Some(cal) = plan.calibration.clone() {
            ensure!(
                plan.design == Design::Lhs,
                file,
                "calibration",
                &cal,
                "a calibration folder under design = \"lhs\" only (its kept points replace the calibrated factors' values)"
            );
            let folder = dir.join(&cal);
            let (keys, kept) = calibrate::kept_points(&folder)?;
            let columns: Vec<(usize, usize)> = plan
                .factor
                .iter()
                .enumerate()
                .filter_map(|(j, f)| keys.iter().position(|k| *k == f.key).map(|c| (j, c)))
                .collect();
            ensure!(
                !columns.is_empty(),
                file,
                "calibration",
                &cal,
                format!(
                    "a calibration of at least one of the plan's factors (it calibrated {})",
                    keys.join(", ")
                )
            );
            // Each design point takes one kept point, stratified over them in a random order
            // of its own (a one-factor hypercube), so every kept point is used about as often.
            let pick = latin_hypercube(1, points.len(), plan.design_seed ^ 0x5ca1_ab1e);
            for (i, row) in points.iter_mut().enumerate() {
                let which = ((pick[i][0] * kept.len() as f64) as usize).min(kept.len() - 1);
                for &(j, c) in &columns {
                    row[j] = kept[which][c];
                }
            }
            if let Ok(full) = std::fs::canonicalize(&folder) {
                plan.calibration = Some(full.display().to_string());
            }
        }
        if plan.output.is_empty() {
            plan.output = DEFAULT_METRICS
                .iter()
                .flat_map(|m| {
                    [0.0, 0.5].map(|rate| Output {
                        metric: m.to_string(),
                        arm: None,
                        rate,
                    })
                })
                .collect();
        }
        let sharing = base
            .policy
            .arms
            .iter()
            .find(|a| a.kind != crate::policy::ArmKind::None)
            .map(|a| a.name.clone());
        let metrics = crate::metrics::summary_metric_names();
        for (i, o) in plan.output.iter_mut().enumerate() {
            ensure!(
                metrics.contains(&o.metric),
                file,
                format!("output[{i}].metric"),
                &o.metric,
                "a metric of summary.csv (docs/data-dictionary.md)"
            );
            ensure!(
                (0.0..=1.0).contains(&o.rate),
                file,
                format!("output[{i}].rate"),
                o.rate,
                "an opt-out rate in [0, 1]"
            );
            let arm = o
                .arm
                .clone()
                .or_else(|| sharing.clone())
                .unwrap_or_default();
            ensure!(
                base.policy.arms.iter().any(|a| a.name == arm),
                file,
                format!("output[{i}].arm"),
                format!("{arm:?}"),
                format!(
                    "an arm of the scenario: {}",
                    base.policy
                        .arms
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            );
            o.arm = Some(arm);
        }
        if let Some(t) = &plan.then {
            ensure!(
                plan.design == Design::Morris && t.design == Design::Sobol,
                file,
                "then.design",
                format!("{} after {}", t.design.key(), plan.design.key()),
                "design = \"sobol\" after design = \"morris\" (a screening, then indices on what it finds)"
            );
            let most = (k as u32).min(SOBOL_MAX_DIMENSIONS as u32 / 2 - 1);
            ensure!(
                (1..=most).contains(&t.factors),
                file,
                "then.factors",
                t.factors,
                format!(
                    "1 to {most} (the plan's {k} factors, and the Sobol sequence's {SOBOL_MAX_DIMENSIONS} dimensions, two per factor and the dummy)"
                )
            );
            ensure!(
                t.samples.is_power_of_two()
                    && (16..=SOBOL_MAX_POINTS).contains(&t.samples)
                    && t.samples as usize * (t.factors as usize + 3) <= 1_000_000,
                file,
                "then.samples",
                t.samples,
                format!(
                    "a power of two from 16 to {SOBOL_MAX_POINTS} base points, and at most 10^6 evaluations ({} per base point)",
                    t.factors + 3
                )
            );
            if let Some(n) = t.lhs_samples {
                let least = (2 * (k as u32 + 1)).max(10);
                ensure!(
                    (least..=100_000).contains(&n),
                    file,
                    "then.lhs_samples",
                    n,
                    format!(
                        "{least} to 100,000 points for {k} factors and the dummy (at least twice the factors, and 10)"
                    )
                );
            }
        }
        let study = Study {
            plan,
            base,
            source,
            file: file.to_string(),
            data_hash: crate::folder::data_hash(&resolved_base),
            names,
            points,
            units: unit_points,
            targets,
        };
        // Every point must make a valid scenario, the tornado's too: refused now, before any
        // evaluation.
        for (i, _) in study.points.iter().enumerate() {
            study.scenario(i)?;
        }
        for (i, (_, point)) in study.tornado_points().iter().enumerate() {
            study.scenario_at(point, &format!("tornado point {i}"))?;
        }
        Ok(study)
    }

    /// Whether each factor sets an integer key (its values are rounded).
    pub fn integer_factors(&self) -> Vec<bool> {
        self.targets
            .iter()
            .map(|t| matches!(t, Target::Scalar { integer: true, .. }))
            .collect()
    }

    /// The scenario of evaluation `i`, resolved.
    pub fn scenario(&self, i: usize) -> Result<Resolved> {
        self.scenario_at(&self.points[i], &format!("evaluation {i}"))
    }

    /// Each factor's value in the base scenario (NaN where the scenario leaves it unset): a
    /// data column's multiplier is 1.
    pub fn base_values(&self) -> Vec<f64> {
        let tree = toml::Value::try_from(&self.base).ok();
        self.targets
            .iter()
            .map(|t| match t {
                Target::Scalar { path, .. } => tree
                    .as_ref()
                    .and_then(|t| get_number(t, path))
                    .unwrap_or(f64::NAN),
                Target::Column { .. } => 1.0,
                Target::Row { base, .. } => *base,
                Target::Choice { path, words } => tree
                    .as_ref()
                    .and_then(|t| get_text(t, path))
                    .and_then(|w| words.iter().position(|c| *c == w))
                    .map_or(f64::NAN, |i| i as f64),
            })
            .collect()
    }

    /// The one-at-a-time points of the tornado chart: the base scenario, then each factor at
    /// its low and at its high end (a grid's lowest and highest level) with the others at
    /// their base values. Factors the base leaves unset are skipped.
    pub fn tornado_points(&self) -> Vec<(Option<usize>, Vec<f64>)> {
        let base = self.base_values();
        let mut row = base.clone();
        row.resize(self.names.len(), 0.5);
        let mut out = vec![(None, row.clone())];
        for (i, f) in self.plan.factor.iter().enumerate() {
            if !base[i].is_finite() {
                continue;
            }
            let (low, high) = match (&f.levels, &f.choices) {
                (Some(l), _) => (
                    l.iter().copied().fold(f64::INFINITY, f64::min),
                    l.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                (None, Some(c)) => (0.0, c.len().saturating_sub(1) as f64),
                (None, None) => (f.low.unwrap_or(0.0), f.high.unwrap_or(1.0)),
            };
            for v in [low, high] {
                let mut r = row.clone();
                r[i] = v;
                out.push((Some(i), r));
            }
        }
        out
    }

    /// The scenario at factor values `values` (in [`Study::names`] order), resolved; `label`
    /// names it in errors.
    pub fn scenario_at(&self, values: &[f64], label: &str) -> Result<Resolved> {
        let mut tree = toml::Value::try_from(&self.base)
            .map_err(|e| Error::invalid(&self.source, "scenario", e.to_string(), "a scenario"))?;
        // Columns first, so a row factor of the same field (an override of one country's
        // value) wins over the column's multiplier of every row.
        let mut order: Vec<(&Target, f64)> =
            self.targets.iter().zip(values.iter().copied()).collect();
        order.sort_by_key(|(t, _)| !matches!(t, Target::Column { .. }));
        for (t, v) in order {
            match t {
                Target::Scalar { path, integer } => {
                    let value = if *integer {
                        toml::Value::Integer(v as i64)
                    } else {
                        toml::Value::Float(v)
                    };
                    set_path(&mut tree, path, value);
                }
                Target::Column { rows, legal } => {
                    for (path, base) in rows {
                        let value = (base * v).clamp(legal.0, legal.1);
                        set_path(&mut tree, path, toml::Value::Float(value));
                    }
                }
                Target::Row { path, .. } => set_path(&mut tree, path, toml::Value::Float(v)),
                Target::Choice { path, words } => {
                    let word = words
                        .get((v.max(0.0) as usize).min(words.len().saturating_sub(1)))
                        .cloned()
                        .unwrap_or_default();
                    set_path(&mut tree, path, toml::Value::String(word));
                }
            }
        }
        let at = self
            .plan
            .factor
            .iter()
            .zip(values)
            .map(|(f, v)| format!("{} = {v}", f.key))
            .collect::<Vec<_>>()
            .join(", ");
        let file = format!("{} at {label} ({at})", self.file);
        let scenario: Scenario = tree.try_into().map_err(|e: toml::de::Error| {
            Error::invalid(&file, "scenario", e.message(), "a scenario")
        })?;
        scenario.resolve(&file, Path::new("."))
    }

    /// Output column names: `metric@arm@rate`.
    pub fn output_names(&self) -> Vec<String> {
        self.plan
            .output
            .iter()
            .map(|o| format!("{}@{}@{}", o.metric, o.arm.as_deref().unwrap_or(""), o.rate))
            .collect()
    }

    /// Outputs of one evaluation at factor values `point` (NaN where a metric is undefined);
    /// `label` names it in errors.
    pub fn evaluate_at(&self, point: &[f64], label: &str) -> Result<Vec<f64>> {
        let resolved = self.scenario_at(point, label)?;
        let e = crate::run::evaluate(&resolved, &crate::run::quiet)?;
        let s = &e.summary;
        Ok(self
            .plan
            .output
            .iter()
            .map(|o| {
                let arm = o.arm.as_deref().unwrap_or("");
                let values = floats(s, &o.metric);
                level_near(s, arm, o.rate)
                    .and_then(|(_, rows)| rows.first().copied())
                    .map_or(f64::NAN, |j| values[j])
            })
            .collect())
    }
}

/// The resolved plan as written to a study folder's `plan.toml`.
pub fn plan_text(study: &Study) -> String {
    format!(
        "# Resolved study plan: `adsim study plan.toml --out OTHER` reproduces every file of\n# this folder. Base scenario: {}\n{}",
        study.source,
        study.plan.to_toml()
    )
}
