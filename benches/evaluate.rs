//! The evaluation path (`adsim::run::evaluate`: simulation and estimation, no files) at the
//! README's scenario size, and the calibration sample on its own.
//!
//! `cargo bench --bench evaluate`:
//! - `evaluate/1e5x1`: whatsapp-2016 at 100,000 users and 1 replication (3 arms, 21 levels),
//!   with exact thresholds (docs/model.md §4.2). They are computed in the first iteration and
//!   then reused (the process keeps them for evaluations that share the score's parameters, as
//!   a study's evaluations do); `thresholds/exact` is what an evaluation adds when a score
//!   parameter changes.
//! - `thresholds/exact`: the score distribution and the 19 quantiles of the default grid,
//!   uncached.
//! - `calibration/2^20`: under `policy.thresholds = "sample"`, the calibration sample's scores
//!   and the order statistics of the default grid, uncached.

use std::hint::black_box;
use std::path::Path;

use adsim::calibration::{ScoreDistribution, calibration_scores, order_statistics};
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

    let mut group = c.benchmark_group("thresholds");
    group.sample_size(20);
    group.bench_function("exact", |b| {
        b.iter(|| {
            let d = ScoreDistribution::new(black_box(&resolved));
            let rates = &resolved.scenario.policy.rates;
            rates
                .iter()
                .map(|&r| d.quantile_above(r))
                .collect::<Vec<f64>>()
        })
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
