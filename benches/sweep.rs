//! The per-user simulation pipeline: users per second through the sweep at 1, 21 and 101
//! levels, and the 21-level sweep on 1 and 2 threads.
//!
//! `cargo bench --bench sweep`. Each iteration simulates 2,000,000 users of the default
//! whatsapp-2016 arms (none, opt_out_window with scopes ads and all) in one replication,
//! including its calibration sample (2^16 users here, a few milliseconds) and the fixed cost
//! of the accumulators: one per thread, `(levels + 1)` rows of 378 KB per arm (25 MB at 21
//! levels, 116 MB at 101), zeroed, merged and prefix-summed once. At 2,000,000 users that
//! fixed cost is a visible share of the 101-level time; whole runs amortize it (see
//! `reports/performance.md`).

use std::hint::black_box;
use std::path::Path;

use adsim::scenario::Scenario;
use adsim::sweep::Sweep;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn sweep(c: &mut Criterion) {
    let users = 2_000_000u64;
    let mut group = c.benchmark_group("sweep");
    group.throughput(Throughput::Elements(users));
    group.sample_size(10);
    let grid = |n: u32| {
        (0..n)
            .map(|k| f64::from(k) / f64::from(n - 1))
            .collect::<Vec<f64>>()
    };
    for (label, rates) in [
        ("levels/1", vec![0.5]),
        ("levels/21", grid(21)),
        ("levels/101", grid(101)),
    ] {
        let mut s = Scenario::default();
        s.population.users = 10_000_000;
        s.policy.rates = rates;
        s.policy.calibration_users = 1 << 16;
        let resolved = s
            .resolve("bench", Path::new("."))
            .expect("scenario resolves");
        let sweep = Sweep::new(&resolved);
        group.bench_function(label, |b| {
            b.iter(|| {
                sweep
                    .run(0, black_box(1_000_000..1_000_000 + users))
                    .expect("runs")
            })
        });
    }
    group.finish();

    // Thread scaling: the 21-level sweep on 1 and 2 threads.
    let mut group = c.benchmark_group("sweep_threads");
    group.throughput(Throughput::Elements(users));
    group.sample_size(10);
    let mut s = Scenario::default();
    s.population.users = 10_000_000;
    s.policy.calibration_users = 1 << 16;
    let resolved = s
        .resolve("bench", Path::new("."))
        .expect("scenario resolves");
    let sweep = Sweep::new(&resolved);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        group.bench_function(format!("threads/{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    sweep
                        .run(0, black_box(1_000_000..1_000_000 + users))
                        .expect("runs")
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sweep);
criterion_main!(benches);
