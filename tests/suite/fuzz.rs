//! The scenario fuzzer (examples/fuzz) at CI size, and checks that its property checks can
//! fail. `cargo run --release --example fuzz -- N SEED` runs it at any size.

#[path = "../../examples/fuzz/cases.rs"]
mod cases;
#[path = "../../examples/fuzz/runner.rs"]
pub(crate) mod runner;

use adsim::cells::{All, Channel};
use adsim::sweep::Sweep;

use runner::{Class, Limits};

fn limits() -> Limits {
    Limits {
        binary: env!("CARGO_BIN_EXE_adsim").into(),
        max_users: 300,
        memory_slack: 1 << 30,
        threads: 2,
    }
}

#[test]
fn fuzzed_scenarios_run_or_are_refused_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = runner::fuzz(3000, 2026, 120, &limits(), dir.path());
    let listing: Vec<String> = report
        .bad
        .iter()
        .take(20)
        .map(|(i, origin, o)| {
            format!(
                "case {i} {:?} {:?}: {origin}: {}",
                o.stage, o.class, o.detail
            )
        })
        .collect();
    assert!(
        report.bad.is_empty(),
        "defective cases:\n{}",
        listing.join("\n")
    );
    assert!(
        report.uncovered.is_empty() && report.covered == report.reachable,
        "registry keys no case set: {:?}",
        report.uncovered
    );
    assert_eq!(report.runs, 120, "the run budget was spent");
    assert_eq!(report.class(Class::Ran), 120);
    assert!(report.class(Class::Refused) > 1000);
    assert!(report.class(Class::Validated) > 100);
}

#[test]
fn the_walk_reaches_the_legal_extremes_and_both_sides_of_bounds() {
    let walk = cases::walk();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut accepted = 0;
    for label in [
        "1 user",
        "10 users x 1000 replications",
        "window 365",
        "every CTR 0",
        "101 levels",
    ] {
        let case = walk
            .iter()
            .find(|c| c.origin == format!("extreme: {label}"))
            .unwrap_or_else(|| panic!("no case {label}"));
        assert!(
            runner::validate(case, dir.path()).is_ok(),
            "{label} is legal"
        );
        accepted += 1;
    }
    assert_eq!(accepted, 5);
    let refused = |origin: &str| {
        let case = walk
            .iter()
            .find(|c| c.origin.ends_with(origin))
            .unwrap_or_else(|| panic!("no case {origin}"));
        runner::validate(case, dir.path()).is_err()
    };
    assert!(refused("policy.window_days = 366"));
    assert!(!refused("policy.window_days = 1"));
    // 365 is legal, but not above the default horizon of 91 days.
    assert!(refused("policy.window_days = 365"));
    assert!(refused("population.users = 0"));
    assert!(refused("targeting.m_recall = nan"));
}

#[test]
fn the_property_checks_catch_broken_counts_and_folders() {
    let resolved = crate::common::resolved(2000, 3);
    let sweep = Sweep::new(&resolved);
    let l = &sweep.layout;
    let counts = sweep.run(0, 0..2000).expect("runs");
    let policy = &resolved.scenario.policy;
    let window = (policy.acceptance_days - 1 + policy.window_days) as usize;
    runner::counts_hold(l, &counts, 2000, policy).expect("a true run holds");
    let mut lost = counts.clone();
    lost.arms[1][l.cell(0, 0) + l.all(All::Users)] -= 1;
    assert!(
        runner::counts_hold(l, &lost, 2000, policy).is_err(),
        "a user lost"
    );
    let mut late = counts.clone();
    late.timeline[1][l.day(0, window + 1, Channel::Settings)] += 1;
    assert!(
        runner::counts_hold(l, &late, 2000, policy).is_err(),
        "a Settings day past the last window"
    );
    let mut unaccepted = counts.clone();
    unaccepted.timeline[1][l.day(0, l.days, Channel::Notice)] += 1;
    assert!(
        runner::counts_hold(l, &unaccepted, 2000, policy).is_err(),
        "a notice action past the horizon"
    );
    let mut past = counts.clone();
    past.timeline[1][l.day(0, l.days, Channel::ValueGain)] += 1;
    assert!(
        runner::counts_hold(l, &past, 2000, policy).is_err(),
        "value past the horizon"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    crate::common::adsim_ok(
        dir.path(),
        &[
            "run",
            "--users",
            "300",
            "--replications",
            "2",
            "--quiet",
            "--out",
            "run",
        ],
    );
    runner::check_folder(&out, 300, 2).expect("a whole folder passes");
    std::fs::write(out.join("summary.csv"), "arm,level\nnone\n").expect("writes");
    assert!(runner::check_folder(&out, 300, 2).is_err(), "a ragged CSV");
    std::fs::remove_file(out.join("summary.csv")).expect("removes");
    let (class, _) = runner::check_folder(&out, 300, 2).expect_err("a missing file");
    assert_eq!(class, Class::Partial);
}
