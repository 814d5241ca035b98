//! Targeting relevance (docs/model.md §6): which S accounts each segment's campaign reaches, and how
//! the account's impressions split across campaigns.
//!
//! S flags an account for segment `s` when any independent detector fires (noisy OR): its
//! on-platform evidence (with probability `on_platform_recall` if the holder is interested,
//! `on_platform_fpr` if not), and, when M data is linked to the account and in ad use, the M
//! evidence: for each segment in which the sender messages businesses a detection with
//! `m_recall`, and in the others a false one with `m_fpr`. A mislinked account receives the
//! sender's signals but is judged against its holder's interests. All draws are fixed per
//! account and segment ([`Detectors`]), so an account's flags in any state are bit operations
//! on three sets, and every arm and level sees the same detectors (common random numbers).
//!
//! Each account has a fixed supply of [`IMPRESSION_UNITS`] per period, split evenly across the
//! campaigns whose audience it is in; an account in no audience sees untargeted ads. Flags do
//! not create inventory: revenue rises only when impressions land on interested people.

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;
use crate::rng::{Lanes, Stream, UserKey};

/// Impression supply of one account per day, in units: 720720 = lcm(1..16), so splits over up
/// to 16 campaigns are equal; over more, the first `720720 mod n` campaigns get one unit more
/// ([`split`]), so an account-day's units always add up to exactly this (docs/model.md §6).
pub const IMPRESSION_UNITS: u64 = 720_720;

/// The units of each of `n` campaigns sharing one account-day: `(each, extra)`, where the
/// first `extra` campaigns get `each + 1` and the others `each`; they add up to
/// [`IMPRESSION_UNITS`]. `n` is 1 to 128.
#[inline]
pub fn split(n: u32) -> (u64, u32) {
    let n = u64::from(n.max(1));
    (IMPRESSION_UNITS / n, (IMPRESSION_UNITS % n) as u32)
}

/// What interest evidence M's shared data carries (docs/model.md §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MEvidence {
    /// None: M's data links the account (number, registration, last-seen and device data) and
    /// adds its number to S's phone index, but says nothing about interests. The 2016 record:
    /// no message content was shared, and business messaging on M came in 2018.
    #[default]
    None,
    /// The sender's business-messaging signals flag segments (`m_recall`, `m_fpr`): what
    /// business messaging made possible by the 2021 update.
    BusinessMessaging,
}

/// `[targeting]`: detector and click parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetingConfig {
    /// What interest evidence M's data carries: `none` (2016, the default) or
    /// `business_messaging` (2021).
    pub m_evidence: MEvidence,
    /// On-platform detection of an interested holder. Assumption: 0.30 (Pew 2019: 59% of US
    /// users found their interest categories accurate; detection misses many interests).
    pub on_platform_recall: f64,
    /// On-platform false detection for an uninterested holder. Assumption: 0.06.
    pub on_platform_fpr: f64,
    /// Detection from M business messaging in the segment, read only with `m_evidence =
    /// "business_messaging"`. Assumption: 0.80 (messaging a business is direct evidence of a
    /// relationship).
    pub m_recall: f64,
    /// False detection from M data in a segment the sender does not message. Assumption: 0.002.
    pub m_fpr: f64,
    /// Click-through rate of an impression shown to an interested holder. Assumption: 0.015,
    /// set with the others so that the average CTR lands near S's 0.9% (docs/model.md §14).
    pub ctr_relevant: f64,
    /// Click-through rate of an impression shown to an uninterested holder. Assumption: 0.002.
    pub ctr_irrelevant: f64,
    /// Click-through rate of an untargeted impression. Assumption: 0.0035 (run-of-network;
    /// targeted impressions then earn about 2.4 times as much; Beales 2010 found 2.68, docs/model.md §13).
    pub ctr_untargeted: f64,
    /// Click-through rate of a Custom Audience impression shown to the business's own customer
    /// (a right-person match). Assumption: 0.025, above an interested stranger's 0.015:
    /// customers know the business (docs/model.md §7).
    pub ctr_customer: f64,
}

impl Default for TargetingConfig {
    fn default() -> Self {
        TargetingConfig {
            m_evidence: MEvidence::None,
            on_platform_recall: 0.30,
            on_platform_fpr: 0.06,
            m_recall: 0.80,
            m_fpr: 0.002,
            ctr_relevant: 0.015,
            ctr_irrelevant: 0.002,
            ctr_untargeted: 0.0035,
            ctr_customer: 0.025,
        }
    }
}

impl TargetingConfig {
    /// Checks the section.
    pub fn validate(&self, file: &str) -> Result<()> {
        for (k, v) in [
            ("on_platform_recall", self.on_platform_recall),
            ("on_platform_fpr", self.on_platform_fpr),
            ("m_recall", self.m_recall),
            ("m_fpr", self.m_fpr),
            ("ctr_relevant", self.ctr_relevant),
            ("ctr_irrelevant", self.ctr_irrelevant),
            ("ctr_untargeted", self.ctr_untargeted),
            ("ctr_customer", self.ctr_customer),
        ] {
            ensure!(
                (0.0..=1.0).contains(&v),
                file,
                format!("targeting.{k}"),
                v,
                "a probability in [0, 1]"
            );
        }
        Ok(())
    }
}

/// The detector thresholds, one lane per segment: if the evidence is absent, if present.
#[derive(Clone, Debug)]
pub struct Detectors {
    platform: [Lanes<16>; 2],
    /// The M detectors, if M's data carries interest evidence.
    m: Option<[Lanes<16>; 2]>,
}

/// The three sets of segments whose detectors fire for one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// On-platform evidence.
    pub platform: u64,
    /// The holder's own M signals, if linked and in ad use.
    pub own: u64,
    /// The foreign sender's M signals, if mislinked and in ad use.
    pub foreign: u64,
}

impl Detectors {
    /// Detectors of a targeting section; `m_read` says whether any arm reads M's interest
    /// evidence (else M's detectors are not drawn).
    pub fn new(c: &TargetingConfig, m_read: bool) -> Self {
        Detectors {
            platform: [
                Lanes::uniform(c.on_platform_fpr),
                Lanes::uniform(c.on_platform_recall),
            ],
            m: m_read.then(|| [Lanes::uniform(c.m_fpr), Lanes::uniform(c.m_recall)]),
        }
    }

    /// The detectors that fire for the account of the user with stream keys `streams`, whose
    /// holder has `interests`, its own M signals `own_messages`, and the signals of its
    /// foreign sender, if it has one (`foreign_messages`; without one, `foreign` is empty).
    /// `segments` of at most 64.
    #[inline]
    pub fn flags(
        &self,
        streams: UserKey,
        segments: usize,
        interests: u64,
        own_messages: u64,
        foreign_messages: Option<u64>,
    ) -> Flags {
        let mut rng = streams.rng(Stream::Detection);
        let all = u64::MAX.checked_shr(64 - segments as u32).unwrap_or(0);
        let [p0, p1] = &self.platform;
        let platform = p0.draw_either(p1, interests, &mut rng, all);
        // The M draws come after the platform's, so without them the platform flags are the
        // same.
        let Some([m0, m1]) = &self.m else {
            return Flags {
                platform,
                own: 0,
                foreign: 0,
            };
        };
        let own = m0.draw_either(m1, own_messages, &mut rng, all);
        let foreign = foreign_messages.map_or(0, |x| m0.draw_either(m1, x, &mut rng, all));
        Flags {
            platform,
            own,
            foreign,
        }
    }
}
