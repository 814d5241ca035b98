//! Population generation: users per second, before hashing and file writing.
//!
//! `cargo bench --bench population`. Throughput is reported in users (criterion "elements");
//! the `threads/1` and `threads/2` groups give the per-core figure and the scaling.

use std::hint::black_box;
use std::path::Path;

use adsim::engine;
use adsim::population::Population;
use adsim::scenario::Scenario;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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

criterion_group!(benches, generation);
criterion_main!(benches);
