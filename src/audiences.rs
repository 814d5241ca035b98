//! Custom Audiences (docs/model.md §7): businesses upload their customers' numbers, S matches
//! them.
//!
//! A business of segment `s` uploads the number of every customer (the `customer_of` set of
//! [`crate::population::User`]). A share `fault_rate` of the numbers is typed with a fault,
//! of a kind drawn from `fault_shares` ([`Fault`]): separators, an international prefix `00`,
//! a national trunk `0` instead of the calling code, no calling code, a dropped or a doubled
//! digit. S normalizes what was typed ([`normalize`]: digits only, then `strict` strips
//! leading zeros; `lenient` first replaces a trunk `0` with the business's calling code),
//! hashes it with SHA-256 and matches it against its phone index, which is the inverse number
//! map of [`crate::population::Population::holder_of`] plus the M numbers that sharing added
//! through metadata links (docs/model.md §5). The engine takes the fast path: the normalized
//! digits are looked up in the inverse map ([`crate::population::Population::holder_of_digits`]),
//! and the tests check on samples that the typed strings, normalized and hashed, match the
//! same accounts. Outcomes: matched the right person (the customer's own account holds the
//! number), the wrong person (an account holding it as a stale or household number, or
//! another user's number that a fault typed by chance), or unmatched.

use serde::{Deserialize, Serialize};

use crate::ensure;
use crate::error::Result;
use crate::phone::PhoneNumber;
use crate::rng::{Categorical, Stream, Threshold, UserKey, UserRng};

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

/// A formatting fault of a typed number (docs/model.md §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Spaces, dashes and parentheses: `+91 (98765) 43-210`.
    Separators,
    /// `00` instead of `+`: `0091...`.
    InternationalPrefix,
    /// National format with the trunk prefix: `0` and the national number.
    TrunkPrefix,
    /// The national number alone.
    NoCountryCode,
    /// One digit left out.
    DroppedDigit,
    /// One digit typed twice.
    DoubledDigit,
}

impl Fault {
    /// Every kind, in the order of [`FaultShares`].
    pub const ALL: [Fault; 6] = [
        Fault::Separators,
        Fault::InternationalPrefix,
        Fault::TrunkPrefix,
        Fault::NoCountryCode,
        Fault::DroppedDigit,
        Fault::DoubledDigit,
    ];
}

/// `[audiences.fault_shares]`: the kinds of faulty numbers, as shares of them (sum 1).
/// Assumption: no published breakdown; docs/model.md §14 gives the reasoning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultShares {
    /// Separators (recovered by any normalization).
    pub separators: f64,
    /// `00` instead of `+` (recovered: leading zeros are stripped).
    pub international_prefix: f64,
    /// National format with a trunk `0` (recovered only by `lenient`).
    pub trunk_prefix: f64,
    /// The national number alone (never recovered).
    pub no_country_code: f64,
    /// A dropped digit (never recovered; may land on another number).
    pub dropped_digit: f64,
    /// A doubled digit (never recovered; may land on another number).
    pub doubled_digit: f64,
}

impl Default for FaultShares {
    fn default() -> Self {
        FaultShares {
            separators: 0.20,
            international_prefix: 0.10,
            trunk_prefix: 0.35,
            no_country_code: 0.20,
            dropped_digit: 0.08,
            doubled_digit: 0.07,
        }
    }
}

impl FaultShares {
    /// The shares in the order of [`Fault::ALL`].
    pub fn shares(&self) -> [f64; 6] {
        [
            self.separators,
            self.international_prefix,
            self.trunk_prefix,
            self.no_country_code,
            self.dropped_digit,
            self.doubled_digit,
        ]
    }
}

/// `[audiences]`: customer list quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceConfig {
    /// Share of uploaded numbers typed with a fault. Assumption: 0.15.
    pub fault_rate: f64,
    /// `strict` or `lenient`.
    pub normalization: Normalization,
    /// The kinds of faults.
    pub fault_shares: FaultShares,
}

impl Default for AudienceConfig {
    fn default() -> Self {
        AudienceConfig {
            fault_rate: 0.15,
            normalization: Normalization::Strict,
            fault_shares: FaultShares::default(),
        }
    }
}

impl AudienceConfig {
    /// Checks the section.
    pub fn validate(&self, file: &str) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.fault_rate),
            file,
            "audiences.fault_rate",
            self.fault_rate,
            "a share in [0, 1]"
        );
        let names = [
            "separators",
            "international_prefix",
            "trunk_prefix",
            "no_country_code",
            "dropped_digit",
            "doubled_digit",
        ];
        let shares = self.fault_shares.shares();
        for (k, v) in names.iter().zip(shares) {
            ensure!(
                (0.0..=1.0).contains(&v),
                file,
                format!("audiences.fault_shares.{k}"),
                v,
                "a share in [0, 1]"
            );
        }
        let sum: f64 = shares.iter().sum();
        ensure!(
            (sum - 1.0).abs() < 1e-9,
            file,
            "audiences.fault_shares",
            format!("shares summing to {sum}"),
            "shares summing to 1"
        );
        Ok(())
    }
}

/// A typed number's fault: its kind and a draw that places it (which digit).
pub type Typo = Option<(Fault, u32)>;

/// Digits of a number as typed or normalized (E.164 has at most 15; a doubled digit and a
/// replaced trunk prefix add a few).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digits {
    buf: [u8; 24],
    len: usize,
}

impl Digits {
    fn new() -> Self {
        Digits {
            buf: [0; 24],
            len: 0,
        }
    }

    fn push(&mut self, d: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = d;
            self.len += 1;
        }
    }

    /// The ASCII digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The ASCII digits of a calling code and how many there are (no allocation).
fn calling_code_digits(cc: u16) -> ([u8; 5], usize) {
    let mut buf = [0u8; 5];
    let mut x = cc;
    let mut n = 0;
    loop {
        buf[n] = b'0' + (x % 10) as u8;
        n += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    buf[..n].reverse();
    (buf, n)
}

/// The digits of `phone` as typed with `typo`, its separators and `+` left out (what S's
/// "digits only" keeps of [`typed_string`]).
pub fn typed_digits(phone: &PhoneNumber, typo: Typo) -> Digits {
    let mut e164 = [0u8; 20];
    typed_from(phone.normalized_into(&mut e164), phone.calling_code, typo)
}

/// [`typed_digits`] of the number whose E.164 digits are `all`, of calling code `calling_code`.
fn typed_from(all: &[u8], calling_code: u16, typo: Typo) -> Digits {
    let cc_len = calling_code_digits(calling_code).1;
    let mut out = Digits::new();
    let at = |pos: u32, n: usize| pos as usize % n.max(1);
    match typo {
        None | Some((Fault::Separators, _)) => all.iter().for_each(|&d| out.push(d)),
        Some((Fault::InternationalPrefix, _)) => {
            out.push(b'0');
            out.push(b'0');
            all.iter().for_each(|&d| out.push(d));
        }
        Some((Fault::TrunkPrefix, _)) => {
            out.push(b'0');
            all[cc_len..].iter().for_each(|&d| out.push(d));
        }
        Some((Fault::NoCountryCode, _)) => all[cc_len..].iter().for_each(|&d| out.push(d)),
        Some((Fault::DroppedDigit, pos)) => {
            let skip = at(pos, all.len());
            for (i, &d) in all.iter().enumerate() {
                if i != skip {
                    out.push(d);
                }
            }
        }
        Some((Fault::DoubledDigit, pos)) => {
            let twice = at(pos, all.len());
            for (i, &d) in all.iter().enumerate() {
                out.push(d);
                if i == twice {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// The number as a business typed it into its customer list, with `typo`.
pub fn typed_string(phone: &PhoneNumber, typo: Typo) -> String {
    let e164 = phone.normalized();
    let cc = phone.calling_code.to_string();
    let national = &e164[cc.len()..];
    match typo {
        None => format!("+{e164}"),
        Some((Fault::Separators, pos)) => {
            // "+CC (AAA) BBB-CCCC", cut at positions that depend on the draw.
            let cut = 1 + pos as usize % national.len().saturating_sub(2).max(1);
            let (a, b) = national.split_at(cut.min(national.len()));
            let mid = b.len() / 2;
            format!("+{cc} ({a}) {}-{}", &b[..mid], &b[mid..])
        }
        Some((Fault::InternationalPrefix, _)) => format!("00 {cc} {national}"),
        Some((Fault::TrunkPrefix, _)) => format!("0{national}"),
        Some((Fault::NoCountryCode, _)) => national.to_string(),
        Some((Fault::DroppedDigit | Fault::DoubledDigit, _)) => {
            let d = typed_digits(phone, typo);
            format!("+{}", String::from_utf8_lossy(d.as_bytes()))
        }
    }
}

/// S's normalization of typed `digits` (docs/model.md §7.2): `strict` strips leading zeros;
/// `lenient` first replaces a trunk `0` (one leading zero, not `00`) with the business's
/// calling code `calling_code`, then strips leading zeros.
pub fn normalize(digits: &[u8], mode: Normalization, calling_code: u16) -> Digits {
    let mut out = Digits::new();
    let trunk = digits.first() == Some(&b'0') && digits.get(1) != Some(&b'0');
    let rest = if mode == Normalization::Lenient && trunk {
        let (cc, len) = calling_code_digits(calling_code);
        cc[..len].iter().for_each(|&d| out.push(d));
        &digits[1..]
    } else {
        let zeros = digits.iter().take_while(|&&d| d == b'0').count();
        &digits[zeros..]
    };
    rest.iter().for_each(|&d| out.push(d));
    out
}

/// S's normalization of a typed string: its digits, then [`normalize`].
pub fn normalize_str(typed: &str, mode: Normalization, calling_code: u16) -> String {
    let digits: Vec<u8> = typed.bytes().filter(u8::is_ascii_digit).collect();
    String::from_utf8_lossy(normalize(&digits, mode, calling_code).as_bytes()).into_owned()
}

/// Draws the faults of a user's uploads: one typed number per business that holds it.
#[derive(Clone, Debug)]
pub struct Uploads {
    faulty: Threshold,
    kinds: Categorical,
    normalization: Normalization,
}

impl Uploads {
    /// The model of an audiences section.
    pub fn new(c: &AudienceConfig) -> Self {
        Uploads {
            faulty: Threshold::new(c.fault_rate),
            kinds: Categorical::new(&c.fault_shares.shares()),
            normalization: c.normalization,
        }
    }

    /// The normalization S applies.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// Calls `f(segment, typo)` for every upload of the number of the user with stream keys
    /// `streams` (the segments of `customer_of`, lowest first), drawn from its own stream.
    #[inline]
    pub fn each(&self, streams: UserKey, customer_of: u64, mut f: impl FnMut(usize, Typo)) {
        if customer_of == 0 {
            return;
        }
        let mut rng: UserRng = streams.rng(Stream::Audiences);
        let mut bits = customer_of;
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let typo = rng.bernoulli(self.faulty).then(|| {
                let kind = Fault::ALL[self.kinds.draw(&mut rng).min(Fault::ALL.len() - 1)];
                (kind, (rng.next_u64() >> 32) as u32)
            });
            f(s, typo);
        }
    }

    /// Where an upload of `phone` typed with `typo` lands after normalization: `None` if on
    /// the number itself, otherwise the normalized digits. `phone` is only asked for when the
    /// kind of fault does not decide it (a dropped or doubled digit, no calling code, a strict
    /// trunk prefix): the sweep's users carry no number.
    #[inline]
    pub fn landing(&self, typo: Typo, phone: impl FnOnce() -> PhoneNumber) -> Option<Digits> {
        match typo {
            None | Some((Fault::Separators | Fault::InternationalPrefix, _)) => None,
            Some((Fault::TrunkPrefix, _)) if self.normalization == Normalization::Lenient => None,
            Some(_) => {
                let phone = phone();
                let mut own = [0u8; 20];
                let own = phone.normalized_into(&mut own);
                let typed = typed_from(own, phone.calling_code, typo);
                let normalized =
                    normalize(typed.as_bytes(), self.normalization, phone.calling_code);
                // A dropped digit can still normalize to the number (a calling code such as
                // 20 whose first digit is dropped leaves a trunk 0 that lenient replaces).
                (normalized.as_bytes() != own).then_some(normalized)
            }
        }
    }

    /// The segments among `customer_of` whose upload of the number `phone` of the user with
    /// stream keys `streams` lands on that number.
    #[inline]
    pub fn correct(
        &self,
        streams: UserKey,
        customer_of: u64,
        phone: impl Fn() -> PhoneNumber,
    ) -> u64 {
        let mut out = 0;
        self.each(streams, customer_of, |s, typo| {
            if self.landing(typo, &phone).is_none() {
                out |= 1 << s;
            }
        });
        out
    }
}
