//! Charts, the report, `plot`, `compare`, completions and JSON output, on the real binary.

use std::path::Path;

use crate::common::{adsim, adsim_ok, stderr};

const CHARTS: &[&str] = &[
    "relevance_vs_rate",
    "match_rate_vs_rate",
    "revenue_vs_rate",
    "frontier",
    "market_vs_rate",
    "prices_vs_rate",
    "who_gains",
    "segment_lift",
    "selection",
    "timeline",
    "revenue_days",
    "links_by_country",
];

fn run(dir: &Path, args: &[&str]) {
    adsim_ok(dir, args);
}

/// Width and height of a PNG from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn a_run_ends_in_charts_and_a_report_that_plot_redraws_identically() {
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        &[
            "run",
            "--users",
            "3000",
            "--replications",
            "2",
            "--out",
            "r",
            "--quiet",
        ],
    );
    let r = dir.path().join("r");
    for c in CHARTS {
        let png = std::fs::read(r.join(format!("{c}.png"))).unwrap();
        // Small multiples: one 640-pixel panel per arm (the default's two sharing arms have
        // the same days, so one panel).
        let size = if *c == "revenue_days" {
            (1200, 640)
        } else {
            (1200, 800)
        };
        assert_eq!(png_size(&png), size, "{c}");
        let svg = std::fs::read_to_string(r.join(format!("{c}.svg"))).unwrap();
        assert!(
            svg.contains("<text"),
            "{c}.svg has no text: the bundled font was not used"
        );
    }
    let svg = std::fs::read_to_string(r.join("relevance_vs_rate.svg")).unwrap();
    assert!(
        svg.contains("Targeting relevance vs opt-out rate")
            && svg.contains("audience precision")
            && svg.contains("50%"),
        "relevance_vs_rate.svg has no percent ticks"
    );
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    for c in CHARTS {
        assert!(md.contains(&format!("({c}.png)")), "report.md lacks {c}");
    }
    for section in [
        "## What was simulated",
        "## Headline results",
        "## With prices from the advertisers' auctions",
        "## Who opts out",
        "## Over the quarter",
        "## Calibration",
        "## Caveats",
        "95% intervals over 2 replications",
    ] {
        assert!(md.contains(section), "report.md lacks {section:?}");
    }
    let html = std::fs::read_to_string(r.join("report.html")).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        CHARTS.len(),
        "report.html inlines every chart"
    );
    assert!(
        !html.contains("src=\"relevance_vs_rate.png\""),
        "report.html must not link files"
    );

    // `plot` redraws everything from the count tables, byte for byte.
    let saved: Vec<Vec<u8>> = [
        "report.md",
        "report.html",
        "timeline.png",
        "segment_lift.svg",
    ]
    .iter()
    .map(|f| std::fs::read(r.join(f)).unwrap())
    .collect();
    run(dir.path(), &["plot", "r", "--out", "again"]);
    for (f, before) in [
        "report.md",
        "report.html",
        "timeline.png",
        "segment_lift.svg",
    ]
    .iter()
    .zip(saved)
    {
        let after = std::fs::read(dir.path().join("again").join(f)).unwrap();
        assert!(after == before, "{f} differs after adsim plot");
    }
}

#[test]
fn compare_sets_runs_side_by_side_across_modes_and_grids() {
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        &[
            "run",
            "whatsapp-2016",
            "--users",
            "2000",
            "--replications",
            "2",
            "--out",
            "a",
            "--quiet",
        ],
    );
    run(
        dir.path(),
        &[
            "run",
            "whatsapp-2021",
            "--users",
            "2000",
            "--replications",
            "2",
            "--out",
            "b",
            "--quiet",
        ],
    );
    run(
        dir.path(),
        &[
            "run",
            "opt-in",
            "--users",
            "2000",
            "--replications",
            "2",
            "--out",
            "c",
            "--quiet",
        ],
    );
    let out = adsim(dir.path(), &["compare", "a", "b", "--out", "ab"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no_choice") && text.contains("opt_out_window_all"),
        "{text}"
    );
    let csv = std::fs::read_to_string(dir.path().join("ab/compare.csv")).unwrap();
    // whatsapp-2016: 1 + 21 + 21 rows; whatsapp-2021: 1 + 21 + 1 (the status quo's one
    // level); plus the header.
    assert_eq!(csv.lines().count(), 1 + 43 + 23);
    assert!(dir.path().join("ab/compare_relevance.png").exists());

    // A rate-mode run against a behavioral one: compared on the achieved rate, the
    // behavioral arms as points, the scenarios' differences listed.
    let out = adsim(dir.path(), &["compare", "a", "c", "--out", "ac"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("opt_in") && text.contains("policy.mode: rate / behavioral"),
        "{text}"
    );
    let csv = std::fs::read_to_string(dir.path().join("ac/compare.csv")).unwrap();
    // whatsapp-2016: 43 rows; opt-in: 3 arms of one level each; plus the header.
    assert_eq!(csv.lines().count(), 1 + 43 + 3, "{csv}");
    let diffs = std::fs::read_to_string(dir.path().join("ac/differences.csv")).unwrap();
    assert!(
        diffs.starts_with("key,a,c") && diffs.contains("policy.mode,rate,behavioral"),
        "{diffs}"
    );
    // The output folder is never overwritten without --force, and is replaced whole with it.
    let again = adsim(dir.path(), &["compare", "a", "c", "--out", "ac"]);
    assert!(!again.status.success() && stderr(&again).contains("--force"));
    assert!(
        adsim(dir.path(), &["compare", "a", "--out", "ac", "--force"])
            .status
            .success()
    );
    let csv = std::fs::read_to_string(dir.path().join("ac/compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 43, "the folder is replaced whole");
    // Rate grids that differ compare on their common rates, the others listed.
    let coarse = dir.path().join("coarse.toml");
    let mut s = adsim::scenario::Scenario::default();
    s.policy.rates = vec![0.0, 0.33, 0.5, 1.0];
    s.policy.calibration_users = 4096;
    std::fs::write(&coarse, s.to_toml()).unwrap();
    run(
        dir.path(),
        &[
            "run",
            coarse.to_str().unwrap(),
            "--users",
            "2000",
            "--replications",
            "2",
            "--out",
            "d",
            "--quiet",
        ],
    );
    let out = adsim(dir.path(), &["compare", "a", "d", "--out", "ad"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("left out: a: rates 0.05") && text.contains("left out: d: rates 0.33"),
        "{text}"
    );
    let out = adsim(dir.path(), &["compare", "a", "nowhere"]);
    assert!(stderr(&out).contains("nowhere") && !out.status.success());
}

#[test]
fn json_modes_and_completions_print_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = adsim(
        dir.path(),
        &[
            "run",
            "--users",
            "1500",
            "--replications",
            "2",
            "--out",
            "j",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run --json prints JSON");
    assert_eq!(v["users"], 1500);
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(43));
    let out = adsim(dir.path(), &["scenarios", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("scenarios --json prints JSON");
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(adsim::scenario::BUILTINS.len())
    );
    let out = adsim(dir.path(), &["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("adsim"));
    for cmd in [
        "run",
        "generate",
        "plot",
        "compare",
        "scenarios",
        "parameters",
        "completions",
    ] {
        let out = adsim(dir.path(), &[cmd, "--help"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example"),
            "{cmd} --help has no example"
        );
    }
}

/// `market.pricing` picks which revenue change leads the headline (docs/model.md §17.7):
/// the command line's first revenue column and the report's carry the auctions' figure by
/// default and the fixed price's with `fixed`, and no number written changes.
#[test]
fn the_pricing_mode_leads_the_headline_and_changes_no_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fixed.toml"),
        "name = \"fixed\"\n[population]\nusers = 3000\nreplications = 2\n[market]\npricing = \"fixed\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("auction.toml"),
        "name = \"fixed\"\n[population]\nusers = 3000\nreplications = 2\n",
    )
    .unwrap();
    let header = |out: &str| out.lines().next().unwrap_or_default().to_string();
    let auction = adsim_ok(dir.path(), &["run", "auction.toml", "--out", "a"]);
    let fixed = adsim_ok(dir.path(), &["run", "fixed.toml", "--out", "f"]);
    let (ha, hf) = (header(&auction), header(&fixed));
    assert!(
        ha.find("with auctions") < ha.find("at fixed prices"),
        "{ha}"
    );
    assert!(
        hf.find("at fixed prices") < hf.find("with auctions"),
        "{hf}"
    );
    let csv = |d: &str| std::fs::read(dir.path().join(d).join("summary.csv")).unwrap();
    assert!(csv("a") == csv("f"), "the mode changed a number");
    let sa = adsim::folder::read_parquet(&dir.path().join("a").join("summary.parquet")).unwrap();
    let md = |d: &str| std::fs::read_to_string(dir.path().join(d).join("report.md")).unwrap();
    assert!(md("a").contains("revenue change with auctions ($M"));
    assert!(md("f").contains("revenue change at fixed prices ($M"));
    // The first revenue cell of the first sharing row is the mode's figure.
    let row = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("opt_out_window "))
            .unwrap()
            .to_string()
    };
    let lead = |out: &str| {
        row(out)
            .split_whitespace()
            .nth(12)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let (arms, rates) = (
        adsim::table::texts(&sa, "arm"),
        adsim::table::floats(&sa, "rate"),
    );
    let i = (0..arms.len())
        .find(|&i| arms[i] == "opt_out_window" && rates[i] == 0.0)
        .unwrap();
    let first = |col: &str| adsim::table::floats(&sa, col)[i];
    assert!((lead(&auction) - first("market_revenue_change_musd")).abs() < 0.051);
    assert!((lead(&fixed) - first("revenue_change_musd")).abs() < 0.051);
    assert!((first("revenue_change_musd") - first("market_revenue_change_musd")).abs() > 1.0);
}
