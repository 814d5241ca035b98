//! The readable side of a run (docs/model.md §11): the charts, `report.md` and a self-contained
//! `report.html`, all drawn from the estimated tables only.
//!
//! The report is built once as a list of blocks ([`Block`]) and rendered to Markdown and to
//! HTML (charts inlined as base64 PNG), so the two never disagree.

use std::path::Path;

use polars::prelude::*;

use crate::charts::{BarChart, Chart, Line, LineChart, PALETTE, Point, Style, Unit, save};
pub use crate::document::{Block, html, markdown};
use crate::error::{Error, Result};
use crate::metrics::{ALL_REGIONS, Estimates};
use crate::policy::{ArmKind, Mode};
use crate::scenario::Resolved;
use crate::table::{floats, headline_rows, level_near, texts, with_ci};

/// One chart of the report.
#[derive(Clone, Debug)]
pub struct Figure {
    /// File stem (`relevance_vs_rate` gives `.png` and `.svg`).
    pub stem: &'static str,
    /// What the chart shows, one sentence.
    pub caption: String,
    /// The chart.
    pub chart: Chart,
}

struct ArmInfo {
    name: String,
    kind: ArmKind,
    /// The arm's own one rate in rate mode (drawn flat across the sweep, as `none`).
    fixed_rate: Option<f64>,
    style: Style,
}

/// The arms of a scenario with the style each has in every chart: the `none` arm black and
/// dashed, the sharing arms the palette's colours in scenario order.
fn arms(resolved: &Resolved) -> Vec<ArmInfo> {
    let mut colour = 0;
    resolved
        .scenario
        .policy
        .arms
        .iter()
        .map(|a| {
            let style = if a.kind == ArmKind::None {
                Style {
                    colour: PALETTE.len() - 1,
                    dashed: true,
                }
            } else {
                colour += 1;
                Style {
                    colour: (colour - 1) % (PALETTE.len() - 1),
                    dashed: false,
                }
            };
            ArmInfo {
                name: a.name.clone(),
                kind: a.kind,
                fixed_rate: a
                    .rate
                    .filter(|_| resolved.scenario.policy.mode == Mode::Rate),
                style,
            }
        })
        .collect()
}

/// Rows of `df` for arm `arm`, in rate order: (row index, rate).
fn rows_of(df: &DataFrame, arm: &str) -> Vec<(usize, f64)> {
    let names = texts(df, "arm");
    let rates = floats(df, "rate");
    let mut rows: Vec<(usize, f64)> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.as_str() == arm)
        .map(|(i, _)| (i, rates[i]))
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    rows
}

/// A line of `metric` (times `scale`) against the rate in percent, for one arm.
fn line_of(df: &DataFrame, arm: &ArmInfo, metric: &str, scale: f64) -> Line {
    let (m, lo, hi) = (
        floats(df, metric),
        floats(df, &format!("{metric}_lo")),
        floats(df, &format!("{metric}_hi")),
    );
    Line {
        label: arm.name.clone(),
        points: rows_of(df, &arm.name)
            .into_iter()
            .filter(|&(i, _)| m[i].is_finite())
            .map(|(i, r)| {
                let ci = (lo[i].is_finite() && hi[i].is_finite())
                    .then(|| (lo[i] * scale, hi[i] * scale));
                (r * 100.0, m[i] * scale, ci)
            })
            .collect(),
        style: arm.style,
    }
}

/// The value of an arm with one level (the none arm, or one with its own rate) drawn flat
/// across the sweep's rates, labelled with what it is.
fn flat_line(
    df: &DataFrame,
    arm: &ArmInfo,
    metric: &str,
    scale: f64,
    x: (f64, f64),
) -> Option<Line> {
    let l = line_of(df, arm, metric, scale);
    let (_, y, ci) = *l.points.first()?;
    let what = match arm.fixed_rate {
        Some(r) => format!("its one rate, {}%", r * 100.0),
        None => "no sharing".into(),
    };
    Some(Line {
        label: format!("{} ({what})", arm.name),
        points: vec![(x.0, y, ci), (x.1, y, ci)],
        style: arm.style,
    })
}

/// A line chart against the target opt-out rate.
fn rate_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_unit: Unit,
    y_from_zero: bool,
    lines: Vec<Line>,
) -> Chart {
    Chart::Lines(LineChart {
        title: title.into(),
        x_label: x_label.into(),
        x_unit: Unit::Percent,
        y_label: y_label.into(),
        y_unit,
        x_from_zero: false,
        y_from_zero,
        lines,
        ..Default::default()
    })
}

/// A note for a caption when sharing arms coincide on `metric` (scopes `ads` and `all` do on
/// every targeting outcome, by design: only what is sent to S differs).
fn coincide_note(lines: &[Line]) -> String {
    let same: Vec<String> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            lines[..i]
                .iter()
                .find(|e| !l.points.is_empty() && e.points == l.points)
                .map(|e| {
                    format!(
                        "`{}` coincides with `{}` (drawn dashed over it)",
                        l.label, e.label
                    )
                })
        })
        .collect();
    if same.is_empty() {
        String::new()
    } else {
        format!(" {}.", same.join("; "))
    }
}

/// The charts of a run.
pub fn figures(resolved: &Resolved, e: &Estimates) -> Vec<Figure> {
    let arms = arms(resolved);
    let none = arms.iter().find(|a| a.kind == ArmKind::None);
    let sharing: Vec<&ArmInfo> = arms.iter().filter(|a| a.kind != ArmKind::None).collect();
    let s = &e.summary;
    let rates = floats(s, "rate");
    let x = rates
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), r| {
            (a.min(r * 100.0), b.max(r * 100.0))
        });
    let intervals = if resolved.scenario.population.replications > 1 {
        ", shaded: 95% interval"
    } else {
        ""
    };
    let rate_axis = match resolved.scenario.policy.mode {
        Mode::Rate => "target opt-out rate",
        Mode::Behavioral => "opt-out rate set by each arm's design",
    };
    let lines_for = |metric: &str, scale: f64, with_none: bool| -> Vec<Line> {
        let mut lines: Vec<Line> = sharing
            .iter()
            .filter_map(|a| match a.fixed_rate {
                Some(_) => flat_line(s, a, metric, scale, x).filter(|_| x.0 <= x.1),
                None => Some(line_of(s, a, metric, scale)),
            })
            .collect();
        if with_none && x.0 <= x.1 {
            lines.extend(none.and_then(|n| flat_line(s, n, metric, scale, x)));
        }
        lines
    };
    let relevance = lines_for("precision", 100.0, true);
    let matches = lines_for("ca_match_rate", 100.0, true);
    let revenue = lines_for("revenue_change_musd", 1.0, false);
    let frontier: Vec<Line> = sharing
        .iter()
        .map(|a| {
            let (p, g) = (floats(s, "people_shared"), floats(s, "precision_vs_none"));
            Line {
                label: a.name.clone(),
                points: rows_of(s, &a.name)
                    .into_iter()
                    .map(|(i, _)| (p[i] / 1e6, g[i] * 100.0, None))
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect(),
                style: a.style,
            }
        })
        .collect();
    let mut out = vec![
        Figure {
            stem: "relevance_vs_rate",
            caption: format!(
                "Audience precision against the opt-out rate, one line per arm{intervals}.{}",
                coincide_note(&relevance)
            ),
            chart: rate_chart(
                "Targeting relevance vs opt-out rate",
                rate_axis,
                "audience precision",
                Unit::Percent,
                false,
                relevance,
            ),
        },
        Figure {
            stem: "match_rate_vs_rate",
            caption: format!(
                "Custom Audience match rate (right or wrong person) against the opt-out rate{intervals}.{}",
                coincide_note(&matches)
            ),
            chart: rate_chart(
                "Custom Audience match rate vs opt-out rate",
                rate_axis,
                "uploads matched",
                Unit::Percent,
                false,
                matches,
            ),
        },
        Figure {
            stem: "revenue_vs_rate",
            caption: format!(
                "Change in S's quarterly ad revenue from M users' accounts against no sharing, at full scale{intervals}.{}",
                coincide_note(&revenue)
            ),
            chart: rate_chart(
                "Revenue change vs opt-out rate",
                rate_axis,
                "revenue change per quarter",
                Unit::MillionsUsd,
                true,
                revenue,
            ),
        },
        Figure {
            stem: "frontier",
            caption: format!(
                "Privacy/utility frontier: people whose number went to S against the gain in audience precision over no sharing, one point per rate level.{}",
                coincide_note(&frontier)
            ),
            chart: Chart::Lines(LineChart {
                title: "People exposed vs relevance gained".into(),
                x_label: "people whose number went to S".into(),
                x_unit: Unit::Millions,
                y_label: "precision gain over no sharing".into(),
                y_unit: Unit::Points,
                x_from_zero: true,
                y_from_zero: true,
                lines: frontier,
                ..Default::default()
            }),
        },
    ];
    if let Some(first) = sharing.iter().find(|a| a.fixed_rate.is_none()) {
        out.push(market_chart(s, first, rate_axis, intervals));
        out.push(prices_chart(s, first, rate_axis, intervals));
        out.push(who_gains_chart(e, first, rate_axis, intervals));
    }
    if let (Some(first), Some(none)) = (sharing.first(), none) {
        out.push(segment_lift(resolved, e, &none.name, &first.name));
        if let Some(f) = selection_chart(resolved, e, &first.name) {
            out.push(f);
        }
        out.push(timeline(e, &first.name));
        out.push(revenue_days_chart(e, &sharing));
        out.push(links_by_country(e, &first.name));
    }
    out
}

fn segment_lift(resolved: &Resolved, e: &Estimates, none: &str, arm: &str) -> Figure {
    let seg = &e.segments;
    let names: Vec<String> = resolved
        .data
        .segment_names()
        .into_iter()
        .map(String::from)
        .collect();
    let (arms, segs, rates, precision) = (
        texts(seg, "arm"),
        texts(seg, "segment"),
        floats(seg, "rate"),
        floats(seg, "precision"),
    );
    let value = |a: &str, s: &str, r: f64| {
        (0..seg.height())
            .find(|&i| arms[i] == a && segs[i] == s && (rates[i] - r).abs() < 1e-9)
            .map_or(f64::NAN, |i| precision[i])
    };
    let mut levels: Vec<f64> = (0..seg.height())
        .filter(|&i| arms[i] == arm)
        .map(|i| rates[i])
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let chosen: Vec<f64> = match levels.len() {
        0 => vec![],
        1 => vec![levels[0]],
        _ => {
            let half = levels
                .iter()
                .copied()
                .min_by(|a, b| (a - 0.5).abs().total_cmp(&(b - 0.5).abs()))
                .unwrap_or(levels[0]);
            vec![levels[0], half]
        }
    };
    let groups = chosen
        .iter()
        .map(|&r| {
            let lifts = names
                .iter()
                .map(|s| (value(arm, s, r) / value(none, s, 0.0) - 1.0) * 100.0)
                .collect();
            (format!("{arm} at {:.0}% opt-out", r * 100.0), lifts)
        })
        .collect();
    Figure {
        stem: "segment_lift",
        caption: format!(
            "Per-segment lift in audience precision of {arm} over no sharing, at chosen opt-out rates."
        ),
        chart: Chart::Bars(BarChart {
            title: "Per-segment relevance lift".into(),
            x_label: "audience precision change over no sharing".into(),
            x_unit: Unit::Percent,
            categories: names,
            groups,
            ..Default::default()
        }),
    }
}

/// The value of a click on each segment's campaigns, dollars (docs/model.md §8).
fn click_values(resolved: &Resolved) -> Vec<(String, f64)> {
    resolved
        .data
        .segment_names()
        .into_iter()
        .map(String::from)
        .zip(resolved.click_values())
        .collect()
}

/// Opted-out share by segment at the level nearest 50%, each segment labelled with its click
/// value (docs/model.md §9.3). None when the arm has no opt-outs there.
fn selection_chart(resolved: &Resolved, e: &Estimates, arm: &str) -> Option<Figure> {
    let seg = &e.segments;
    let (rate, rows) = level_near(seg, arm, 0.5)?;
    let share = floats(seg, "opted_out_share");
    let names = texts(seg, "segment");
    let values = click_values(resolved);
    let mut bars: Vec<(String, f64)> = rows
        .iter()
        .map(|&i| {
            let cpc = values
                .iter()
                .find(|(n, _)| *n == names[i])
                .map_or(f64::NAN, |v| v.1);
            (format!("{} (${cpc:.2})", names[i]), share[i] * 100.0)
        })
        .filter(|(_, v)| v.is_finite())
        .collect();
    if bars.iter().all(|(_, v)| *v == 0.0) {
        return None;
    }
    bars.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(Figure {
        stem: "selection",
        caption: format!(
            "Who opts out: share of the users interested in each segment who opted out, {arm} at {:.0}% opt-out, most first; in brackets the segment's value per click (docs/model.md §8). Segments whose users opt out more lose more of their targeting.",
            rate * 100.0
        ),
        chart: Chart::Bars(BarChart {
            title: "Opted out, by segment".into(),
            x_label: "users interested in the segment who opted out".into(),
            x_unit: Unit::Percent,
            categories: bars.iter().map(|b| b.0.clone()).collect(),
            groups: vec![(
                format!("{arm} at {:.0}% opt-out", rate * 100.0),
                bars.iter().map(|b| b.1).collect(),
            )],
            ..Default::default()
        }),
    })
}

fn timeline(e: &Estimates, arm: &str) -> Figure {
    let t = &e.timeline;
    let (arms, rates, days, channels, people) = (
        texts(t, "arm"),
        floats(t, "rate"),
        floats(t, "day"),
        texts(t, "channel"),
        floats(t, "people"),
    );
    let mut levels: Vec<f64> = (0..t.height())
        .filter(|&i| arms[i] == arm)
        .map(|i| rates[i])
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let rate = levels
        .iter()
        .copied()
        .min_by(|a, b| (a - 0.1).abs().total_cmp(&(b - 0.1).abs()))
        .unwrap_or(0.0);
    let series = |channel: &str, cumulative: bool, colour: usize| {
        let mut pts: Vec<(f64, f64)> = (0..t.height())
            .filter(|&i| arms[i] == arm && channels[i] == channel && (rates[i] - rate).abs() < 1e-9)
            .map(|i| (days[i], people[i] / 1e6))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut acc = 0.0;
        Line {
            label: match channel {
                "notice" => "acted at the notice (cumulative)".into(),
                "settings" => "acted in Settings (cumulative)".into(),
                _ => "data in ad use".into(),
            },
            points: pts
                .into_iter()
                .map(|(d, v)| {
                    acc += v;
                    (d, if cumulative { acc } else { v }, None)
                })
                .collect(),
            style: Style {
                colour,
                dashed: false,
            },
        }
    };
    Figure {
        stem: "timeline",
        caption: format!(
            "{arm} at {:.0}% opt-out: users who acted at the notice and in Settings, cumulative, and users whose data is in ad use, by day.",
            rate * 100.0
        ),
        chart: Chart::Lines(LineChart {
            title: format!("Opt-out timeline, {arm} at {:.0}% opt-out", rate * 100.0),
            x_label: "days after the notice".into(),
            x_unit: Unit::Days,
            y_label: "people".into(),
            y_unit: Unit::Millions,
            x_from_zero: true,
            y_from_zero: true,
            lines: vec![
                series("notice", true, 0),
                series("settings", true, 1),
                series("in_ad_use", false, 2),
            ],
            ..Default::default()
        }),
    }
}

/// The sharing arms whose per-day revenue differs from every earlier arm's (arms with the same
/// ad use, such as scopes `ads` and `all` of one design, have the same), each with the arms
/// that equal it.
fn distinct_revenue_arms(e: &Estimates, sharing: &[&ArmInfo]) -> Vec<(String, Vec<String>)> {
    let r = &e.revenue_days;
    let (arms, values) = (texts(r, "arm"), floats(r, "revenue_change_musd"));
    let series = |arm: &str| -> Vec<f64> {
        (0..r.height())
            .filter(|&i| arms[i] == arm)
            .map(|i| values[i])
            .collect()
    };
    let mut out: Vec<(String, Vec<String>, Vec<f64>)> = Vec::new();
    for a in sharing {
        let v = series(&a.name);
        match out.iter_mut().find(|(_, _, w)| *w == v) {
            Some((_, same, _)) => same.push(a.name.clone()),
            None => out.push((a.name.clone(), Vec::new(), v)),
        }
    }
    out.into_iter().map(|(a, same, _)| (a, same)).collect()
}

/// The revenue change per day by S region (docs/model.md §8): a panel per sharing arm (at most
/// four, arms with equal days shown once), its regions at the level nearest 50% opt-out and
/// all regions at 0% and at that level.
fn revenue_days_chart(e: &Estimates, sharing: &[&ArmInfo]) -> Figure {
    let r = &e.revenue_days;
    let (arms, rates, regions, days, m, lo, hi) = (
        texts(r, "arm"),
        floats(r, "rate"),
        texts(r, "region"),
        floats(r, "day"),
        floats(r, "revenue_change_musd"),
        floats(r, "revenue_change_musd_lo"),
        floats(r, "revenue_change_musd_hi"),
    );
    let mut region_names: Vec<String> = Vec::new();
    for g in &regions {
        if g != ALL_REGIONS && !region_names.contains(g) {
            region_names.push(g.clone());
        }
    }
    let series = |arm: &str, rate: f64, region: &str| -> Vec<Point> {
        (0..r.height())
            .filter(|&i| arms[i] == arm && regions[i] == region && (rates[i] - rate).abs() < 1e-12)
            .map(|i| {
                let ci = (lo[i].is_finite() && hi[i].is_finite()).then_some((lo[i], hi[i]));
                (days[i], m[i], ci)
            })
            .collect()
    };
    let shown = distinct_revenue_arms(e, sharing);
    let mut rate_used = 0.5;
    let panels: Vec<LineChart> = shown
        .iter()
        .take(4)
        .map(|(arm, same)| {
            let (rate, _) = level_near(r, arm, 0.5).unwrap_or((0.0, Vec::new()));
            let (low, _) = level_near(r, arm, 0.0).unwrap_or((0.0, Vec::new()));
            rate_used = rate;
            let pct = |x: f64| format!("{:.0}%", x * 100.0);
            let mut lines = vec![
                Line {
                    label: format!("all regions, {} opt-out", pct(low)),
                    points: series(arm, low, ALL_REGIONS),
                    style: Style {
                        colour: 0,
                        dashed: true,
                    },
                },
                Line {
                    label: format!("all regions, {}", pct(rate)),
                    points: series(arm, rate, ALL_REGIONS),
                    style: Style {
                        colour: 0,
                        dashed: false,
                    },
                },
            ];
            for (j, g) in region_names.iter().enumerate() {
                lines.push(Line {
                    label: format!("{g}, {}", pct(rate)),
                    points: series(arm, rate, g),
                    style: Style {
                        colour: j + 1,
                        dashed: false,
                    },
                });
            }
            let also = if same.is_empty() {
                String::new()
            } else {
                format!(" (same: {})", same.join(", "))
            };
            LineChart {
                title: format!("Revenue change per day, {arm}{also}"),
                x_label: "days after the notice".into(),
                x_unit: Unit::Days,
                y_label: "revenue change per day".into(),
                y_unit: Unit::MillionsUsd,
                x_from_zero: true,
                y_from_zero: true,
                lines,
                ..Default::default()
            }
        })
        .collect();
    let more = if shown.len() > 4 {
        format!(
            " Arms not drawn ({}) are in `revenue_days.csv`.",
            shown[4..]
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    Figure {
        stem: "revenue_days",
        caption: format!(
            "S's revenue change per day against no sharing, by S region (anchored per region), for each arm: all regions at the lowest rate level (dashed) and at the level nearest {:.0}% opt-out, with each region at that level. It changes on the days users opt out in Settings, agree late, or a regional rule pauses ad use.{more}",
            rate_used * 100.0
        ),
        chart: Chart::Panels(panels),
    }
}

fn links_by_country(e: &Estimates, arm: &str) -> Figure {
    let c = &e.countries;
    let (arms, rates, countries) = (texts(c, "arm"), floats(c, "rate"), texts(c, "country"));
    let (precision, recall) = (floats(c, "link_precision"), floats(c, "link_recall"));
    let low = (0..c.height())
        .filter(|&i| arms[i] == arm)
        .map(|i| rates[i])
        .fold(f64::MAX, f64::min);
    let rows: Vec<usize> = (0..c.height())
        .filter(|&i| arms[i] == arm && (rates[i] - low).abs() < 1e-9)
        .collect();
    Figure {
        stem: "links_by_country",
        caption: format!(
            "{arm} at its lowest opt-out rate: share of links that reach the sender's own account (precision) and share of shared users with an account linked to it (recall), by country."
        ),
        chart: Chart::Bars(BarChart {
            title: "Link outcomes by country".into(),
            x_label: "share".into(),
            x_unit: Unit::Percent,
            categories: rows.iter().map(|&i| countries[i].clone()).collect(),
            groups: vec![
                (
                    "link precision".into(),
                    rows.iter().map(|&i| precision[i] * 100.0).collect(),
                ),
                (
                    "link recall".into(),
                    rows.iter().map(|&i| recall[i] * 100.0).collect(),
                ),
            ],
            ..Default::default()
        }),
    }
}

/// Revenue change at fixed prices and with auctions, and advertisers' surplus change, of one
/// sweeping arm against the opt-out rate (docs/model.md §17.5).
fn market_chart(s: &DataFrame, arm: &ArmInfo, rate_axis: &str, intervals: &str) -> Figure {
    let line = |metric: &str, label: &str, colour: usize, dashed: bool| {
        let mut l = line_of(s, arm, metric, 1.0);
        l.label = label.to_string();
        l.style = Style { colour, dashed };
        l
    };
    let lines = vec![
        line(
            "revenue_change_musd",
            "S's revenue, fixed prices per click",
            0,
            true,
        ),
        line(
            "market_revenue_change_musd",
            "S's revenue, prices from the auctions",
            0,
            false,
        ),
        line(
            "market_surplus_change_musd",
            "advertisers' surplus, with the auctions",
            1,
            false,
        ),
    ];
    Figure {
        stem: "market_vs_rate",
        caption: format!(
            "What sharing changes for S and for advertisers under {}, against no sharing, $M over the horizon{intervals}. Dashed: today's fixed price per click; solid: prices from the advertisers' auctions with budgets fixed over the horizon (docs/model.md §17.5; per region and advertiser size in `market.csv`).",
            arm.name
        ),
        chart: rate_chart(
            "Revenue and surplus with auctions vs opt-out rate",
            rate_axis,
            "change against no sharing",
            Unit::MillionsUsd,
            true,
            lines,
        ),
    }
}

/// Prices per 1000 impressions of one sweeping arm against the opt-out rate: targeted and
/// untargeted, with and without M's data in use (docs/model.md §17.5).
fn prices_chart(s: &DataFrame, arm: &ArmInfo, rate_axis: &str, intervals: &str) -> Figure {
    let line = |metric: &str, label: &str, colour: usize, dashed: bool| {
        let mut l = line_of(s, arm, metric, 1.0);
        l.label = label.to_string();
        l.style = Style { colour, dashed };
        l
    };
    let lines = vec![
        line("market_cpm_targeted_usd", "targeted impressions", 0, false),
        line(
            "market_cpm_untargeted_usd",
            "untargeted impressions",
            0,
            true,
        ),
        line("market_cpm_linked_usd", "with M's data in use", 1, false),
        line(
            "market_cpm_unlinked_usd",
            "without M's data in use",
            1,
            true,
        ),
    ];
    Figure {
        stem: "prices_vs_rate",
        caption: format!(
            "Prices per 1000 impressions under {} from the advertisers' auctions, in dollars at the published costs per click{intervals}: targeted (interest and Custom Audience campaigns) and untargeted impressions, and impressions on accounts with and without M's data in use (docs/model.md §17.5). At 100% target opt-out few accounts have M's data in use, so their price rests on few impressions.",
            arm.name
        ),
        chart: rate_chart(
            "Prices vs opt-out rate",
            rate_axis,
            "price per 1000 impressions",
            Unit::Usd,
            false,
            lines,
        ),
    }
}

/// Who gains and who pays under one sweeping arm against the opt-out rate: S's revenue and the
/// surplus of large and small advertisers, each against no sharing, paired by replication.
fn who_gains_chart(e: &Estimates, arm: &ArmInfo, rate_axis: &str, intervals: &str) -> Figure {
    let m = &e.market;
    let (arms, regions, sizes) = (texts(m, "arm"), texts(m, "region"), texts(m, "size"));
    let rates = floats(m, "rate");
    let size_line = |size: &str, label: &str, colour: usize| {
        let (v, lo, hi) = (
            floats(m, "surplus_change_musd"),
            floats(m, "surplus_change_musd_lo"),
            floats(m, "surplus_change_musd_hi"),
        );
        let mut points: Vec<Point> = (0..m.height())
            .filter(|&i| arms[i] == arm.name && regions[i] == ALL_REGIONS && sizes[i] == size)
            .filter(|&i| v[i].is_finite())
            .map(|i| {
                let ci = (lo[i].is_finite() && hi[i].is_finite()).then_some((lo[i], hi[i]));
                (rates[i] * 100.0, v[i], ci)
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Line {
            label: label.to_string(),
            points,
            style: Style {
                colour,
                dashed: false,
            },
        }
    };
    let mut revenue = line_of(&e.summary, arm, "market_revenue_change_musd", 1.0);
    revenue.label = "S (revenue)".into();
    revenue.style = Style {
        colour: 0,
        dashed: false,
    };
    let lines = vec![
        revenue,
        size_line("large", "large advertisers (surplus)", 1),
        size_line("small", "small advertisers (surplus)", 2),
    ];
    Figure {
        stem: "who_gains",
        caption: format!(
            "Who gains and who pays under {}, with prices from the advertisers' auctions: S's revenue and the surplus (value less spend) of the large advertisers (the largest fifth of each market) and the small ones, each against no sharing, $M over the horizon{intervals}. Users pay in exposure: the people whose data is in ad use at each rate are in the frontier chart and `summary.csv` (`people_in_ad_use`, `exposure_person_days`).",
            arm.name
        ),
        chart: rate_chart(
            "Who gains from sharing vs opt-out rate",
            rate_axis,
            "change against no sharing",
            Unit::MillionsUsd,
            true,
            lines,
        ),
    }
}

/// The advertiser-side figures of the sharing arms at a few levels (docs/model.md §17.5).
fn market(resolved: &Resolved, e: &Estimates) -> Vec<Block> {
    let sum = &e.summary;
    let (names, rates) = (texts(sum, "arm"), floats(sum, "rate"));
    let h = resolved.scenario.policy.horizon_days;
    let header = [
        "arm".to_string(),
        "target rate".into(),
        format!("S's revenue change ($M, {h} days)"),
        "advertisers' surplus change ($M)".into(),
        "price per click ($)".into(),
        "targeted / untargeted price".into(),
        "without / with M data, price".into(),
        "cost per customer ($)".into(),
        "advertisers paced (%)".into(),
    ]
    .to_vec();
    let rows = headline_rows(sum)
        .into_iter()
        .map(|i| {
            vec![
                names[i].clone(),
                format!("{:.2}", rates[i]),
                with_ci(sum, "market_revenue_change_musd", i, 1.0, 1),
                with_ci(sum, "market_surplus_change_musd", i, 1.0, 1),
                with_ci(sum, "market_price_per_click_usd", i, 1.0, 3),
                with_ci(sum, "market_targeted_price_ratio", i, 1.0, 2),
                with_ci(sum, "market_unlinked_price_ratio", i, 1.0, 2),
                with_ci(sum, "market_cost_per_customer_usd", i, 1.0, 3),
                with_ci(sum, "market_paced_share", i, 100.0, 1),
            ]
        })
        .collect();
    let m = &resolved.scenario.market;
    vec![
        Block::Heading(2, "With prices from the advertisers' auctions".into()),
        Block::Para(format!(
            "Each S region's impressions are sold in auctions: per segment an interest market ({} advertisers) and a Custom Audience market ({}), and a run-of-network market ({}); second price on bid x predicted CTR above a reserve of {}% of the value per click; values {}% above the published cost per click; budgets set on no sharing at {} times its unpaced spend, the largest fifth of each market's advertisers holding {:.0}% of them, and held over the horizon (elasticity {}). S's revenue is the advertisers' spend, anchored as above (docs/model.md §17.5). Prices per click and per impression are in dollars at the published costs per click; `market.csv` has spend, value, surplus, price per click and cost per customer by S region and advertiser size.",
            m.bidders_interest,
            m.bidders_custom_audience,
            m.bidders_run_of_network,
            m.reserve_share * 100.0,
            m.margin * 100.0,
            m.budget_ratio,
            m.large_budget_share * 100.0,
            m.budget_elasticity
        )),
        Block::Table(header, rows),
    ]
}

/// The blocks of the report, a function per section.
pub fn blocks(
    resolved: &Resolved,
    e: &Estimates,
    figures: &[Figure],
    calibration: Vec<Block>,
) -> Vec<Block> {
    let s = &resolved.scenario;
    let mut b = vec![
        Block::Heading(1, format!("adsim report: {}", s.name)),
        Block::Para(s.description.clone()),
    ];
    b.extend(simulated(resolved));
    b.extend(headline(resolved, e));
    b.extend(market(resolved, e));
    b.extend(selection(resolved, e));
    b.extend(over_the_quarter(resolved, e));
    b.push(Block::Heading(2, "Charts".into()));
    for f in figures {
        b.push(Block::Image(format!("{}.png", f.stem), f.caption.clone()));
    }
    b.extend(calibration);
    b.extend(caveats(resolved));
    b
}

/// "What was simulated": the arms, the sweep, the size, and the main assumptions.
fn simulated(resolved: &Resolved) -> Vec<Block> {
    let s = &resolved.scenario;
    let p = &s.population;
    let mut b = vec![Block::Heading(2, "What was simulated".into())];
    let arms_text: Vec<String> = s
        .policy
        .arms
        .iter()
        .map(|a| {
            let mut t = format!("`{}` ({}", a.name, snake(&a.kind));
            if a.kind == ArmKind::OptOutWindow {
                t.push_str(&format!(", scope {}", snake(&a.scope)));
            }
            if let Some(r) = a.rate {
                t.push_str(&format!(", its one rate {}%", r * 100.0));
            }
            if let Some(m) = a.m_evidence {
                t.push_str(&format!(", M evidence {}", snake(&m)));
            }
            if s.policy.baseline.as_ref() == Some(&a.name) {
                t.push_str(", the baseline");
            }
            for r in &a.regional {
                t.push_str(&format!(
                    ", {} in {} from day {}",
                    snake(&r.rule),
                    r.countries.join("/"),
                    r.from_day
                ));
            }
            t.push(')');
            t
        })
        .collect();
    let mode = match s.policy.mode {
        Mode::Rate => format!(
            "a sweep of {} target opt-out rates from {:.0}% to {:.0}%",
            s.policy.rates.len(),
            s.policy.rates.first().unwrap_or(&0.0) * 100.0,
            s.policy.rates.last().unwrap_or(&0.0) * 100.0
        ),
        Mode::Behavioral => "rates derived from each arm's design (behavioral mode)".into(),
    };
    b.push(Block::Para(format!(
        "{} synthetic M users in each of {} replications (seed {}), scaled to {:.0} million real users; arms {}; {}. \
         Who opts out follows a latent privacy score with heterogeneity {} (country, age and interest shifts from data/); \
         users accept the terms over {} days after the notice; {:.0}% read the notice and act on accepting (assumption), \
         the others act in Settings within {} days of accepting; {:.0}% join during the horizon, with no opt-out under an opt-out window (assumption).",
        p.users,
        p.replications,
        p.seed,
        s.revenue.m_users_millions,
        arms_text.join(", "),
        mode,
        s.opt_out.heterogeneity,
        s.policy.acceptance_days,
        s.policy.notice_read_rate * 100.0,
        s.policy.window_days,
        s.policy.new_user_share * 100.0
    )));
    let t = &s.targeting;
    b.push(Block::Table(
        vec!["parameter".into(), "value".into(), "source".into()],
        vec![
            row([
                "on-platform detection recall / false-positive rate",
                &format!("{} / {}", t.on_platform_recall, t.on_platform_fpr),
                "assumption (Pew 2019: 59% of users found their categories accurate)",
            ]),
            match t.m_evidence {
                crate::targeting::MEvidence::None => row([
                    "interest evidence in M's data",
                    "none",
                    "the 2016 record: number, registration, last-seen and device data; no message content (docs/model.md §6.1)",
                ]),
                crate::targeting::MEvidence::BusinessMessaging => row([
                    "M business-messaging detection recall / false-positive rate",
                    &format!("{} / {}", t.m_recall, t.m_fpr),
                    "assumption",
                ]),
            },
            row([
                "CTR relevant / irrelevant / untargeted / customer (Custom Audience)",
                &format!(
                    "{} / {} / {} / {}",
                    t.ctr_relevant, t.ctr_irrelevant, t.ctr_untargeted, t.ctr_customer
                ),
                "assumptions (docs/model.md §14); clicks valued per segment (WordStream 2017, §8)",
            ]),
            row([
                "Custom Audience formatting faults, normalization",
                &format!(
                    "{}, {}",
                    s.audiences.fault_rate,
                    snake(&s.audiences.normalization)
                ),
                "assumption",
            ]),
            row([
                "revenue anchor",
                &match s.revenue.anchor {
                    crate::revenue::Anchor::Calendar2016 => {
                        "each day at the ARPU and ad share of its quarter (Q3, Q4 2016)".to_string()
                    }
                    crate::revenue::Anchor::Q22016 => format!(
                        "Q2 2016 ARPU by region, ad share {:.3}",
                        s.revenue.ad_share()
                    ),
                },
                "Facebook Q2-Q4 2016 earnings (docs/model.md §8.2)",
            ]),
            row([
                "advertisers per market (interest / Custom Audience / untargeted); margin; budgets",
                &format!(
                    "{} / {} / {}; {}% above the published CPC; {} x the unpaced spend without sharing, elasticity {}",
                    s.market.bidders_interest,
                    s.market.bidders_custom_audience,
                    s.market.bidders_run_of_network,
                    s.market.margin * 100.0,
                    s.market.budget_ratio,
                    s.market.budget_elasticity
                ),
                "assumptions (docs/model.md §17.5)",
            ]),
            row([
                "countries, segments, age bands",
                &format!(
                    "{} / {} / {}",
                    resolved.data.countries.country.len(),
                    resolved.data.segments.segment.len(),
                    resolved.data.age_bands.band.len()
                ),
                "data/*.toml, each number with its source or \"assumption\"",
            ]),
        ],
    ));
    b
}

/// "Headline results": every arm at the headline rates, with intervals.
fn headline(resolved: &Resolved, e: &Estimates) -> Vec<Block> {
    let p = &resolved.scenario.population;
    let mut b = vec![Block::Heading(2, "Headline results".into())];
    let sum = &e.summary;
    let (names, rates) = (texts(sum, "arm"), floats(sum, "rate"));
    let shown = headline_rows(sum);
    let h = resolved.scenario.policy.horizon_days;
    let baseline = resolved.scenario.policy.baseline.as_deref();
    let mut header: Vec<String> = [
        "arm",
        "target rate",
        "achieved",
        "in ad use",
        "precision (%)",
        "CTR (%)",
        "CA match (%)",
        "CA clicks (%)",
    ]
    .map(String::from)
    .to_vec();
    let pricing = resolved.scenario.market.pricing;
    let ([first, second], [lead, other]) = (pricing.columns(), pricing.labels());
    header.push(format!("revenue change {lead} ($M, {h} days)"));
    header.push(format!("{other} ($M)"));
    if let Some(base) = baseline {
        header.push(format!("against {base}, at fixed prices ($M)"));
    }
    header.extend(
        [
            "share of S ad revenue, fixed prices (%)",
            "people mislinked (M)",
        ]
        .map(String::from),
    );
    b.push(Block::Table(
        header,
        shown
            .iter()
            .map(|&i| {
                let mut row = vec![
                    names[i].clone(),
                    format!("{:.2}", rates[i]),
                    with_ci(sum, "achieved_rate", i, 1.0, 3),
                    with_ci(sum, "share_in_ad_use", i, 1.0, 3),
                    with_ci(sum, "precision", i, 100.0, 2),
                    with_ci(sum, "ctr", i, 100.0, 3),
                    with_ci(sum, "ca_match_rate", i, 100.0, 1),
                    with_ci(sum, "ca_click_share", i, 100.0, 1),
                    with_ci(sum, first, i, 1.0, 1),
                    with_ci(sum, second, i, 1.0, 1),
                ];
                if baseline.is_some() {
                    row.push(with_ci(sum, "revenue_change_vs_baseline_musd", i, 1.0, 1));
                }
                row.push(with_ci(sum, "revenue_change_share", i, 100.0, 2));
                row.push(with_ci(sum, "people_mislinked", i, 1e-6, 1));
                row
            })
            .collect(),
    ));
    if let Some(base) = baseline {
        b.push(Block::Para(format!(
            "Revenue change is measured against no sharing; \"against {base}\" is the same less {base}'s, replication by replication (`policy.baseline`): what the arm adds to that arm's sharing (docs/model.md §4.1)."
        )));
    }
    b.push(Block::Para(format!(
        "The headline revenue change is priced {lead} (`market.pricing = \"{}\"`); the column beside it is the same change {other}, so the two show what the demand side changes. With auctions, advertisers' budgets are fixed over the horizon and prices come from their competition for each impression (docs/model.md §17); at fixed prices each click is worth its segment's published cost per click (§8). The revenue by day below (and in `revenue_days.csv`) is at fixed prices.",
        match pricing {
            crate::demand::Pricing::Auction => "auction",
            crate::demand::Pricing::Fixed => "fixed",
        }
    )));
    b.push(Block::Para(if p.replications > 1 {
        format!("Brackets: 95% intervals over {} replications. They cover Monte Carlo noise only, not uncertainty in the assumed parameters.", p.replications)
    } else {
        "One replication: no intervals.".into()
    }));
    b
}

/// "Over the quarter": the revenue change on a few days of each arm, all regions together, at
/// the level nearest 50% opt-out (docs/model.md §8).
fn over_the_quarter(resolved: &Resolved, e: &Estimates) -> Vec<Block> {
    let arms = arms(resolved);
    let sharing: Vec<&ArmInfo> = arms.iter().filter(|a| a.kind != ArmKind::None).collect();
    let shown = distinct_revenue_arms(e, &sharing);
    if shown.is_empty() {
        return Vec::new();
    }
    let r = &e.revenue_days;
    let (regions, days, values) = (
        texts(r, "region"),
        floats(r, "day"),
        floats(r, "revenue_change_musd"),
    );
    let h = resolved.scenario.policy.horizon_days;
    let window = resolved
        .scenario
        .policy
        .window_days
        .min(h.saturating_sub(1));
    let mut picked = vec![0, window, h.saturating_sub(1)];
    picked.dedup();
    let mut header = vec!["arm".to_string(), "rate".to_string()];
    header.extend(picked.iter().map(|d| format!("day {d} ($M)")));
    header.push("quarter, sum of days ($M)".into());
    let rows = shown
        .iter()
        .filter_map(|(arm, same)| {
            let (rate, rows) = level_near(r, arm, 0.5)?;
            let all: Vec<usize> = rows
                .into_iter()
                .filter(|&i| regions[i] == ALL_REGIONS)
                .collect();
            let name = if same.is_empty() {
                arm.clone()
            } else {
                format!("{arm} (= {})", same.join(", "))
            };
            let mut row = vec![name, format!("{rate:.2}")];
            for &d in &picked {
                row.push(
                    all.iter()
                        .find(|&&i| days[i] == f64::from(d))
                        .map_or("-".into(), |&i| {
                            with_ci(r, "revenue_change_musd", i, 1.0, 3)
                        }),
                );
            }
            let total: f64 = all.iter().map(|&i| values[i]).sum();
            row.push(format!("{total:.1}"));
            Some(row)
        })
        .collect();
    vec![
        Block::Heading(2, "Over the quarter".into()),
        Block::Para(format!(
            "S's revenue change against no sharing, per day, all regions together, at the level nearest 50% opt-out. A user's data counts on the days it is in ad use: accepting the terms (or joining) starts it, opting out in Settings ends it on that day, a late agreement starts it, a regional pause stops it. The quarter's change is the sum of its {h} days (it equals the headline's up to rounding); `revenue_days.csv` has every day, level and S region, and the chart `revenue_days.png` draws them."
        )),
        Block::Table(header, rows),
    ]
}

/// "Who opts out": the value of the accounts that stay in ad use against the whole base, and
/// the segments whose users opt out most, with their click values (docs/model.md §9.3).
fn selection(resolved: &Resolved, e: &Estimates) -> Vec<Block> {
    let s = &resolved.scenario;
    let Some(arm) = s
        .policy
        .arms
        .iter()
        .find(|a| a.kind != ArmKind::None)
        .map(|a| a.name.clone())
    else {
        return vec![];
    };
    let sum = &e.summary;
    let Some((rate, rows)) = level_near(sum, &arm, 0.5) else {
        return vec![];
    };
    let Some(&i) = rows.first() else {
        return vec![];
    };
    let mut b = vec![Block::Heading(2, "Who opts out".into())];
    let low = level_near(sum, &arm, 0.0).and_then(|(_, r)| r.first().copied());
    let ratio = floats(sum, "value_ratio_in_ad_use");
    let mut text = format!(
        "Under {arm} at {:.0}% opt-out, an account-day with M data in ad use is worth {} times the average account-day of all accounts (value: expected clicks times the segment's value per click; the not-in-ad-use account-days: {}).",
        rate * 100.0,
        with_ci(sum, "value_ratio_in_ad_use", i, 1.0, 3),
        with_ci(sum, "value_ratio_not_in_ad_use", i, 1.0, 3),
    );
    if let Some(j) = low.filter(|&j| j != i && ratio[j].is_finite() && ratio[i].is_finite()) {
        let dir = if ratio[i] > ratio[j] { "more" } else { "less" };
        text.push_str(&format!(
            " At its lowest rate the ratio is {}: the accounts that remain in ad use are worth {dir} each as more users opt out.",
            with_ci(sum, "value_ratio_in_ad_use", j, 1.0, 3)
        ));
    }
    b.push(Block::Para(text));
    let seg = &e.segments;
    if let Some((_, rows)) = level_near(seg, &arm, 0.5) {
        let (names, share) = (texts(seg, "segment"), floats(seg, "opted_out_share"));
        let values = click_values(resolved);
        let mut order: Vec<usize> = rows.into_iter().filter(|&k| share[k].is_finite()).collect();
        order.sort_by(|&a, &b| share[b].total_cmp(&share[a]));
        let cpc = |k: usize| {
            values
                .iter()
                .find(|(n, _)| *n == names[k])
                .map_or(f64::NAN, |v| v.1)
        };
        // Is the value of what leaves above the average? Opted-out shares weighted by click value.
        let plain = order.iter().map(|&k| share[k]).sum::<f64>() / order.len().max(1) as f64;
        let weighted = order.iter().map(|&k| share[k] * cpc(k)).sum::<f64>()
            / order.iter().map(|&k| cpc(k)).sum::<f64>();
        b.push(Block::Para(format!(
            "The privacy score that decides who opts out rises with the interests' privacy shifts (health, money, politics; docs/model.md §3.6), so users of some segments opt out more. Averaged over segments, {:.1}% of interested users opted out; weighted by each segment's value per click, {:.1}%: the opt-outs take {} value than their number.",
            plain * 100.0,
            weighted * 100.0,
            if weighted > plain { "more" } else { "less" }
        )));
        let shown: Vec<usize> = order
            .iter()
            .take(5)
            .chain(
                order
                    .iter()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev(),
            )
            .copied()
            .collect();
        b.push(Block::Table(
            ["segment", "opted out (%)", "value per click ($)"]
                .map(String::from)
                .to_vec(),
            shown
                .iter()
                .map(|&k| {
                    vec![
                        names[k].clone(),
                        with_ci(seg, "opted_out_share", k, 100.0, 1),
                        format!("{:.2}", cpc(k)),
                    ]
                })
                .collect(),
        ));
        b.push(Block::Para(
            "The five segments whose users opt out most and the three that opt out least; every segment is in segments.csv (opted_out_share), every country in countries.csv and every age band in ages.csv (people_opted_out, achieved_rate).".into(),
        ));
    }
    b
}

/// "Caveats": what the figures do not cover.
fn caveats(resolved: &Resolved) -> Vec<Block> {
    let d = &resolved.data;
    let mut b = vec![Block::Heading(2, "Caveats".into())];
    for c in [
        "Every number not marked with a source in data/ is an assumption; the intervals do not include their uncertainty.".to_string(),
        format!(
            "Targeting, clicks, Custom Audience matches and revenue are summed over the {} days of the horizon: a window opt-out keeps its days of ad use before the opt-out, a regional pause its days before the pause.",
            resolved.scenario.policy.horizon_days
        ),
        "Custom Audience campaigns run for every business to all its matched accounts; formatting faults of uploaded numbers are a yes/no draw, not edits of the number (docs/model.md §15).".into(),
        "A linked account keeps its on-platform evidence, so the value of M data is smaller than that of all tracking data.".into(),
        format!(
            "The smallest audience cell is resolved only to one simulated account ({:.0} real people per simulated user here); cells under 100 people are visible only when that is below 100.",
            resolved.scenario.revenue.m_users_millions * 1e6 / resolved.scenario.population.users as f64
        ),
        format!(
            "Country shares beyond the {} listed countries are spread pro rata over them (assumption).",
            d.countries.country.len()
        ),
    ] {
        b.push(Block::Para(c));
    }
    b
}

/// The name a value has in scenario files (its serde form, such as `opt_out_window`).
fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// The sections of a run's report that other modules make: handed in, so that the report draws
/// only what it is given (it imports neither the validation nor studies).
#[derive(Clone, Debug, Default)]
pub struct Handed {
    /// "Calibration": the validation cases that run this scenario, judged on this run
    /// ([`crate::validate::run_blocks`]).
    pub calibration: Vec<Block>,
    /// Blocks after the headline results: a study's parameter uncertainty (docs/model.md
    /// §16.6).
    pub extra: Vec<Block>,
}

/// Draws every chart into `dir` and writes `report.md` and `report.html` there, with the
/// sections `handed` in.
pub fn write(resolved: &Resolved, e: &Estimates, dir: &Path, handed: Handed) -> Result<()> {
    let figs = figures(resolved, e);
    for f in &figs {
        save(&f.chart, dir, f.stem)?;
    }
    let Handed { calibration, extra } = handed;
    let mut blocks = blocks(resolved, e, &figs, calibration);
    if !extra.is_empty() {
        let at = blocks
            .iter()
            .position(|b| matches!(b, Block::Heading(2, h) if h == "Who opts out"))
            .unwrap_or(blocks.len());
        blocks.splice(at..at, extra);
    }
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(&blocks)).map_err(|err| Error::io(&md, err))?;
    let page = html(&blocks, dir)?;
    let h = dir.join("report.html");
    std::fs::write(&h, page).map_err(|err| Error::io(&h, err))
}
