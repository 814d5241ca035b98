//! Targeting relevance (SPEC §6): which S accounts each segment's campaign reaches, and how
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
use crate::rng::{Key, Stream, Threshold16};

/// Impression supply of one account per period, in units: 720720 = lcm(1..16), so splits over
/// up to 16 campaigns are exact; beyond, each share is rounded down (by under 1.4e-6).
pub const IMPRESSION_UNITS: u64 = 720_720;

/// `[targeting]`: detector and click parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetingConfig {
    /// On-platform detection of an interested holder. Assumption: 0.30 (Pew 2019: 59% of US
    /// users found their interest categories accurate; detection misses many interests).
    pub on_platform_recall: f64,
    /// On-platform false detection for an uninterested holder. Assumption: 0.06.
    pub on_platform_fpr: f64,
    /// Detection from M business messaging in the segment. Assumption: 0.80 (messaging a
    /// business is direct evidence of a relationship).
    pub m_recall: f64,
    /// False detection from M data in a segment the sender does not message. Assumption: 0.002.
    pub m_fpr: f64,
    /// Click-through rate of an impression shown to an interested holder. Assumption: 0.015,
    /// set with the others so that the average CTR lands near S's 0.9% (SPEC §14).
    pub ctr_relevant: f64,
    /// Click-through rate of an impression shown to an uninterested holder. Assumption: 0.002.
    pub ctr_irrelevant: f64,
    /// Click-through rate of an untargeted impression. Assumption: 0.0035 (run-of-network;
    /// targeted impressions then earn about 2.4 times as much; Beales 2010 found 2.68, SPEC §15).
    pub ctr_untargeted: f64,
}

impl Default for TargetingConfig {
    fn default() -> Self {
        TargetingConfig {
            on_platform_recall: 0.30,
            on_platform_fpr: 0.06,
            m_recall: 0.80,
            m_fpr: 0.002,
            ctr_relevant: 0.015,
            ctr_irrelevant: 0.002,
            ctr_untargeted: 0.0035,
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

/// The detector thresholds, ready for the per-account loop.
#[derive(Clone, Debug)]
pub struct Detectors {
    platform: [Threshold16; 2],
    m: [Threshold16; 2],
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
    /// Detectors of a targeting section.
    pub fn new(c: &TargetingConfig) -> Self {
        Detectors {
            platform: [
                Threshold16::new(c.on_platform_fpr),
                Threshold16::new(c.on_platform_recall),
            ],
            m: [Threshold16::new(c.m_fpr), Threshold16::new(c.m_recall)],
        }
    }

    /// The detectors that fire for account `id` whose holder has `interests`, its own M
    /// signals `own_messages`, and the foreign sender's signals `foreign_messages`.
    #[inline]
    pub fn flags(
        &self,
        key: Key,
        id: u64,
        segments: usize,
        interests: u64,
        own_messages: u64,
        foreign_messages: u64,
    ) -> Flags {
        let mut rng = key.user_rng(id, Stream::Detection);
        let mut f = Flags::default();
        for s in 0..segments {
            let w = rng.next_u64();
            let bit = 1u64 << s;
            let i = (interests >> s & 1) as usize;
            let o = (own_messages >> s & 1) as usize;
            let x = (foreign_messages >> s & 1) as usize;
            f.platform |= (self.platform[i].hit(w as u16) as u64) * bit;
            f.own |= (self.m[o].hit((w >> 16) as u16) as u64) * bit;
            f.foreign |= (self.m[x].hit((w >> 32) as u16) as u64) * bit;
        }
        f
    }
}
