//! The scenario fuzzer (docs/model.md §13; SPEC §13): `cargo build --release && cargo run
//! --release --example fuzz -- N SEED [--runs M]`.
//!
//! Makes N scenario files from SEED (a walk over every registry key and mutations of the
//! built-in scenarios), validates each, runs the accepted ones small with the release binary
//! (at most `--runs` of them) under a memory cap and a time limit, checks the properties of
//! every finished run, and prints the cases by stage and class. Exits 1 if any case panicked,
//! hung, ran over memory, left partial output, broke a property or was refused unclearly.

mod cases;
mod runner;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Fuzz adsim's scenario files: validate every case, run the accepted ones")]
struct Args {
    /// Cases to make.
    n: u64,
    /// Seed of the mutations (the walk is the same for every seed).
    seed: u64,
    /// Accepted cases to run through the binary (the rest are validated only).
    #[arg(long, default_value_t = 200)]
    runs: u64,
    /// Users of a run at most.
    #[arg(long, default_value_t = 300)]
    max_users: u64,
    /// The adsim binary (default: target/release/adsim beside this example).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Cases listed when any is defective.
    #[arg(long, default_value_t = 30)]
    show: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("adsim"))
            .unwrap_or_default(),
    };
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it first (cargo build --release) or give --binary",
        binary.display()
    );
    let limits = runner::Limits {
        binary,
        max_users: args.max_users,
        memory_slack: 1 << 30,
        threads: 2,
    };
    let dir = tempfile::tempdir()?;
    // A panic is a finding, caught and counted: keep its message off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let report = runner::fuzz(args.n, args.seed, args.runs, &limits, dir.path());
    let secs = start.elapsed().as_secs_f64();
    println!("{} walk cases, then mutations", cases::walk().len());
    println!(
        "{} cases (seed {}), {} run through the binary, in {secs:.1} s",
        args.n, args.seed, report.runs
    );
    println!("{:<10} {:<12} {:>8}", "stage", "class", "cases");
    for ((stage, class), n) in &report.counts {
        println!(
            "{:<10} {:<12} {n:>8}",
            format!("{stage:?}"),
            format!("{class:?}")
        );
    }
    println!(
        "registry keys a scenario can set: {} of {} covered ({:.0}%)",
        report.covered,
        report.reachable,
        100.0 * report.covered as f64 / report.reachable.max(1) as f64
    );
    if !report.uncovered.is_empty() {
        println!("not covered: {}", report.uncovered.join(", "));
    }
    for (stage, (origin, message)) in &report.examples {
        println!("a refusal at {stage:?}: {origin}\n    {message}");
    }
    for (i, origin, o) in report.bad.iter().take(args.show) {
        println!(
            "case {i} [{:?} {:?}] {origin}\n    {}",
            o.stage,
            o.class,
            o.detail.lines().next().unwrap_or("")
        );
    }
    if !report.bad.is_empty() {
        anyhow::bail!("{} defective cases", report.bad.len());
    }
    Ok(())
}
