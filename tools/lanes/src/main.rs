//! How much lanes across users give adsim's random streams (issue 13): for each user, the
//! seeds of 10 streams (`hash2(key ^ stream x C, user)`, the user's half hashed once, as
//! `rng::UserKey`) and 3 wyrand words from each, scalar against 8 users at once in AVX-512
//! lanes (`vpmullq` for SplitMix's finaliser, the 64 x 64 -> 128-bit product of wyrand from
//! four `vpmuludq`); and the same 30 words a user from a generator built for lanes,
//! Philox4x32 at 10 and 7 rounds, scalar against 16 users at once. Each lane version gives
//! the same values as its scalar one (checksums compared), and the scalar Philox gives
//! Random123's known answers.
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

// A generator built for lanes, for comparison: Philox4x32 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC'11), counter-based with 32 x 32 -> 64-bit multiplies,
// which AVX-512 does in one micro-operation (`vpmuludq`). A user's counter is (user, block),
// its key the run's; no seed is hashed. 15 blocks of 128 bits give the same 30 64-bit words a
// user as the wyrand layout above (10 streams x 3 words).
const PM0: u32 = 0xd251_1f53;
const PM1: u32 = 0xcd9e_8d57;
const PW0: u32 = 0x9e37_79b9;
const PW1: u32 = 0xbb67_ae85;
const BLOCKS: u32 = 15;

#[inline(always)]
fn philox<const R: usize>(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for r in 0..R {
        if r > 0 {
            k = [k[0].wrapping_add(PW0), k[1].wrapping_add(PW1)];
        }
        let p0 = u64::from(PM0) * u64::from(c[0]);
        let p1 = u64::from(PM1) * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

fn philox_scalar<const R: usize>(key: u64, users: std::ops::Range<u64>) -> u64 {
    let k = [key as u32, (key >> 32) as u32];
    let mut acc = 0u64;
    for u in users {
        for b in 0..BLOCKS {
            let o = philox::<R>([u as u32, (u >> 32) as u32, b, 0], k);
            acc ^= u64::from(o[0]) | u64::from(o[1]) << 32;
            acc ^= u64::from(o[2]) | u64::from(o[3]) << 32;
        }
    }
    acc
}

/// The high and low halves of the 32 x 32 -> 64-bit products of 16 lanes by `m`.
#[target_feature(enable = "avx512f")]
fn mulhilo16(x: __m512i, m: __m512i) -> (__m512i, __m512i) {
    let even = _mm512_mul_epu32(x, m);
    let odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
    let lo = _mm512_mask_blend_epi32(0xaaaa, even, _mm512_slli_epi64(odd, 32));
    let hi = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64(even, 32), odd);
    (hi, lo)
}

/// Philox4x32 for 16 users at once: users `u..u + 16` (`u` a multiple of 16, so that the
/// high words of the 16 ids are the same).
#[target_feature(enable = "avx512f")]
fn philox_lanes<const R: usize>(key: u64, users: std::ops::Range<u64>) -> u64 {
    let mut u = users.start;
    let head = (u.next_multiple_of(16)).min(users.end);
    let mut acc = philox_scalar::<R>(key, u..head);
    u = head;
    let (m0, m1) = (_mm512_set1_epi32(PM0 as i32), _mm512_set1_epi32(PM1 as i32));
    let step = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let mut a = [_mm512_setzero_si512(); 4];
    while u + 16 <= users.end {
        let lo = _mm512_add_epi32(_mm512_set1_epi32(u as u32 as i32), step);
        let hi = _mm512_set1_epi32((u >> 32) as u32 as i32);
        for b in 0..BLOCKS {
            let mut c = [lo, hi, _mm512_set1_epi32(b as i32), _mm512_setzero_si512()];
            let mut k = [key as u32, (key >> 32) as u32];
            for r in 0..R {
                if r > 0 {
                    k = [k[0].wrapping_add(PW0), k[1].wrapping_add(PW1)];
                }
                let (h0, l0) = mulhilo16(c[0], m0);
                let (h1, l1) = mulhilo16(c[2], m1);
                c = [
                    _mm512_xor_si512(_mm512_xor_si512(h1, c[1]), _mm512_set1_epi32(k[0] as i32)),
                    l1,
                    _mm512_xor_si512(_mm512_xor_si512(h0, c[3]), _mm512_set1_epi32(k[1] as i32)),
                    l0,
                ];
            }
            for (a, c) in a.iter_mut().zip(c) {
                *a = _mm512_xor_si512(*a, c);
            }
        }
        u += 16;
    }
    let mut w = [[0u32; 16]; 4];
    for (w, a) in w.iter_mut().zip(a) {
        // Safety: `w` is 64 bytes, the width of the store.
        unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), a) };
    }
    for (((a, b), c), d) in w[0].iter().zip(w[1]).zip(w[2]).zip(w[3]) {
        acc ^= u64::from(*a) | u64::from(b) << 32;
        acc ^= u64::from(c) | u64::from(d) << 32;
    }
    acc ^ philox_scalar::<R>(key, u..users.end)
}

/// Users a second, and the checksum, of one way of working out the users' words.
fn rate(n: u64, f: impl FnOnce() -> u64) -> (f64, u64) {
    let t = Instant::now();
    let x = f();
    (n as f64 / t.elapsed().as_secs_f64() / 1e6, x)
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
    // Random123's known answers for Philox4x32-10 (its tests/kat_vectors).
    assert_eq!(
        philox::<10>([0; 4], [0; 2]),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
    assert_eq!(
        philox::<10>(
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0]
        ),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
    let key = 0x1234_5678_9abc_def0;
    let users = 3..n + 3;
    println!(
        "M users/s, {n} users, 30 64-bit words a user (wyrand: 10 stream seeds x 3 words; Philox4x32: 15 blocks)"
    );
    println!("round  wyrand  wyrand-8-lanes  philox10  philox10-16-lanes  philox7-16-lanes");
    for round in 0..3 {
        let (ws, a) = rate(n, || scalar(key, users.clone()));
        // Safety: AVX-512 F and DQ were detected above.
        let (wl, b) = rate(n, || unsafe { lanes(key, users.clone()) });
        assert_eq!(a, b, "wyrand lanes differ from scalar");
        let (ps, c) = rate(n, || philox_scalar::<10>(key, users.clone()));
        // Safety: as above.
        let (pl, d) = rate(n, || unsafe { philox_lanes::<10>(key, users.clone()) });
        assert_eq!(c, d, "Philox lanes differ from scalar");
        let (_, e) = rate(n, || philox_scalar::<7>(key, users.clone()));
        // Safety: as above.
        let (p7, f) = rate(n, || unsafe { philox_lanes::<7>(key, users.clone()) });
        assert_eq!(e, f, "Philox-7 lanes differ from scalar");
        println!("{round}  {ws:.1}  {wl:.1}  {ps:.1}  {pl:.1}  {p7:.1}");
    }
}
