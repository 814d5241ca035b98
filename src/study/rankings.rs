//! The rankings of a three-stage study's methods set side by side (docs/model.md §16.8): Morris
//! mu* and the Latin hypercube's rank correlations over every screened factor, Sobol's total
//! index over the factors carried to the second stage. The three answer different questions
//! (mean absolute elementary effect; monotone association over the whole range; share of
//! variance, interactions included), so where they disagree says something about the output.

use std::collections::BTreeMap;
use std::path::Path;

use super::batch::{STAGES, read_indices};
use super::{DUMMY, Study, spearman};
use crate::document::Block;
use crate::error::Result;

/// One method's values per output and factor, from a stage's `indices.csv`.
fn values(
    dir: &Path,
    measure: &str,
    absolute: bool,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let df = read_indices(&dir.join("indices.csv"))?;
    let (outputs, factors, measures) = (
        crate::table::texts(&df, "output"),
        crate::table::texts(&df, "factor"),
        crate::table::texts(&df, "measure"),
    );
    let v = crate::table::floats(&df, "value");
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for i in 0..outputs.len() {
        if measures[i] == measure && factors[i] != DUMMY {
            let x = if absolute { v[i].abs() } else { v[i] };
            out.entry(outputs[i].clone())
                .or_default()
                .insert(factors[i].clone(), x);
        }
    }
    Ok(out)
}

/// Ranks (1 = strongest) of `factors` by their values, largest first; ties share the order of
/// the factor names; a factor without a finite value is ranked last.
pub fn ranks(values: &BTreeMap<String, f64>, factors: &[String]) -> Vec<usize> {
    let mut order: Vec<&String> = factors.iter().collect();
    let key = |f: &String| values.get(f).copied().filter(|x| x.is_finite());
    order.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    });
    factors
        .iter()
        .map(|f| order.iter().position(|g| *g == f).map_or(0, |p| p + 1))
        .collect()
}

/// The report's comparison of the three stages' rankings, one table per output that varies.
pub(super) fn compared(study: &Study, second: &Study, out: &Path) -> Result<Vec<Block>> {
    let morris = values(&out.join(STAGES[0]), "mu_star", false)?;
    let sobol = values(&out.join(STAGES[1]), "ST", false)?;
    let lhs = values(&out.join(STAGES[2]), "spearman_rho", true)?;
    let all: Vec<String> = study.plan.factor.iter().map(|f| f.key.clone()).collect();
    let carried: Vec<String> = second.plan.factor.iter().map(|f| f.key.clone()).collect();
    let mut b = vec![
        Block::Heading(2, "Do the methods agree?".into()),
        Block::Para(format!(
            "Each factor's rank (1 = strongest) by Morris mu* and by the absolute Spearman correlation of the Latin hypercube, both over all {} factors, and by the total Sobol index over the {} carried to the second stage. They measure different things: mu* the mean absolute effect of a step in the factor, the rank correlation a monotone association over the whole range (blind to an effect that rises then falls, and shared with whatever the factor is correlated with in the output), ST the share of the output's variance the factor explains, interactions included. r is the Spearman correlation between two methods' rankings; a factor named under 'disagree' is in one method's top 5 and outside the other's top 10 (over all factors), or moves two or more places between Sobol and another method among the carried factors.",
            all.len(),
            carried.len()
        )),
    ];
    let empty = BTreeMap::new();
    for name in study.output_names() {
        let (m, s, l) = (
            morris.get(&name).unwrap_or(&empty),
            sobol.get(&name).unwrap_or(&empty),
            lhs.get(&name).unwrap_or(&empty),
        );
        b.push(Block::Heading(3, name.replace('@', " at ")));
        if !s.values().any(|x| x.is_finite()) {
            b.push(Block::Para(
                "The output does not vary over the second stage's design: no ranking to compare."
                    .into(),
            ));
            continue;
        }
        let (rm, rl) = (ranks(m, &all), ranks(l, &all));
        let (cm, cl, cs) = (ranks(m, &carried), ranks(l, &carried), ranks(s, &carried));
        let as_f = |r: &[usize]| r.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let r_all = spearman(&as_f(&rm), &as_f(&rl));
        let (r_ms, r_ls) = (
            spearman(&as_f(&cm), &as_f(&cs)),
            spearman(&as_f(&cl), &as_f(&cs)),
        );
        let mut disagree: Vec<String> = Vec::new();
        for (i, f) in all.iter().enumerate() {
            if (rm[i] <= 5 && rl[i] > 10) || (rl[i] <= 5 && rm[i] > 10) {
                disagree.push(format!("{f} (Morris {}, LHS {})", rm[i], rl[i]));
            }
        }
        for (i, f) in carried.iter().enumerate() {
            if cs[i].abs_diff(cm[i]) >= 2 || cs[i].abs_diff(cl[i]) >= 2 {
                disagree.push(format!(
                    "{f} (among the carried: Sobol {}, Morris {}, LHS {})",
                    cs[i], cm[i], cl[i]
                ));
            }
        }
        let top = |r: &[usize], list: &[String]| {
            r.iter()
                .position(|&x| x == 1)
                .map_or("-".to_string(), |i| list[i].clone())
        };
        let fmt_r = |r: f64| {
            if r.is_finite() {
                format!("{r:.2}")
            } else {
                "undefined".into()
            }
        };
        let tops = [top(&rm, &all), top(&rl, &all), top(&cs, &carried)];
        let strongest = if tops[0] == tops[1] && tops[1] == tops[2] {
            format!("All three put {} first.", tops[0])
        } else {
            format!(
                "They differ on the strongest: Morris {}, LHS {}, Sobol {}.",
                tops[0], tops[1], tops[2]
            )
        };
        b.push(Block::Para(format!(
            "{strongest} Rankings over all factors, Morris and LHS: r = {}; over the carried, Sobol and Morris r = {}, Sobol and LHS r = {}. {}",
            fmt_r(r_all),
            fmt_r(r_ms),
            fmt_r(r_ls),
            if disagree.is_empty() {
                "No factor is ranked far apart by two methods.".to_string()
            } else {
                format!("Disagree: {}.", disagree.join("; "))
            }
        )));
        let value = |map: &BTreeMap<String, f64>, f: &str| {
            map.get(f)
                .filter(|x| x.is_finite())
                .map_or("-".to_string(), |x| format!("{x:.3}"))
        };
        // Rows in the Sobol stage's order, strongest first.
        let mut order: Vec<usize> = (0..carried.len()).collect();
        order.sort_by_key(|&i| cs[i]);
        let rows = order
            .into_iter()
            .map(|i| (i, &carried[i]))
            .map(|(i, f)| {
                let j = all.iter().position(|g| g == f).unwrap_or(0);
                vec![
                    f.clone(),
                    format!("{} ({})", rm[j], value(m, f)),
                    format!("{} ({})", rl[j], value(l, f)),
                    format!("{} ({})", cs[i], value(s, f)),
                ]
            })
            .collect();
        b.push(Block::Table(
            vec![
                "factor (carried)".into(),
                format!("Morris rank of {} (mu*)", all.len()),
                format!("LHS rank of {} (abs. rho)", all.len()),
                format!("Sobol rank of {} (ST)", carried.len()),
            ],
            rows,
        ));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_put_the_largest_first_and_the_undefined_last() {
        let v: BTreeMap<String, f64> = [("a", 0.1), ("b", 3.0), ("c", f64::NAN), ("d", 3.0)]
            .into_iter()
            .map(|(k, x)| (k.to_string(), x))
            .collect();
        let f: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        // b and d tie (names break it), a next, c (NaN) and e (absent) last, by name.
        assert_eq!(ranks(&v, &f), vec![3, 1, 4, 2, 5]);
    }
}
