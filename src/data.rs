//! Reference data: countries, market segments and age bands (docs/model.md §3).
//!
//! The defaults live in `data/*.toml`, compiled into the binary so that adsim runs from any
//! folder; a scenario may replace a whole table with its own file or override single fields
//! (see [`crate::scenario::DataConfig`]). Every number in the default files carries its source
//! or the word "assumption". [`ReferenceData::validate`] checks everything a later stage relies
//! on, and names the file, key, value and expectation of the first problem it finds.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::{Error, Result};
use crate::phone::{Block, National, NumberSpace, PhoneNumber, check_mobile};
use crate::rng::{UserRng, hash2};

/// The largest number of segments a taxonomy may have (interests are a 64-bit set).
pub const MAX_SEGMENTS: usize = 64;
/// The largest number of age bands.
pub const MAX_AGE_BANDS: usize = 16;
/// The largest number of countries (country indices are 16-bit).
pub const MAX_COUNTRIES: usize = 1024;

/// The built-in country table.
pub const DEFAULT_COUNTRIES: &str = include_str!("../data/countries.toml");
/// The built-in segment table (IAB Audience Taxonomy 1.1, tier-2 Interest groups).
pub const DEFAULT_SEGMENTS: &str = include_str!("../data/segments.toml");
/// The built-in age bands.
pub const DEFAULT_AGE_BANDS: &str = include_str!("../data/age_bands.toml");

/// One of S's reporting regions, used to anchor revenue (docs/model.md §8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArpuRegion {
    /// Region name, referred to by [`Country::arpu_region`].
    pub name: String,
    /// S's average revenue per user in Q2 2016, US dollars per quarter.
    pub arpu_q2_2016_usd: f64,
    /// In Q3 2016 (read by `revenue.anchor = "calendar_2016"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arpu_q3_2016_usd: Option<f64>,
    /// In Q4 2016 (read by `revenue.anchor = "calendar_2016"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arpu_q4_2016_usd: Option<f64>,
    /// S's monthly active users at the end of Q2 2016, millions.
    pub s_mau_millions: f64,
}

/// One country of the M population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, as libphonenumber names regions.
    pub code: String,
    /// English name.
    pub name: String,
    /// ITU country calling code.
    pub calling_code: u16,
    /// Share of M's users in this country, in [0, 1]; shares sum to 1.
    pub m_share: f64,
    /// S reporting region (a name in the `arpu_region` table).
    pub arpu_region: String,
    /// Share of M users who also hold an S account, in [0, 1].
    pub also_on_s: f64,
    /// Share of S accounts with a phone number on file, in [0, 1].
    pub phone_on_file: f64,
    /// Share of M users whose number belonged to another user before, in [0, 1].
    pub recycled_rate: f64,
    /// Share of M users on a phone registered on S by a household member, in [0, 1].
    pub shared_phone_rate: f64,
    /// Probability that S links a shared user through device/account metadata (docs/model.md §5).
    pub metadata_link_rate: f64,
    /// Shift of the latent opt-out propensity, logistic scale.
    pub privacy_shift: f64,
    /// Mobile number blocks, `PREFIX/LEN`.
    pub blocks: Vec<String>,
    /// Optional age distribution of this country (one share per band); the global one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_shares: Option<Vec<f64>>,
}

/// One market segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Segment name (unique).
    pub name: String,
    /// Share of users interested, in [0, 1], before age multipliers.
    pub prevalence: f64,
    /// Multipliers of prevalence per age band (one per band, >= 0); all 1 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_multipliers: Option<Vec<f64>>,
    /// Probability of being a customer of a business in the segment, if interested.
    pub customer_if_interested: f64,
    /// Probability of being a customer of a business in the segment, if not interested.
    pub customer_if_not: f64,
    /// Probability of messaging businesses of the segment on M, if interested.
    pub messages_if_interested: f64,
    /// Probability of messaging businesses of the segment on M, if not interested.
    pub messages_if_not: f64,
    /// Shift of the opt-out propensity for users interested in the segment, logistic scale.
    pub privacy_shift: f64,
    /// The advertiser industry whose benchmarks stand for the segment (a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Value of a click on the segment's campaigns, dollars (docs/model.md §8); absent: the
    /// scenario's `revenue.cost_per_click_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpc_usd: Option<f64>,
}

/// One age band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeBand {
    /// Label, such as `25-34`.
    pub label: String,
    /// Share of M users in the band, in [0, 1]; shares sum to 1.
    pub share: f64,
    /// Shift of the opt-out propensity, logistic scale.
    pub privacy_shift: f64,
}

/// The country file: S's regions and the countries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryTable {
    /// S's reporting regions.
    pub arpu_region: Vec<ArpuRegion>,
    /// The countries.
    pub country: Vec<Country>,
}

/// The segment file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentTable {
    /// The segments, in bit order of the interest sets.
    pub segment: Vec<Segment>,
}

/// The age band file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeBandTable {
    /// The bands, youngest first.
    pub band: Vec<AgeBand>,
}

/// All reference data of a scenario, with the name of the file each table came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceData {
    /// Countries and regions.
    pub countries: CountryTable,
    /// Where the countries came from (a path, or `data/countries.toml (built in)`).
    pub countries_file: String,
    /// Segments.
    pub segments: SegmentTable,
    /// Where the segments came from.
    pub segments_file: String,
    /// Age bands.
    pub age_bands: AgeBandTable,
    /// Where the age bands came from.
    pub age_bands_file: String,
}

/// The text of the built-in `name` among `list` (name and text pairs compiled from
/// `data/<folder>/`) and its source as errors name it, `data/<folder>/<name>.toml (built in)`.
/// An unknown name is an argument error (`arg`) listing the built-in `what`s.
pub fn builtin_text(
    list: &[(&str, &'static str)],
    name: &str,
    arg: &str,
    what: &str,
    folder: &str,
) -> Result<(&'static str, String)> {
    let (_, text) = list.iter().find(|b| b.0 == name).ok_or_else(|| {
        let names: Vec<&str> = list.iter().map(|b| b.0).collect();
        Error::Argument {
            name: arg.into(),
            value: name.into(),
            expected: format!("a TOML file or a built-in {what}: {}", names.join(", ")),
        }
    })?;
    Ok((text, format!("data/{folder}/{name}.toml (built in)")))
}

/// Parses TOML text into `T`, naming the file and the key path of the first problem.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T> {
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(file, ".", &e, text))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        parse_error(file, &key, e.inner(), text)
    })
}

fn parse_error(file: &str, key: &str, e: &toml::de::Error, text: &str) -> Error {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    let message = match line {
        Some(l) => format!("{} (line {l})", e.message()),
        None => e.message().to_string(),
    };
    Error::Parse {
        file: file.to_string(),
        key: key.to_string(),
        message,
    }
}

fn unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

fn sums_to_one(xs: impl Iterator<Item = f64>) -> (bool, f64) {
    let s: f64 = xs.sum();
    ((s - 1.0).abs() <= 1e-6, s)
}

/// How many numbers of each block [`check_blocks`] validates with the phonenumber crate: the
/// first, the last, and one keyed random number under each of the 100 two-digit extensions of
/// the prefix, so that a foreign or non-mobile range of a hundredth of the block is found
/// (such as Jersey's +44 7509 inside +44 75). Finer ranges (the Isle of Man's +44 74576) are
/// left to the test suite, which validates a million drawn numbers.
pub const BLOCK_SAMPLES: u64 = 102;

/// Checks that a country's code is a region libphonenumber knows and its calling code is that
/// region's.
fn check_region(c: &Country, file: &str, code_key: &str, calling_key: &str) -> Result<()> {
    let known = phonenumber::metadata::DATABASE.by_id(c.code.as_str());
    ensure!(
        known.is_some(),
        file,
        code_key,
        format!("{:?}", c.code),
        "a region code libphonenumber knows (ISO 3166-1 alpha-2, such as \"IN\")"
    );
    let cc = known.map(|m| m.country_code()).unwrap_or_default();
    ensure!(
        cc == c.calling_code,
        file,
        calling_key,
        c.calling_code,
        format!("{cc}, the calling code of {}", c.code)
    );
    Ok(())
}

/// The built-in country table, parsed once.
fn builtin_countries() -> &'static CountryTable {
    use std::sync::OnceLock;
    static TABLE: OnceLock<CountryTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse_toml(DEFAULT_COUNTRIES, "data/countries.toml (built in)").unwrap_or(CountryTable {
            arpu_region: Vec::new(),
            country: Vec::new(),
        })
    })
}

/// Whether `code` with `calling_code` is a row of the built-in table (checked by the tests).
fn is_builtin_country(code: &str, calling_code: u16) -> bool {
    builtin_countries()
        .country
        .iter()
        .any(|c| c.code == code && c.calling_code == calling_code)
}

/// Whether `block` of country `code` is one of the built-in table's blocks. Those are sampled
/// by the test suite (`builtin_blocks_hold_valid_mobile_numbers` and the million-number
/// validation), so a run need not validate them again: sampling every block with the
/// phonenumber crate costs about 0.8 s, most of a small run's time.
fn is_builtin_block(code: &str, block: &str) -> bool {
    use std::collections::HashSet;
    use std::sync::OnceLock;
    static BLOCKS: OnceLock<HashSet<(String, String)>> = OnceLock::new();
    BLOCKS
        .get_or_init(|| {
            builtin_countries()
                .country
                .iter()
                .flat_map(|c| c.blocks.iter().map(|b| (c.code.clone(), b.clone())))
                .collect()
        })
        .contains(&(code.to_string(), block.to_string()))
}

/// Checks a country's blocks: well formed, not overlapping, short enough for E.164, and every
/// sampled number (see [`BLOCK_SAMPLES`]) a valid mobile number of the country under the
/// phonenumber crate's metadata. Built-in blocks are sampled by the tests instead.
pub fn check_blocks(country: &Country, file: &str, index: usize) -> Result<NumberSpace> {
    check_blocks_sampling(country, file, index, false)
}

fn check_blocks_sampling(
    country: &Country,
    file: &str,
    index: usize,
    sample_builtin: bool,
) -> Result<NumberSpace> {
    let mut blocks: Vec<Block> = Vec::with_capacity(country.blocks.len());
    ensure!(
        !country.blocks.is_empty(),
        file,
        format!("country[{index}].blocks"),
        "[]",
        "at least one block"
    );
    for (k, text) in country.blocks.iter().enumerate() {
        let key = format!("country[{index}].blocks[{k}]");
        let block =
            Block::parse(text).map_err(|e| Error::invalid(file, &key, format!("{text:?}"), e))?;
        let digits = country.calling_code.to_string().len() as u32 + block.len;
        ensure!(
            digits <= 15,
            file,
            &key,
            format!("{text:?}"),
            "at most 15 digits with the calling code (E.164)"
        );
        if let Some(other) = blocks.iter().find(|b| b.overlaps(&block)) {
            return Err(Error::invalid(
                file,
                key,
                format!("{text:?}"),
                format!("a block that does not overlap block {other}"),
            ));
        }
        let mut rng = UserRng::new(hash2(
            block.prefix ^ u64::from(block.len) << 40,
            u64::from(country.calling_code),
        ));
        let samples = if sample_builtin || !is_builtin_block(&country.code, text) {
            BLOCK_SAMPLES
        } else {
            0
        };
        for s in 0..samples {
            let hundredth = block.size() / 100;
            let offset = match s {
                0 => 0,
                1 => block.size() - 1,
                _ => (s - 2) * hundredth + rng.next_u64() % hundredth.max(1),
            };
            let number = PhoneNumber {
                calling_code: country.calling_code,
                national: National {
                    number: block.number(offset),
                    len: block.len,
                },
            };
            if let Err(why) = check_mobile(&country.code, &number) {
                return Err(Error::invalid(
                    file,
                    key,
                    format!("{text:?}"),
                    format!(
                        "a block of valid mobile numbers of {}, but {} {why}",
                        country.code,
                        number.e164()
                    ),
                ));
            }
        }
        blocks.push(block);
    }
    Ok(NumberSpace::new(blocks))
}

impl ReferenceData {
    /// Country codes, in table order (the index of `User::country`).
    pub fn country_codes(&self) -> Vec<&str> {
        self.countries
            .country
            .iter()
            .map(|c| c.code.as_str())
            .collect()
    }

    /// Age band labels, youngest first (the index of `User::age_band`).
    pub fn age_labels(&self) -> Vec<&str> {
        self.age_bands
            .band
            .iter()
            .map(|b| b.label.as_str())
            .collect()
    }

    /// Segment names, in bit order of the interest sets.
    pub fn segment_names(&self) -> Vec<&str> {
        self.segments
            .segment
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The built-in tables.
    pub fn builtin() -> Result<Self> {
        Ok(ReferenceData {
            countries: parse_toml(DEFAULT_COUNTRIES, "data/countries.toml (built in)")?,
            countries_file: "data/countries.toml (built in)".into(),
            segments: parse_toml(DEFAULT_SEGMENTS, "data/segments.toml (built in)")?,
            segments_file: "data/segments.toml (built in)".into(),
            age_bands: parse_toml(DEFAULT_AGE_BANDS, "data/age_bands.toml (built in)")?,
            age_bands_file: "data/age_bands.toml (built in)".into(),
        })
    }

    /// Checks every table and returns the number space of each country, in table order.
    pub fn validate(&self) -> Result<Vec<NumberSpace>> {
        let bands = self.validate_age_bands()?;
        self.validate_segments(bands)?;
        self.validate_countries(bands)
    }

    fn validate_age_bands(&self) -> Result<usize> {
        let f = self.age_bands_file.as_str();
        let bands = &self.age_bands.band;
        ensure!(
            (1..=MAX_AGE_BANDS).contains(&bands.len()),
            f,
            "band",
            format!("{} bands", bands.len()),
            format!("1 to {MAX_AGE_BANDS} bands")
        );
        let mut labels = BTreeSet::new();
        for (i, b) in bands.iter().enumerate() {
            ensure!(
                labels.insert(b.label.as_str()) && !b.label.is_empty(),
                f,
                format!("band[{i}].label"),
                format!("{:?}", b.label),
                "a unique, non-empty label"
            );
            ensure!(
                unit(b.share),
                f,
                format!("band[{i}].share"),
                b.share,
                "a share in [0, 1]"
            );
            ensure!(
                b.privacy_shift.is_finite(),
                f,
                format!("band[{i}].privacy_shift"),
                b.privacy_shift,
                "a finite number"
            );
        }
        let (ok, sum) = sums_to_one(bands.iter().map(|b| b.share));
        ensure!(
            ok,
            f,
            "band[*].share",
            format!("shares summing to {sum}"),
            "shares summing to 1"
        );
        Ok(bands.len())
    }

    fn validate_segments(&self, bands: usize) -> Result<()> {
        let f = self.segments_file.as_str();
        let segs = &self.segments.segment;
        ensure!(
            (1..=MAX_SEGMENTS).contains(&segs.len()),
            f,
            "segment",
            format!("{} segments", segs.len()),
            format!("1 to {MAX_SEGMENTS} segments (interests are a 64-bit set)")
        );
        let mut names = BTreeSet::new();
        for (i, s) in segs.iter().enumerate() {
            let k = |field: &str| format!("segment[{i}].{field}");
            ensure!(
                names.insert(s.name.as_str()) && !s.name.is_empty(),
                f,
                k("name"),
                format!("{:?}", s.name),
                "a unique, non-empty name"
            );
            for (field, v) in [
                ("prevalence", s.prevalence),
                ("customer_if_interested", s.customer_if_interested),
                ("customer_if_not", s.customer_if_not),
                ("messages_if_interested", s.messages_if_interested),
                ("messages_if_not", s.messages_if_not),
            ] {
                ensure!(unit(v), f, k(field), v, "a probability in [0, 1]");
            }
            ensure!(
                s.privacy_shift.is_finite(),
                f,
                k("privacy_shift"),
                s.privacy_shift,
                "a finite number"
            );
            if let Some(cpc) = s.cpc_usd {
                ensure!(
                    cpc > 0.0 && cpc <= 1000.0,
                    f,
                    k("cpc_usd"),
                    cpc,
                    "dollars per click above 0, at most 1000"
                );
            }
            if let Some(m) = &s.age_multipliers {
                ensure!(
                    m.len() == bands,
                    f,
                    k("age_multipliers"),
                    format!("{} values", m.len()),
                    format!("one multiplier per age band ({bands})")
                );
                for (b, &x) in m.iter().enumerate() {
                    ensure!(
                        x >= 0.0 && x.is_finite(),
                        f,
                        format!("segment[{i}].age_multipliers[{b}]"),
                        x,
                        "a finite multiplier >= 0"
                    );
                }
            }
        }
        Ok(())
    }

    fn validate_countries(&self, bands: usize) -> Result<Vec<NumberSpace>> {
        let f = self.countries_file.as_str();
        let table = &self.countries;
        let mut regions = BTreeSet::new();
        for (i, r) in table.arpu_region.iter().enumerate() {
            ensure!(
                regions.insert(r.name.as_str()),
                f,
                format!("arpu_region[{i}].name"),
                format!("{:?}", r.name),
                "a unique region name"
            );
            ensure!(
                r.arpu_q2_2016_usd >= 0.0 && r.arpu_q2_2016_usd.is_finite(),
                f,
                format!("arpu_region[{i}].arpu_q2_2016_usd"),
                r.arpu_q2_2016_usd,
                "dollars >= 0"
            );
            for (k, v) in [
                ("arpu_q3_2016_usd", r.arpu_q3_2016_usd),
                ("arpu_q4_2016_usd", r.arpu_q4_2016_usd),
            ] {
                if let Some(v) = v {
                    ensure!(
                        v >= 0.0 && v.is_finite(),
                        f,
                        format!("arpu_region[{i}].{k}"),
                        v,
                        "dollars >= 0"
                    );
                }
            }
            ensure!(
                r.s_mau_millions > 0.0 && r.s_mau_millions.is_finite(),
                f,
                format!("arpu_region[{i}].s_mau_millions"),
                r.s_mau_millions,
                "millions > 0"
            );
        }
        let countries = &table.country;
        ensure!(
            (1..=MAX_COUNTRIES).contains(&countries.len()),
            f,
            "country",
            format!("{} countries", countries.len()),
            format!("1 to {MAX_COUNTRIES} countries")
        );
        let mut codes = BTreeSet::new();
        let mut spaces = Vec::with_capacity(countries.len());
        for (i, c) in countries.iter().enumerate() {
            let k = |field: &str| format!("country[{i}].{field}");
            // The built-in rows are checked by the tests; loading libphonenumber's metadata
            // (it compiles its patterns) is left to tables that bring new ones.
            if is_builtin_country(&c.code, c.calling_code) {
                ensure!(
                    codes.insert(c.code.as_str()),
                    f,
                    k("code"),
                    format!("{:?}", c.code),
                    "a code listed once"
                );
            } else {
                check_region(c, f, &k("code"), &k("calling_code"))?;
                ensure!(
                    codes.insert(c.code.as_str()),
                    f,
                    k("code"),
                    format!("{:?}", c.code),
                    "a code listed once"
                );
            }
            ensure!(
                regions.contains(c.arpu_region.as_str()),
                f,
                k("arpu_region"),
                format!("{:?}", c.arpu_region),
                format!("one of the arpu_region names {regions:?}")
            );
            for (field, v) in [
                ("m_share", c.m_share),
                ("also_on_s", c.also_on_s),
                ("phone_on_file", c.phone_on_file),
                ("recycled_rate", c.recycled_rate),
                ("shared_phone_rate", c.shared_phone_rate),
                ("metadata_link_rate", c.metadata_link_rate),
            ] {
                ensure!(unit(v), f, k(field), v, "a share in [0, 1]");
            }
            ensure!(
                c.privacy_shift.is_finite(),
                f,
                k("privacy_shift"),
                c.privacy_shift,
                "a finite number"
            );
            if let Some(shares) = &c.age_shares {
                ensure!(
                    shares.len() == bands,
                    f,
                    k("age_shares"),
                    format!("{} values", shares.len()),
                    format!("one share per age band ({bands})")
                );
                let (ok, sum) = sums_to_one(shares.iter().copied());
                ensure!(
                    ok && shares.iter().all(|&s| unit(s)),
                    f,
                    k("age_shares"),
                    format!("shares summing to {sum}"),
                    "shares in [0, 1] summing to 1"
                );
            }
            spaces.push(check_blocks(c, f, i)?);
        }
        let (ok, sum) = sums_to_one(countries.iter().map(|c| c.m_share));
        ensure!(
            ok,
            f,
            "country[*].m_share",
            format!("shares summing to {sum}"),
            "shares summing to 1 (within 1e-6)"
        );
        Ok(spaces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_blocks_hold_valid_mobile_numbers() {
        let data = ReferenceData::builtin().expect("built-in data");
        for (i, c) in data.countries.country.iter().enumerate() {
            check_blocks_sampling(c, "data/countries.toml", i, true).expect("valid blocks");
        }
        for (i, c) in data.countries.country.iter().enumerate() {
            check_region(c, "data/countries.toml", &format!("country[{i}].code"), "")
                .expect("a known region with its calling code");
        }
        assert!(is_builtin_block("IN", &data.countries.country[0].blocks[0]));
        assert!(!is_builtin_block("IN", "99/10"));
    }

    #[test]
    fn builtin_data_is_valid_and_complete() {
        let data = ReferenceData::builtin().unwrap();
        let spaces = data.validate().unwrap();
        assert_eq!(data.segments.segment.len(), 29);
        assert_eq!(data.age_bands.band.len(), 7);
        assert_eq!(spaces.len(), data.countries.country.len());
        let patterns: serde_json::Value =
            serde_json::from_str(include_str!("../data/mobile-patterns.json")).unwrap();
        if let Some(regions) = patterns.get("regions").and_then(|r| r.as_object()) {
            for code in regions.keys() {
                assert!(
                    data.countries.country.iter().any(|c| &c.code == code),
                    "{code} missing"
                );
            }
        }
    }
}
