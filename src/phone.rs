//! Phone numbers: number blocks, a country's number space, E.164 and the Custom Audience
//! normal form.
//!
//! A block is written `PREFIX/LEN` in `data/countries.toml`: every national significant number
//! (NSN) of `LEN` digits that starts with `PREFIX` is a valid mobile number of the country.
//! A country's [`NumberSpace`] concatenates its blocks into positions `0..capacity`; the
//! population maps users onto positions through a keyed bijection (docs/model.md §3), and
//! [`NumberSpace::position`] maps a number back, which is how S's phone index is inverted
//! without being stored.

use sha2::{Digest, Sha256};

/// One block of mobile numbers: the NSNs of `len` digits that start with `prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The prefix, as a number (blocks never start with 0).
    pub prefix: u64,
    /// Digits in the prefix.
    pub prefix_len: u32,
    /// Digits in the national significant number.
    pub len: u32,
}

impl Block {
    /// Parses `PREFIX/LEN`. The error says what was expected.
    pub fn parse(text: &str) -> Result<Block, String> {
        let expected = "\"PREFIX/LEN\": a prefix of 1 to 10 digits not starting with 0, \
                        and a national number length of 4 to 14 digits longer than the prefix";
        let (p, l) = text.split_once('/').ok_or_else(|| expected.to_string())?;
        let digits = !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit());
        let len: u32 = l.parse().map_err(|_| expected.to_string())?;
        if !digits || p.starts_with('0') || !(4..=14).contains(&len) || p.len() as u32 >= len {
            return Err(expected.to_string());
        }
        Ok(Block {
            prefix: p.parse().map_err(|_| expected.to_string())?,
            prefix_len: p.len() as u32,
            len,
        })
    }

    /// How many numbers the block holds.
    pub fn size(&self) -> u64 {
        POW10[(self.len - self.prefix_len) as usize]
    }

    /// The NSN at `offset` (below [`Block::size`]) in the block.
    #[inline]
    pub fn number(&self, offset: u64) -> u64 {
        self.prefix * self.size() + offset
    }

    /// Whether the blocks share a number.
    pub fn overlaps(&self, other: &Block) -> bool {
        if self.len != other.len {
            return false;
        }
        let (short, long) = if self.prefix_len <= other.prefix_len {
            (self, other)
        } else {
            (other, self)
        };
        long.prefix / POW10[(long.prefix_len - short.prefix_len) as usize] == short.prefix
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.prefix, self.len)
    }
}

/// A national number: its digits as an integer and how many digits it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct National {
    /// The digits (no leading zero: blocks never start with 0).
    pub number: u64,
    /// How many digits.
    pub len: u32,
}

/// A phone number: a country calling code and a national number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    /// The ITU country calling code (1, 44, 91, 966...).
    pub calling_code: u16,
    /// The national significant number.
    pub national: National,
}

impl PhoneNumber {
    /// E.164 with a leading `+`, as users and the phonenumber crate write it.
    pub fn e164(&self) -> String {
        self.e164_into(&mut [0u8; 21]).to_owned()
    }

    /// Writes the number in E.164 (`+` and digits) into `buf` and returns it, without
    /// allocating.
    pub fn e164_into<'a>(&self, buf: &'a mut [u8; 21]) -> &'a str {
        let mut digits = [0u8; 20];
        let d = self.normalized_into(&mut digits);
        buf[0] = b'+';
        buf[1..=d.len()].copy_from_slice(d);
        // Digits and '+' are ASCII.
        std::str::from_utf8(&buf[..=d.len()]).unwrap_or_default()
    }

    /// The Custom Audience normal form S documents: digits only, country code first, no `+`,
    /// no leading zeros.
    pub fn normalized(&self) -> String {
        format!(
            "{}{:0width$}",
            self.calling_code,
            self.national.number,
            width = self.national.len as usize
        )
    }

    /// Lower-case hex SHA-256 of [`PhoneNumber::normalized`], the Custom Audience wire format.
    pub fn sha256_hex(&self) -> String {
        let mut out = [0u8; 64];
        self.sha256_hex_into(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes the lower-case hex SHA-256 of the normal form into `out` without allocating.
    pub fn sha256_hex_into(&self, out: &mut [u8; 64]) {
        let mut digest = [0u8; 32];
        self.sha256_into(&mut digest);
        // Both are 32 bytes in, 64 out: encoding cannot fail.
        let _ = hex::encode_to_slice(digest, out);
    }

    /// Writes the SHA-256 of the normal form (32 bytes) into `out` without allocating.
    pub fn sha256_into(&self, out: &mut [u8; 32]) {
        let mut buf = [0u8; 20];
        out.copy_from_slice(Sha256::digest(self.normalized_into(&mut buf)).as_slice());
    }

    /// Writes the normal form into `buf` and returns it (E.164 has at most 15 digits).
    pub fn normalized_into<'a>(&self, buf: &'a mut [u8; 20]) -> &'a [u8] {
        // Each part written from its last digit back, into its place.
        let put = |mut value: u64, digits: &mut [u8]| {
            for d in digits.iter_mut().rev() {
                *d = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        let cc = u64::from(self.calling_code);
        let cc_width = if cc >= 100 {
            3
        } else if cc >= 10 {
            2
        } else {
            1
        };
        let n = (cc_width + self.national.len as usize).min(buf.len());
        let (code, national) = buf[..n].split_at_mut(cc_width);
        put(cc, code);
        put(self.national.number, national);
        &buf[..n]
    }
}

/// Powers of ten up to 10^19 (a block's size is one, a lookup instead of a loop).
pub const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The mobile numbers a country gives out: its blocks laid end to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberSpace {
    blocks: Vec<Block>,
    /// `starts[k]` is the position of block k's first number; the last entry is the capacity.
    starts: Vec<u64>,
    /// Per block, its length, first national number and size: [`NumberSpace::position`]
    /// tests a range instead of dividing by each block's size, and
    /// [`NumberSpace::national`] adds an offset to the first number.
    ranges: Vec<(u32, u64, u64)>,
}

impl NumberSpace {
    /// A space over `blocks`, which must be non-empty and must not overlap.
    pub fn new(blocks: Vec<Block>) -> Self {
        let mut starts = Vec::with_capacity(blocks.len() + 1);
        let mut acc = 0u64;
        starts.push(0);
        for b in &blocks {
            acc = acc.saturating_add(b.size());
            starts.push(acc);
        }
        let ranges = blocks
            .iter()
            .map(|b| (b.len, b.number(0), b.size()))
            .collect();
        NumberSpace {
            blocks,
            starts,
            ranges,
        }
    }

    /// How many numbers the space holds.
    pub fn capacity(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    /// The blocks, in data order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The national number at `position` (below [`NumberSpace::capacity`]).
    #[inline]
    pub fn national(&self, position: u64) -> National {
        // Blocks are few (at most a few dozen): a partition point over their starts.
        let k = self.starts.partition_point(|&s| s <= position) - 1;
        let (len, first, _) = self.ranges[k];
        National {
            number: first + (position - self.starts[k]),
            len,
        }
    }

    /// The position of a national number, or `None` when no block holds it.
    #[inline]
    pub fn position(&self, national: National) -> Option<u64> {
        self.ranges
            .iter()
            .zip(&self.starts)
            .find_map(|(&(len, first, size), &start)| {
                let offset = national.number.wrapping_sub(first);
                (len == national.len && offset < size).then_some(start + offset)
            })
    }
}

/// Checks that `number` is a valid mobile number of `region` under the phonenumber crate's
/// metadata: valid, of region `region`, and of type mobile (or fixed-line-or-mobile where the
/// metadata cannot tell them apart, as in the US and Canada). Returns what was wrong.
pub fn check_mobile(region: &str, number: &PhoneNumber) -> Result<(), String> {
    use phonenumber::Type;
    let parsed =
        phonenumber::parse(None, number.e164()).map_err(|e| format!("does not parse: {e}"))?;
    if !phonenumber::is_valid(&parsed) {
        return Err("is not a valid number".into());
    }
    let found = parsed.country().id().map(|id| id.as_ref().to_string());
    if found.as_deref() != Some(region) {
        return Err(format!(
            "belongs to region {}",
            found.as_deref().unwrap_or("none")
        ));
    }
    match parsed.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile | Type::FixedLineOrMobile => Ok(()),
        other => Err(format!("is of type {other:?}, not mobile")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_and_reject() {
        assert_eq!(
            Block::parse("98/10"),
            Ok(Block {
                prefix: 98,
                prefix_len: 2,
                len: 10
            })
        );
        for bad in [
            "98",
            "/10",
            "098/10",
            "98/3",
            "98/15",
            "9a/10",
            "1234567890/10",
            "98/x",
        ] {
            assert!(Block::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_is_prefix_containment_at_equal_length() {
        let b = |s| Block::parse(s).unwrap();
        assert!(b("9/10").overlaps(&b("98/10")));
        assert!(b("98/10").overlaps(&b("9/10")));
        assert!(!b("98/10").overlaps(&b("97/10")));
        assert!(!b("9/10").overlaps(&b("98/11")));
    }

    #[test]
    fn a_number_has_a_position_exactly_when_a_block_of_its_length_starts_with_it() {
        let blocks = ["7/9", "812/9", "9/10", "60/8"].map(|b| Block::parse(b).unwrap());
        let space = NumberSpace::new(blocks.to_vec());
        let edges = |b: &Block| {
            let first = b.number(0);
            [
                first.saturating_sub(1),
                first,
                first + 1,
                first + b.size() - 1,
                first + b.size(),
            ]
        };
        for number in blocks.iter().flat_map(edges) {
            for len in [8, 9, 10] {
                let national = National { number, len };
                // The definition: a block of that length whose prefix is the number's first
                // digits, found by division.
                let expected = blocks.iter().zip(&space.starts).find_map(|(b, &start)| {
                    (b.len == len && number / b.size() == b.prefix)
                        .then(|| start + number % b.size())
                });
                assert_eq!(space.position(national), expected, "{number}/{len}");
                if let Some(p) = expected {
                    assert_eq!(space.national(p), national);
                }
            }
        }
    }

    #[test]
    fn positions_round_trip_through_numbers() {
        let space = NumberSpace::new(vec![
            Block::parse("7/9").unwrap(),
            Block::parse("812/9").unwrap(),
        ]);
        assert_eq!(space.capacity(), 100_000_000 + 1_000_000);
        for pos in [0, 1, 99_999_999, 100_000_000, 100_999_999, 12_345_678] {
            let n = space.national(pos);
            assert_eq!(space.position(n), Some(pos));
        }
        assert_eq!(
            space.national(100_000_000),
            National {
                number: 812_000_000,
                len: 9
            }
        );
        assert_eq!(
            space.position(National {
                number: 811_000_000,
                len: 9
            }),
            None
        );
    }

    #[test]
    fn normal_form_and_hash_match_known_values() {
        let n = PhoneNumber {
            calling_code: 44,
            national: National {
                number: 7_400_123_456,
                len: 10,
            },
        };
        assert_eq!(n.e164(), "+447400123456");
        assert_eq!(n.normalized(), "447400123456");
        let mut buf = [0u8; 20];
        assert_eq!(n.normalized_into(&mut buf), b"447400123456");
        // echo -n 447400123456 | sha256sum
        assert_eq!(
            n.sha256_hex(),
            "d2db976dff17e6a44bd3a25a2ba91efc63ccb18de90db7a560e7cf93544934bd"
        );
    }

    #[test]
    fn crate_check_accepts_mobiles_and_rejects_others() {
        let mobile = PhoneNumber {
            calling_code: 44,
            national: National {
                number: 7_400_123_456,
                len: 10,
            },
        };
        assert_eq!(check_mobile("GB", &mobile), Ok(()));
        assert!(check_mobile("DE", &mobile).is_err());
        let fixed = PhoneNumber {
            calling_code: 44,
            national: National {
                number: 2_079_460_000,
                len: 10,
            },
        };
        assert!(
            check_mobile("GB", &fixed)
                .unwrap_err()
                .contains("not mobile")
        );
    }
}
