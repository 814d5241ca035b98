//! Reading the estimated tables: a column's values as floats or text, and a value with its
//! interval formatted for tables (the report, the terminal, comparisons).

use polars::prelude::*;

/// The values of a float column (NaN for nulls and missing columns).
pub fn floats(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .ok()
        .and_then(|c| c.as_materialized_series().cast(&DataType::Float64).ok())
        .and_then(|s| {
            s.f64()
                .ok()
                .map(|ca| ca.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        })
        .unwrap_or_else(|| vec![f64::NAN; df.height()])
}

/// The values of a column as text (categoricals included).
pub fn texts(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .ok()
        .and_then(|c| c.as_materialized_series().cast(&DataType::String).ok())
        .and_then(|s| {
            s.str()
                .ok()
                .map(|ca| ca.iter().map(|v| v.unwrap_or("").to_string()).collect())
        })
        .unwrap_or_else(|| vec![String::new(); df.height()])
}

/// A row's value with its interval, formatted: `12.3 [11.9, 12.7]`, or `12.3` without one
/// (or with one that rounds to a point at `digits` decimals).
pub fn with_ci(df: &DataFrame, name: &str, row: usize, scale: f64, digits: usize) -> String {
    let get = |n: &str| floats(df, n).get(row).copied().unwrap_or(f64::NAN);
    let (m, lo, hi) = (
        get(name),
        get(&format!("{name}_lo")),
        get(&format!("{name}_hi")),
    );
    let text = |x: f64| format!("{:.*}", digits, x * scale);
    if !m.is_finite() {
        "-".into()
    } else if lo.is_finite() && hi.is_finite() && text(lo) != text(hi) {
        format!("{} [{}, {}]", text(m), text(lo), text(hi))
    } else {
        // No interval, or one narrower than the digits shown (a quantity the replications
        // agree on, such as an achieved rate of exactly 0).
        text(m)
    }
}

/// The target rates shown in headline tables (the terminal, the report, comparisons) when a
/// table has too many rows to show them all.
pub const HEADLINE_RATES: [f64; 5] = [0.0, 0.1, 0.25, 0.5, 1.0];

/// Tables with at most this many rows are shown whole.
pub const HEADLINE_ALL_UP_TO: usize = 12;

/// The rows of a table (by their `rate` column) that headline tables show: every row of a
/// small table, else the rows at [`HEADLINE_RATES`] and the one row of an arm with a single
/// level (the `none` arm, an arm with its own rate), whatever its rate.
pub fn headline_rows(df: &DataFrame) -> Vec<usize> {
    let rates = floats(df, "rate");
    let arms = texts(df, "arm");
    let single = |i: usize| arms.iter().filter(|a| **a == arms[i]).count() == 1;
    (0..df.height())
        .filter(|&i| {
            df.height() <= HEADLINE_ALL_UP_TO
                || HEADLINE_RATES.iter().any(|r| (r - rates[i]).abs() < 1e-9)
                || single(i)
        })
        .collect()
}

/// The level of `arm` in `df` whose rate is nearest `target`: (rate, row indices).
pub fn level_near(df: &DataFrame, arm: &str, target: f64) -> Option<(f64, Vec<usize>)> {
    let (arms, rates) = (texts(df, "arm"), floats(df, "rate"));
    let rate = (0..df.height())
        .filter(|&i| arms[i] == arm)
        .map(|i| rates[i])
        .min_by(|a, b| (a - target).abs().total_cmp(&(b - target).abs()))?;
    let rows = (0..df.height())
        .filter(|&i| arms[i] == arm && (rates[i] - rate).abs() < 1e-12)
        .collect();
    Some((rate, rows))
}
