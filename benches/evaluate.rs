//! The evaluation path (`adsim::run::evaluate`: simulation and estimation, no files) at the
//! README's scenario size, and the calibration sample on its own.
//!
//! `cargo bench --bench evaluate`:
//! - `evaluate/1e5x1`: whatsapp-2016 at 100,000 users and 1 replication (3 arms, 21 levels),
//!   with the full 2^20-user calibration sample. Its thresholds are computed in the first
//!   iteration and then reused (the process keeps them for evaluations that share the
//!   score's parameters, as a study's evaluations do), so this is the per-evaluation cost of
//!   a study that varies no score parameter.
//! - `calibration/2^20`: the calibration sample's scores and the 42 order statistics of the
//!   default grid, uncached: the cost an evaluation pays when a score parameter changes.

use std::hint::black_box;
use std::path::Path;

use adsim::calibration::{calibration_scores, order_statistics};
use adsim::policy::Thresholds;
use adsim::scenario::Scenario;
use criterion::{Criterion, criterion_group, criterion_main};

fn evaluate(c: &mut Criterion) {
    let mut s = Scenario::default();
    s.population.users = 100_000;
    s.population.replications = 1;
    let resolved = s.resolve("bench", Path::new(".")).expect("resolves");
    let mut group = c.benchmark_group("evaluate");
    group.sample_size(20);
    group.bench_function("1e5x1", |b| {
        b.iter(|| adsim::run::evaluate(black_box(&resolved), &adsim::run::quiet).expect("runs"))
    });
    group.finish();

    let mut group = c.benchmark_group("calibration");
    group.sample_size(10);
    let m = resolved.scenario.policy.calibration_users as usize;
    let mut ks: Vec<usize> = resolved
        .scenario
        .policy
        .rates
        .iter()
        .filter_map(|&r| Thresholds::position(r, m))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    group.bench_function("2^20", |b| {
        b.iter(|| {
            let mut scores = calibration_scores(black_box(&resolved), 0).expect("scores");
            order_statistics(&mut scores, &ks)
        })
    });
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
