//! Command-line arguments (clap) and their translation into library calls. The library never
//! sees clap: arguments become a [`Scenario`] and plain options here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use adsim::export::{DICTIONARY, ExportOptions, Format, write_population};
use adsim::scenario::Scenario;

/// adsim: simulate what sharing a messenger's phone numbers with a social network does to ad
/// relevance, revenue and privacy.
#[derive(Debug, Parser)]
#[command(name = "adsim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a synthetic M population and write it to Parquet or CSV, one row per user.
    #[command(
        after_help = "Example:\n  adsim generate --users 1000000 --seed 7 --out users.parquet\n\n\
        Phone numbers are written as the SHA-256 of their normalized form unless --raw-phones is given.\n\
        Columns: see docs/data-dictionary.md or `adsim generate --columns`."
    )]
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Number of users (overrides the scenario's population.users).
    #[arg(long)]
    users: Option<u64>,
    /// Seed (overrides the scenario's population.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// A scenario TOML file; the built-in default scenario if absent.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Which replication's population to write (0-based).
    #[arg(long, default_value_t = 0)]
    replication: u32,
    /// Output file; a new file under reports/runs/ if absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    format: Format,
    /// Write phone numbers in E.164 instead of SHA-256. They are valid numbers and may belong to real people.
    #[arg(long)]
    raw_phones: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: all cores). Results are identical for any value.
    #[arg(long)]
    threads: Option<usize>,
    /// Users per parallel task (overrides engine.chunk_size). Results are identical for any value.
    #[arg(long)]
    chunk_size: Option<u64>,
    /// No progress bar and no summary line.
    #[arg(long)]
    quiet: bool,
    /// Print the data dictionary of the output columns and exit.
    #[arg(long)]
    columns: bool,
}

/// Runs the command line; errors carry their context for `main` to print.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(args),
    }
}

fn load_scenario(path: Option<&Path>) -> Result<(Scenario, String, PathBuf)> {
    match path {
        None => Ok((
            Scenario::default(),
            "built-in default scenario".into(),
            PathBuf::from("."),
        )),
        Some(p) => {
            let scenario = Scenario::from_file(p)?;
            let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok((scenario, p.display().to_string(), base))
        }
    }
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t >= 1, "--threads = {t}: expected at least 1 thread");
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("starting the thread pool")?;
    }
    Ok(())
}

/// A new file under `reports/runs/` named after the size and seed, never an existing one.
fn default_out(users: u64, seed: u64, format: Format) -> PathBuf {
    let ext = match format {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
    };
    let dir = Path::new("reports/runs");
    (1..)
        .map(|k| {
            let suffix = if k == 1 {
                String::new()
            } else {
                format!("-{k}")
            };
            dir.join(format!("population-{users}u-seed{seed}{suffix}.{ext}"))
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("population.{ext}")))
}

fn generate(args: GenerateArgs) -> Result<()> {
    if args.columns {
        for c in DICTIONARY {
            println!("{:<20} {:<10} {}", c.name, c.dtype, c.description);
        }
        return Ok(());
    }
    let (mut scenario, source, base) = load_scenario(args.scenario.as_deref())?;
    if let Some(n) = args.users {
        scenario.population.users = n;
    }
    if let Some(s) = args.seed {
        scenario.population.seed = s;
    }
    if let Some(c) = args.chunk_size {
        scenario.engine.chunk_size = c;
    }
    let replications = scenario.population.replications;
    let resolved = scenario.resolve(&source, &base)?;
    anyhow::ensure!(
        args.replication < replications,
        "--replication = {}: expected a replication below population.replications = {replications}",
        args.replication
    );
    set_threads(args.threads)?;
    let users = resolved.scenario.population.users;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(users, resolved.scenario.population.seed, args.format));
    if args.raw_phones {
        eprintln!(
            "warning: --raw-phones writes phone numbers in clear. They are synthetic but valid, and may belong to real people: do not publish or dial them."
        );
    }
    let options = ExportOptions {
        out: out.clone(),
        format: args.format,
        raw_phones: args.raw_phones,
        force: args.force,
        progress: !args.quiet,
    };
    let start = std::time::Instant::now();
    let summary = write_population(&resolved, args.replication, &options)?;
    if !args.quiet {
        let secs = start.elapsed().as_secs_f64();
        println!(
            "wrote {} users to {} ({:.1} MB) in {:.1} s ({:.2} M users/s)",
            summary.rows,
            out.display(),
            summary.bytes as f64 / 1e6,
            secs,
            summary.rows as f64 / secs / 1e6
        );
    }
    Ok(())
}
