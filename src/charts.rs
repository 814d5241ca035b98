//! Charts (docs/model.md §11): PNG and SVG drawn with plotters from the estimated tables, with
//! the DejaVu Sans font compiled into the binary (no system fonts needed) and the Okabe-Ito
//! colour-blind-safe palette, at 1200x800.
//!
//! Two shapes cover every chart: lines over a numeric axis with shaded 95% bands
//! ([`LineChart`]), and grouped horizontal bars over categories ([`BarChart`]). Every input
//! draws: points that are not finite are left out, an empty chart says "no data", a constant
//! or single-point series gets a padded axis, and tick labels carry the axis' unit. A line's
//! colour and dash come with it ([`Style`]), so an arm looks the same in every chart; a line
//! that coincides with an earlier one is drawn dashed over it and says so in the legend.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (1200, 800);

/// The Okabe-Ito palette (black last), safe for the common colour-vision deficiencies.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(86, 180, 233),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Lines of 3 to this many points get a marker at each point (a lone point always does).
pub const MARKERS_UP_TO: usize = 12;

static FONT: Once = Once::new();

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" (once per process).
pub fn register_font() {
    FONT.call_once(|| {
        // The bundled fonts are valid OpenType files; a failure would only leave text unset.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// The unit of an axis: how its tick labels are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unit {
    /// Plain numbers.
    #[default]
    Plain,
    /// Percent (values already times 100): `12.5%`.
    Percent,
    /// Percentage points (values already times 100): `+1.5 pp`.
    Points,
    /// Millions of US dollars: `$120M`.
    MillionsUsd,
    /// Millions (of people or accounts): `35M`.
    Millions,
    /// US dollars: `$6.30`.
    Usd,
    /// Whole days: `30`.
    Days,
}

impl Unit {
    /// Decimals that tell ticks `step` apart.
    fn decimals(self, step: f64) -> usize {
        if self == Unit::Days || !(step.is_finite() && step > 0.0) {
            return 0;
        }
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    }

    /// A tick label of `v`, with `d` decimals.
    pub fn label(self, v: f64, d: usize) -> String {
        // Avoid "-0".
        let v = if v.abs() < 0.5 * 10f64.powi(-(d as i32)) {
            0.0
        } else {
            v
        };
        match self {
            Unit::Plain => format!("{v:.d$}"),
            Unit::Percent => format!("{v:.d$}%"),
            Unit::Points => format!("{v:+.d$} pp"),
            Unit::MillionsUsd if v < 0.0 => format!("-${:.d$}M", -v),
            Unit::MillionsUsd => format!("${v:.d$}M"),
            Unit::Millions => format!("{v:.d$}M"),
            Unit::Usd => format!("${v:.d$}"),
            Unit::Days => format!("{v:.0}"),
        }
    }
}

/// How a line is drawn: a palette colour and a dash pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Index into [`PALETTE`] (taken modulo its length).
    pub colour: usize,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// A point of a line: `(x, y, 95% interval of y)`.
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One line: points `(x, y, interval)`.
#[derive(Clone, Debug, Default)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points in x order, each with an optional 95% interval.
    pub points: Vec<Point>,
    /// Colour and dash.
    pub style: Style,
}

/// Lines over a numeric x axis, with interval bands.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// X axis unit (tick labels).
    pub x_unit: Unit,
    /// Y axis label.
    pub y_label: String,
    /// Y axis unit (tick labels).
    pub y_unit: Unit,
    /// Start the x axis at 0 (counts).
    pub x_from_zero: bool,
    /// Start the y axis at 0 (counts and shares).
    pub y_from_zero: bool,
    /// The lines.
    pub lines: Vec<Line>,
    /// Draw each line's points as dots, without the line or bands (a scatter plot).
    pub scatter: bool,
}

/// Grouped horizontal bars: one row per category, one bar per group.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Value axis label.
    pub x_label: String,
    /// Value axis unit (tick labels).
    pub x_unit: Unit,
    /// Category names, top to bottom.
    pub categories: Vec<String>,
    /// Groups: legend label and one value per category.
    pub groups: Vec<(String, Vec<f64>)>,
    /// 95% intervals drawn as whiskers over the bars: per group, per category (NaN ends or a
    /// missing group: none).
    pub intervals: Vec<Vec<(f64, f64)>>,
}

/// A chart of any of these shapes.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Lines with bands.
    Lines(LineChart),
    /// Grouped bars.
    Bars(BarChart),
    /// Line charts stacked top to bottom, each [`PANEL_HEIGHT`] high (small multiples).
    Panels(Vec<LineChart>),
}

/// Height of one panel of [`Chart::Panels`], pixels.
pub const PANEL_HEIGHT: u32 = 640;

impl Chart {
    /// Its size in pixels.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Chart::Panels(p) => (SIZE.0, PANEL_HEIGHT * p.len().max(1) as u32),
            _ => SIZE,
        }
    }
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// An axis range that holds every finite value of `values`, padded by 6% of its span; a
/// single value (or none) gets a span of its own, so the range is never empty or infinite.
/// With `from_zero` and no negative value, the range starts at 0.
pub fn axis_range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let (lo, hi) = if from_zero && lo >= 0.0 {
        (0.0, hi)
    } else {
        (lo, hi)
    };
    let span = hi - lo;
    // A span below 1e-9 of the values' size is a constant to plotters' tick finder.
    let span = if span > hi.abs().max(lo.abs()) * 1e-9 && span > 1e-300 {
        span
    } else {
        (hi.abs() * 0.1).max(1.0)
    };
    let pad = span * 0.06;
    let lo = if from_zero && lo == 0.0 {
        0.0
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

/// The lines of a chart ready to draw: finite points only, and for each line the earlier
/// line it coincides with, if any.
fn prepared(lines: &[Line]) -> Vec<(Line, Option<String>)> {
    let clean: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            points: l
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y, ci)| (x, y, ci.filter(|c| c.0.is_finite() && c.1.is_finite())))
                .collect(),
            ..l.clone()
        })
        .collect();
    let same = |a: &Line, b: &Line| {
        !a.points.is_empty()
            && a.points.len() == b.points.len()
            && a.points.iter().zip(&b.points).all(|(p, q)| {
                let tol = 1e-9 * (p.1.abs().max(q.1.abs()).max(1.0));
                (p.0 - q.0).abs() < 1e-9 && (p.1 - q.1).abs() <= tol
            })
    };
    clean
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let twin = clean[..i]
                .iter()
                .find(|e| same(e, l))
                .map(|e| e.label.clone());
            (l.clone(), twin)
        })
        .collect()
}

/// One entry of a legend: its label, colour, and how its key is drawn.
struct Entry {
    label: String,
    colour: RGBColor,
    key: Key,
}

/// How a legend entry's key is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Line,
    Dashed,
    Box,
}

/// Approximate width of `text` in pixels at `size` (DejaVu Sans averages 0.55 em a character).
fn text_width(text: &str, size: u32) -> i32 {
    (text.chars().count() as f64 * f64::from(size) * 0.56).ceil() as i32
}

const LEGEND_FONT: u32 = 18;
const LEGEND_ROW: i32 = 28;

/// The rows of a legend laid out across `width` pixels from `left`: entry indices per row.
fn legend_rows(entries: &[Entry], left: i32, width: i32) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    let mut x = left;
    for (i, e) in entries.iter().enumerate() {
        let w = 44 + text_width(&e.label, LEGEND_FONT) + 28;
        if x + w > left + width && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(Vec::new());
            x = left;
        }
        if let Some(r) = rows.last_mut() {
            r.push(i);
        }
        x += w;
    }
    rows
}

/// Draws the legend above the plot, from pixel row `top`, so that it never hides data.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    left: i32,
    top: i32,
) -> DrawResult<DB> {
    let width = root.dim_in_pixel().0 as i32 - left - 20;
    let font = TextStyle::from(("sans-serif", LEGEND_FONT).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in legend_rows(entries, left, width).iter().enumerate() {
        let y = top + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        let mut x = left;
        for &i in row {
            let e = &entries[i];
            let style = ShapeStyle::from(&e.colour).stroke_width(4);
            match e.key {
                Key::Line => root.draw(&PathElement::new(vec![(x, y), (x + 34, y)], style))?,
                Key::Dashed => {
                    root.draw(&PathElement::new(vec![(x, y), (x + 12, y)], style))?;
                    root.draw(&PathElement::new(vec![(x + 20, y), (x + 34, y)], style))?;
                }
                Key::Box => root.draw(&Rectangle::new(
                    [(x + 8, y - 8), (x + 26, y + 8)],
                    e.colour.filled(),
                ))?,
            }
            root.draw(&Text::new(e.label.clone(), (x + 44, y), font.clone()))?;
            x += 44 + text_width(&e.label, LEGEND_FONT) + 28;
        }
    }
    Ok(())
}

/// Draws the title centred at the top; returns the pixel row where the legend starts.
fn draw_title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> DrawResult<DB> {
    let (w, _) = root.dim_in_pixel();
    let style =
        TextStyle::from(("sans-serif", 30).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title.to_string(), (w as i32 / 2, 16), style))
}

/// Where the legend starts, below the title.
const LEGEND_TOP: i32 = 58;

/// Pixels the legend takes above the plot.
fn legend_height(entries: &[Entry], left: i32, width: i32) -> i32 {
    if entries.is_empty() {
        0
    } else {
        legend_rows(entries, left, width).len() as i32 * LEGEND_ROW
    }
}

fn no_data<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let centre =
        TextStyle::from(("sans-serif", 30).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(
        title.to_string(),
        (w as i32 / 2, h as i32 / 3),
        centre.clone(),
    ))?;
    root.draw(&Text::new(
        "no data to draw: every value is empty or not a number".to_string(),
        (w as i32 / 2, h as i32 / 2),
        centre,
    ))?;
    root.present()
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult<DB> {
    let lines = prepared(&c.lines);
    let points = || lines.iter().flat_map(|l| l.0.points.iter());
    if points().next().is_none() {
        return no_data(root, &c.title);
    }
    root.fill(&WHITE)?;
    let (x0, x1) = axis_range(points().map(|p| p.0), c.x_from_zero);
    let (y0, y1) = axis_range(
        points().flat_map(|p| {
            let (lo, hi) = p.2.unwrap_or((p.1, p.1));
            [p.1, lo, hi]
        }),
        c.y_from_zero,
    );
    let (dx, dy) = (
        c.x_unit.decimals((x1 - x0) / 10.0),
        c.y_unit.decimals((y1 - y0) / 10.0),
    );
    let (xf, yf) = (
        |v: &f64| c.x_unit.label(*v, dx),
        |v: &f64| c.y_unit.label(*v, dy),
    );
    let entries: Vec<Entry> = lines
        .iter()
        .filter(|(l, _)| !l.points.is_empty())
        .map(|(l, twin)| Entry {
            label: match twin {
                Some(t) => format!("{} (same as {t})", l.label),
                None => l.label.clone(),
            },
            colour: PALETTE[l.style.colour % PALETTE.len()],
            key: if c.scatter {
                Key::Box
            } else if l.style.dashed || twin.is_some() {
                Key::Dashed
            } else {
                Key::Line
            },
        })
        .collect();
    let (left, width) = (130, root.dim_in_pixel().0 as i32 - 150);
    let legend = legend_height(&entries, left, width);
    draw_title(root, &c.title)?;
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .margin_top(LEGEND_TOP + legend + 6)
        .x_label_area_size(60)
        .y_label_area_size(110)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if c.scatter {
        for (line, _) in &lines {
            let colour = PALETTE[line.style.colour % PALETTE.len()];
            let dot = colour.mix(0.65).filled();
            chart.draw_series(line.points.iter().map(|p| Circle::new((p.0, p.1), 4, dot)))?;
        }
        draw_legend(root, &entries, left, LEGEND_TOP)?;
        return root.present();
    }
    for (line, twin) in &lines {
        let colour = PALETTE[line.style.colour % PALETTE.len()];
        let band: Vec<(f64, f64)> = line
            .points
            .iter()
            .filter_map(|p| p.2.map(|(lo, _)| (p.0, lo)))
            .chain(
                line.points
                    .iter()
                    .rev()
                    .filter_map(|p| p.2.map(|(_, hi)| (p.0, hi))),
            )
            .collect();
        if band.len() >= 4 && twin.is_none() {
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                colour.mix(0.18).filled(),
            )))?;
        } else if line.points.len() == 1 {
            // A lone point shows its interval as a bar.
            let bar = ShapeStyle::from(&colour).stroke_width(2);
            chart.draw_series(line.points.iter().filter_map(|p| {
                p.2.map(|(lo, hi)| PathElement::new(vec![(p.0, lo), (p.0, hi)], bar))
            }))?;
        }
        // A coinciding line is drawn dashed over its twin, so both stay visible.
        let dashed = line.style.dashed || twin.is_some();
        let width = if twin.is_some() { 3 } else { 4 };
        let style = ShapeStyle::from(&colour).stroke_width(width);
        let xy: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, p.1)).collect();
        if dashed {
            chart.draw_series(DashedLineSeries::new(xy.clone(), 14, 10, style))?;
        } else {
            chart.draw_series(LineSeries::new(xy.clone(), style))?;
        }
        // Markers where they help: a lone point, or a short line of several points.
        if xy.len() == 1 || (3..=MARKERS_UP_TO).contains(&xy.len()) {
            chart.draw_series(xy.iter().map(|&p| Circle::new(p, 5, colour.filled())))?;
        }
    }
    draw_legend(root, &entries, left, LEGEND_TOP)?;
    root.present()
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &BarChart) -> DrawResult<DB> {
    let values = || {
        c.groups
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .filter(|v| v.is_finite())
    };
    if c.categories.is_empty() || values().next().is_none() {
        return no_data(root, &c.title);
    }
    root.fill(&WHITE)?;
    let n = c.categories.len();
    // Bars start at 0, so 0 is always on the axis; whiskers fit too.
    let whiskers = c
        .intervals
        .iter()
        .flat_map(|g| g.iter().flat_map(|&(a, b)| [a, b]));
    let (lo, hi) = axis_range(values().chain(whiskers).chain([0.0]), true);
    let d = c.x_unit.decimals((hi - lo) / 10.0);
    let xf = |v: &f64| c.x_unit.label(*v, d);
    let longest = c
        .categories
        .iter()
        .map(|n| text_width(n, 15))
        .max()
        .unwrap_or(0);
    let label_area = (longest + 24).clamp(60, 420) as u32;
    let entries: Vec<Entry> = c
        .groups
        .iter()
        .enumerate()
        .map(|(g, (label, _))| Entry {
            label: label.clone(),
            colour: PALETTE[g % PALETTE.len()],
            key: Key::Box,
        })
        .collect();
    let left = 20 + label_area as i32;
    let legend = legend_height(&entries, left, root.dim_in_pixel().0 as i32 - left - 20);
    draw_title(root, &c.title)?;
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .margin_top(LEGEND_TOP + legend + 6)
        .x_label_area_size(60)
        .y_label_area_size(label_area)
        .build_cartesian_2d(lo..hi, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .x_label_formatter(&xf)
        .y_labels(0)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 20))
        .disable_y_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Category names beside their rows, drawn on the whole area so the axis does not clip them.
    let label =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in c.categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(lo, (n - 1 - i) as f64 + 0.5));
        root.draw(&Text::new(name.clone(), (px - 8, py), label.clone()))?;
    }
    let groups = c.groups.len().max(1) as f64;
    for (g, (_, vals)) in c.groups.iter().enumerate() {
        let colour = PALETTE[g % PALETTE.len()];
        let height = 0.8 / groups;
        chart.draw_series(
            vals.iter()
                .enumerate()
                .filter(|(i, v)| v.is_finite() && *i < n)
                .map(|(i, &v)| {
                    let row = (n - 1 - i) as f64;
                    let top = row + 0.9 - g as f64 * height;
                    Rectangle::new([(0.0, top - height), (v, top)], colour.filled())
                }),
        )?;
        // The group's intervals: a dark whisker through the middle of each bar, with caps.
        let ink = ShapeStyle::from(&RGBColor(40, 40, 40)).stroke_width(2);
        for (i, &(a, b)) in c.intervals.get(g).into_iter().flatten().enumerate() {
            if !(a.is_finite() && b.is_finite()) || i >= n {
                continue;
            }
            let row = (n - 1 - i) as f64;
            let mid = row + 0.9 - g as f64 * height - height / 2.0;
            let cap = height * 0.3;
            chart.draw_series([
                PathElement::new(vec![(a, mid), (b, mid)], ink),
                PathElement::new(vec![(a, mid - cap), (a, mid + cap)], ink),
                PathElement::new(vec![(b, mid - cap), (b, mid + cap)], ink),
            ])?;
        }
    }
    draw_legend(root, &entries, left, LEGEND_TOP)?;
    // Bars of zero length are invisible: say what the empty rows mean.
    if values().all(|v| v == 0.0) {
        let (w, h) = root.dim_in_pixel();
        let note = TextStyle::from(("sans-serif", 22).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "every value is 0: no bar to draw".to_string(),
            ((w as i32 + left) / 2, h as i32 / 2),
            note,
        ))?;
    }
    root.present()
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult<DB> {
    match chart {
        Chart::Lines(c) => draw_lines(&root, c),
        Chart::Bars(c) => draw_bars(&root, c),
        Chart::Panels(panels) if panels.is_empty() => no_data(&root, "no data"),
        Chart::Panels(panels) => {
            for (area, c) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
                draw_lines(area, c)?;
            }
            Ok(())
        }
    }
}

/// Draws `chart` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`; returns the PNG's path.
pub fn save(chart: &Chart, dir: &Path, stem: &str) -> Result<PathBuf> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let fail = |path: &Path, e: String| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let size = chart.size();
    draw(BitMapBackend::new(&png, size).into_drawing_area(), chart)
        .map_err(|e| fail(&png, e.to_string()))?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), chart)
        .map_err(|e| fail(&svg, e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(label: &str, points: Vec<Point>) -> Line {
        Line {
            label: label.into(),
            points,
            style: Style::default(),
        }
    }

    fn lines(lines: Vec<Line>) -> Chart {
        Chart::Lines(LineChart {
            title: "t".into(),
            x_label: "x".into(),
            x_unit: Unit::Percent,
            y_label: "y".into(),
            y_unit: Unit::MillionsUsd,
            x_from_zero: false,
            y_from_zero: false,
            lines,
            ..Default::default()
        })
    }

    #[test]
    fn axis_ranges_are_never_empty_or_infinite() {
        let nan = f64::NAN;
        for (values, zero) in [
            (vec![], false),
            (vec![nan, f64::INFINITY], false),
            (vec![5.0], false),
            (vec![0.0, 0.0], true),
            (vec![-3.0, -3.0], true),
            (vec![1e300, 1e300], false),
            (vec![1e-300, 2e-300], false),
            (vec![2.0, 7.0, nan], true),
        ] {
            let (lo, hi) = axis_range(values.iter().copied(), zero);
            assert!(
                lo.is_finite() && hi.is_finite() && lo < hi,
                "{values:?}: {lo}..{hi}"
            );
            for v in values.iter().filter(|v| v.is_finite()) {
                assert!(lo <= *v && *v <= hi, "{v} outside {lo}..{hi}");
            }
        }
        assert_eq!(
            axis_range([2.0, 7.0].into_iter(), true).0,
            0.0,
            "counts from 0"
        );
    }

    #[test]
    fn degenerate_charts_draw() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nan = f64::NAN;
        let cases = [
            lines(vec![]),
            lines(vec![line("empty", vec![])]),
            lines(vec![line("one", vec![(0.0, 1.0, Some((0.5, 1.5)))])]),
            lines(vec![line(
                "flat",
                vec![(0.0, 3.0, None), (100.0, 3.0, None)],
            )]),
            lines(vec![line(
                "zero",
                vec![(0.0, 0.0, None), (50.0, 0.0, None)],
            )]),
            lines(vec![line(
                "nan",
                vec![
                    (0.0, nan, None),
                    (nan, 1.0, None),
                    (1.0, 2.0, Some((nan, 3.0))),
                ],
            )]),
            lines(vec![
                line("a", vec![(0.0, 1.0, None), (1.0, 2.0, None)]),
                line("b", vec![(0.0, 1.0, None), (1.0, 2.0, None)]),
            ]),
            Chart::Bars(BarChart::default()),
            Chart::Bars(BarChart {
                categories: vec!["a".into(), "b".into()],
                groups: vec![("g".into(), vec![nan, 0.0])],
                ..BarChart::default()
            }),
            Chart::Bars(BarChart {
                categories: vec!["a".into()],
                groups: vec![("g".into(), vec![f64::INFINITY, 4.0, 5.0])],
                ..BarChart::default()
            }),
        ];
        for (i, c) in cases.iter().enumerate() {
            let png = save(c, dir.path(), &format!("case{i}")).expect("draws");
            assert!(std::fs::metadata(png).expect("written").len() > 1000);
        }
    }

    #[test]
    fn coinciding_lines_are_marked() {
        let a = line("a", vec![(0.0, 1.0, None), (1.0, 2.0, None)]);
        let mut b = a.clone();
        b.label = "b".into();
        let mut c = a.clone();
        c.label = "c".into();
        c.points[1].1 = 2.5;
        let p = prepared(&[a, b, c]);
        assert_eq!(p[0].1, None);
        assert_eq!(p[1].1.as_deref(), Some("a"));
        assert_eq!(p[2].1, None);
    }

    #[test]
    fn tick_labels_carry_units() {
        assert_eq!(Unit::Percent.label(12.5, 1), "12.5%");
        assert_eq!(Unit::MillionsUsd.label(-20.0, 0), "-$20M");
        assert_eq!(Unit::Usd.label(6.3, 2), "$6.30");
        assert_eq!(Unit::Millions.label(350.0, 0), "350M");
        assert_eq!(Unit::Days.label(29.6, 3), "30");
        assert_eq!(Unit::Points.label(1.5, 1), "+1.5 pp");
        assert_eq!(Unit::Plain.label(-0.0001, 2), "0.00");
        assert_eq!(Unit::Percent.decimals(5.0), 0);
        assert_eq!(Unit::Percent.decimals(0.05), 2);
    }
}
