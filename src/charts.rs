//! Charts (SPEC §11): PNG and SVG drawn with plotters from the estimated tables, with the
//! DejaVu Sans font compiled into the binary (no system fonts needed) and the Okabe-Ito
//! colour-blind-safe palette, at 1200x800.
//!
//! Two shapes cover every chart: lines over a numeric axis with shaded 95% bands
//! ([`LineChart`]), and grouped horizontal bars over categories ([`BarChart`]).

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

/// A point of a line: `(x, y, 95% interval of y)`.
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One line: points `(x, y, interval)`.
#[derive(Clone, Debug, Default)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points in x order, each with an optional 95% interval.
    pub points: Vec<Point>,
}

/// Lines over a numeric x axis, with interval bands.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The lines.
    pub lines: Vec<Line>,
}

/// Grouped horizontal bars: one row per category, one bar per group.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Value axis label, with its unit.
    pub x_label: String,
    /// Category names, top to bottom.
    pub categories: Vec<String>,
    /// Groups: legend label and one value per category.
    pub groups: Vec<(String, Vec<f64>)>,
}

/// A chart of either shape.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Lines with bands.
    Lines(LineChart),
    /// Grouped bars.
    Bars(BarChart),
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = (hi - lo).abs().max(hi.abs() * 1e-3).max(1e-9);
    (lo - span * 0.08, hi + span * 0.08)
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let points = || c.lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| {
        let (lo, hi) = p.2.unwrap_or((p.1, p.1));
        (a.min(p.1).min(lo), b.max(p.1).max(hi))
    });
    let (x0, x1) = padded(x0, x1);
    let (y0, y1) = padded(y0, y1);
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(100)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, line) in c.lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
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
        if band.len() >= 4 {
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                colour.mix(0.18).filled(),
            )))?;
        }
        let style = ShapeStyle::from(&colour).stroke_width(3);
        chart
            .draw_series(LineSeries::new(
                line.points.iter().map(|p| (p.0, p.1)),
                style,
            ))?
            .label(line.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    ShapeStyle::from(&colour).stroke_width(3),
                )
            });
        chart.draw_series(
            line.points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 4, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 18))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &BarChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let n = c.categories.len().max(1);
    let values = || {
        c.groups
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (lo, hi) = values().fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = padded(lo, hi);
    let categories = c.categories.clone();
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(330)
        .build_cartesian_2d(lo..hi, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_labels(0)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 20))
        .disable_y_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Category names beside their rows, drawn on the whole area so the axis does not clip them.
    let label =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(lo, (n - 1 - i) as f64 + 0.5));
        root.draw(&Text::new(name.clone(), (px - 8, py), label.clone()))?;
    }
    let groups = c.groups.len().max(1) as f64;
    for (g, (label, vals)) in c.groups.iter().enumerate() {
        let colour = PALETTE[g % PALETTE.len()];
        let height = 0.8 / groups;
        chart
            .draw_series(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let row = (n - 1 - i) as f64;
                        let top = row + 0.9 - g as f64 * height;
                        Rectangle::new([(0.0, top - height), (v, top)], colour.filled())
                    }),
            )?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 18))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult<DB> {
    match chart {
        Chart::Lines(c) => draw_lines(&root, c),
        Chart::Bars(c) => draw_bars(&root, c),
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
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart)
        .map_err(|e| fail(&png, e.to_string()))?;
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)
        .map_err(|e| fail(&svg, e.to_string()))?;
    Ok(png)
}
