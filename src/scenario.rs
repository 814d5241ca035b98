//! Scenarios: what to simulate, as a TOML file deserialized with serde (docs/model.md §11, §13).
//!
//! A scenario names the population size, seed and replications, the opt-out model's knobs,
//! the reference data (built in, replaced by files, or overridden field by field) and engine
//! tuning that never changes results. Every section and key has a default, so an empty file is
//! the default scenario. Unknown keys, wrong types and out-of-range values are refused before
//! any work, with the file, the key path, the value and what was expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audiences::AudienceConfig;
use crate::data::{AgeBandTable, CountryTable, ReferenceData, SegmentTable, parse_toml};
use crate::demand::MarketConfig;
use crate::ensure;
use crate::error::{Error, Result};
use crate::phone::NumberSpace;
use crate::policy::PolicyConfig;
use crate::population::KnownNumbersConfig;
use crate::revenue::RevenueConfig;
use crate::targeting::TargetingConfig;

/// The built-in scenarios: name, file text.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "whatsapp-2016",
        include_str!("../data/scenarios/whatsapp-2016.toml"),
    ),
    ("opt-in", include_str!("../data/scenarios/opt-in.toml")),
    (
        "whatsapp-2021",
        include_str!("../data/scenarios/whatsapp-2021.toml"),
    ),
    (
        "eu-pause-2016",
        include_str!("../data/scenarios/eu-pause-2016.toml"),
    ),
    (
        "counterfactuals-2016",
        include_str!("../data/scenarios/counterfactuals-2016.toml"),
    ),
];

/// The largest population a scenario may ask for (the number spaces bound it further).
pub const MAX_USERS: u64 = 100_000_000_000;
/// The largest number of replications.
pub const MAX_REPLICATIONS: u32 = 1000;
/// The largest engine chunk.
pub const MAX_CHUNK_SIZE: u64 = 1 << 24;

/// A whole scenario. Every field has a default; see the key reference in the README.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// One or two sentences on what the scenario is for.
    pub description: String,
    /// Size, seed and replications.
    pub population: PopulationConfig,
    /// The opt-out model.
    pub opt_out: OptOutConfig,
    /// Policy arms, the rate grid and opt-out timing.
    pub policy: PolicyConfig,
    /// Detectors and click-through rates.
    pub targeting: TargetingConfig,
    /// Custom Audience list quality.
    pub audiences: AudienceConfig,
    /// Revenue anchoring.
    pub revenue: RevenueConfig,
    /// Numbers S knew besides the phones on file.
    pub known_numbers: KnownNumbersConfig,
    /// The advertisers of the markets (docs/model.md §17.5).
    pub market: MarketConfig,
    /// Reference data: built in, replaced or overridden.
    pub data: DataConfig,
    /// Engine tuning. It never changes results, so it is left out of the resolved scenario
    /// written beside outputs (which must not differ between runs that differ only in tuning).
    #[serde(skip_serializing)]
    pub engine: EngineConfig,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "default".into(),
            description: "The built-in reference data at a size that runs in seconds.".into(),
            population: PopulationConfig::default(),
            opt_out: OptOutConfig::default(),
            policy: PolicyConfig::default(),
            targeting: TargetingConfig::default(),
            audiences: AudienceConfig::default(),
            revenue: RevenueConfig::default(),
            known_numbers: KnownNumbersConfig::default(),
            market: MarketConfig::default(),
            data: DataConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

/// `[population]`: how many users, from which seed, how many times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopulationConfig {
    /// M users simulated (1 to 10^11; the countries' number blocks must hold them).
    pub users: u64,
    /// The scenario seed; every random quantity is a function of it (docs/model.md §2).
    pub seed: u64,
    /// Independent replications, each a fresh population (1 to 1000).
    pub replications: u32,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        PopulationConfig {
            users: 100_000,
            seed: 2016,
            replications: 5,
        }
    }
}

/// `[opt_out]`: who opts out (docs/model.md §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptOutConfig {
    /// Weight `h` of the country, age and interest shifts in the privacy score, 0 to 10
    /// (0 = opt-outs uniformly at random). Assumption: 1.
    pub heterogeneity: f64,
}

impl Default for OptOutConfig {
    fn default() -> Self {
        OptOutConfig { heterogeneity: 1.0 }
    }
}

/// `[data]`: where reference data comes from, and field overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A country file replacing the built-in one (relative to the scenario file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countries: Option<PathBuf>,
    /// A segment file replacing the built-in taxonomy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<PathBuf>,
    /// An age band file replacing the built-in bands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_bands: Option<PathBuf>,
    /// Field overrides per country code: `[data.country_overrides.DE] privacy_shift = 1.2`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub country_overrides: BTreeMap<String, CountryOverride>,
    /// Field overrides per segment name: `[data.segment_overrides."Pets"] prevalence = 0.2`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub segment_overrides: BTreeMap<String, SegmentOverride>,
}

/// Overrides of one country's fields; see [`crate::data::Country`] for their meaning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CountryOverride {
    pub m_share: Option<f64>,
    pub also_on_s: Option<f64>,
    pub phone_on_file: Option<f64>,
    pub recycled_rate: Option<f64>,
    pub shared_phone_rate: Option<f64>,
    pub metadata_link_rate: Option<f64>,
    pub privacy_shift: Option<f64>,
    pub blocks: Option<Vec<String>>,
    pub age_shares: Option<Vec<f64>>,
}

/// Overrides of one segment's fields; see [`crate::data::Segment`] for their meaning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SegmentOverride {
    pub prevalence: Option<f64>,
    pub age_multipliers: Option<Vec<f64>>,
    pub customer_if_interested: Option<f64>,
    pub customer_if_not: Option<f64>,
    pub messages_if_interested: Option<f64>,
    pub messages_if_not: Option<f64>,
    pub privacy_shift: Option<f64>,
    pub cpc_usd: Option<f64>,
}

/// `[engine]`: how the work is cut up. Results are identical for every setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Users per rayon task (1 to 2^24).
    pub chunk_size: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { chunk_size: 16_384 }
    }
}

/// A scenario with its reference data loaded, overridden and validated: everything the engine
/// needs, and nothing it has to check again.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The scenario as given (with defaults filled in).
    pub scenario: Scenario,
    /// Where it came from (a path, or `built-in`).
    pub source: String,
    /// The reference data after overrides.
    pub data: ReferenceData,
    /// Each country's number space, in table order.
    pub spaces: Vec<NumberSpace>,
}

impl Resolved {
    /// The value of a click on each segment's campaigns, dollars (docs/model.md §8): its
    /// `cpc_usd`, or `revenue.cost_per_click_usd` where the segment table has none.
    pub fn click_values(&self) -> Vec<f64> {
        let fallback = self.scenario.revenue.cost_per_click_usd;
        self.data
            .segments
            .segment
            .iter()
            .map(|g| g.cpc_usd.unwrap_or(fallback))
            .collect()
    }
}

impl Scenario {
    /// Reads and parses a scenario file (not yet validated: see [`Scenario::resolve`]).
    pub fn from_file(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_toml(&text, &path.display().to_string())
    }

    /// A built-in scenario by name, with the source name used in errors.
    pub fn builtin(name: &str) -> Result<(Scenario, String)> {
        let (text, source) =
            crate::data::builtin_text(BUILTINS, name, "scenario", "scenario", "scenarios")?;
        Ok((parse_toml(text, &source)?, source))
    }

    /// The scenario with `overrides` applied: each a scenario key of the parameter registry
    /// (`targeting.m_recall`, `policy.rates`, `data.country_overrides`; not a reference-data
    /// column nor a key inside a list such as `policy.arms[].kind`) and its new value. The
    /// result is parsed as a scenario file is (a value of the wrong type names its key) and
    /// validated; `file` names it in errors. Values that depend on the reference data are
    /// checked by [`Scenario::resolve`].
    pub fn with_overrides(
        &self,
        overrides: &[(String, toml::Value)],
        file: &str,
    ) -> Result<Scenario> {
        let mut tree = self
            .tree()
            .map_err(|e| Error::invalid(file, "scenario", e.to_string(), "a scenario"))?;
        for (key, value) in overrides {
            let known = crate::registry::find(key)
                .is_some_and(|p| !p.is_data_column() && !key.contains("[]"));
            ensure!(
                known,
                file,
                key,
                value,
                "a scenario key of the parameter registry (adsim parameters), such as targeting.m_recall"
            );
            let path: Vec<String> = key.split('.').map(String::from).collect();
            crate::study::set_path(&mut tree, &path, value.clone());
        }
        let text = toml::to_string(&tree)
            .map_err(|e| Error::invalid(file, "scenario", e.to_string(), "a scenario"))?;
        let scenario: Scenario = parse_toml(&text, file)?;
        scenario.validate(file)?;
        Ok(scenario)
    }

    /// The value of scenario key `key` (a dotted path, as [`Scenario::with_overrides`] takes),
    /// or `None` where the scenario leaves it unset.
    pub fn get(&self, key: &str) -> Option<toml::Value> {
        let mut node = self.tree().ok()?;
        for part in key.split('.') {
            node = node.get(part)?.clone();
        }
        Some(node)
    }

    /// The scenario as a TOML tree, its engine tuning included (which [`Scenario::to_toml`]
    /// leaves out).
    fn tree(&self) -> std::result::Result<toml::Value, toml::ser::Error> {
        let mut tree = toml::Value::try_from(self)?;
        if let Some(t) = tree.as_table_mut() {
            t.insert("engine".into(), toml::Value::try_from(&self.engine)?);
        }
        Ok(tree)
    }

    /// The scenario as TOML, defaults filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# could not serialize the scenario: {e}\n"))
    }

    /// Checks the scenario's own values (not the data files): `file` names it in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        // The name becomes part of the default results folder (reports/runs/<name>-...): no
        // separators, no hidden or parent folder, nothing a terminal would not show.
        let n = &self.name;
        let plain = !n.is_empty()
            && n.chars().count() <= 100
            && !n.starts_with('.')
            && n.chars()
                .all(|c| c.is_alphanumeric() || " _-.+()".contains(c));
        ensure!(
            plain,
            file,
            "name",
            format!("{n:?}"),
            "1 to 100 letters, digits, spaces and _ - . + ( ), not starting with '.'"
        );
        let p = &self.population;
        ensure!(
            (1..=MAX_USERS).contains(&p.users),
            file,
            "population.users",
            p.users,
            format!("a whole number of users from 1 to {MAX_USERS}")
        );
        ensure!(
            (1..=MAX_REPLICATIONS).contains(&p.replications),
            file,
            "population.replications",
            p.replications,
            format!("1 to {MAX_REPLICATIONS} replications")
        );
        // Impression units are summed over users and days in 64-bit counters (docs/model.md
        // §6): 720720 units x days x users must stay below 2^63.
        let unit_days = u128::from(p.users)
            * u128::from(self.policy.horizon_days)
            * u128::from(crate::targeting::IMPRESSION_UNITS);
        ensure!(
            unit_days < 1u128 << 63,
            file,
            "population.users",
            p.users,
            format!(
                "at most {} users with policy.horizon_days = {} (impression units x days x users must fit a 64-bit count)",
                (i64::MAX as u64)
                    / (u64::from(self.policy.horizon_days.max(1))
                        * crate::targeting::IMPRESSION_UNITS),
                self.policy.horizon_days
            )
        );
        let h = self.opt_out.heterogeneity;
        ensure!(
            (0.0..=10.0).contains(&h),
            file,
            "opt_out.heterogeneity",
            h,
            "a weight from 0 (opt-outs at random) to 10"
        );
        let c = self.engine.chunk_size;
        ensure!(
            (1..=MAX_CHUNK_SIZE).contains(&c),
            file,
            "engine.chunk_size",
            c,
            format!("1 to {MAX_CHUNK_SIZE} users per chunk")
        );
        Ok(())
    }

    /// Validates the scenario, loads its reference data (paths relative to `base`), applies
    /// the overrides and validates the result. `source` names the scenario in errors.
    pub fn resolve(self, source: &str, base: &Path) -> Result<Resolved> {
        self.validate(source)?;
        let mut data = ReferenceData::builtin()?;
        let load = |key: &str, path: &Path| -> Result<(String, String)> {
            let full = base.join(path);
            let text = std::fs::read_to_string(&full).map_err(|e| {
                Error::invalid(
                    source,
                    key,
                    full.display(),
                    format!("a readable TOML file ({e})"),
                )
            })?;
            Ok((text, full.display().to_string()))
        };
        if let Some(p) = &self.data.countries {
            let (text, file) = load("data.countries", p)?;
            data.countries = parse_toml::<CountryTable>(&text, &file)?;
            data.countries_file = file;
        }
        if let Some(p) = &self.data.segments {
            let (text, file) = load("data.segments", p)?;
            data.segments = parse_toml::<SegmentTable>(&text, &file)?;
            data.segments_file = file;
        }
        if let Some(p) = &self.data.age_bands {
            let (text, file) = load("data.age_bands", p)?;
            data.age_bands = parse_toml::<AgeBandTable>(&text, &file)?;
            data.age_bands_file = file;
        }
        self.apply_overrides(&mut data, source)?;
        let spaces = data.validate()?;
        self.policy.validate(source, &data.country_codes())?;
        self.targeting.validate(source)?;
        self.audiences.validate(source)?;
        self.revenue.validate(source)?;
        if self.revenue.anchor == crate::revenue::Anchor::Calendar2016 {
            // Each day is priced at its quarter's figures: the data must hold them, and the
            // horizon must end by 31 December 2016 (docs/model.md §8.2).
            let last = crate::revenue::CALENDAR_2016_DAYS;
            ensure!(
                self.policy.horizon_days <= last,
                source,
                "policy.horizon_days",
                self.policy.horizon_days,
                format!(
                    "at most {last} days with revenue.anchor = \"calendar_2016\" (25 August to 31 December 2016; \"q2_2016\" prices any horizon at Q2 2016)"
                )
            );
            for (i, r) in data.countries.arpu_region.iter().enumerate() {
                for (k, v) in [
                    ("arpu_q3_2016_usd", r.arpu_q3_2016_usd),
                    ("arpu_q4_2016_usd", r.arpu_q4_2016_usd),
                ] {
                    ensure!(
                        v.is_some(),
                        &data.countries_file,
                        format!("arpu_region[{i}].{k}"),
                        "missing",
                        "dollars >= 0: revenue.anchor = \"calendar_2016\" prices each day at its quarter's ARPU"
                    );
                }
            }
        }
        self.known_numbers.validate(source)?;
        self.market.validate(source)?;
        Ok(Resolved {
            scenario: self,
            source: source.to_string(),
            data,
            spaces,
        })
    }

    fn apply_overrides(&self, data: &mut ReferenceData, source: &str) -> Result<()> {
        for (code, o) in &self.data.country_overrides {
            let known: Vec<String> = data
                .countries
                .country
                .iter()
                .map(|c| c.code.clone())
                .collect();
            let Some(c) = data.countries.country.iter_mut().find(|c| &c.code == code) else {
                return Err(Error::invalid(
                    source,
                    format!("data.country_overrides.{code}"),
                    format!("{code:?}"),
                    format!("a country of {}: {}", data.countries_file, known.join(", ")),
                ));
            };
            set(&mut c.m_share, o.m_share);
            set(&mut c.also_on_s, o.also_on_s);
            set(&mut c.phone_on_file, o.phone_on_file);
            set(&mut c.recycled_rate, o.recycled_rate);
            set(&mut c.shared_phone_rate, o.shared_phone_rate);
            set(&mut c.metadata_link_rate, o.metadata_link_rate);
            set(&mut c.privacy_shift, o.privacy_shift);
            set(&mut c.blocks, o.blocks.clone());
            if o.age_shares.is_some() {
                c.age_shares = o.age_shares.clone();
            }
        }
        if !self.data.country_overrides.is_empty() {
            data.countries_file = format!("{} with overrides from {source}", data.countries_file);
        }
        for (name, o) in &self.data.segment_overrides {
            let Some(s) = data.segments.segment.iter_mut().find(|s| &s.name == name) else {
                return Err(Error::invalid(
                    source,
                    format!("data.segment_overrides.{name:?}"),
                    format!("{name:?}"),
                    format!("the name of a segment of {}", data.segments_file),
                ));
            };
            set(&mut s.prevalence, o.prevalence);
            set(&mut s.customer_if_interested, o.customer_if_interested);
            set(&mut s.customer_if_not, o.customer_if_not);
            set(&mut s.messages_if_interested, o.messages_if_interested);
            set(&mut s.messages_if_not, o.messages_if_not);
            set(&mut s.privacy_shift, o.privacy_shift);
            if o.cpc_usd.is_some() {
                s.cpc_usd = o.cpc_usd;
            }
            if o.age_multipliers.is_some() {
                s.age_multipliers = o.age_multipliers.clone();
            }
        }
        if !self.data.segment_overrides.is_empty() {
            data.segments_file = format!("{} with overrides from {source}", data.segments_file);
        }
        Ok(())
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_scenario() {
        let s: Scenario = parse_toml("", "empty.toml").unwrap();
        assert_eq!(s, Scenario::default());
    }

    fn with_german_shift(shift: f64) -> Scenario {
        let mut s = Scenario::default();
        let o = CountryOverride {
            privacy_shift: Some(shift),
            ..Default::default()
        };
        s.data.country_overrides.insert("DE".into(), o);
        s
    }

    #[test]
    fn toml_round_trips() {
        let s = with_german_shift(1.5);
        let back: Scenario = parse_toml(&s.to_toml(), "x").unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn overrides_change_the_named_field_only() {
        let s = with_german_shift(1.5);
        let r = s.resolve("t.toml", Path::new(".")).unwrap();
        let builtin = ReferenceData::builtin().unwrap();
        for (a, b) in r
            .data
            .countries
            .country
            .iter()
            .zip(&builtin.countries.country)
        {
            if a.code == "DE" {
                assert_eq!(a.privacy_shift, 1.5);
                assert_eq!(a.m_share, b.m_share);
            } else {
                assert_eq!(a, b);
            }
        }
    }
}
