//! Custom Audiences (docs/model.md §7): businesses upload their customers' numbers, S matches them.
//!
//! A business of segment `s` uploads the number of every customer (the `customer_of` set of
//! [`crate::population::User`]), normalized as S documents (digits with the country code, no
//! "+", no leading zeros) and SHA-256 hashed ([`crate::phone::PhoneNumber::sha256_hex`]). A share
//! `fault_rate` of uploaded numbers carries a formatting fault (national format, missing
//! country code): `strict` normalization loses them, `lenient` recovers a share
//! `lenient_recovery` of them. S matches each hash against its phone index, which is the
//! inverse number map of [`crate::population::Population::holder_of`] plus the M numbers that
//! sharing added through metadata links (docs/model.md §5); the engine uses that map directly, and the
//! tests check on samples that hashing gives the same matches. Outcomes: matched the right
//! person (the customer's own account holds the number), matched the wrong person (only an
//! account holding it as a stale or household number does), or unmatched.

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;
use crate::rng::{Key, Lanes, Stream};

/// How S normalizes uploaded numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Faulty numbers never match.
    #[default]
    Strict,
    /// A share of faulty numbers is repaired before hashing.
    Lenient,
}

/// `[audiences]`: customer list quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceConfig {
    /// Share of uploaded numbers with a formatting fault. Assumption: 0.15.
    pub fault_rate: f64,
    /// `strict` or `lenient`.
    pub normalization: Normalization,
    /// Share of faulty numbers `lenient` repairs. Assumption: 0.7.
    pub lenient_recovery: f64,
}

impl Default for AudienceConfig {
    fn default() -> Self {
        AudienceConfig {
            fault_rate: 0.15,
            normalization: Normalization::Strict,
            lenient_recovery: 0.7,
        }
    }
}

impl AudienceConfig {
    /// Checks the section.
    pub fn validate(&self, file: &str) -> Result<()> {
        for (k, v) in [
            ("fault_rate", self.fault_rate),
            ("lenient_recovery", self.lenient_recovery),
        ] {
            ensure!(
                (0.0..=1.0).contains(&v),
                file,
                format!("audiences.{k}"),
                v,
                "a share in [0, 1]"
            );
        }
        Ok(())
    }

    /// The probability that an uploaded number arrives usable (hashable as S expects).
    pub fn usable(&self) -> f64 {
        match self.normalization {
            Normalization::Strict => 1.0 - self.fault_rate,
            Normalization::Lenient => 1.0 - self.fault_rate * (1.0 - self.lenient_recovery),
        }
    }
}

/// Draws which of a customer's uploads arrive usable, per segment.
#[derive(Clone, Debug)]
pub struct Uploads {
    usable: Lanes<16>,
}

impl Uploads {
    /// The model of an audiences section.
    pub fn new(c: &AudienceConfig) -> Self {
        Uploads {
            usable: Lanes::uniform(c.usable()),
        }
    }

    /// The segments among `customer_of` whose upload of user `id`'s number is usable.
    #[inline]
    pub fn usable(&self, key: Key, id: u64, customer_of: u64) -> u64 {
        let mut rng = key.user_rng(id, Stream::Audiences);
        self.usable.draw(&mut rng, customer_of)
    }
}
