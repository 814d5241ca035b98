//! The simulation pass: invariants, one-pass equivalence, limits, determinism and validation
//! of the policy, targeting, audience and revenue keys.

use std::path::Path;

use adsim::cells::{All, Channel, Counts, Layout, Seg};
use adsim::scenario::{Resolved, Scenario};
use adsim::sweep::Sweep;
use proptest::prelude::*;

use crate::common::{adsim, stderr};

/// A small scenario: `users` users, 4096 calibration users, the given rates.
fn small(users: u64, seed: u64, rates: &[f64], edit: impl FnOnce(&mut Scenario)) -> Resolved {
    let mut s = Scenario::default();
    s.population.users = users;
    s.population.seed = seed;
    s.population.replications = 1;
    s.policy.calibration_users = 4096;
    s.policy.rates = rates.to_vec();
    edit(&mut s);
    s.resolve("test", Path::new("."))
        .expect("scenario resolves")
}

fn simulate(r: &Resolved) -> (Layout, Counts) {
    let sweep = Sweep::new(r);
    let counts = sweep.run(0, 0..r.scenario.population.users).expect("runs");
    (sweep.layout.clone(), counts)
}

/// Sum of a measure over countries and ages, for an arm and level.
fn total(l: &Layout, c: &Counts, arm: usize, level: usize, measure: usize) -> i64 {
    (0..l.countries)
        .flat_map(|co| (0..l.ages).map(move |a| (co, a)))
        .map(|(co, a)| c.get(l, arm, level, co, a, measure))
        .sum()
}

fn seg_total(l: &Layout, c: &Counts, arm: usize, level: usize, m: Seg) -> i64 {
    (0..l.segments)
        .map(|s| total(l, c, arm, level, l.seg(s, m)))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(users in 200u64..3000, seed: u64, h in 0.0f64..3.0, cut in 0.05f64..0.95) {
        // Half the cases with users who join after the notice (and cannot opt out).
        let new_users = if seed % 2 == 0 { 0.0 } else { 0.2 };
        let r = small(users, seed, &[0.0, cut, 1.0], |s| {
            s.opt_out.heterogeneity = h;
            s.policy.new_user_share = new_users;
        });
        let (l, c) = simulate(&r);
        let days = i64::from(r.scenario.policy.horizon_days);
        for arm in 0..l.levels.len() {
            let mut previous_out = -1;
            for level in 0..l.levels[arm] {
                let t = |m| total(&l, &c, arm, level, l.all(m));
                // Every user counted once per arm and level.
                prop_assert_eq!(t(All::Users), users as i64);
                // Nested opt-out sets: the count never falls as the rate rises.
                prop_assert!(t(All::OptedOut) >= previous_out);
                previous_out = t(All::OptedOut);
                // Data in ad use only for users who did not opt out.
                prop_assert!(t(All::AdUse) <= t(All::Users) - t(All::OptedOut));
                // Links only for shared users, and each shared user at most once.
                let links = t(All::LinkTrue) + t(All::LinkMetadata) + t(All::LinkMislinkRecycled) + t(All::LinkMislinkShared) + t(All::LinkNone);
                prop_assert_eq!(links, t(All::Shared));
                prop_assert!(t(All::Shared) <= t(All::Users));
                prop_assert!(t(All::LinkedAccountDays) <= t(All::Accounts) * days);
                // Every account-day's impressions are shared out exactly (docs/model.md §6).
                let imp: i64 = (0..l.segments).map(|s| {
                    [Seg::ImpInterestedLinked, Seg::ImpOtherLinked, Seg::ImpInterestedUnlinked, Seg::ImpOtherUnlinked,
                     Seg::CaImpCustomerLinked, Seg::CaImpCustomerUnlinked, Seg::CaImpInterestedLinked,
                     Seg::CaImpInterestedUnlinked, Seg::CaImpOtherLinked, Seg::CaImpOtherUnlinked]
                        .iter().map(|&m| total(&l, &c, arm, level, l.seg(s, m))).sum::<i64>()
                }).sum::<i64>() + t(All::ImpUntargetedLinked) + t(All::ImpUntargetedUnlinked);
                prop_assert_eq!(imp, t(All::Accounts) * days * adsim::targeting::IMPRESSION_UNITS as i64);
                prop_assert!(t(All::AdUseDays) <= t(All::Users) * days);
                for s in 0..l.segments {
                    let g = |m| total(&l, &c, arm, level, l.seg(s, m));
                    // Confusion counts add up to accounts.
                    prop_assert!(g(Seg::TruePositiveDays) <= g(Seg::AudienceDays));
                    prop_assert!(g(Seg::TruePositiveDays) <= g(Seg::InterestedDays));
                    prop_assert!(g(Seg::AudienceDays) - g(Seg::TruePositiveDays) + g(Seg::InterestedDays) <= t(All::Accounts) * days);
                    prop_assert!(g(Seg::CaRightDays) + g(Seg::CaWrongDays) <= g(Seg::CaUploadedDays));
                    prop_assert!(g(Seg::OptedOutInterested) <= g(Seg::UsersInterested));
                }
            }
            // Rate 0: no one out; rate 1: everyone out (none arm has one level and no opt-outs).
            let levels = l.levels[arm];
            if levels == 3 {
                prop_assert_eq!(total(&l, &c, arm, 0, l.all(All::OptedOut)), 0);
                let all_out = total(&l, &c, arm, 2, l.all(All::OptedOut));
                if new_users == 0.0 {
                    prop_assert_eq!(all_out, users as i64);
                } else {
                    // Users who joined after the notice have no opt-out (docs/model.md §4.4).
                    prop_assert!(all_out < users as i64 && all_out > users as i64 / 2);
                }
            }
        }
        // Scope ads still shares every number; scope all shares no notice opt-out's.
        prop_assert_eq!(total(&l, &c, 1, 2, l.all(All::Shared)), users as i64);
        prop_assert!(total(&l, &c, 2, 2, l.all(All::Shared)) < users as i64);
    }
}

#[test]
fn one_pass_equals_each_level_on_its_own() {
    let rates = [0.0, 0.05, 0.3, 0.55, 0.9, 1.0];
    let full = small(4000, 77, &rates, |_| {});
    let (l, c) = simulate(&full);
    for (k, &rate) in rates.iter().enumerate() {
        let single = small(4000, 77, &[rate], |_| {});
        let (ls, cs) = simulate(&single);
        for arm in 1..l.levels.len() {
            let per = l.per_level();
            let whole = &c.arms[arm][k * per..(k + 1) * per];
            let alone = &cs.arms[arm][..ls.per_level()];
            assert!(
                whole == alone,
                "arm {arm}, rate {rate}: the sweep differs from the level run alone"
            );
        }
    }
}

#[test]
fn each_arm_counts_as_when_simulated_alone() {
    // Arms that share their ad use (ads and all scopes, with or without a rule) share their
    // targeting counts inside the pass; each must still equal the arm run on its own.
    use adsim::policy::{ArmConfig, ArmKind, RegionalRule, RuleKind, Scope};
    let arm = |name: &str, kind, scope, regional: Vec<RegionalRule>| ArmConfig {
        name: name.into(),
        kind,
        scope,
        regional,
        rate: None,
        m_evidence: None,
    };
    let pause = || {
        vec![RegionalRule {
            countries: vec!["DE".into(), "BR".into()],
            rule: RuleKind::Pause,
            from_day: 10,
        }]
    };
    let arms = vec![
        arm("none", ArmKind::None, Scope::Ads, vec![]),
        arm("ads", ArmKind::OptOutWindow, Scope::Ads, vec![]),
        arm("all", ArmKind::OptOutWindow, Scope::All, vec![]),
        arm("ads_pause", ArmKind::OptOutWindow, Scope::Ads, pause()),
        arm("all_pause", ArmKind::OptOutWindow, Scope::All, pause()),
        arm("opt_in", ArmKind::OptIn, Scope::Ads, vec![]),
        arm("no_choice", ArmKind::NoChoice, Scope::Ads, vec![]),
        arm("standing", ArmKind::Standing, Scope::Ads, pause()),
        // The same ad use as `ads`, with M's business-messaging evidence: its own targeting.
        ArmConfig {
            m_evidence: Some(adsim::targeting::MEvidence::BusinessMessaging),
            ..arm("ads_m", ArmKind::OptOutWindow, Scope::Ads, vec![])
        },
        // One level at a rate of the grid, and at one off it.
        ArmConfig {
            rate: Some(0.7),
            ..arm("ads_fixed", ArmKind::OptOutWindow, Scope::Ads, vec![])
        },
        ArmConfig {
            rate: Some(0.45),
            ..arm("no_choice_fixed", ArmKind::NoChoice, Scope::Ads, vec![])
        },
    ];
    let rates = [0.0, 0.2, 0.7, 1.0];
    let together = small(5000, 11, &rates, |s| s.policy.arms = arms.clone());
    let (l, c) = simulate(&together);
    // Every scenario has its `none` arm: "alone" is that arm beside `none`.
    for (a, config) in arms.iter().enumerate().skip(1) {
        let pair = vec![arms[0].clone(), config.clone()];
        let alone = small(5000, 11, &rates, |s| s.policy.arms = pair);
        let (_, ca) = simulate(&alone);
        assert!(
            c.arms[a] == ca.arms[1] && c.timeline[a] == ca.timeline[1],
            "arm {} differs from the arm simulated alone",
            config.name
        );
    }
    assert_eq!(l.levels.len(), arms.len());
}

#[test]
fn at_full_opt_out_every_arm_targets_like_none() {
    // Everyone reads the notice and acts on accepting: no day of ad use before an opt-out,
    // and no new user (who could not opt out).
    let r = small(5000, 3, &[0.0, 0.5, 1.0], |s| {
        s.policy.notice_read_rate = 1.0;
        s.policy.new_user_share = 0.0;
    });
    let (l, c) = simulate(&r);
    for arm in 1..l.levels.len() {
        for m in [
            Seg::AudienceDays,
            Seg::TruePositiveDays,
            Seg::ImpInterestedUnlinked,
            Seg::ImpOtherUnlinked,
            Seg::CaRightDays,
            Seg::CaWrongDays,
        ] {
            for s in 0..l.segments {
                assert_eq!(
                    total(&l, &c, arm, 2, l.seg(s, m)),
                    total(&l, &c, 0, 0, l.seg(s, m)),
                    "arm {arm} segment {s} {m:?}"
                );
            }
        }
        assert_eq!(total(&l, &c, arm, 2, l.all(All::LinkedAccountDays)), 0);
        // And at rate 0 sharing changes targeting (the test would pass vacuously otherwise):
        // metadata links add numbers that Custom Audience uploads match.
        assert_ne!(
            seg_total(&l, &c, arm, 0, Seg::CaRightDays),
            seg_total(&l, &c, 0, 0, Seg::CaRightDays)
        );
    }
}

#[test]
fn the_eu_as_it_acted_keeps_each_countrys_days_before_its_own_stop() {
    // The built-in eu-pause-2016: Germany from day 29 (the Hamburg order), the United Kingdom
    // from day 74, Italy, Spain and France from day 75; the `never` arm uses no EU day. With
    // every acceptance on day 0 and no new users, a country's linked account-days under the
    // pause are exactly its days before the stop out of the horizon's (docs/model.md §11.3).
    let (mut s, source) = adsim::scenario::Scenario::builtin("eu-pause-2016").expect("built in");
    s.population.users = 30_000;
    s.population.replications = 1;
    s.policy.rates = vec![0.0];
    s.policy.acceptance_days = 1;
    s.policy.new_user_share = 0.0;
    let r = s.resolve(&source, Path::new(".")).expect("resolves");
    let (l, c) = simulate(&r);
    let arm = |name: &str| {
        r.scenario
            .policy
            .arms
            .iter()
            .position(|a| a.name == name)
            .expect(name)
    };
    let (window, pause, never) = (
        arm("opt_out_window"),
        arm("opt_out_window_eu_pause"),
        arm("opt_out_window_eu_never"),
    );
    let h = i64::from(r.scenario.policy.horizon_days);
    let codes = crate::common::country_codes();
    let linked = |arm: usize, co: usize| -> i64 {
        (0..l.ages)
            .map(|a| c.get(&l, arm, 0, co, a, l.all(All::LinkedAccountDays)))
            .sum()
    };
    for (co, code) in codes.iter().enumerate() {
        let stop = match code.as_str() {
            "DE" => Some(29),
            "GB" => Some(74),
            "IT" | "ES" | "FR" => Some(75),
            _ => None,
        };
        let full = linked(window, co);
        assert!(full > 0, "{code}: no linked days");
        match stop {
            Some(d) => {
                assert_eq!(
                    linked(pause, co) * h,
                    full * d,
                    "{code}: pause from day {d}"
                );
                assert_eq!(linked(never, co), 0, "{code}: never used");
            }
            None => {
                assert_eq!(linked(pause, co), full, "{code}: outside the EU");
                assert_eq!(linked(never, co), full, "{code}: outside the EU");
            }
        }
    }
}

#[test]
fn a_regional_pause_keeps_its_days_before_the_pause_and_differs_from_off() {
    use adsim::policy::{ArmConfig, ArmKind, RegionalRule, RuleKind, Scope};
    let eu = ["DE", "IT", "ES", "FR", "GB"];
    let arm = |name: &str, rule: Option<(RuleKind, u32)>| ArmConfig {
        name: name.into(),
        kind: ArmKind::OptOutWindow,
        scope: Scope::Ads,
        regional: rule
            .map(|(rule, from_day)| RegionalRule {
                countries: eu.iter().map(|c| c.to_string()).collect(),
                rule,
                from_day,
            })
            .into_iter()
            .collect(),
        rate: None,
        m_evidence: None,
    };
    // Everyone accepts on day 0, so a pause from day D keeps exactly D days of each user.
    let r = small(20_000, 9, &[0.0, 0.5], |s| {
        s.policy.acceptance_days = 1;
        s.policy.new_user_share = 0.0;
        s.policy.arms = vec![
            arm_with("none", ArmKind::None, None, None),
            arm("window", None),
            arm("pause", Some((RuleKind::Pause, 74))),
            arm("off", Some((RuleKind::Off, 0))),
        ];
    });
    let (l, c) = simulate(&r);
    let codes = crate::common::country_codes();
    let h = i64::from(r.scenario.policy.horizon_days);
    let in_eu = |co: usize| eu.contains(&codes[co].as_str());
    let days = |arm: usize, level: usize, m: usize, eu_only: bool| -> i64 {
        (0..l.countries)
            .filter(|&co| in_eu(co) == eu_only)
            .flat_map(|co| (0..l.ages).map(move |a| (co, a)))
            .map(|(co, a)| c.get(&l, arm, level, co, a, m))
            .sum()
    };
    let linked = l.all(All::LinkedAccountDays);
    // At rate 0 no one opts out: the window arm links accounts on all H days, the pause on
    // days 0 to 73 in the EU, exactly, and off on none.
    assert!(days(1, 0, linked, true) > 0);
    assert_eq!(days(2, 0, linked, true) * h, days(1, 0, linked, true) * 74);
    assert_eq!(days(3, 0, linked, true), 0);
    // Outside the EU the three arms are the same, measure by measure.
    for m in 0..l.measures() {
        for level in 0..2 {
            assert_eq!(
                days(1, level, m, false),
                days(2, level, m, false),
                "measure {m}"
            );
            assert_eq!(
                days(1, level, m, false),
                days(3, level, m, false),
                "measure {m}"
            );
        }
    }
    // At rate 0.5 the pause lies strictly between the window and off.
    let (w, p, o) = (
        days(1, 1, linked, true),
        days(2, 1, linked, true),
        days(3, 1, linked, true),
    );
    assert!(w > p && p > o, "window {w}, pause {p}, off {o}");
    // The value M data adds per day, by S region (the per-day revenue): the pause equals the
    // window on days 0 to 73 in every region and from day 74 outside Europe; in Europe it
    // falls on day 74 and stays level.
    let europe = r
        .data
        .countries
        .arpu_region
        .iter()
        .position(|g| g.name == "europe")
        .expect("a europe region");
    let gain = |arm: usize, region: usize, day: usize| {
        c.timeline_level(&l, arm, 0)[l.day(region, day, Channel::ValueGain)]
    };
    for region in 0..l.regions {
        for day in 0..l.days {
            if region != europe || day < 74 {
                assert_eq!(
                    gain(2, region, day),
                    gain(1, region, day),
                    "region {region}, day {day}"
                );
            }
        }
        assert_eq!(
            gain(1, region, l.days),
            0,
            "the day past the horizon is empty"
        );
    }
    assert!(gain(1, europe, 0) > 0);
    assert!(gain(2, europe, 74) < gain(1, europe, 74));
    assert_eq!(gain(2, europe, 74), gain(2, europe, l.days - 1));
    assert!(
        gain(3, europe, 0) < gain(1, europe, 0),
        "off takes the EU's days away"
    );
}

#[test]
fn revenue_per_day_adds_up_to_the_quarter_by_region() {
    // The per-day revenue of every arm, level and region sums over the days to the
    // quarter's revenue change; the regions sum to `all` on every day.
    let mut r = small(20_000, 3, &[0.0, 0.3, 1.0], |s| {
        s.policy.notice_read_rate = 0.3;
    });
    r.scenario.population.replications = 2;
    let sweep = Sweep::new(&r);
    let mut est = adsim::run::estimator(&r);
    for rep in 0..2 {
        let counts = sweep
            .run(rep, 0..r.scenario.population.users)
            .expect("runs");
        est.add(&counts).expect("estimates");
    }
    let e = est.finish().expect("finishes");
    let text = |df: &polars::prelude::DataFrame, c: &str| adsim::table::texts(df, c);
    let num = |df: &polars::prelude::DataFrame, c: &str| adsim::table::floats(df, c);
    let (d, s) = (&e.revenue_days, &e.summary);
    let (d_arm, d_rate, d_region, d_day, d_value) = (
        text(d, "arm"),
        num(d, "rate"),
        text(d, "region"),
        num(d, "day"),
        num(d, "revenue_change_musd"),
    );
    let (s_arm, s_rate, s_change) = (
        text(s, "arm"),
        num(s, "rate"),
        num(s, "revenue_change_musd"),
    );
    assert!(
        !d_arm.iter().any(|a| a == "none"),
        "the none arm has no days"
    );
    let mut checked = 0;
    for i in 0..s.height() {
        if s_arm[i] == "none" {
            continue;
        }
        let rows: Vec<usize> = (0..d.height())
            .filter(|&j| d_arm[j] == s_arm[i] && d_rate[j] == s_rate[i])
            .collect();
        let quarter: f64 = rows
            .iter()
            .filter(|&&j| d_region[j] == "all")
            .map(|&j| d_value[j])
            .sum();
        let expected = s_change[i];
        assert!(
            (quarter - expected).abs() <= 1e-4 * expected.abs() + 1e-3,
            "{} at {}: days sum to {quarter}, the quarter is {expected}",
            s_arm[i],
            s_rate[i]
        );
        for day in 0..r.scenario.policy.horizon_days {
            let on = |region: Option<&str>| -> f64 {
                rows.iter()
                    .filter(|&&j| d_day[j] == f64::from(day))
                    .filter(|&&j| match region {
                        Some(g) => d_region[j] == g,
                        None => d_region[j] != "all",
                    })
                    .map(|&j| d_value[j])
                    .sum()
            };
            let all = on(Some("all"));
            assert!((on(None) - all).abs() <= 1e-9 * all.abs().max(1.0));
        }
        checked += 1;
    }
    assert!(checked >= 6);
    // The quarter's change splits by how M's data reached the account (docs/model.md §8.4):
    // the four routes add up to it, and in 2016 (no interest evidence) only numbers S did not
    // have or that replace a stale one carry value.
    let route = |name: &str| num(s, name);
    let (new, replaced, known, foreign) = (
        route("revenue_change_new_number_musd"),
        route("revenue_change_replaced_number_musd"),
        route("revenue_change_known_number_musd"),
        route("revenue_change_foreign_musd"),
    );
    for i in 0..s.height() {
        let parts = new[i] + replaced[i] + known[i] + foreign[i];
        assert!(
            (parts - s_change[i]).abs() <= 1e-4 * s_change[i].abs() + 1e-3,
            "{} at {}: routes {parts}, change {}",
            s_arm[i],
            s_rate[i],
            s_change[i]
        );
        assert_eq!(
            (known[i], foreign[i]),
            (0.0, 0.0),
            "no interest evidence in 2016"
        );
        if s_arm[i] != "none" && s_rate[i] == 0.0 {
            assert!(
                new[i] > 0.0 && replaced[i] > 0.0,
                "{} {}",
                new[i],
                replaced[i]
            );
        }
    }
    // Users accept the terms over the first days (docs/model.md §4.4): the revenue per day
    // rises while they do, though opt-outs follow each acceptance.
    let first_arm = (0..d.height())
        .find(|&j| d_arm[j] != "none" && d_rate[j] == 0.3 && d_region[j] == "all")
        .expect("a row");
    let day = |n: f64| {
        (0..d.height())
            .find(|&j| {
                d_arm[j] == d_arm[first_arm]
                    && d_rate[j] == 0.3
                    && d_region[j] == "all"
                    && d_day[j] == n
            })
            .map(|j| d_value[j])
            .expect("the day")
    };
    assert!(day(0.0) < day(10.0), "{} then {}", day(0.0), day(10.0));
}

/// An arm of `kind` named `name`, scope `ads`, no rules, with `rate` and `m_evidence`.
fn arm_with(
    name: &str,
    kind: adsim::policy::ArmKind,
    rate: Option<f64>,
    m_evidence: Option<adsim::targeting::MEvidence>,
) -> adsim::policy::ArmConfig {
    adsim::policy::ArmConfig {
        name: name.into(),
        kind,
        scope: adsim::policy::Scope::Ads,
        regional: vec![],
        rate,
        m_evidence,
    }
}

#[test]
fn an_arm_without_m_evidence_counts_as_in_a_scenario_without_it() {
    // Per-arm evidence (the 2016 status quo inside the 2021 scenario): an arm that sets
    // m_evidence = none where M's data carries business-messaging evidence counts exactly as
    // the same arm where no arm reads it; the arm that reads it targets differently.
    use adsim::policy::ArmKind;
    use adsim::targeting::MEvidence;
    let rates = [0.0, 0.3, 1.0];
    let mixed = small(4000, 3, &rates, |s| {
        s.targeting.m_evidence = MEvidence::BusinessMessaging;
        s.policy.arms = vec![
            arm_with("none", ArmKind::None, None, None),
            arm_with("plain", ArmKind::OptOutWindow, None, Some(MEvidence::None)),
            arm_with("m", ArmKind::OptOutWindow, None, None),
        ];
    });
    let plain = small(4000, 3, &rates, |s| {
        s.policy.arms = vec![
            arm_with("none", ArmKind::None, None, None),
            arm_with("plain", ArmKind::OptOutWindow, None, None),
        ];
    });
    let ((_, cm), (_, cp)) = (simulate(&mixed), simulate(&plain));
    assert!(cm.arms[1] == cp.arms[1], "the arm's counts differ");
    assert!(
        cm.timeline[1] == cp.timeline[1],
        "the arm's timeline differs"
    );
    assert!(cm.arms[2] != cm.arms[1], "M's evidence changed nothing");
}

#[test]
fn a_fixed_rate_arm_is_the_sweep_at_that_rate() {
    // `rate` gives an arm one level: the level of the sweep at that rate, count for count.
    use adsim::policy::ArmKind;
    let rates = [0.0, 0.2, 0.7, 1.0];
    let r = small(4000, 9, &rates, |s| {
        s.policy.arms = vec![
            arm_with("none", ArmKind::None, None, None),
            arm_with("sweep", ArmKind::NoChoice, None, None),
            arm_with("fixed", ArmKind::NoChoice, Some(0.7), None),
        ];
    });
    let (l, c) = simulate(&r);
    assert_eq!(l.levels, vec![1, 4, 1]);
    assert!(c.level(&l, 2, 0) == c.level(&l, 1, 2), "counts differ");
    assert!(
        c.timeline_level(&l, 2, 0) == c.timeline_level(&l, 1, 2),
        "timelines differ"
    );
}

#[test]
fn the_2021_change_is_measured_against_the_2016_status_quo() {
    // whatsapp-2021: revenue_change_vs_baseline_musd is, replication by replication, the
    // arm's revenue change less the status quo's; the status quo's own is 0. The paired
    // difference has the mean of the difference of means, and its interval is narrower than
    // the sum of the two half-widths (common random numbers).
    let (mut s, source) = adsim::scenario::Scenario::builtin("whatsapp-2021").expect("built in");
    s.population.users = 20_000;
    s.population.replications = 4;
    let r = s.resolve(&source, Path::new(".")).expect("resolves");
    let e = adsim::run::evaluate(&r, &adsim::run::quiet).expect("evaluates");
    let sum = &e.summary;
    let arm = adsim::table::texts(sum, "arm");
    let col = |c: &str| adsim::table::floats(sum, c);
    let (change, vs) = (
        col("revenue_change_musd"),
        col("revenue_change_vs_baseline_musd"),
    );
    let (lo, hi) = (
        col("revenue_change_vs_baseline_musd_lo"),
        col("revenue_change_vs_baseline_musd_hi"),
    );
    let (c_lo, c_hi) = (col("revenue_change_musd_lo"), col("revenue_change_musd_hi"));
    let base = (0..sum.height())
        .find(|&i| arm[i] == "status_quo_2016")
        .expect("the status quo row");
    assert_eq!(vs[base], 0.0);
    assert!(change[base] > 0.0, "sharing in 2016 added revenue");
    let mut rows = 0;
    for i in (0..sum.height()).filter(|&i| arm[i] == "no_choice") {
        rows += 1;
        assert!(
            (vs[i] - (change[i] - change[base])).abs() < 1e-9 * change[i].abs().max(1.0),
            "row {i}: {} against {} - {}",
            vs[i],
            change[i],
            change[base]
        );
        let half = (c_hi[i] - c_lo[i]) / 2.0 + (c_hi[base] - c_lo[base]) / 2.0;
        assert!(
            (hi[i] - lo[i]) / 2.0 < half,
            "row {i}: the interval is not paired"
        );
    }
    assert_eq!(rows, r.scenario.policy.rates.len());
}

#[test]
fn the_record_switched_off_gives_the_headline_of_earlier_versions() {
    // Golden figure: with one notice day, no new users, no other sources of S's numbers,
    // business-messaging evidence, the Q2 2016 anchoring and the country shares of 2014-2016
    // counts with the rest of the world spread pro rata over M's 1,000M users, the default
    // run (100,000 users x 5 replications, seed 2016) gives the revenue change the README
    // quoted before the 2016 record: $163.3M [157.0, 169.6] at no opt-out. Each switch is
    // exactly the old model.
    let (mut s, source) = adsim::scenario::Scenario::builtin("whatsapp-2016").expect("built in");
    const OLD_SHARES: [(&str, f64); 22] = [
        ("IN", 0.252966),
        ("BR", 0.158103),
        ("ID", 0.079051),
        ("MX", 0.050593),
        ("US", 0.011858),
        ("DE", 0.055336),
        ("RU", 0.017391),
        ("IT", 0.039526),
        ("ES", 0.039526),
        ("GB", 0.026877),
        ("TR", 0.047431),
        ("NG", 0.031621),
        ("ZA", 0.018972),
        ("AR", 0.020553),
        ("CO", 0.023715),
        ("PK", 0.031621),
        ("EG", 0.023715),
        ("SA", 0.018972),
        ("MY", 0.023715),
        ("FR", 0.012648),
        ("PH", 0.007905),
        ("CA", 0.007905),
    ];
    for (code, share) in OLD_SHARES {
        s.data
            .country_overrides
            .entry(code.into())
            .or_default()
            .m_share = Some(share);
    }
    s.revenue.m_users_millions = 1000.0;
    s.policy.acceptance_days = 1;
    s.policy.new_user_share = 0.0;
    s.known_numbers.security_or_messenger = 0.0;
    s.known_numbers.contact_uploads = 0.0;
    s.targeting.m_evidence = adsim::targeting::MEvidence::BusinessMessaging;
    s.revenue.anchor = adsim::revenue::Anchor::Q22016;
    let r = s.resolve(&source, Path::new(".")).expect("resolves");
    let e = adsim::run::evaluate(&r, &adsim::run::quiet).expect("evaluates");
    let sum = &e.summary;
    let (arm, rate) = (
        adsim::table::texts(sum, "arm"),
        adsim::table::floats(sum, "rate"),
    );
    let row = (0..sum.height())
        .find(|&i| arm[i] == "opt_out_window" && rate[i] == 0.0)
        .expect("the row");
    let get = |c: &str| adsim::table::floats(sum, c)[row];
    for (column, figure) in [
        ("revenue_change_musd", 163.3),
        ("revenue_change_musd_lo", 157.0),
        ("revenue_change_musd_hi", 169.6),
    ] {
        assert!(
            (get(column) - figure).abs() < 0.05,
            "{column}: {}",
            get(column)
        );
    }
}

#[test]
fn each_day_of_revenue_is_priced_at_the_quarter_it_falls_in() {
    // With every acceptance on day 0, no new users and no opt-out, M's data adds the same value
    // on every day: a region's revenue change steps on day 37 (1 October 2016) exactly by the
    // ratio of its Q4 to its Q3 anchor (ARPU times the advertising share), and is level within
    // each quarter (docs/model.md §8.2).
    let mut r = small(20_000, 5, &[0.0], |s| {
        s.policy.acceptance_days = 1;
        s.policy.new_user_share = 0.0;
    });
    r.scenario.population.replications = 1;
    let sweep = Sweep::new(&r);
    let mut est = adsim::run::estimator(&r);
    est.add(&sweep.run(0, 0..20_000).expect("runs"))
        .expect("estimates");
    let e = est.finish().expect("finishes");
    let d = &e.revenue_days;
    let (arm, region, day, value) = (
        adsim::table::texts(d, "arm"),
        adsim::table::texts(d, "region"),
        adsim::table::floats(d, "day"),
        adsim::table::floats(d, "revenue_change_musd"),
    );
    let rev = &r.scenario.revenue;
    let (s3, s4) = (
        rev.q3_ad_revenue_musd / rev.q3_total_revenue_musd,
        rev.q4_ad_revenue_musd / rev.q4_total_revenue_musd,
    );
    let mut checked = 0;
    for g in &r.data.countries.arpu_region {
        let on = |n: f64| {
            (0..d.height())
                .find(|&j| arm[j] == "opt_out_window" && region[j] == g.name && day[j] == n)
                .map(|j| value[j])
                .expect("the day")
        };
        if on(36.0) == 0.0 {
            continue;
        }
        let expected = g.arpu_q4_2016_usd.unwrap() * s4 / (g.arpu_q3_2016_usd.unwrap() * s3);
        let step = on(37.0) / on(36.0);
        assert!(
            (step - expected).abs() < 1e-9,
            "{}: {step} vs {expected}",
            g.name
        );
        assert!((on(0.0) - on(36.0)).abs() < 1e-12 && (on(37.0) - on(90.0)).abs() < 1e-12);
        checked += 1;
    }
    assert!(checked >= 3, "{checked} regions");
}

#[test]
fn a_window_opt_out_keeps_its_days_before_the_opt_out() {
    // Nobody reads the notice: every opt-out comes on its Settings day d, and keeps days
    // a to d-1 of ad use from its acceptance a; at rate 1 the person-days of ad use are exactly
    // the exposure days. Everyone accepts on day 0 here, so the days in ad use at rate 0 are
    // the whole horizon; with new users too, those who cannot opt out keep their days.
    let r = small(5000, 4, &[0.0, 1.0], |s| {
        s.policy.notice_read_rate = 0.0;
        s.policy.acceptance_days = 1;
        s.policy.new_user_share = 0.0;
    });
    let (l, c) = simulate(&r);
    let h = i64::from(r.scenario.policy.horizon_days);
    let t = |level, m| total(&l, &c, 1, level, l.all(m));
    assert_eq!(t(0, All::AdUseDays), 5000 * h);
    assert_eq!(t(1, All::OptedOut), 5000);
    assert_eq!(t(1, All::AdUseDays), t(1, All::ExposureDays));
    assert!(
        t(1, All::AdUseDays) > 5000,
        "opt-outs keep their days before the opt-out"
    );
    // So targeting at full opt-out still differs from none (linked account-days remain).
    assert!(t(1, All::LinkedAccountDays) > 0);
}

#[test]
fn settings_days_fill_a_window_of_365_days() {
    // A half-life of ten years makes the Settings days nearly uniform over the window, so
    // about 109/365 of the Settings opt-outs fall on days 257 to 365 (days past 256 used to
    // wrap to days 1 to 109).
    let r = small(20_000, 7, &[0.0, 0.5], |s| {
        s.policy.acceptance_days = 1;
        s.policy.window_days = 365;
        s.policy.horizon_days = 400;
        s.revenue.anchor = adsim::revenue::Anchor::Q22016;
        s.policy.settings_half_life_days = 3650.0;
    });
    let (l, c) = simulate(&r);
    let arm = 1;
    let tl = c.timeline_level(&l, arm, 1);
    let settings = |day: usize| -> i64 {
        (0..l.regions)
            .map(|g| tl[l.day(g, day, Channel::Settings)])
            .sum()
    };
    let all: i64 = (0..=l.days).map(settings).sum();
    let late: i64 = (257..=365).map(settings).sum();
    let past: i64 = (366..=l.days).map(settings).sum();
    assert!(all > 2000, "{all} Settings opt-outs");
    assert_eq!(settings(0), 0, "day 0 is the notice's");
    assert_eq!(past, 0, "no Settings opt-out after the window");
    let share = late as f64 / all as f64;
    assert!(
        (0.25..0.33).contains(&share),
        "share of Settings opt-outs on days 257-365: {share:.3}"
    );
}

#[test]
fn without_recycled_or_shared_phones_there_are_no_mislinks() {
    let r = small(6000, 5, &[0.0, 0.5], |s| {
        for code in crate::common::country_codes() {
            let o = s.data.country_overrides.entry(code).or_default();
            o.recycled_rate = Some(0.0);
            o.shared_phone_rate = Some(0.0);
        }
    });
    let (l, c) = simulate(&r);
    for arm in 0..l.levels.len() {
        for level in 0..l.levels[arm] {
            assert_eq!(
                total(&l, &c, arm, level, l.all(All::LinkMislinkRecycled)),
                0
            );
            assert_eq!(total(&l, &c, arm, level, l.all(All::LinkMislinkShared)), 0);
            assert_eq!(total(&l, &c, arm, level, l.all(All::MislinkReceived)), 0);
            assert_eq!(seg_total(&l, &c, arm, level, Seg::CaWrongDays), 0);
        }
    }
    // With the default rates there are mislinks (the test is not vacuous).
    let (l, c) = simulate(&small(6000, 5, &[0.0], |_| {}));
    assert!(total(&l, &c, 1, 0, l.all(All::LinkMislinkRecycled)) > 0);
    assert!(total(&l, &c, 1, 0, l.all(All::LinkMislinkShared)) > 0);
}

#[test]
fn without_metadata_links_custom_audiences_match_as_under_none() {
    let r = small(6000, 8, &[0.0, 0.5, 1.0], |s| {
        for code in crate::common::country_codes() {
            s.data
                .country_overrides
                .entry(code)
                .or_default()
                .metadata_link_rate = Some(0.0);
        }
    });
    let (l, c) = simulate(&r);
    for arm in 1..l.levels.len() {
        for level in 0..l.levels[arm] {
            assert_eq!(
                seg_total(&l, &c, arm, level, Seg::CaRightDays),
                seg_total(&l, &c, 0, 0, Seg::CaRightDays)
            );
            assert_eq!(
                seg_total(&l, &c, arm, level, Seg::CaWrongDays),
                seg_total(&l, &c, 0, 0, Seg::CaWrongDays)
            );
        }
    }
    let (l, c) = simulate(&small(6000, 8, &[0.0], |_| {}));
    assert!(
        seg_total(&l, &c, 1, 0, Seg::CaRightDays) > seg_total(&l, &c, 0, 0, Seg::CaRightDays),
        "metadata links add matches"
    );
}

#[test]
fn at_heterogeneity_zero_opt_outs_ignore_country_and_age() {
    // At rate 0.5 with h = 0 every country's and age band's opt-out share is 0.5 within
    // binomial noise; at h = 1 Germany (+0.8) and India (-0.3) differ by far more.
    let check = |h: f64| -> f64 {
        let r = small(60_000, 21, &[0.5], |s| s.opt_out.heterogeneity = h);
        let (l, c) = simulate(&r);
        let mut worst: f64 = 0.0;
        for co in 0..l.countries {
            for a in 0..l.ages {
                let n = c.get(&l, 1, 0, co, a, l.all(All::Users)) as f64;
                if n < 50.0 {
                    continue;
                }
                let out = c.get(&l, 1, 0, co, a, l.all(All::OptedOut)) as f64;
                let calibrated = total(&l, &c, 1, 0, l.all(All::OptedOut)) as f64
                    / total(&l, &c, 1, 0, l.all(All::Users)) as f64;
                let z = (out - n * calibrated) / (n * calibrated * (1.0 - calibrated)).sqrt();
                worst = worst.max(z.abs());
            }
        }
        worst
    };
    let uniform = check(0.0);
    assert!(
        uniform < 4.5,
        "largest |z| of a country x age cell at h = 0: {uniform:.2}"
    );
    assert!(check(1.0) > 8.0, "h = 1 makes cells differ");
}

#[test]
fn results_do_not_depend_on_threads_or_chunks_and_rerun_from_scenario_toml() {
    let dir = tempfile::tempdir().unwrap();
    let args = |threads: &'static str, chunk: &'static str, out: &'static str| {
        vec![
            "run",
            "whatsapp-2016",
            "--users",
            "3000",
            "--replications",
            "2",
            "--threads",
            threads,
            "--chunk-size",
            chunk,
            "--out",
            out,
            "--quiet",
        ]
    };
    for (t, c, o) in [("1", "100", "a"), ("2", "977", "b")] {
        let out = adsim(dir.path(), &args(t, c, o));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = adsim(
        dir.path(),
        &["run", "a/scenario.toml", "--out", "c", "--quiet"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files = [
        "scenario.toml",
        "cells.parquet",
        "timeline_cells.parquet",
        "summary.csv",
        "summary.parquet",
        "segments.csv",
        "countries.csv",
        "timeline.csv",
        "summary.json",
        "report.md",
        "report.html",
        "relevance_vs_rate.png",
        "timeline.svg",
    ];
    for f in files {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        for other in ["b", "c"] {
            let b = std::fs::read(dir.path().join(other).join(f)).unwrap();
            assert!(a == b, "{f} differs between a and {other}");
        }
    }
    assert!(dir.path().join("a/run.json").exists());
}

#[test]
fn bad_policy_keys_are_refused_with_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "rates not increasing",
            "[policy]\nrates = [0.0, 0.5, 0.4]\n",
            &["policy.rates[2]", "strictly increasing"],
        ),
        (
            "rate out of range",
            "[policy]\nrates = [0.0, 1.5]\n",
            &["policy.rates[1]", "1.5", "[0, 1]"],
        ),
        (
            "unknown arm kind",
            "[[policy.arms]]\nname = \"x\"\nkind = \"maybe\"\n",
            &["policy.arms[0].kind", "unknown variant `maybe`"],
        ),
        (
            "duplicate arm",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"none\"\nkind = \"opt_in\"\n",
            &["policy.arms[1].name", "used once"],
        ),
        (
            "no none arm",
            "[[policy.arms]]\nname = \"a\"\nkind = \"opt_in\"\n",
            &["policy.arms", "exactly one arm of kind \"none\""],
        ),
        (
            "regional unknown country",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"w\"\nkind = \"opt_out_window\"\nregional = [{ countries = [\"XX\"], rule = \"off\" }]\n",
            &["policy.arms[1].regional[0].countries[0]", "\"XX\""],
        ),
        (
            "regional empty country list",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"w\"\nkind = \"opt_out_window\"\nregional = [{ countries = [], rule = \"off\" }]\n",
            &[
                "policy.arms[1].regional[0].countries",
                "at least one country",
            ],
        ),
        (
            "regional country repeated",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"w\"\nkind = \"opt_out_window\"\nregional = [{ countries = [\"DE\", \"DE\"], rule = \"off\" }]\n",
            &[
                "policy.arms[1].regional[0].countries[1]",
                "each country once",
            ],
        ),
        (
            "rate on the none arm",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\nrate = 0.1\n",
            &["policy.arms[0].rate", "0.1", "no rate on a `none` arm"],
        ),
        (
            "arm rate out of range",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"s\"\nkind = \"standing\"\nrate = -0.2\n",
            &["policy.arms[1].rate", "-0.2", "a rate in [0, 1]"],
        ),
        (
            "standing arm without a rate in behavioral mode",
            "[policy]\nmode = \"behavioral\"\n[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"s\"\nkind = \"standing\"\n",
            &["policy.arms[1].rate", "a rate on a `standing` arm"],
        ),
        (
            "m_evidence on the none arm",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\nm_evidence = \"business_messaging\"\n",
            &["policy.arms[0].m_evidence", "no m_evidence on a `none` arm"],
        ),
        (
            "baseline not an arm",
            "[policy]\nbaseline = \"past\"\n",
            &[
                "policy.baseline",
                "\"past\"",
                "the name of an arm: none, opt_out_window",
            ],
        ),
        (
            "baseline with many levels",
            "[policy]\nbaseline = \"opt_out_window\"\n",
            &["policy.baseline", "an arm with one level"],
        ),
        (
            "scope all on an opt-in arm",
            "[[policy.arms]]\nname = \"none\"\nkind = \"none\"\n[[policy.arms]]\nname = \"i\"\nkind = \"opt_in\"\nscope = \"all\"\n",
            &["policy.arms[1].scope", "opt_out_window"],
        ),
        (
            "name with a path separator",
            "name = \"../../elsewhere\"\n",
            &["name", "../../elsewhere", "not starting with '.'"],
        ),
        ("empty name", "name = \"\"\n", &["name", "1 to 100"]),
        (
            "window zero",
            "[policy]\nwindow_days = 0\n",
            &["policy.window_days", "1 to 365"],
        ),
        (
            "mode unknown",
            "[policy]\nmode = \"guess\"\n",
            &["policy.mode", "unknown variant `guess`"],
        ),
        (
            "targeting out of range",
            "[targeting]\nm_recall = 2.0\n",
            &["targeting.m_recall", "2", "[0, 1]"],
        ),
        (
            "normalization unknown",
            "[audiences]\nnormalization = \"loose\"\n",
            &["audiences.normalization", "unknown variant `loose`"],
        ),
        (
            "revenue negative",
            "[revenue]\ncost_per_click_usd = -1.0\n",
            &["revenue.cost_per_click_usd", "-1", "positive"],
        ),
        (
            "behavior out of range",
            "[policy.behavior]\nagree_if_read = 1.2\n",
            &["policy.behavior.agree_if_read", "1.2"],
        ),
    ];
    for (name, text, fragments) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let out = adsim(dir.path(), &["run", "bad.toml", "--out", "res", "--quiet"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("bad.toml"), "{name}: {err}");
        for f in *fragments {
            assert!(err.contains(f), "{name}: {f:?} missing from {err}");
        }
        assert!(
            !dir.path().join("res").exists(),
            "{name}: a results folder was written"
        );
    }
}

#[test]
fn accounts_without_their_number_on_file_have_it_from_the_other_sources_at_their_rates() {
    // docs/model.md §3.5: an account that does not hold its holder's current number on file
    // has it as a security or Messenger number with probability a, else from contact uploads
    // with probability b; an account with its number on file is `OnFile`, no account `Unknown`.
    use adsim::population::{KnownNumber, Population, SAccount};
    let r = small(200_000, 5, &[0.0], |s| {
        s.known_numbers.security_or_messenger = 0.2;
        s.known_numbers.contact_uploads = 0.5;
    });
    let pop = Population::new(&r, 0).unwrap();
    let (mut without, mut security, mut contacts) = (0u64, 0u64, 0u64);
    for i in 0..200_000 {
        let u = pop.user(i);
        match u.s_account {
            SAccount::None => assert_eq!(u.number_known, KnownNumber::Unknown),
            SAccount::Own => assert_eq!(u.number_known, KnownNumber::OnFile),
            _ => {
                without += 1;
                match u.number_known {
                    KnownNumber::SecurityOrMessenger => security += 1,
                    KnownNumber::ContactUploads => contacts += 1,
                    KnownNumber::Unknown => {}
                    KnownNumber::OnFile => panic!("{u:?} has no number of its own on file"),
                }
            }
        }
    }
    assert!(without > 40_000, "{without} accounts without their number");
    let (a, b) = (
        security as f64 / without as f64,
        contacts as f64 / without as f64,
    );
    // Binomial standard errors below 0.003 here: 0.01 is over three of them.
    assert!((a - 0.2).abs() < 0.01, "security or Messenger {a}");
    assert!((b - 0.8 * 0.5).abs() < 0.01, "contact uploads {b}");
}

#[test]
fn when_s_already_knows_every_number_sharing_adds_no_link_and_no_match() {
    // Known answer: every account holds its holder's number through another source, and M's
    // data carries no interest evidence (2016). Then every shared number of a user with an S
    // account resolves to its own account: no metadata link, and no Custom Audience match,
    // audience or impression that the `none` arm lacks, at every level. (A user without an S
    // account can still mislink to the account holding its old number, to no ad effect.)
    let r = small(8000, 21, &[0.0, 0.5, 1.0], |s| {
        s.known_numbers.security_or_messenger = 1.0;
    });
    let (l, c) = simulate(&r);
    let mut differs_at_default = false;
    for arm in 1..l.levels.len() {
        for level in 0..l.levels[arm] {
            assert_eq!(total(&l, &c, arm, level, l.all(All::LinkMetadata)), 0);
            // Impressions move between the linked and unlinked columns (a true link is M data
            // in ad use), but every kind's total is the `none` arm's.
            let untargeted = |arm, level| {
                total(&l, &c, arm, level, l.all(All::ImpUntargetedLinked))
                    + total(&l, &c, arm, level, l.all(All::ImpUntargetedUnlinked))
            };
            assert_eq!(untargeted(arm, level), untargeted(0, 0));
            for s in 0..l.segments {
                for (a, b) in [
                    (Seg::CaImpCustomerLinked, Seg::CaImpCustomerUnlinked),
                    (Seg::ImpInterestedLinked, Seg::ImpInterestedUnlinked),
                    (Seg::CaImpOtherLinked, Seg::CaImpOtherUnlinked),
                ] {
                    let both = |arm, level| {
                        total(&l, &c, arm, level, l.seg(s, a))
                            + total(&l, &c, arm, level, l.seg(s, b))
                    };
                    assert_eq!(both(arm, level), both(0, 0), "segment {s} {a:?}");
                }
                for m in [Seg::CaRightDays, Seg::CaWrongDays, Seg::AudienceDays] {
                    assert_eq!(
                        total(&l, &c, arm, level, l.seg(s, m)),
                        total(&l, &c, 0, 0, l.seg(s, m)),
                        "arm {arm} level {level} segment {s} {m:?}"
                    );
                }
            }
        }
    }
    // At the default rates sharing does add matches (the test would pass vacuously
    // otherwise).
    let default = small(8000, 21, &[0.0], |_| {});
    let (l, c) = simulate(&default);
    for s in 0..l.segments {
        differs_at_default |= total(&l, &c, 1, 0, l.seg(s, Seg::CaRightDays))
            != total(&l, &c, 0, 0, l.seg(s, Seg::CaRightDays));
    }
    assert!(differs_at_default);
}

#[test]
fn custom_audience_matches_equal_hashed_matching_on_a_sample() {
    // The hashed path, as S would run it: every number on an S account's file into an index of
    // SHA-256 hashes; every upload typed as the business typed it (with its fault), normalized
    // from the string, hashed and looked up. The engine's fast path (digits, the inverse
    // number map) must give the same right and wrong matches, under both normalizations.
    use std::collections::BTreeMap;

    use adsim::audiences::{Fault, Normalization, Uploads, normalize_str, typed_string};
    use adsim::population::{Population, SAccount};
    use sha2::{Digest, Sha256};

    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    for mode in [Normalization::Strict, Normalization::Lenient] {
        // Many faults, so that every kind occurs thousands of times.
        let r = small(20_000, 12, &[0.0], |s| {
            s.audiences.fault_rate = 0.6;
            s.audiences.normalization = mode;
        });
        let pop = Population::new(&r, 0).unwrap();
        let users: Vec<_> = (0..20_000).map(|i| pop.user(i)).collect();
        let mut index: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for u in &users {
            let on_file = match u.s_account {
                SAccount::Own => Some(u.phone),
                SAccount::Stale { sender } | SAccount::Household { sender } => {
                    Some(users[sender as usize].phone)
                }
                _ => None,
            };
            // The account's numbers in S's index: the one on file, and the holder's own current
            // number where S knew it from another source (docs/model.md §3.5).
            let known = (u.number_known.known() && u.s_account != SAccount::Own).then_some(u.phone);
            for phone in on_file.into_iter().chain(known) {
                index
                    .entry(sha(&phone.normalized()))
                    .or_default()
                    .push(u.id);
            }
        }
        let uploads = Uploads::new(&r.scenario.audiences);
        let (mut right, mut wrong, mut uploaded) = (0i64, 0i64, 0i64);
        let mut kinds: BTreeMap<String, [i64; 3]> = BTreeMap::new();
        for u in &users {
            uploads.each(u.streams, u.customer_of, |_, typo| {
                uploaded += 1;
                let typed = typed_string(&u.phone, typo);
                let hash = sha(&normalize_str(&typed, mode, u.phone.calling_code));
                let outcome = match index.get(&hash) {
                    Some(holders) if holders.contains(&u.id) => 0,
                    Some(_) => 1,
                    None => 2,
                };
                match outcome {
                    0 => right += 1,
                    1 => wrong += 1,
                    _ => {}
                }
                let kind = typo.map_or("none".to_string(), |(k, _)| format!("{k:?}"));
                kinds.entry(kind).or_default()[outcome] += 1;
            });
        }
        let (l, c) = simulate(&r);
        let days = i64::from(r.scenario.policy.horizon_days);
        assert_eq!(
            seg_total(&l, &c, 0, 0, Seg::CaUploadedDays),
            uploaded * days
        );
        assert_eq!(
            seg_total(&l, &c, 0, 0, Seg::CaRightDays),
            right * days,
            "{mode:?}"
        );
        assert_eq!(
            seg_total(&l, &c, 0, 0, Seg::CaWrongDays),
            wrong * days,
            "{mode:?}"
        );
        assert!(uploaded > 10_000, "{uploaded} uploads");
        assert_eq!(
            kinds.len(),
            1 + Fault::ALL.len(),
            "every kind occurs: {kinds:?}"
        );
        // Recovered kinds match like clean numbers; the others never reach the right person.
        for k in ["DoubledDigit", "NoCountryCode"] {
            assert_eq!(kinds[k][0], 0, "{k} never matches the right person");
        }
        // A dropped digit reaches the right person only under lenient, when the first digit
        // of a calling code like 20 is dropped and the trunk 0 left is replaced.
        assert_eq!(
            kinds["DroppedDigit"][0] > 0,
            mode == Normalization::Lenient,
            "{kinds:?}"
        );
        assert_eq!(
            kinds["TrunkPrefix"][0] > 0,
            mode == Normalization::Lenient,
            "{kinds:?}"
        );
        assert!(kinds["Separators"][0] > 0 && kinds["InternationalPrefix"][0] > 0);
        assert!(
            kinds["none"][1] > 0,
            "stale and household numbers match the wrong person"
        );
    }
}

#[test]
fn typos_that_land_on_another_users_number_match_the_wrong_person() {
    // A number one digit longer (or shorter) than a user's, typed with that digit dropped (or
    // doubled), normalizes to the user's number: the fast path finds that user exactly as the
    // hash of the normalized string does.
    use adsim::audiences::{
        Fault, Normalization, normalize, normalize_str, typed_digits, typed_string,
    };
    use adsim::phone::{National, PhoneNumber};
    use adsim::population::Population;

    let r = small(20_000, 3, &[0.0], |_| {});
    let pop = Population::new(&r, 0).unwrap();
    let mut found = [0; 2];
    for id in (0..20_000).step_by(7) {
        let w = pop.user(id);
        let n = w.phone.national;
        // Insert a digit after the first national digit: dropping it gives w's number back.
        let digits = n.number.to_string();
        let longer: u64 = format!("{}7{}", &digits[..1], &digits[1..])
            .parse()
            .unwrap();
        let x = PhoneNumber {
            calling_code: w.phone.calling_code,
            national: National {
                number: longer,
                len: n.len + 1,
            },
        };
        let cc_len = w.phone.calling_code.to_string().len() as u32;
        let typo = Some((Fault::DroppedDigit, cc_len + 1));
        for mode in [Normalization::Strict, Normalization::Lenient] {
            let fast = normalize(typed_digits(&x, typo).as_bytes(), mode, x.calling_code);
            let hashed = normalize_str(&typed_string(&x, typo), mode, x.calling_code);
            assert_eq!(fast.as_bytes(), hashed.as_bytes());
            assert_eq!(hashed, w.phone.normalized(), "the typo lands on user {id}");
            assert_eq!(pop.holder_of_digits(fast.as_bytes()), Some(id));
            found[0] += 1;
        }
        // A doubled digit: a number with one of a pair of equal digits left out, typed with the
        // other doubled.
        if let Some(i) = digits
            .as_bytes()
            .windows(2)
            .position(|p| p[0] == p[1])
            .filter(|&i| i > 0)
        {
            let shorter: u64 = format!("{}{}", &digits[..i], &digits[i + 1..])
                .parse()
                .unwrap();
            let x = PhoneNumber {
                calling_code: w.phone.calling_code,
                national: National {
                    number: shorter,
                    len: n.len - 1,
                },
            };
            let typo = Some((Fault::DoubledDigit, cc_len + i as u32));
            let fast = normalize(
                typed_digits(&x, typo).as_bytes(),
                Normalization::Strict,
                x.calling_code,
            );
            assert_eq!(fast.as_bytes(), w.phone.normalized().as_bytes());
            assert_eq!(pop.holder_of_digits(fast.as_bytes()), Some(id));
            found[1] += 1;
        }
    }
    assert!(found[0] > 1000 && found[1] > 100, "{found:?}");
}

#[test]
fn country_counts_equal_the_published_ones_where_listed() {
    // The population stands for the 22 countries at their 2016 counts (revenue.m_users_millions
    // = 673): India, Brazil, Germany and Italy hold their published counts (docs/model.md §3.1),
    // up to one simulated user each; the validation case says so too.
    let (mut s, source) = adsim::scenario::Scenario::builtin("whatsapp-2016").expect("built in");
    s.population.users = 50_000;
    s.population.replications = 1;
    let r = s.resolve(&source, Path::new(".")).expect("resolves");
    let e = adsim::run::evaluate(&r, &adsim::run::quiet).expect("evaluates");
    let c = &e.countries;
    let (arm, code, people) = (
        adsim::table::texts(c, "arm"),
        adsim::table::texts(c, "country"),
        adsim::table::floats(c, "people"),
    );
    let one_user = 673e6 / 50_000.0;
    let mut total = 0.0;
    for i in (0..c.height()).filter(|&i| arm[i] == "none") {
        total += people[i];
        if let Some(published) = [("IN", 160e6), ("BR", 100e6), ("DE", 35e6), ("IT", 25e6)]
            .iter()
            .find(|(k, _)| *k == code[i])
            .map(|p| p.1)
        {
            assert!(
                (people[i] - published).abs() <= one_user,
                "{}: {} against {published}",
                code[i],
                people[i]
            );
        }
    }
    assert!((total - 673e6).abs() < 1.0, "all 22: {total}");
    let case = adsim::validate::cases()
        .into_iter()
        .find(|c| c.name == "country-counts")
        .expect("the case");
    let outcome = adsim::validate::judge(&case, Some(&e));
    assert_eq!(outcome.status, adsim::validate::Status::Pass, "{outcome:?}");
}
