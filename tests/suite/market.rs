//! The markets fed from a run's counts (docs/model.md §17.5): known answers that tie them to
//! the fixed-price model and to the budgets.

use std::path::Path;

use adsim::scenario::Scenario;
use adsim::table::{floats, texts};

/// The default scenario at 20,000 users and 3 replications, with `edit` applied.
fn estimates(edit: impl FnOnce(&mut Scenario)) -> adsim::metrics::Estimates {
    let mut s = Scenario::default();
    s.population.users = 20_000;
    s.population.replications = 3;
    edit(&mut s);
    let r = s.resolve("test", Path::new(".")).expect("resolves");
    adsim::run::evaluate(&r, &adsim::run::quiet).expect("evaluates")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-9)
}

#[test]
fn the_none_arm_earns_the_anchor_and_the_tables_add_up() {
    let e = estimates(|_| {});
    let arm = texts(&e.summary, "arm");
    let none = arm.iter().position(|a| a == "none").expect("none row");
    let (fixed, market) = (
        floats(&e.summary, "revenue_musd"),
        floats(&e.summary, "market_revenue_musd"),
    );
    assert!(
        rel(market[none], fixed[none]) < 1e-6,
        "{} {}",
        market[none],
        fixed[none]
    );
    assert_eq!(floats(&e.summary, "market_revenue_change_musd")[none], 0.0);
    // The price of all impressions is a weighted mean of the targeted and untargeted prices.
    let (all_cpm, t_cpm, u_cpm) = (
        floats(&e.summary, "market_cpm_usd"),
        floats(&e.summary, "market_cpm_targeted_usd"),
        floats(&e.summary, "market_cpm_untargeted_usd"),
    );
    for i in 0..e.summary.height() {
        let (lo, hi) = (t_cpm[i].min(u_cpm[i]), t_cpm[i].max(u_cpm[i]));
        assert!(
            all_cpm[i] >= lo * (1.0 - 1e-9) && all_cpm[i] <= hi * (1.0 + 1e-9),
            "row {i}: {} outside [{lo}, {hi}]",
            all_cpm[i]
        );
    }
    // market.csv: the regions sum to `all`, the sizes to `all`, and `all` x `all` is the
    // summary's revenue.
    let m = &e.market;
    let (a, l, reg, size, spend) = (
        texts(m, "arm"),
        floats(m, "level"),
        texts(m, "region"),
        texts(m, "size"),
        floats(m, "spend_musd"),
    );
    let find = |arm_: &str, level: f64, r: &str, z: &str| {
        (0..m.height())
            .find(|&i| a[i] == arm_ && l[i] == level && reg[i] == r && size[i] == z)
            .map(|i| spend[i])
            .expect("row")
    };
    let regions: Vec<String> = {
        let mut v: Vec<String> = reg.iter().filter(|r| *r != "all").cloned().collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(regions.len(), 4);
    let levels = floats(&e.summary, "level");
    for i in 0..e.summary.height() {
        let total = find(&arm[i], levels[i], "all", "all");
        assert!(rel(total, market[i]) < 1e-9, "row {i}");
        let by_region: f64 = regions
            .iter()
            .map(|r| find(&arm[i], levels[i], r, "all"))
            .sum();
        assert!(rel(by_region, total) < 1e-9, "row {i}: regions");
        let by_size =
            find(&arm[i], levels[i], "all", "large") + find(&arm[i], levels[i], "all", "small");
        assert!(rel(by_size, total) < 1e-9, "row {i}: sizes");
    }
    // The changes against none: zero on the none arm's rows, and the sizes add up.
    let (change, arm_rows) = (floats(m, "surplus_change_musd"), texts(m, "arm"));
    for i in 0..m.height() {
        if arm_rows[i] == "none" {
            assert_eq!(change[i], 0.0, "row {i}");
        }
        if size[i] == "all" {
            let part = |z: &str| {
                (0..m.height())
                    .find(|&j| a[j] == a[i] && l[j] == l[i] && reg[j] == reg[i] && size[j] == z)
                    .map(|j| change[j])
                    .expect("row")
            };
            assert!(
                (part("large") + part("small") - change[i]).abs() < 1e-6,
                "row {i}"
            );
        }
    }
    // Surplus is value less spend.
    let (value, surplus) = (floats(m, "value_musd"), floats(m, "surplus_musd"));
    for i in 0..m.height() {
        assert!((value[i] - spend[i] - surplus[i]).abs() < 1e-6 * value[i].max(1.0));
    }
    // Clicks are spend over the price per click in each region (the price is in the
    // auction's dollars, the spend anchored; each is a mean over replications, hence the
    // tolerance), customers reached are some of them, and sharing reaches more customers at
    // no opt-out.
    let (clicks, customers, price) = (
        floats(m, "clicks_m"),
        floats(m, "customers_reached_m"),
        floats(m, "price_per_click_usd"),
    );
    for i in 0..m.height() {
        assert!(
            customers[i] > 0.0 && customers[i] < clicks[i],
            "row {i}: {} {}",
            customers[i],
            clicks[i]
        );
        if reg[i] != "all" {
            assert!(rel(clicks[i] * price[i], spend[i]) < 1e-2, "row {i}");
        }
    }
    let reached = |arm_: &str| {
        (0..m.height())
            .find(|&i| a[i] == arm_ && l[i] == 0.0 && reg[i] == "all" && size[i] == "all")
            .map(|i| customers[i])
            .expect("row")
    };
    assert!(reached("opt_out_window") > reached("none"));
}

#[test]
fn without_budgets_reserve_or_competition_differences_the_market_is_the_fixed_price_model() {
    // Budgets a hundred times the unpaced spend never bind, no reserve, and the same number of
    // advertisers in every market: each market's price per click is then its value per click
    // times one constant, spend is clicks times the segment's cost per click up to that
    // constant, and under a flat anchor (q2_2016) the market's revenue change is the fixed-price
    // model's.
    let e = estimates(|s| {
        s.revenue.anchor = adsim::revenue::Anchor::Q22016;
        s.market.budget_ratio = 100.0;
        s.market.reserve_share = 0.0;
        s.market.bidders_interest = 6;
        s.market.bidders_custom_audience = 6;
        s.market.bidders_run_of_network = 6;
    });
    let (fixed, market, paced) = (
        floats(&e.summary, "revenue_change_musd"),
        floats(&e.summary, "market_revenue_change_musd"),
        floats(&e.summary, "market_paced_share"),
    );
    let mut compared = 0;
    for i in 0..e.summary.height() {
        assert_eq!(paced[i], 0.0, "row {i}: no budget binds");
        if fixed[i].abs() > 1.0 {
            compared += 1;
            assert!(
                rel(market[i], fixed[i]) < 1e-4,
                "row {i}: market {} fixed {}",
                market[i],
                fixed[i]
            );
        }
    }
    assert!(compared > 10, "{compared} rows with a change");
}

#[test]
fn when_every_budget_binds_sharing_cannot_raise_revenue_and_an_elasticity_lets_it() {
    // Budgets at 0.3 of the unpaced spend bind for every advertiser of every market in the
    // none arm; with fixed budgets no arm can spend more than they add up to. With budgets that
    // follow return, revenue can move.
    let bound = estimates(|s| s.market.budget_ratio = 0.3);
    let arm = texts(&bound.summary, "arm");
    let none = arm.iter().position(|a| a == "none").expect("none row");
    let revenue = floats(&bound.summary, "market_revenue_musd");
    let change = floats(&bound.summary, "market_revenue_change_musd");
    assert_eq!(floats(&bound.summary, "market_paced_share")[none], 1.0);
    for (i, c) in change.iter().enumerate() {
        assert!(*c <= 1e-5 * revenue[none], "row {i}: {c}");
    }
    let free = estimates(|s| {
        s.market.budget_ratio = 0.3;
        s.market.budget_elasticity = 0.5;
    });
    let moved = floats(&free.summary, "market_revenue_change_musd");
    assert!(
        moved
            .iter()
            .zip(&change)
            .any(|(m, c)| (m - c).abs() > 1e-3 * revenue[none]),
        "an elasticity moves budgets"
    );
}
