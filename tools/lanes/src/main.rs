//! How much lanes across users give adsim's random streams (issue 13): for each user, the
//! seeds of 10 streams (`hash2(key ^ stream x C, user)`, the user's half hashed once, as
//! `rng::UserKey`) and 3 wyrand words from each, scalar against 8 users at once in AVX-512
//! lanes (`vpmullq` for SplitMix's finaliser, the 64 x 64 -> 128-bit product of wyrand from
//! four `vpmuludq`). The two give the same values: their checksums are compared.
use std::arch::x86_64::*;
use std::time::Instant;

const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
const SC: u64 = 0xd1b5_4a32_d192_ed03;
const STREAMS: u64 = 10;
const WORDS: usize = 3;

#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn wy(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    ((t >> 64) as u64) ^ (t as u64)
}

fn scalar(key: u64, users: std::ops::Range<u64>) -> u64 {
    let mut acc = 0u64;
    for u in users {
        let m = mix64(u.wrapping_add(PHI));
        for s in 1..=STREAMS {
            let mut st = mix64(key ^ s.wrapping_mul(SC) ^ m);
            for _ in 0..WORDS {
                acc ^= wy(&mut st);
            }
        }
    }
    acc
}

#[target_feature(enable = "avx512f,avx512dq")]
fn mix64x8(z: __m512i) -> __m512i {
    let z = _mm512_mullo_epi64(
        _mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
        _mm512_set1_epi64(0xbf58_476d_1ce4_e5b9u64 as i64),
    );
    let z = _mm512_mullo_epi64(
        _mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
        _mm512_set1_epi64(0x94d0_49bb_1331_11ebu64 as i64),
    );
    _mm512_xor_si512(z, _mm512_srli_epi64(z, 31))
}

/// hi ^ lo of the 128-bit products of 8 pairs of 64-bit lanes.
#[target_feature(enable = "avx512f,avx512dq")]
fn mulfold(a: __m512i, b: __m512i) -> __m512i {
    let mask = _mm512_set1_epi64(0xffff_ffff);
    let a_hi = _mm512_srli_epi64(a, 32);
    let b_hi = _mm512_srli_epi64(b, 32);
    let ll = _mm512_mul_epu32(a, b);
    let lh = _mm512_mul_epu32(a, b_hi);
    let hl = _mm512_mul_epu32(a_hi, b);
    let hh = _mm512_mul_epu32(a_hi, b_hi);
    // middle = (ll >> 32) + (lh & mask) + (hl & mask): below 3 * 2^32, no overflow.
    let mid = _mm512_add_epi64(
        _mm512_add_epi64(_mm512_srli_epi64(ll, 32), _mm512_and_si512(lh, mask)),
        _mm512_and_si512(hl, mask),
    );
    let lo = _mm512_or_si512(_mm512_slli_epi64(mid, 32), _mm512_and_si512(ll, mask));
    let hi = _mm512_add_epi64(
        _mm512_add_epi64(hh, _mm512_srli_epi64(lh, 32)),
        _mm512_add_epi64(_mm512_srli_epi64(hl, 32), _mm512_srli_epi64(mid, 32)),
    );
    _mm512_xor_si512(hi, lo)
}

#[target_feature(enable = "avx512f,avx512dq")]
fn lanes(key: u64, users: std::ops::Range<u64>) -> u64 {
    let mut acc = _mm512_setzero_si512();
    let step = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    let inc = _mm512_set1_epi64(0xa076_1d64_78bd_642fu64 as i64);
    let xk = _mm512_set1_epi64(0xe703_7ed1_a0b4_28dbu64 as i64);
    let mut u = users.start;
    while u + 8 <= users.end {
        let ids = _mm512_add_epi64(_mm512_set1_epi64(u.wrapping_add(PHI) as i64), step);
        let m = mix64x8(ids);
        for s in 1..=STREAMS {
            let k = _mm512_set1_epi64((key ^ s.wrapping_mul(SC)) as i64);
            let mut st = mix64x8(_mm512_xor_si512(k, m));
            for _ in 0..WORDS {
                st = _mm512_add_epi64(st, inc);
                acc = _mm512_xor_si512(acc, mulfold(st, _mm512_xor_si512(st, xk)));
            }
        }
        u += 8;
    }
    let mut out = [0u64; 8];
    // Safety: `out` is 64 bytes, the width of the store.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), acc) };
    out.iter().fold(scalar(key, u..users.end), |a, b| a ^ b)
}

fn main() {
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq")) {
        eprintln!("this machine has no AVX-512 (F and DQ): nothing to measure");
        std::process::exit(2);
    }
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let key = 0x1234_5678_9abc_def0;
    for round in 0..3 {
        let t = Instant::now();
        let a = scalar(key, 3..n + 3);
        let ts = t.elapsed().as_secs_f64();
        let t = Instant::now();
        // Safety: AVX-512 F and DQ were detected above.
        let b = unsafe { lanes(key, 3..n + 3) };
        let tl = t.elapsed().as_secs_f64();
        assert_eq!(a, b, "lanes differ from scalar");
        println!(
            "round {round}: {n} users x {STREAMS} streams x {WORDS} words: scalar {:.1} M users/s, 8 lanes {:.1} M users/s, ratio {:.2}",
            n as f64 / ts / 1e6,
            n as f64 / tl / 1e6,
            ts / tl
        );
    }
}
