//! Calibration as a procedure: history matching (docs/model.md §18). A calibration plan names
//! a base scenario, the factors to calibrate (registry keys, at their plausible ranges unless
//! given), the targets (a metric at an arm and rate, the observed value, its observation
//! uncertainty and a model-discrepancy term) and the waves. Each wave evaluates a Latin
//! hypercube over the region still in play, computes every point's implausibility per target,
//!
//! `I = |observed - model| / sqrt(observation_sd^2 + discrepancy_sd^2 + mc_sd^2)`,
//!
//! (`mc_sd` the Monte Carlo standard error of a point's estimate over its replications, pooled
//! over the wave's points: each point's own rests on a degree of freedom or two) and
//! keeps the points whose largest `I` is at most the cut-off (3 by default: Pukelsheim's
//! three-sigma rule puts at least 95% of any unimodal distribution within three standard
//! deviations). Each later wave draws its design in a focused region: a box that bounds the
//! points kept so far, widened by the spacing of the points evaluated in it, and within it the
//! part whose nearest point seen was kept or which lies within a spacing of a kept point (a
//! nearest-neighbour rule in place of an emulator). The simulator itself is evaluated at every
//! point, so a point's implausibility is exact up to its Monte Carlo error, which the
//! denominator carries.
//!
//! A first wave that keeps nothing ends the calibration and reports the targets in conflict:
//! each target that no point meets alone, and each pair that points meet one at a time but
//! never together. Every evaluation uses the base scenario's seed (common random numbers), and the
//! points are evaluated independently and gathered in design order, so the kept set does not
//! depend on the number of threads.

use std::path::Path;

use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::factors::lookup;
use super::output::summary_frame;
use super::{Design, Factor, Output, Plan, Spread, Study};
use crate::document::{Block, html, markdown};
use crate::ensure;
use crate::error::{Error, Result};
use crate::folder::{write_csv, write_dir, write_text};
use crate::metrics::{RANGE_METRICS, t975};
use crate::table::{floats, level_near};

/// Version of the calibration folder's schema.
pub const CALIBRATION_SCHEMA_VERSION: &str = "calibration/1";

/// The built-in calibrations: name and plan text.
pub const BUILTINS: &[(&str, &str)] = &[("ctr", include_str!("../../data/calibrations/ctr.toml"))];

/// One calibration target: a metric of `summary.csv` at an arm and rate, what was observed and
/// how uncertain the comparison is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Short name (a validation case's, where it is one).
    pub name: String,
    /// The metric (a column of `summary.csv`).
    pub metric: String,
    /// The arm (default: the scenario's first sharing arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The target opt-out rate (the level nearest it is read).
    pub rate: f64,
    /// The observed value, in the metric's unit.
    pub observed: f64,
    /// Standard deviation of the observation (sampling, rounding, the year it was taken).
    pub observation_sd: f64,
    /// Standard deviation of the model's discrepancy: how far the model's quantity may stand
    /// from the observed one at the best parameters (a different population, a loose
    /// analogue).
    pub discrepancy_sd: f64,
    /// Where the observation and the two terms come from.
    #[serde(default)]
    pub source: String,
}

/// A calibration plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPlan {
    /// Its name.
    pub name: String,
    /// What it calibrates, and why these targets.
    #[serde(default)]
    pub description: String,
    /// The base scenario: a built-in name or a TOML file (relative to the plan).
    pub scenario: String,
    /// Users per replication of each evaluation.
    pub users: u64,
    /// Replications of each evaluation (at least 2: the Monte Carlo variance needs them).
    pub replications: u32,
    /// Waves of designs.
    #[serde(default = "three")]
    pub waves: u32,
    /// Points of each wave's Latin hypercube.
    pub samples: u32,
    /// Largest implausibility a kept point may have.
    #[serde(default = "cutoff")]
    pub cutoff: f64,
    /// Seed of the designs' draws (wave `w` uses `design_seed + w`).
    #[serde(default = "one")]
    pub design_seed: u64,
    /// The factors: registry keys, at their plausible ranges unless `low` and `high` are given.
    pub factor: Vec<Factor>,
    /// The targets.
    pub target: Vec<Target>,
    /// Figures whose interval is reported before and after calibration (default: the revenue
    /// change with auctions and at fixed prices, and the precision lift, at 0 and 50%).
    #[serde(default)]
    pub output: Vec<Output>,
}

fn three() -> u32 {
    3
}
fn cutoff() -> f64 {
    3.0
}
fn one() -> u64 {
    1
}

impl CalibrationPlan {
    /// Parses a plan; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<CalibrationPlan> {
        toml::from_str(text).map_err(|e| {
            Error::invalid(
                file,
                "calibration",
                e.message(),
                "a calibration plan (docs/model.md §18)",
            )
        })
    }

    /// A built-in calibration by name, with where it came from.
    pub fn builtin(name: &str) -> Result<(CalibrationPlan, String)> {
        let (text, source) =
            crate::data::builtin_text(BUILTINS, name, "plan", "calibration", "calibrations")?;
        Ok((CalibrationPlan::parse(text, &source)?, source))
    }

    /// The plan as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialize the plan: {e}\n"))
    }

    /// Checks what serde cannot, and fills each factor's range from the registry.
    fn check(&mut self, file: &str) -> Result<()> {
        ensure!(
            (2..=1000).contains(&self.replications),
            file,
            "replications",
            self.replications,
            "2 to 1000 (the Monte Carlo variance of a point needs two replications)"
        );
        ensure!(
            (1..=20).contains(&self.waves),
            file,
            "waves",
            self.waves,
            "1 to 20"
        );
        ensure!(
            self.cutoff.is_finite() && (1.0..=10.0).contains(&self.cutoff),
            file,
            "cutoff",
            self.cutoff,
            "a number from 1 to 10 (3 by the three-sigma rule)"
        );
        ensure!(
            !self.factor.is_empty(),
            file,
            "factor",
            "none",
            "at least one [[factor]]"
        );
        ensure!(
            !self.target.is_empty(),
            file,
            "target",
            "none",
            "at least one [[target]]"
        );
        let least = (2 * (self.factor.len() as u32 + 1)).max(10);
        ensure!(
            (least..=100_000).contains(&self.samples),
            file,
            "samples",
            self.samples,
            format!(
                "{least} to 100,000 points per wave for {} factors (at least twice the factors and a dummy, and 10)",
                self.factor.len()
            )
        );
        for (i, f) in self.factor.iter_mut().enumerate() {
            ensure!(
                f.levels.is_none() && f.points.is_none(),
                file,
                format!("factor[{i}] ({})", f.key),
                "levels",
                "a range (low and high, or the registry's plausible range), not levels"
            );
            if f.low.is_none() && f.high.is_none() {
                let p = lookup(&f.key).and_then(|(p, _)| p.plausible.map(|r| (p, r)));
                let Some((p, [low, high])) = p else {
                    return Err(Error::invalid(
                        file,
                        format!("factor[{i}].low"),
                        &f.key,
                        "low and high, or a registry key with a plausible range (`adsim parameters --assumptions`)",
                    ));
                };
                f.low = Some(low);
                f.high = Some(high);
                if f.spread.is_none() && p.distribution.as_deref() == Some("loguniform") {
                    f.spread = Some(Spread::Loguniform);
                }
            }
        }
        for (i, t) in self.target.iter().enumerate() {
            let key = |k: &str| format!("target[{i}] ({}).{k}", t.name);
            ensure!(
                !t.name.is_empty() && self.target[..i].iter().all(|u| u.name != t.name),
                file,
                key("name"),
                format!("{:?}", t.name),
                "a name no other target has"
            );
            ensure!(
                !RANGE_METRICS.contains(&t.metric.as_str()),
                file,
                key("metric"),
                &t.metric,
                "a metric with a Monte Carlo interval (not a minimum or count over cells)"
            );
            ensure!(
                t.observed.is_finite(),
                file,
                key("observed"),
                t.observed,
                "a finite number"
            );
            for (k, v) in [
                ("observation_sd", t.observation_sd),
                ("discrepancy_sd", t.discrepancy_sd),
            ] {
                ensure!(
                    v.is_finite() && v >= 0.0,
                    file,
                    key(k),
                    v,
                    "a standard deviation of at least 0"
                );
            }
            ensure!(
                t.observation_sd + t.discrepancy_sd > 0.0,
                file,
                key("observation_sd"),
                t.observation_sd,
                "an observation or discrepancy uncertainty above 0 (with neither, only Monte Carlo noise separates a point from the truth)"
            );
        }
        Ok(())
    }

    /// The outputs every point is evaluated at: the targets, then the reported figures.
    fn outputs(&self) -> Vec<Output> {
        let mut out: Vec<Output> = self
            .target
            .iter()
            .map(|t| Output {
                metric: t.metric.clone(),
                arm: t.arm.clone(),
                rate: t.rate,
            })
            .collect();
        if self.output.is_empty() {
            for m in [
                "market_revenue_change_musd",
                "revenue_change_musd",
                "precision_lift",
            ] {
                for rate in [0.0, 0.5] {
                    out.push(Output {
                        metric: m.into(),
                        arm: None,
                        rate,
                    });
                }
            }
        } else {
            out.extend(self.output.iter().cloned());
        }
        out
    }

    /// The study of wave `wave` over the unit box `[lo, hi]` of the factors' ranges.
    fn wave_study(
        &self,
        wave: u32,
        lo: &[f64],
        hi: &[f64],
        file: &str,
        dir: &Path,
    ) -> Result<Study> {
        let factor = self
            .factor
            .iter()
            .enumerate()
            .map(|(i, f)| Factor {
                low: Some(f.at(lo[i])),
                high: Some(f.at(hi[i])),
                ..f.clone()
            })
            .collect();
        let plan = Plan {
            name: self.name.clone(),
            description: self.description.clone(),
            scenario: self.scenario.clone(),
            users: self.users,
            replications: self.replications,
            design: Design::Lhs,
            samples: Some(self.samples),
            trajectories: None,
            morris_levels: None,
            bootstrap: None,
            design_seed: self.design_seed + u64::from(wave),
            seed: None,
            seeds: Vec::new(),
            assumptions: false,
            factor,
            output: self.outputs(),
            calibration: None,
            then: None,
        };
        Study::new(plan, &format!("{file} (wave {})", wave + 1), dir)
    }
}

/// One evaluated point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Its wave (from 0).
    pub wave: u32,
    /// Factor values, in plan order.
    pub values: Vec<f64>,
    /// The same in the unit box of the plausible ranges.
    pub unit: Vec<f64>,
    /// Every output's value (targets first).
    pub outputs: Vec<f64>,
    /// Each target's Monte Carlo standard error.
    pub mc_sd: Vec<f64>,
    /// Each target's implausibility (infinite where the model leaves it undefined).
    pub implausibility: Vec<f64>,
}

impl Point {
    /// The largest implausibility over the targets.
    pub fn max_implausibility(&self) -> f64 {
        self.implausibility.iter().copied().fold(0.0, |a, b| {
            if b.is_nan() { f64::INFINITY } else { a.max(b) }
        })
    }
}

/// One wave's account.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    /// Points evaluated.
    pub evaluated: usize,
    /// Points kept (largest implausibility at most the cut-off).
    pub kept: usize,
    /// The wave's box, as a share of the plausible space's volume.
    pub box_volume: f64,
    /// The share of the box its design was drawn from: the part whose nearest point
    /// evaluated before was kept (1 for wave 1).
    pub design_share: f64,
    /// Estimated share of the plausible space ruled out after this wave: one less the box's
    /// volume times the design's share of it times the share of its points kept.
    pub ruled_out: f64,
    /// Per target: the share of the wave's points it rules out (alone).
    pub ruled_out_by: Vec<f64>,
}

/// What a set of targets the model cannot meet looks like.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// Targets no point of the last wave meets even alone.
    pub unmet: Vec<String>,
    /// Pairs of targets each met by some point, never both by one.
    pub pairs: Vec<(String, String)>,
}

/// A finished calibration.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The plan, with the ranges it resolved to.
    pub plan: CalibrationPlan,
    /// Where the plan came from.
    pub file: String,
    /// Output names (`metric@arm@rate`), targets first.
    pub outputs: Vec<String>,
    /// Every point of every wave, in wave and design order.
    pub points: Vec<Point>,
    /// Each wave's account.
    pub waves: Vec<Wave>,
    /// The base scenario's own point (the parameters as the scenario sets them).
    pub base: Point,
    /// Set when a wave kept nothing.
    pub conflict: Option<Conflict>,
    /// The final box in the unit space of the plausible ranges.
    pub final_box: (Vec<f64>, Vec<f64>),
    /// The region the last wave sampled (none when it was wave 1, the whole space).
    pub region: Option<Region>,
    /// The calibration's study plan: the final box, for `adsim run --study`.
    pub study_plan: Plan,
}

impl Calibration {
    /// The kept points of the last wave that kept any (their spread is the calibrated
    /// interval: the last wave samples its box evenly).
    pub fn kept_last(&self) -> Vec<&Point> {
        let cutoff = self.plan.cutoff;
        let last = self
            .points
            .iter()
            .filter(|p| p.max_implausibility() <= cutoff)
            .map(|p| p.wave)
            .max();
        self.points
            .iter()
            .filter(|p| Some(p.wave) == last && p.max_implausibility() <= cutoff)
            .collect()
    }
}

/// Evaluates one point: every output's value and each target's Monte Carlo standard error.
fn evaluate(
    study: &Study,
    plan: &CalibrationPlan,
    values: &[f64],
    label: &str,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let resolved = study.scenario_at(values, label)?;
    let e = crate::run::evaluate(&resolved, &crate::run::quiet)?;
    let s = &e.summary;
    let t = t975(plan.replications - 1);
    let mut outputs = Vec::new();
    let mut mc = Vec::new();
    for (i, o) in study.plan.output.iter().enumerate() {
        let arm = o.arm.as_deref().unwrap_or("");
        let row = level_near(s, arm, o.rate).and_then(|(_, rows)| rows.first().copied());
        let read = |c: &str| row.map_or(f64::NAN, |j| floats(s, c)[j]);
        outputs.push(read(&o.metric));
        if i < plan.target.len() {
            let (lo, hi) = (
                read(&format!("{}_lo", o.metric)),
                read(&format!("{}_hi", o.metric)),
            );
            mc.push((hi - lo) / 2.0 / t);
        }
    }
    Ok((outputs, mc))
}

fn implausibility(targets: &[Target], outputs: &[f64], mc: &[f64]) -> Vec<f64> {
    targets
        .iter()
        .zip(outputs)
        .zip(mc)
        .map(|((t, &m), &s)| {
            let var = t.observation_sd.powi(2) + t.discrepancy_sd.powi(2) + s.max(0.0).powi(2);
            let i = (t.observed - m).abs() / var.sqrt();
            if i.is_nan() { f64::INFINITY } else { i }
        })
        .collect()
}

/// Runs the calibration of `plan` (read from `file`, relative to `dir`); `progress` gets
/// (wave, finished, all) as points finish.
pub fn calibrate(
    mut plan: CalibrationPlan,
    file: &str,
    dir: &Path,
    progress: &(dyn Fn(u32, usize, usize) + Sync),
) -> Result<Calibration> {
    plan.check(file)?;
    let k = plan.factor.len();
    let targets = plan.target.len();
    let (mut lo, mut hi) = (vec![0.0; k], vec![1.0; k]);
    let mut points: Vec<Point> = Vec::new();
    let mut waves = Vec::new();
    let mut conflict = None;
    let mut outputs = Vec::new();
    let mut base = None;
    let mut last_study = None;
    let mut regions: Vec<Region> = Vec::new();
    for wave in 0..plan.waves {
        let study = plan.wave_study(wave, &lo, &hi, file, dir)?;
        if wave == 0 {
            outputs = study.output_names();
            // The scenario's own values, where it sets them (else the range's middle).
            let values: Vec<f64> = study
                .base_values()
                .iter()
                .zip(&plan.factor)
                .map(|(v, f)| if v.is_finite() { *v } else { f.at(0.5) })
                .collect();
            let (o, mc) = evaluate(&study, &plan, &values, "the base scenario")?;
            let unit = unit_of(&plan.factor, &values);
            base = Some(Point {
                wave: 0,
                implausibility: implausibility(&plan.target, &o, &mc),
                values,
                unit,
                outputs: o,
                mc_sd: mc,
            });
        }
        // Wave 1 is the study's Latin hypercube over the plausible ranges; later waves the
        // part of a larger hypercube over the box that the points so far call plausible.
        let (design, share) = if wave == 0 {
            let rows: Vec<Vec<f64>> = study.points.iter().map(|r| r[..k].to_vec()).collect();
            (rows, 1.0)
        } else {
            let seen: Vec<(Vec<f64>, bool)> = points
                .iter()
                .map(|p| (p.unit.clone(), p.max_implausibility() <= plan.cutoff))
                .collect();
            let m = seen
                .iter()
                .filter(|(u, _)| in_box(u, &lo, &hi))
                .count()
                .max(1);
            let kept_in = seen
                .iter()
                .filter(|(u, kept)| *kept && in_box(u, &lo, &hi))
                .count();
            let region = Region {
                lo: lo.clone(),
                hi: hi.clone(),
                seen,
                radius: (m as f64).powf(-1.0 / k as f64),
                focus: kept_in > k,
            };
            let (units, share) =
                region.design(plan.samples as usize, plan.design_seed + u64::from(wave));
            regions.push(region);
            let rows = units
                .iter()
                .map(|u| {
                    plan.factor
                        .iter()
                        .zip(u)
                        .zip(&study.integer_factors())
                        .map(|((f, &x), &int)| {
                            let v = f.at(x);
                            if int { v.round() } else { v }
                        })
                        .collect()
                })
                .collect();
            (rows, share)
        };
        let all = design.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let evaluated: Vec<Result<Point>> = design
            .par_iter()
            .enumerate()
            .map(|(i, row)| {
                let values = row.clone();
                let (o, mc) = evaluate(
                    &study,
                    &plan,
                    &values,
                    &format!("wave {} point {i}", wave + 1),
                )?;
                progress(
                    wave,
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    all,
                );
                Ok(Point {
                    wave,
                    implausibility: implausibility(&plan.target, &o, &mc),
                    unit: unit_of(&plan.factor, &values),
                    values,
                    outputs: o,
                    mc_sd: mc,
                })
            })
            .collect();
        let mut wave_points: Vec<Point> = evaluated.into_iter().collect::<Result<_>>()?;
        // Each point's Monte Carlo variance rests on few replications (one degree of freedom
        // at two); the wave's points pool theirs, target by target.
        let pooled = pooled_mc(&wave_points, targets);
        for p in &mut wave_points {
            p.mc_sd.clone_from(&pooled);
            p.implausibility = implausibility(&plan.target, &p.outputs, &pooled);
        }
        if wave == 0
            && let Some(b) = base.as_mut()
        {
            b.mc_sd.clone_from(&pooled);
            b.implausibility = implausibility(&plan.target, &b.outputs, &pooled);
        }
        let kept: Vec<&Point> = wave_points
            .iter()
            .filter(|p| p.max_implausibility() <= plan.cutoff)
            .collect();
        let volume: f64 = lo.iter().zip(&hi).map(|(a, b)| b - a).product();
        let n = wave_points.len() as f64;
        waves.push(Wave {
            evaluated: wave_points.len(),
            kept: kept.len(),
            box_volume: volume,
            design_share: share,
            ruled_out: 1.0 - volume * share * kept.len() as f64 / n,
            ruled_out_by: (0..targets)
                .map(|t| {
                    wave_points
                        .iter()
                        .filter(|p| p.implausibility[t] > plan.cutoff)
                        .count() as f64
                        / n
                })
                .collect(),
        });
        last_study = Some(study);
        // No point kept in any wave: the targets cannot be met together. (A later wave that
        // keeps nothing after an earlier one kept some has missed, not disproved, the region:
        // the next wave's region still holds the earlier kept points.)
        let kept_before = points.iter().any(|p| p.max_implausibility() <= plan.cutoff);
        if kept.is_empty() && !kept_before {
            conflict = Some(conflicts(&plan, &wave_points));
            points.extend(wave_points);
            break;
        }
        points.extend(wave_points);
        // The next box: the bounds of every point kept so far inside this box (any wave),
        // widened on each side by the spacing of the points evaluated in it, the box's width
        // over m^(1/k) for m points in k dimensions: points stand about that far apart, so the
        // non-implausible region can reach that far past the outermost kept point before a
        // ruled-out point would have shown it. With fewer than k + 1 kept points the region's
        // shape is not known, and the box stays for the next wave to fill more densely.
        let within: Vec<&Point> = points
            .iter()
            .filter(|p| in_box(&p.unit, &lo, &hi))
            .collect();
        let kept_within: Vec<&&Point> = within
            .iter()
            .filter(|p| p.max_implausibility() <= plan.cutoff)
            .collect();
        if wave + 1 < plan.waves && kept_within.len() > k {
            let m = within.len() as f64;
            let (mut nlo, mut nhi) = (vec![f64::INFINITY; k], vec![f64::NEG_INFINITY; k]);
            for p in &kept_within {
                for j in 0..k {
                    nlo[j] = nlo[j].min(p.unit[j]);
                    nhi[j] = nhi[j].max(p.unit[j]);
                }
            }
            for j in 0..k {
                let spacing = (hi[j] - lo[j]) / m.powf(1.0 / k as f64);
                nlo[j] = (nlo[j] - spacing).max(lo[j]);
                nhi[j] = (nhi[j] + spacing).min(hi[j]);
            }
            lo = nlo;
            hi = nhi;
        }
    }
    let last = last_study.expect("at least one wave");
    let mut study_plan = last.plan.clone();
    study_plan.output.drain(..targets);
    study_plan.description = format!(
        "The box that bounds the non-implausible points of calibration {} after wave {} (docs/model.md §18); the intervals in summary.csv are over those points.",
        plan.name,
        waves.len()
    );
    Ok(Calibration {
        outputs,
        points,
        waves,
        base: base.expect("the base point"),
        conflict,
        final_box: (lo, hi),
        region: regions.pop(),
        study_plan,
        plan,
        file: file.to_string(),
    })
}

/// The region a wave after the first samples: a box in the unit space of the plausible ranges,
/// less the part whose nearest point evaluated before (distance measured in box widths) was
/// ruled out and which lies farther than the points' spacing from every kept point. A
/// nearest-neighbour rule stands in for an emulator: it keeps the design on the
/// non-implausible side of what has been seen, and the spacing keeps it from cutting the
/// region between kept points.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The box.
    pub lo: Vec<f64>,
    /// The box.
    pub hi: Vec<f64>,
    /// Every point evaluated before, in unit coordinates, and whether it was kept.
    pub seen: Vec<(Vec<f64>, bool)>,
    /// The spacing of the points seen in the box, in box widths: a candidate this close to a
    /// kept point is in the region whatever its nearest point.
    pub radius: f64,
    /// Whether to focus at all: not while the box holds fewer kept points than one more than
    /// the factors (the region's shape is not known).
    pub focus: bool,
}

/// How many candidates per wanted point a focused design draws, at most.
const CANDIDATES: usize = 64;

impl Region {
    /// Whether `unit` (coordinates in the plausible space's unit box) is in the region.
    pub fn contains(&self, unit: &[f64]) -> bool {
        let in_box = unit
            .iter()
            .zip(self.lo.iter().zip(&self.hi))
            .all(|(u, (l, h))| *u >= l - 1e-12 && *u <= h + 1e-12);
        in_box && self.nearest_kept(unit)
    }

    fn nearest_kept(&self, unit: &[f64]) -> bool {
        if !self.focus {
            return true;
        }
        let d = |a: &[f64]| -> f64 {
            a.iter()
                .zip(unit)
                .zip(self.lo.iter().zip(&self.hi))
                .map(|((x, y), (l, h))| ((x - y) / (h - l).max(1e-12)).powi(2))
                .sum()
        };
        let nearest = self.seen.iter().min_by(|a, b| d(&a.0).total_cmp(&d(&b.0)));
        nearest.is_some_and(|(_, kept)| *kept)
            || self
                .seen
                .iter()
                .any(|(u, kept)| *kept && d(u) <= self.radius * self.radius)
    }

    /// `samples` points of the region: the first of a Latin hypercube over the box, of up to
    /// [`CANDIDATES`] times as many points, that the region contains (in the hypercube's own
    /// random order); and the share of the candidates it contains.
    fn design(&self, samples: usize, seed: u64) -> (Vec<Vec<f64>>, f64) {
        let k = self.lo.len();
        let candidates = super::latin_hypercube(k, samples * CANDIDATES, seed);
        let to_unit = |c: &Vec<f64>| -> Vec<f64> {
            c.iter()
                .zip(self.lo.iter().zip(&self.hi))
                .map(|(x, (l, h))| l + x * (h - l))
                .collect()
        };
        let inside: Vec<Vec<f64>> = candidates
            .iter()
            .map(to_unit)
            .filter(|u| self.nearest_kept(u))
            .collect();
        if inside.is_empty() {
            // Nothing seen calls any of the box plausible: sample the box as it is.
            return (candidates.iter().take(samples).map(to_unit).collect(), 1.0);
        }
        let share = inside.len() as f64 / candidates.len() as f64;
        (inside.into_iter().take(samples).collect(), share)
    }
}

/// Per target, the root mean Monte Carlo variance over `points` (those that define it).
fn pooled_mc(points: &[Point], targets: usize) -> Vec<f64> {
    (0..targets)
        .map(|t| {
            let v: Vec<f64> = points
                .iter()
                .map(|p| p.mc_sd[t])
                .filter(|s| s.is_finite())
                .map(|s| s * s)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                (v.iter().sum::<f64>() / v.len() as f64).sqrt()
            }
        })
        .collect()
}

/// A point's coordinates in the unit box of the plan's ranges (the inverse of `Factor::at`).
fn unit_of(factors: &[Factor], values: &[f64]) -> Vec<f64> {
    factors
        .iter()
        .zip(values)
        .map(|(f, &v)| {
            let (lo, hi) = (f.low.unwrap_or(0.0), f.high.unwrap_or(1.0));
            let u = match f.spread {
                Some(Spread::Loguniform) => (v / lo).ln() / (hi / lo).ln(),
                _ => (v - lo) / (hi - lo),
            };
            if u.is_finite() {
                u.clamp(0.0, 1.0)
            } else {
                0.5
            }
        })
        .collect()
}

fn conflicts(plan: &CalibrationPlan, points: &[Point]) -> Conflict {
    let ok = |p: &Point, t: usize| p.implausibility[t] <= plan.cutoff;
    let n = plan.target.len();
    let name = |t: usize| plan.target[t].name.clone();
    let unmet = (0..n)
        .filter(|&t| !points.iter().any(|p| ok(p, t)))
        .map(name)
        .collect();
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            let (sa, sb) = (
                points.iter().any(|p| ok(p, a)),
                points.iter().any(|p| ok(p, b)),
            );
            if sa && sb && !points.iter().any(|p| ok(p, a) && ok(p, b)) {
                pairs.push((name(a), name(b)));
            }
        }
    }
    Conflict { unmet, pairs }
}

/// The factor keys of a calibration folder and the factor values of the kept points of its
/// last wave that kept any (what a study given the calibration samples); errors name the file.
pub fn kept_points(dir: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let plan_path = dir.join("calibration.toml");
    let text = std::fs::read_to_string(&plan_path).map_err(|e| Error::io(&plan_path, e))?;
    let plan = CalibrationPlan::parse(&text, &plan_path.display().to_string())?;
    let keys: Vec<String> = plan.factor.iter().map(|f| f.key.clone()).collect();
    let path = dir.join("points.csv");
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(wave), Some(kept)) = (col("wave"), col("kept")) else {
        return Err(Error::invalid(
            &file,
            "header",
            header.join(","),
            "a calibration's points.csv (wave, the factors, ..., kept)",
        ));
    };
    let factor_cols: Vec<usize> = keys
        .iter()
        .map(|k| {
            col(k).ok_or_else(|| {
                Error::invalid(
                    &file,
                    "header",
                    k,
                    "a column for every factor of calibration.toml",
                )
            })
        })
        .collect::<Result<_>>()?;
    let mut rows: Vec<(u32, Vec<f64>)> = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let bad = || {
            Error::invalid(
                &file,
                format!("row {}", i + 2),
                line,
                "a wave, finite factor values and kept (true or false)",
            )
        };
        if cells.len() != header.len() {
            return Err(bad());
        }
        let w: u32 = cells[wave].parse().map_err(|_| bad())?;
        if cells[kept] != "true" {
            continue;
        }
        let values: Vec<f64> = factor_cols
            .iter()
            .map(|&c| cells[c].parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        rows.push((w, values));
    }
    let last = rows.iter().map(|r| r.0).max();
    let kept: Vec<Vec<f64>> = rows
        .into_iter()
        .filter(|r| Some(r.0) == last)
        .map(|r| r.1)
        .collect();
    ensure!(
        !kept.is_empty(),
        &file,
        "kept",
        "none",
        "a calibration that kept at least one point (this one's targets are in conflict)"
    );
    Ok((keys, kept))
}

/// Writes the calibration folder: `calibration.toml` (the resolved plan), `points.csv`,
/// `waves.csv`, `intervals.csv`, `plan.toml` and `summary.csv` (the final box and the kept
/// points' spread, in a study's format, so that `adsim run --study DIR` shows them) and
/// `report.md` / `report.html`. Atomic: all or nothing.
pub fn write(c: &Calibration, out: &Path, force: bool) -> Result<()> {
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |e: PolarsError| {
            Error::invalid(
                path.display().to_string(),
                "table",
                e.to_string(),
                "a table",
            )
        }
    };
    write_dir(out, force, |tmp| {
        write_text(
            &tmp.join("calibration.toml"),
            &format!(
                "# adsim {} calibration, schema {CALIBRATION_SCHEMA_VERSION}, from {}\n{}",
                env!("CARGO_PKG_VERSION"),
                c.file,
                c.plan.to_toml()
            ),
        )?;
        let path = tmp.join("points.csv");
        write_csv(&path, &mut points_frame(c).map_err(fail(&path))?)?;
        let path = tmp.join("waves.csv");
        write_csv(&path, &mut waves_frame(c).map_err(fail(&path))?)?;
        let path = tmp.join("intervals.csv");
        write_csv(&path, &mut intervals_frame(c).map_err(fail(&path))?)?;
        write_text(
            &tmp.join("plan.toml"),
            &format!(
                "# The calibration's final box as a study plan (docs/model.md §18)\n{}",
                c.study_plan.to_toml()
            ),
        )?;
        let t = c.plan.target.len();
        let names: Vec<String> = c.outputs[t..].to_vec();
        let kept: Vec<Vec<f64>> = c
            .kept_last()
            .iter()
            .map(|p| p.outputs[t..].to_vec())
            .collect();
        let path = tmp.join("summary.csv");
        write_csv(
            &path,
            &mut summary_frame(&names, &kept).map_err(fail(&path))?,
        )?;
        let blocks = report(c);
        write_text(&tmp.join("report.md"), &markdown(&blocks))?;
        write_text(&tmp.join("report.html"), &html(&blocks, tmp)?)
    })
}

fn points_frame(c: &Calibration) -> PolarsResult<DataFrame> {
    let mut cols = vec![Column::new(
        "wave".into(),
        c.points.iter().map(|p| p.wave + 1).collect::<Vec<_>>(),
    )];
    for (j, f) in c.plan.factor.iter().enumerate() {
        cols.push(Column::new(
            f.key.as_str().into(),
            c.points.iter().map(|p| p.values[j]).collect::<Vec<_>>(),
        ));
    }
    for (t, target) in c.plan.target.iter().enumerate() {
        let name = &target.name;
        cols.push(Column::new(
            format!("{name}_model").into(),
            c.points.iter().map(|p| p.outputs[t]).collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            format!("{name}_mc_sd").into(),
            c.points.iter().map(|p| p.mc_sd[t]).collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            format!("{name}_implausibility").into(),
            c.points
                .iter()
                .map(|p| p.implausibility[t])
                .collect::<Vec<_>>(),
        ));
    }
    let t = c.plan.target.len();
    for (o, name) in c.outputs.iter().enumerate().skip(t) {
        cols.push(Column::new(
            name.as_str().into(),
            c.points.iter().map(|p| p.outputs[o]).collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(
        "max_implausibility".into(),
        c.points
            .iter()
            .map(Point::max_implausibility)
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "kept".into(),
        c.points
            .iter()
            .map(|p| p.max_implausibility() <= c.plan.cutoff)
            .collect::<Vec<_>>(),
    ));
    DataFrame::new_infer_height(cols)
}

fn waves_frame(c: &Calibration) -> PolarsResult<DataFrame> {
    let mut cols = vec![
        Column::new(
            "wave".into(),
            (1..=c.waves.len() as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "evaluated".into(),
            c.waves
                .iter()
                .map(|w| w.evaluated as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "kept".into(),
            c.waves.iter().map(|w| w.kept as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "box_volume".into(),
            c.waves.iter().map(|w| w.box_volume).collect::<Vec<_>>(),
        ),
        Column::new(
            "design_share".into(),
            c.waves.iter().map(|w| w.design_share).collect::<Vec<_>>(),
        ),
        Column::new(
            "space_ruled_out".into(),
            c.waves.iter().map(|w| w.ruled_out).collect::<Vec<_>>(),
        ),
    ];
    for (t, target) in c.plan.target.iter().enumerate() {
        cols.push(Column::new(
            format!("ruled_out_by_{}", target.name).into(),
            c.waves
                .iter()
                .map(|w| w.ruled_out_by[t])
                .collect::<Vec<_>>(),
        ));
    }
    DataFrame::new_infer_height(cols)
}

/// Per reported figure and target: its spread over the first wave (the plausible ranges,
/// uncalibrated) and over the last wave's kept points (calibrated).
fn intervals_frame(c: &Calibration) -> PolarsResult<DataFrame> {
    let first: Vec<&Point> = c.points.iter().filter(|p| p.wave == 0).collect();
    let kept = c.kept_last();
    let q = |pts: &[&Point], o: usize, p: f64| -> Option<f64> {
        let v: Vec<f64> = pts
            .iter()
            .map(|x| x.outputs[o])
            .filter(|x| x.is_finite())
            .collect();
        (!v.is_empty())
            .then(|| super::quantile(&v, p))
            .filter(|x| x.is_finite())
    };
    let n = c.outputs.len();
    let col = |pts: &[&Point], p: f64| (0..n).map(|o| q(pts, o, p)).collect::<Vec<_>>();
    df!(
        "output" => c.outputs.iter().map(String::as_str).collect::<Vec<_>>(),
        "target" => (0..n).map(|o| o < c.plan.target.len()).collect::<Vec<_>>(),
        "base" => c.base.outputs.clone(),
        "uncalibrated_p2_5" => col(&first, 0.025),
        "uncalibrated_p50" => col(&first, 0.5),
        "uncalibrated_p97_5" => col(&first, 0.975),
        "calibrated_p2_5" => col(&kept, 0.025),
        "calibrated_p50" => col(&kept, 0.5),
        "calibrated_p97_5" => col(&kept, 0.975),
        "calibrated_points" => vec![kept.len() as u32; n],
    )
}

fn fmt(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.5}")
    }
}

fn report(c: &Calibration) -> Vec<Block> {
    let p = &c.plan;
    let mut b = vec![
        Block::Heading(1, format!("Calibration {}", p.name)),
        Block::Para(p.description.clone()),
        Block::Para(format!(
            "History matching (docs/model.md §18) of {} factors to {} targets: {} waves of {} Latin-hypercube points, {} users x {} replications each, on scenario `{}`; a point is kept when every target's implausibility is at most {} (three standard deviations: at least 95% of any unimodal distribution, Pukelsheim 1994).",
            p.factor.len(),
            p.target.len(),
            c.waves.len(),
            c.waves.first().map_or(0, |w| w.evaluated),
            p.users,
            p.replications,
            p.scenario,
            p.cutoff
        )),
        Block::Heading(2, "Targets".into()),
    ];
    b.push(Block::Table(
        [
            "target",
            "metric",
            "observed",
            "observation sd",
            "discrepancy sd",
            "the scenario as set",
            "its implausibility",
            "source",
        ]
        .map(String::from)
        .to_vec(),
        p.target
            .iter()
            .enumerate()
            .map(|(t, target)| {
                vec![
                    target.name.clone(),
                    format!(
                        "`{}`, {} at {}",
                        target.metric,
                        target.arm.as_deref().unwrap_or("first sharing arm"),
                        target.rate
                    ),
                    fmt(target.observed),
                    fmt(target.observation_sd),
                    fmt(target.discrepancy_sd),
                    fmt(c.base.outputs[t]),
                    format!("{:.2}", c.base.implausibility[t]),
                    target.source.clone(),
                ]
            })
            .collect(),
    ));
    b.push(Block::Heading(2, "Waves".into()));
    let mut header: Vec<String> = [
        "wave",
        "points",
        "kept",
        "box (share of the space)",
        "design (share of the box)",
        "space ruled out",
    ]
    .map(String::from)
    .to_vec();
    header.extend(p.target.iter().map(|t| format!("ruled out by {}", t.name)));
    b.push(Block::Table(
        header,
        c.waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut row = vec![
                    (i + 1).to_string(),
                    w.evaluated.to_string(),
                    w.kept.to_string(),
                    format!("{:.1}%", 100.0 * w.box_volume),
                    format!("{:.1}%", 100.0 * w.design_share),
                    format!("{:.1}%", 100.0 * w.ruled_out),
                ];
                row.extend(w.ruled_out_by.iter().map(|s| format!("{:.1}%", 100.0 * s)));
                row
            })
            .collect(),
    ));
    b.push(Block::Para("A wave's box bounds every point kept before it, widened by the spacing of the points evaluated in the box before it (it stays while fewer kept points than one more than the factors are known), as a share of the plausible space; its design is drawn from the part of the box whose nearest point evaluated before was kept. The space ruled out is one less the box times the design's share of it times the share of the wave's points kept. A target's column is the share of the wave's points it rules out alone.".into()));
    if let Some(conflict) = &c.conflict {
        b.push(Block::Heading(2, "Targets the model cannot meet".into()));
        let mut lines = Vec::new();
        for t in &conflict.unmet {
            lines.push(format!(
                "`{t}` is met by no point of the last wave, even alone."
            ));
        }
        for (a, bb) in &conflict.pairs {
            lines.push(format!(
                "`{a}` and `{bb}` are each met by some point, never both by one: they are in conflict."
            ));
        }
        if lines.is_empty() {
            lines.push("Every target is met by some point, and every pair by one, but no point meets all of them: three or more targets are in conflict together.".into());
        }
        b.push(Block::Para(lines.join(" ")));
    }
    b.push(Block::Heading(2, "Calibrated ranges".into()));
    let kept = c.kept_last();
    b.push(Block::Table(
        [
            "factor",
            "plausible range",
            "the scenario as set",
            "kept: min",
            "kept: max",
        ]
        .map(String::from)
        .to_vec(),
        p.factor
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let v: Vec<f64> = kept.iter().map(|q| q.values[j]).collect();
                let (lo, hi) = (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                );
                vec![
                    format!("`{}`", f.key),
                    format!(
                        "{} to {}",
                        fmt(f.low.unwrap_or(f64::NAN)),
                        fmt(f.high.unwrap_or(f64::NAN))
                    ),
                    fmt(c.base.values[j]),
                    fmt(lo),
                    fmt(hi),
                ]
            })
            .collect(),
    ));
    b.push(Block::Heading(2, "Figures before and after".into()));
    let first: Vec<&Point> = c.points.iter().filter(|q| q.wave == 0).collect();
    let spread = |pts: &[&Point], o: usize| {
        let v: Vec<f64> = pts
            .iter()
            .map(|x| x.outputs[o])
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            format!(
                "{} [{}, {}]",
                fmt(super::quantile(&v, 0.5)),
                fmt(super::quantile(&v, 0.025)),
                fmt(super::quantile(&v, 0.975))
            )
        }
    };
    b.push(Block::Table(
        [
            "figure",
            "the scenario as set",
            "plausible ranges (wave 1)",
            "calibrated (kept, last wave)",
        ]
        .map(String::from)
        .to_vec(),
        c.outputs
            .iter()
            .enumerate()
            .map(|(o, name)| {
                vec![
                    format!("`{name}`"),
                    fmt(c.base.outputs[o]),
                    spread(&first, o),
                    spread(&kept, o),
                ]
            })
            .collect(),
    ));
    b.push(Block::Para(format!(
        "Median [2.5%, 97.5%] over the points: wave 1 fills the plausible ranges evenly; the calibrated column is over the {} kept points of the last wave that kept any. `points.csv` has every point, `waves.csv` the waves, `intervals.csv` these intervals; `plan.toml` and `summary.csv` are the kept region as a study, which `adsim run --study` shows beside a run.",
        kept.len()
    )));
    b
}

/// Whether unit-cube point `u` lies in the box `[lo, hi]` (with a margin for rounding).
fn in_box(u: &[f64], lo: &[f64], hi: &[f64]) -> bool {
    u.iter()
        .zip(lo.iter().zip(hi))
        .all(|(x, (l, h))| *x >= l - 1e-12 && *x <= h + 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(observed: f64, sd: f64) -> Target {
        Target {
            name: "t".into(),
            metric: "ctr".into(),
            arm: None,
            rate: 0.0,
            observed,
            observation_sd: sd,
            discrepancy_sd: 0.0,
            source: String::new(),
        }
    }

    #[test]
    fn implausibility_adds_the_three_variances() {
        let t = [Target {
            discrepancy_sd: 4.0,
            ..target(10.0, 3.0)
        }];
        // sqrt(9 + 16 + 0) = 5; |10 - 20| / 5 = 2.
        assert_eq!(implausibility(&t, &[20.0], &[0.0]), vec![2.0]);
        // Monte Carlo sd 12 makes the denominator 13.
        let i = implausibility(&t, &[23.0], &[12.0])[0];
        assert!((i - 1.0).abs() < 1e-12, "{i}");
        // An undefined model value is never kept.
        assert_eq!(implausibility(&t, &[f64::NAN], &[0.0]), vec![f64::INFINITY]);
    }

    #[test]
    fn conflicts_name_unmet_targets_and_pairs_never_met_together() {
        let mut plan = CalibrationPlan::builtin("ctr").unwrap().0;
        plan.target = ["a", "b", "c"]
            .iter()
            .map(|n| Target {
                name: (*n).into(),
                ..target(0.0, 1.0)
            })
            .collect();
        let point = |i: [f64; 3]| Point {
            wave: 0,
            values: vec![],
            unit: vec![],
            outputs: vec![],
            mc_sd: vec![],
            implausibility: i.to_vec(),
        };
        // a alone and b alone are met, never together; c never.
        let pts = [point([1.0, 5.0, 9.0]), point([5.0, 1.0, 9.0])];
        let c = conflicts(&plan, &pts);
        assert_eq!(c.unmet, vec!["c".to_string()]);
        assert_eq!(c.pairs, vec![("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn unit_coordinates_invert_the_factor_ranges() {
        let f = |spread| Factor {
            key: "k".into(),
            low: Some(0.01),
            high: Some(1.0),
            levels: None,
            points: None,
            spread,
            choices: None,
        };
        for spread in [None, Some(Spread::Loguniform)] {
            let fs = [f(spread)];
            for u in [0.0, 0.3, 1.0] {
                let v = fs[0].at(u);
                assert!((unit_of(&fs, &[v])[0] - u).abs() < 1e-12);
            }
        }
    }
}
