//! Draws docs/model.md §17.6's figure, revenue against targeting capacity in the stylised
//! market of `adsim::capacity`, and prints the table beside it.
//!
//! `cargo run --release --example targeting_capacity -- docs/figures`

use adsim::capacity::{Capacity, figure};
use std::path::PathBuf;

const SEGMENTS: usize = 10;
const VALUES: [f64; 4] = [1.0, 0.8, 0.6, 0.4];
const SUPPLIES: [f64; 3] = [2.0, 12.0, 40.0];

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "docs/figures".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let png = adsim::charts::save(
        &figure(SEGMENTS, &VALUES, &SUPPLIES),
        &dir,
        "targeting-capacity",
    )?;
    println!("wrote {}", png.display());
    println!(
        "| capacity | {} |",
        SUPPLIES.map(|s| format!("{s} per consumer")).join(" | ")
    );
    println!("|---:|{}", "---:|".repeat(SUPPLIES.len()));
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let cells: Vec<String> = SUPPLIES
            .iter()
            .map(|&supply| {
                let m = Capacity {
                    segments: SEGMENTS,
                    supply,
                    values: VALUES.to_vec(),
                };
                let (c, base) = (m.clear(q), m.clear(0.0));
                format!(
                    "{:.0} ({:.2} matches)",
                    100.0 * c.revenue / base.revenue,
                    c.matches
                )
            })
            .collect();
        println!("| {:.0}% | {} |", 100.0 * q, cells.join(" | "));
    }
    Ok(())
}
