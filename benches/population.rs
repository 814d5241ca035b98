//! Population generation: users per second, before hashing and file writing.
//!
//! `cargo bench --bench population`. Throughput is reported in users (criterion "elements");
//! the `threads/1` and `threads/2` groups give the per-core figure and the scaling;
//! `interest_draws` compares the engine's bit-sliced Bernoulli draws with rand's.

use std::hint::black_box;
use std::path::Path;

use adsim::engine;
use adsim::population::Population;
use adsim::rng::{Key, Lanes, Stream, Threshold};
use adsim::scenario::Scenario;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::distr::{Bernoulli, Distribution};

fn population(users: u64) -> Population {
    let mut s = Scenario::default();
    s.population.users = users;
    let resolved = s
        .resolve("bench", Path::new("."))
        .expect("built-in scenario resolves");
    Population::new(&resolved, 0).expect("population builds")
}

fn generation(c: &mut Criterion) {
    let users = 1_000_000u64;
    let pop = population(100_000_000);
    let mut group = c.benchmark_group("generate");
    group.throughput(Throughput::Elements(users));
    group.sample_size(10);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        group.bench_function(format!("threads/{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    engine::fold(
                        &pop,
                        black_box(10_000_000..10_000_000 + users),
                        16_384,
                        || 0u64,
                        |acc, u| {
                            *acc ^=
                                u.interests ^ u.phone.national.number ^ u.privacy_score.to_bits()
                        },
                        |a, b| a ^ b,
                    )
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("sha256_hex/1 thread", |b| {
        let users: Vec<_> = (0..100_000).map(|i| pop.user(i)).collect();
        let mut out = [0u8; 64];
        b.iter(|| {
            for u in &users {
                u.phone.sha256_hex_into(&mut out);
                black_box(&out);
            }
        })
    });
    group.finish();
}

/// A user's 29 interest draws three ways, from the same per-user stream: the engine's
/// bit-sliced lanes (one random word decides a bit of every open lane), one 32-bit threshold
/// per segment (a word each), and rand's `Bernoulli` per segment (a word each, 64-bit
/// threshold). The prevalences are the 29 segments' of `data/segments.toml` (band multipliers
/// left out). Throughput is in users.
fn draws(c: &mut Criterion) {
    let resolved = Scenario::default()
        .resolve("bench", Path::new("."))
        .expect("built-in scenario resolves");
    let p: Vec<f64> = resolved
        .data
        .segments
        .segment
        .iter()
        .map(|s| s.prevalence)
        .collect();
    let all = u64::MAX >> (64 - p.len());
    let lanes = Lanes::<32>::new(&p);
    let thresholds: Vec<Threshold> = p.iter().map(|&q| Threshold::new(q)).collect();
    let bernoulli: Vec<Bernoulli> = p
        .iter()
        .map(|&q| Bernoulli::new(q).expect("a probability"))
        .collect();
    let key = Key::new(2016, 0);
    let users = 100_000u64;
    let mut group = c.benchmark_group("interest_draws");
    group.throughput(Throughput::Elements(users));
    group.bench_function("bit-sliced lanes", |b| {
        b.iter(|| {
            (0..users).fold(0u64, |acc, u| {
                acc ^ lanes.draw(&mut key.user_rng(black_box(u), Stream::Interests), all)
            })
        })
    });
    group.bench_function("threshold per segment", |b| {
        b.iter(|| {
            (0..users).fold(0u64, |acc, u| {
                let mut rng = key.user_rng(black_box(u), Stream::Interests);
                let set = thresholds
                    .iter()
                    .enumerate()
                    .fold(0u64, |set, (s, t)| set | u64::from(rng.bernoulli(*t)) << s);
                acc ^ set
            })
        })
    });
    group.bench_function("rand Bernoulli per segment", |b| {
        b.iter(|| {
            (0..users).fold(0u64, |acc, u| {
                let mut rng = key.user_rng(black_box(u), Stream::Interests);
                let set = bernoulli
                    .iter()
                    .enumerate()
                    .fold(0u64, |set, (s, d)| set | u64::from(d.sample(&mut rng)) << s);
                acc ^ set
            })
        })
    });
    group.finish();
}

criterion_group!(benches, generation, draws);
criterion_main!(benches);
