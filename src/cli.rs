//! Command-line arguments (clap) and their translation into library calls. The library never
//! sees clap: arguments become a [`Scenario`] and plain options here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `println!` that ignores a closed stdout (`adsim ... | head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
use clap::{Parser, Subcommand};

use adsim::export::{DICTIONARY, ExportOptions, Format, write_population};
use adsim::plan::{Plan, human_bytes, memory_available};
use adsim::run::RunOptions;
use adsim::scenario::{BUILTINS, Scenario};

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
    /// Run a scenario (a built-in name or a TOML file) and write its results folder.
    #[command(
        after_help = "Examples:\n  adsim run                          # whatsapp-2016 at 100,000 users, 5 replications\n  \
        adsim run eu-pause-2016 --users 1000000 --out eu\n  adsim run my-scenario.toml --replications 10\n\n\
        The folder holds scenario.toml (run it again to reproduce every file but run.json), cells.parquet,\n\
        timeline_cells.parquet, summary.csv/.parquet/.json, segments.csv, countries.csv,\n\
        ages.csv, timeline.csv, revenue_days.csv, charts, report.md/.html, run.json."
    )]
    Run(RunArgs),
    /// Merge shard folders (from `adsim run --shard K/N`) into one results folder.
    #[command(
        after_help = "Example:\n  for k in 0 1 2 3; do adsim run --users 4000000 --shard $k/4 --out shard-$k; done\n  adsim merge shard-0 shard-1 shard-2 shard-3 --out merged\n\n\
        The merged folder equals a single-machine run but for run.json. Missing, duplicate and foreign shards are refused."
    )]
    Merge {
        /// The shard folders, in any order.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The results folder.
        #[arg(long)]
        out: PathBuf,
        /// Replace the results folder if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Redraw the charts and the report of a results folder from its count tables.
    #[command(
        after_help = "Example:\n  adsim plot reports/runs/whatsapp-2016-100000u-seed2016\n  adsim plot RUN --out reports/gallery   # charts and report elsewhere"
    )]
    Plot {
        /// A results folder written by `adsim run`.
        dir: PathBuf,
        /// Where to write the charts and report (default: the folder itself).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Set several runs side by side: a table (terminal and CSV) and overlaid charts.
    #[command(
        after_help = "Example:\n  adsim run whatsapp-2016 --out a && adsim run whatsapp-2021 --out b\n  adsim compare a b --out a-vs-b\n\n\
        Runs of either mode compare on the achieved opt-out rate (a behavioral run's arms are points);\n\
        rate grids that differ compare on their common rates, the others listed; the scenario keys whose\n\
        values differ are printed and written to differences.csv."
    )]
    Compare {
        /// Results folders written by `adsim run`.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Folder for compare.csv and the charts (default: a new folder under reports/runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the output folder if it exists.
        #[arg(long)]
        force: bool,
        /// Print the table as JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every parameter (scenario keys and reference-data columns) with its type, legal
    /// range, default, unit and source, from the registry data/parameters.toml.
    #[command(
        after_help = "Examples:\n  adsim parameters\n  adsim parameters --assumptions   # only the assumptions, with their plausible ranges\n  adsim parameters --json"
    )]
    Parameters {
        /// Only the parameters whose source is an assumption, with their plausible ranges.
        #[arg(long)]
        assumptions: bool,
        /// Print the registry as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check the model against the published findings and calibration figures (docs/model.md §13).
    #[command(
        after_help = "Examples:\n  adsim validate                            # every case at 100,000 users x 5 replications\n  adsim validate --users 2000 --replications 2 --out v\n\n\
        Writes validation.md, validation.html and validation.csv, prints the table, and exits with 3 when a\n\
        case fails or a known miss starts passing (1 on an error)."
    )]
    Validate {
        /// Users per replication of each scenario.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Replications.
        #[arg(long, default_value_t = 5)]
        replications: u32,
        /// Seed.
        #[arg(long, default_value_t = 2016)]
        seed: u64,
        /// Folder for the validation files (default: a new folder under reports/runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the folder if it exists.
        #[arg(long)]
        force: bool,
        /// No table on the terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a study: one scenario evaluated over a design of parameter values (docs/model.md §16).
    #[command(
        after_help = "Examples:\n  adsim studies                                  # the built-in plans\n  \
        adsim study assumptions --out a               # Morris screening of every assumption, then Sobol on the top six\n  \
        adsim study uncertainty --out u               # every assumption over its plausible range (LHS)\n  \
        adsim study heterogeneity-x-notice --out g\n  adsim study my-plan.toml --out s\n  \
        for k in 0 1 2; do adsim study screening --shard $k/3 --out part-$k; done; adsim merge part-* --out s\n\n\
        Writes plan.toml (run it again to reproduce every file), evaluations.csv/.parquet, summary.csv\n\
        (each output's spread; under lhs the 2.5 and 97.5 percentiles), indices.csv, report.md/.html.\n\
        Evaluations run in parallel; a killed study, run again with the same --out, resumes where it stopped."
    )]
    Study {
        /// A built-in plan name (see `adsim studies`) or a TOML plan file.
        plan: String,
        /// The study folder (default: a new folder under reports/runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Evaluate only shard K of N (evaluations K*E/N up to (K+1)*E/N) and write a shard
        /// folder; `adsim merge` joins the shards into the study folder.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// Replace the folder if it exists.
        #[arg(long)]
        force: bool,
        /// No progress or summary on the terminal.
        #[arg(long)]
        quiet: bool,
        /// Check the plan and print what the study would do (its design, its evaluations and
        /// the shard's share of them), then exit without running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// History-match a scenario's assumptions to published figures (docs/model.md §18).
    #[command(
        after_help = "Example:\n  adsim calibrate ctr --out reports/calibrations/ctr\n\n\
        A plan (a built-in name or a TOML file) names the scenario, the factors (registry keys, at\n\
        their plausible ranges unless given), the targets (a metric at an arm and rate, the observed\n\
        value, its observation and discrepancy standard deviations) and the waves. Each wave evaluates\n\
        a Latin hypercube over what is still in play and keeps the points whose every target's\n\
        implausibility is at most the cut-off (3). Writes calibration.toml, points.csv, waves.csv,\n\
        intervals.csv, plan.toml and summary.csv (the kept region as a study: `adsim run --study DIR`\n\
        shows it) and report.md/.html. Exits 4 when the targets are in conflict (no point kept)."
    )]
    Calibrate {
        /// A built-in calibration name (`ctr`) or a TOML calibration plan.
        plan: String,
        /// The calibration folder (default: a new folder under reports/runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the folder if it exists.
        #[arg(long)]
        force: bool,
        /// No progress or summary on the terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// List the built-in study plans, or print one.
    Studies {
        /// Print this plan as TOML.
        #[arg(long)]
        show: Option<String>,
    },
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  adsim completions bash > /etc/bash_completion.d/adsim")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List the built-in scenarios, or print one as TOML.
    #[command(after_help = "Examples:\n  adsim scenarios\n  adsim scenarios show opt-in > my.toml")]
    Scenarios {
        #[command(subcommand)]
        action: Option<ScenariosAction>,
        /// List as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Generate a synthetic M population and write it to Parquet or CSV, one row per user.
    #[command(
        after_help = "Example:\n  adsim generate --users 1000000 --seed 7 --out users.parquet\n\n\
        Phone numbers are written as the SHA-256 of their normalized form unless --raw-phones is given.\n\
        Columns: see docs/data-dictionary.md or `adsim generate --columns`."
    )]
    Generate(GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum ScenariosAction {
    /// Print a built-in scenario as TOML, every default filled in.
    Show {
        /// The scenario's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A built-in scenario name (see `adsim scenarios`) or a TOML file.
    #[arg(default_value = "whatsapp-2016")]
    scenario: String,
    /// Number of users per replication (overrides population.users).
    #[arg(long)]
    users: Option<u64>,
    /// Seed (overrides population.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Replications (overrides population.replications).
    #[arg(long)]
    replications: Option<u32>,
    /// Worker threads (default: all cores). Results are identical for any value.
    #[arg(long)]
    threads: Option<usize>,
    /// Users per parallel task (overrides engine.chunk_size). Results are identical for any value.
    #[arg(long)]
    chunk_size: Option<u64>,
    /// Results folder; a new folder under reports/runs/ if absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the results folder if it exists.
    #[arg(long)]
    force: bool,
    /// No progress bar and no table.
    #[arg(long)]
    quiet: bool,
    /// Print summary.json on stdout instead of the table (for scripts).
    #[arg(long)]
    json: bool,
    /// Simulate only shard K of N (user ids K*users/N up to (K+1)*users/N) and write its
    /// partial counts; `adsim merge` joins the shards.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// A study folder (`adsim study`): the report shows its parameter-uncertainty intervals
    /// beside this run's Monte Carlo ones.
    #[arg(long, value_name = "DIR")]
    study: Option<PathBuf>,
    /// Print what the run would do (users, arms, levels, replications, cells, predicted peak
    /// memory and time) and exit without running it.
    #[arg(long)]
    dry_run: bool,
    /// Refuse the run before any work if its predicted peak memory exceeds this (such as
    /// 2GB, 512MiB or a number of bytes). Default: the memory available, or the cgroup's
    /// limit if smaller.
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,
}

/// Output file format of `adsim generate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    /// Apache Parquet, zstd-compressed, one row group per 2^20 users.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Csv => Format::Csv,
        }
    }
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
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    format: FormatArg,
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

/// A progress bar of users on standard error, drawn only on a terminal (hidden in pipes and
/// CI).
fn progress_bar(len: u64, show: bool) -> indicatif::ProgressBar {
    let bar = bar_with(
        show,
        "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} users ({per_sec}, eta {eta})",
    );
    bar.set_length(len);
    bar
}

/// Runs the command line; errors carry their context for `main` to print.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Run(args) => run_scenario(args),
        Command::Scenarios { action: None, json } => {
            let mut list = Vec::new();
            let width = BUILTINS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, _) in BUILTINS {
                let (s, _) = Scenario::builtin(name)?;
                list.push(serde_json::json!({"name": name, "description": s.description}));
                if !json {
                    say!("{name:<width$}  {}", s.description);
                }
            }
            if json {
                say!("{}", serde_json::to_string_pretty(&list)?);
            }
            Ok(())
        }
        Command::Scenarios {
            action: Some(ScenariosAction::Show { name }),
            ..
        } => {
            let (s, _) = Scenario::builtin(&name)?;
            say_raw!("{}", s.to_toml());
            Ok(())
        }
        Command::Plot { dir, out } => {
            adsim::run::replot(&dir, out.as_deref())?;
            say!(
                "wrote the charts, report.md and report.html to {}",
                out.as_deref().unwrap_or(&dir).display()
            );
            Ok(())
        }
        Command::Compare {
            dirs,
            out,
            force,
            json,
        } => compare(&dirs, out, force, json),
        Command::Merge { dirs, out, force }
            if dirs.iter().any(|d| adsim::study::batch::is_shard(d)) =>
        {
            adsim::study::batch::merge(&dirs, &out, force)?;
            say!("merged {} study shards into {}", dirs.len(), out.display());
            Ok(())
        }
        Command::Merge { dirs, out, force } => {
            let options = RunOptions {
                out: out.clone(),
                force,
                extra: None,
            };
            adsim::shard::merge(&dirs, &options)?;
            say!("merged {} shards into {}", dirs.len(), out.display());
            Ok(())
        }
        Command::Parameters { assumptions, json } => {
            print_parameters(assumptions, json);
            Ok(())
        }
        Command::Validate {
            users,
            replications,
            seed,
            out,
            force,
            quiet,
        } => validate(users, replications, seed, out, force, quiet),
        Command::Study {
            plan,
            out,
            shard,
            force,
            quiet,
            dry_run,
        } => study(&plan, out, shard, force, quiet, dry_run),
        Command::Calibrate {
            plan,
            out,
            force,
            quiet,
        } => calibrate(&plan, out, force, quiet),
        Command::Studies { show: Some(name) } => {
            let (_, text) = adsim::study::BUILTINS
                .iter()
                .find(|b| b.0 == name)
                .ok_or_else(|| adsim::Error::Argument {
                    name: "--show".into(),
                    value: name.clone(),
                    expected: "a built-in study (adsim studies)".into(),
                })?;
            say_raw!("{text}");
            Ok(())
        }
        Command::Studies { show: None } => {
            for (name, _) in adsim::study::BUILTINS {
                let (p, _) = adsim::study::Plan::builtin(name)?;
                say!("{name:<24} {}", p.description);
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "adsim", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// ", 8 of them read back from an interrupted run", or nothing.
fn resumed_note(resumed: usize) -> String {
    if resumed == 0 {
        String::new()
    } else {
        format!(", {resumed} of them read back")
    }
}

/// A progress bar on standard error with `template`, or a hidden one when `show` is false or
/// standard error is not a terminal (pipes and CI).
fn bar_with(show: bool, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !(show && std::io::stderr().is_terminal()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A plan argument read: a TOML file (its text, its path as errors name it, its folder) or,
/// when no such file exists, a built-in looked up by `builtin`.
fn plan_text<T>(
    plan: &str,
    parse: impl Fn(&str, &str) -> adsim::Result<T>,
    builtin: impl Fn(&str) -> adsim::Result<(T, String)>,
) -> adsim::Result<(T, String, PathBuf)> {
    let path = Path::new(plan);
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| adsim::Error::io(path, e))?;
        let source = path.display().to_string();
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((parse(&text, &source)?, source, dir))
    } else {
        let (p, source) = builtin(plan)?;
        Ok((p, source, PathBuf::from(".")))
    }
}

fn calibrate(plan: &str, out: Option<PathBuf>, force: bool, quiet: bool) -> Result<()> {
    use adsim::study::calibrate::{CalibrationPlan, calibrate, write};
    let (parsed, source, dir) = plan_text(plan, CalibrationPlan::parse, CalibrationPlan::builtin)?;
    let out = out.unwrap_or_else(|| fresh_path(&format!("calibration-{}", parsed.name), ""));
    if out.exists() && !force {
        return Err(adsim::Error::Exists(out).into());
    }
    let bar = bar_with(
        !quiet,
        "{elapsed_precise} {msg} [{wide_bar}] {pos}/{len} points",
    );
    let progress = |wave: u32, finished: usize, all: usize| {
        bar.set_message(format!("wave {}", wave + 1));
        bar.set_length(all as u64);
        bar.set_position(finished as u64);
    };
    let c = calibrate(parsed, &source, &dir, &progress)?;
    bar.finish_and_clear();
    write(&c, &out, force)?;
    if !quiet {
        for (i, w) in c.waves.iter().enumerate() {
            say!(
                "wave {}: {} points, {} kept; space ruled out {:.1}% ({})",
                i + 1,
                w.evaluated,
                w.kept,
                100.0 * w.ruled_out,
                c.plan
                    .target
                    .iter()
                    .zip(&w.ruled_out_by)
                    .map(|(t, s)| format!("{} {:.0}%", t.name, 100.0 * s))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        say!("wrote {}", out.display());
    }
    if let Some(conflict) = &c.conflict {
        let mut what: Vec<String> = conflict
            .unmet
            .iter()
            .map(|t| format!("{t} is met by no point"))
            .collect();
        what.extend(
            conflict
                .pairs
                .iter()
                .map(|(a, b)| format!("{a} and {b} are never met together")),
        );
        if what.is_empty() {
            what.push("three or more targets are never met together".into());
        }
        eprintln!(
            "error: the targets are in conflict: {} (report in {})",
            what.join("; "),
            out.display()
        );
        std::process::exit(4);
    }
    Ok(())
}

fn study(
    plan: &str,
    out: Option<PathBuf>,
    shard: Option<String>,
    force: bool,
    quiet: bool,
    dry_run: bool,
) -> Result<()> {
    use adsim::study::{Plan, Study, batch};
    let shard = shard
        .as_deref()
        .map(adsim::shard::Shard::parse)
        .transpose()?;
    let (parsed, source, dir) = plan_text(plan, Plan::parse, Plan::builtin)?;
    let study = Study::new(parsed, &source, &dir)?;
    if !study.plan.seeds.is_empty() && shard.is_some() {
        return Err(adsim::Error::Argument {
            name: "--shard".into(),
            value: format!("{} (a plan with seeds)", study.plan.name),
            expected:
                "a plan without seeds: shard each seed's study as a plan of its own (seed = N)"
                    .into(),
        }
        .into());
    }
    if study.plan.then.is_some() && shard.is_some() {
        return Err(adsim::Error::Argument {
            name: "--shard".into(),
            value: format!("{} (a two-stage plan)", study.plan.name),
            expected: "a plan without [then]: its second stage depends on the first's results; shard each stage as a plan of its own".into(),
        }
        .into());
    }
    if dry_run {
        print_study_plan(&study, shard);
        return Ok(());
    }
    let stem = match shard {
        Some(s) => format!("{}-shard{}of{}", study.plan.name, s.index, s.count),
        None => study.plan.name.clone(),
    };
    let out = out.unwrap_or_else(|| fresh_path(&stem, ""));
    // A staged or seeded study's folder under way is its own to resume (checked by
    // run_staged and run_seeds).
    if out.exists() && !force && study.plan.then.is_none() && study.plan.seeds.is_empty() {
        return Err(adsim::Error::Exists(out).into());
    }
    let bar = bar_with(
        !quiet,
        "{elapsed_precise} [{wide_bar}] {pos}/{len} evaluations (eta {eta})",
    );
    if !quiet {
        let n = study.all_points().len();
        eprintln!(
            "study {}: {n} evaluations (the design's, and the tornado's one at a time) of {} at {} users x {} replications{}",
            study.plan.name,
            study.plan.scenario,
            study.plan.users,
            study.plan.replications,
            shard.map_or(String::new(), |s| format!(
                "; shard {}/{} of them",
                s.index, s.count
            ))
        );
    }
    let progress = |finished: usize, all: usize| {
        bar.set_length(all as u64);
        bar.set_position(finished as u64);
    };
    if !study.plan.seeds.is_empty() {
        let done = adsim::study::seeds::run_seeds(&study, &out, force, &progress)?;
        bar.finish_and_clear();
        if !quiet {
            let n: usize = done.stages.iter().map(|d| d.evaluations).sum();
            let resumed: usize = done.stages.iter().map(|d| d.resumed).sum();
            let kept = if done.kept.is_empty() {
                String::new()
            } else {
                let seeds: Vec<String> = done.kept.iter().map(u64::to_string).collect();
                format!(
                    "; resumed: the finished folders of seeds {} were kept",
                    seeds.join(", ")
                )
            };
            say!(
                "wrote the study at {} seeds ({n} evaluations{}{kept}) to {}/seed-*, and seeds.csv and the report to {}",
                study.plan.seeds.len(),
                resumed_note(resumed),
                out.display(),
                out.display()
            );
        }
        return Ok(());
    }
    if study.plan.then.is_some() {
        let done = batch::run_staged(&study, &out, force, &progress)?;
        bar.finish_and_clear();
        if !quiet {
            let what = ["the screening", "the Sobol stage", "the Latin hypercube"];
            let parts: Vec<String> = done
                .iter()
                .zip(what.iter().zip(batch::STAGES))
                .map(|(d, (w, dir))| {
                    format!(
                        "{w} ({} evaluations{}) to {}/{dir}",
                        d.evaluations,
                        resumed_note(d.resumed),
                        out.display()
                    )
                })
                .collect();
            say!(
                "wrote {}, and the report to {}",
                parts.join(", "),
                out.display()
            );
        }
        return Ok(());
    }
    let done = batch::run(&study, &out, force, shard, &progress)?;
    bar.finish_and_clear();
    if !quiet {
        if done.resumed > 0 {
            say!(
                "resumed: {} of {} evaluations were read back from the interrupted study",
                done.resumed,
                done.evaluations
            );
        }
        match shard {
            Some(s) => say!(
                "wrote shard {}/{} ({} evaluations) to {}: `adsim merge` joins the shards",
                s.index,
                s.count,
                done.evaluations,
                out.display()
            ),
            None => say!(
                "wrote plan.toml, evaluations.csv/.parquet, summary.csv, indices.csv and the report to {}",
                out.display()
            ),
        }
    }
    Ok(())
}

fn validate(
    users: u64,
    replications: u32,
    seed: u64,
    out: Option<PathBuf>,
    force: bool,
    quiet: bool,
) -> Result<()> {
    use adsim::validate::{Status, all_hold, shown, write};
    let outcomes = adsim::validate::validate(
        users,
        replications,
        seed,
        &|name| {
            if !quiet {
                eprintln!("running {name} at {users} users x {replications} replications");
            }
        },
        &|resolved| adsim::run::evaluate(resolved, &adsim::run::quiet),
    )?;
    let out = out.unwrap_or_else(|| default_run_dir("validation", users, seed));
    write(&outcomes, users, replications, &out, force)?;
    if !quiet {
        say!(
            "{:<24} {:<19} {:<15} {:<28} {}",
            "case",
            "role",
            "scenario",
            "model",
            "status"
        );
        for o in &outcomes {
            say!(
                "{:<24} {:<19} {:<15} {:<28} {}{}",
                o.case.name,
                o.case.role(),
                o.case.scenario,
                shown(o),
                o.status.label(),
                if o.status == Status::Fitted {
                    format!(" ({})", o.note)
                } else {
                    String::new()
                }
            );
        }
        say!(
            "wrote validation.md, validation.html and validation.csv to {}",
            out.display()
        );
    }
    if !all_hold(&outcomes) {
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.status == Status::Fail)
            .map(|o| o.case.name)
            .collect();
        eprintln!("error: validation failed: {}", failed.join(", "));
        std::process::exit(3);
    }
    Ok(())
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

/// `reports/runs/<stem><ext>`, or `<stem>-2<ext>`, `-3`... : the first that does not exist.
fn fresh_path(stem: &str, ext: &str) -> PathBuf {
    let dir = Path::new("reports/runs");
    (1..)
        .map(|k| {
            if k == 1 {
                dir.join(format!("{stem}{ext}"))
            } else {
                dir.join(format!("{stem}-{k}{ext}"))
            }
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{stem}{ext}")))
}

/// A new file under `reports/runs/` named after the size and seed, never an existing one.
fn default_out(users: u64, seed: u64, format: FormatArg) -> PathBuf {
    let ext = match format {
        FormatArg::Parquet => ".parquet",
        FormatArg::Csv => ".csv",
    };
    fresh_path(&format!("population-{users}u-seed{seed}"), ext)
}

fn generate(args: GenerateArgs) -> Result<()> {
    if args.columns {
        for c in DICTIONARY {
            say!("{:<20} {:<10} {}", c.name, c.dtype, c.description);
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
        format: args.format.into(),
        raw_phones: args.raw_phones,
        force: args.force,
    };
    let start = std::time::Instant::now();
    let bar = progress_bar(users, !args.quiet);
    let summary = write_population(&resolved, args.replication, &options, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if !args.quiet {
        let secs = start.elapsed().as_secs_f64();
        say!(
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

/// A new folder under `reports/runs/` named after the scenario, size and seed.
fn default_run_dir(name: &str, users: u64, seed: u64) -> PathBuf {
    fresh_path(&format!("{name}-{users}u-seed{seed}"), "")
}

fn run_scenario(args: RunArgs) -> Result<()> {
    let path = Path::new(&args.scenario);
    let (mut scenario, source, base) = if path.exists() {
        load_scenario(Some(path))?
    } else {
        let (s, source) = Scenario::builtin(&args.scenario)?;
        (s, source, PathBuf::from("."))
    };
    if let Some(n) = args.users {
        scenario.population.users = n;
    }
    if let Some(s) = args.seed {
        scenario.population.seed = s;
    }
    if let Some(r) = args.replications {
        scenario.population.replications = r;
    }
    if let Some(c) = args.chunk_size {
        scenario.engine.chunk_size = c;
    }
    let resolved = scenario.resolve(&source, &base)?;
    set_threads(args.threads)?;
    // A named study is read before any work, so a wrong folder costs nothing.
    let study = args
        .study
        .as_deref()
        .map(adsim::study::StudyResult::read)
        .transpose()?;
    let p = &resolved.scenario.population;
    let shard = args
        .shard
        .as_deref()
        .map(adsim::shard::Shard::parse)
        .transpose()?;
    if let Some(s) = shard {
        s.fits(p.users)?;
    }
    let plan = Plan::of(
        &resolved,
        &adsim::run::layout(&resolved),
        rayon::current_num_threads(),
    );
    let (limit, limit_source) = match &args.memory_limit {
        Some(text) => (parse_size(text)?, "--memory-limit".to_string()),
        None => memory_available().unwrap_or((u64::MAX, "no limit known".into())),
    };
    if args.dry_run {
        print_plan(&plan, limit, &limit_source);
        return plan.check(limit, &limit_source).map_err(Into::into);
    }
    plan.check(limit, &limit_source)?;
    let ids = shard.map_or(p.users, |s| {
        let r = s.ids(p.users);
        r.end - r.start
    });
    let bar = progress_bar(ids * u64::from(p.replications), !args.quiet && !args.json);
    let progress = |n: u64| bar.inc(n);
    if let Some(shard) = shard {
        let out = args.out.clone().unwrap_or_else(|| {
            default_run_dir(
                &format!(
                    "{}-shard{}of{}",
                    resolved.scenario.name, shard.index, shard.count
                ),
                p.users,
                p.seed,
            )
        });
        adsim::shard::run_shard(&resolved, shard, &out, args.force, &progress)?;
        bar.finish_and_clear();
        if !args.quiet {
            say!(
                "wrote shard {}/{} to {}",
                shard.index,
                shard.count,
                out.display()
            );
        }
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_run_dir(&resolved.scenario.name, p.users, p.seed));
    let options = RunOptions {
        out: out.clone(),
        force: args.force,
        extra: study.map(|s| {
            adsim::run::Extra(std::sync::Arc::new(
                move |summary: &polars::prelude::DataFrame| s.blocks(summary),
            ))
        }),
    };
    let result = adsim::run::run(&resolved, &options, &progress)?;
    bar.finish_and_clear();
    if args.json {
        let path = out.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        say_raw!("{text}");
    } else if !args.quiet {
        print_headline(
            &result.estimates.summary,
            p.replications,
            resolved.scenario.market.pricing,
        );
        say!(
            "wrote {} ({} users x {} replications simulated in {:.1} s, estimated and written in {:.1} s)",
            out.display(),
            p.users,
            p.replications,
            result.simulate_secs,
            result.estimate_secs
        );
    }
    Ok(())
}

/// `adsim parameters`: the registry as a table or JSON.
fn print_parameters(assumptions: bool, json: bool) {
    let list: Vec<&adsim::registry::Parameter> = adsim::registry::parameters()
        .iter()
        .filter(|p| !assumptions || p.is_assumption())
        .collect();
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return;
    }
    let range = |r: Option<[f64; 2]>| {
        r.map_or(String::new(), |[lo, hi]| {
            let f = |x: f64| {
                if x.abs() >= 1e300 {
                    "..".to_string()
                } else {
                    format!("{x}")
                }
            };
            format!("{} to {}", f(lo), f(hi))
        })
    };
    say!(
        "{:<46} {:<12} {:<14} {:<22} {}",
        "parameter",
        "type",
        "default",
        if assumptions { "plausible" } else { "legal" },
        "source"
    );
    for p in list {
        let default = p
            .default
            .as_ref()
            .map(|v| v.to_string())
            .filter(|v| v.len() <= 14)
            .unwrap_or_else(|| "(see file)".into());
        let r = if assumptions {
            range(p.plausible)
        } else {
            range(p.legal)
        };
        say!(
            "{:<46} {:<12} {:<14} {:<22} {}",
            p.path,
            p.kind,
            default,
            r,
            p.source
        );
    }
}

/// A size such as `2GB`, `512MiB`, `1.5 GiB` or `1000000`, in bytes.
fn parse_size(text: &str) -> Result<u64> {
    parse_size::parse_size(text).map_err(|e| {
        anyhow::anyhow!(
            "--memory-limit = {text}: expected a size such as 2GB, 512MiB or a number of bytes ({e})"
        )
    })
}

/// What `--dry-run` prints.
fn print_plan(plan: &Plan, limit: u64, limit_source: &str) {
    let levels: Vec<String> = plan.levels.iter().map(|l| l.to_string()).collect();
    say!("users per replication   {}", plan.users);
    say!(
        "arms                    {} (rate levels {})",
        plan.arms,
        levels.join(", ")
    );
    say!("replications            {}", plan.replications);
    say!("threads                 {}", plan.threads);
    say!(
        "count cells             {} per replication ({} table rows expected)",
        plan.cells,
        plan.rows
    );
    say!(
        "predicted peak memory   {} (limit {}: {limit_source})",
        human_bytes(plan.peak_bytes),
        if limit == u64::MAX {
            "none".to_string()
        } else {
            human_bytes(limit)
        }
    );
    let m = &plan.memory;
    say!(
        "  of which               base {}, accumulators {}, replications in flight {}, calibration {}, count tables {}",
        human_bytes(m.base),
        human_bytes(m.accumulators),
        human_bytes(m.in_flight),
        human_bytes(m.calibration),
        human_bytes(m.tables)
    );
    say!("predicted time          {:.1} s", plan.seconds);
}

/// What `adsim study --dry-run` prints: the plan's size and the shard's share of it. (No time
/// is predicted: a run's prediction counts the tables, charts and report that an evaluation
/// does not write, and overstates a study about five times.)
fn print_study_plan(study: &adsim::study::Study, shard: Option<adsim::shard::Shard>) {
    let p = &study.plan;
    let all = study.all_points().len();
    let points = study.points.len();
    say!("plan                    {} ({})", p.name, study.file);
    say!(
        "scenario                {} at {} users x {} replication{} an evaluation",
        p.scenario,
        p.users,
        p.replications,
        if p.replications == 1 { "" } else { "s" }
    );
    say!(
        "design                  {}, {} factors",
        p.design.key(),
        p.factor.len()
    );
    say!(
        "evaluations             {all} ({points} of the design, {} one at a time for the tornado)",
        all - points
    );
    if let Some(s) = shard {
        let r = s.ids(all as u64);
        if r.is_empty() {
            say!(
                "shard                   {}/{}: no evaluation (more shards than evaluations)",
                s.index,
                s.count
            );
        } else {
            say!(
                "shard                   {}/{}: evaluations {} to {} ({})",
                s.index,
                s.count,
                r.start,
                r.end - 1,
                r.end - r.start
            );
        }
    }
    if let Some(t) = &p.then {
        say!(
            "then                    {} on the {} factors the screening ranks highest, {} base points (counted after the screening)",
            t.design.key(),
            t.factors,
            t.samples
        );
        if let Some(n) = t.lhs_samples {
            say!(
                "then                    lhs on all {} factors, {n} points and the tornado's",
                p.factor.len()
            );
        }
    }
    if !p.seeds.is_empty() {
        let seeds: Vec<String> = p.seeds.iter().map(u64::to_string).collect();
        say!(
            "seeds                   {} (the study once per seed; the counts above are one seed's)",
            seeds.join(", ")
        );
    } else {
        say!("seed                    {}", study.base.population.seed);
    }
}

/// A short table of headline results: every arm at rates 0, 0.1, 0.25 and 0.5 (where swept).
fn print_headline(
    summary: &polars::prelude::DataFrame,
    replications: u32,
    pricing: adsim::demand::Pricing,
) {
    use adsim::table::{floats, texts, with_ci};
    let (arms, rates) = (texts(summary, "arm"), floats(summary, "rate"));
    let (achieved, shared) = (
        floats(summary, "achieved_rate"),
        floats(summary, "people_shared"),
    );
    // A baseline other than `none` (policy.baseline) shows the change against it too.
    let against: Vec<(f64, f64)> = floats(summary, "revenue_change_vs_baseline_musd")
        .into_iter()
        .zip(floats(summary, "revenue_change_musd"))
        .collect();
    let baseline = against.iter().any(|(v, c)| (v - c).abs() > 1e-9);
    let extra = |s: String| if baseline { s } else { String::new() };
    let ([first, second], [lead, other]) = (pricing.columns(), pricing.labels());
    say!(
        "{:<24} {:>5} {:>8} {:>22} {:>22} {:>22} {:>34} {:>22}{} {:>10}",
        "arm",
        "rate",
        "achieved",
        "precision %",
        "CTR %",
        "CA match %",
        format!("revenue change {lead} $M"),
        format!("{other} $M"),
        extra(format!(" {:>24}", "vs baseline $M (fixed)")),
        "to S (M)"
    );
    for row in adsim::table::headline_rows(summary) {
        say!(
            "{:<24} {:>5.2} {:>8.3} {:>22} {:>22} {:>22} {:>34} {:>22}{} {:>10.0}",
            arms[row],
            rates[row],
            achieved[row],
            with_ci(summary, "precision", row, 100.0, 2),
            with_ci(summary, "ctr", row, 100.0, 3),
            with_ci(summary, "ca_match_rate", row, 100.0, 2),
            with_ci(summary, first, row, 1.0, 1),
            with_ci(summary, second, row, 1.0, 1),
            extra(format!(
                " {:>24}",
                with_ci(summary, "revenue_change_vs_baseline_musd", row, 1.0, 1)
            )),
            shared[row] / 1e6,
        );
    }
    if replications > 1 {
        say!(
            "[brackets]: 95% intervals over {replications} replications (Monte Carlo noise only, not parameter uncertainty)"
        );
        say!(
            "revenue change {lead} (market.pricing); {other} beside it. Auctions: prices from the advertisers' auctions, budgets fixed over the horizon; fixed: a price per click per segment (docs/model.md §17.7)"
        );
    } else {
        say!("one replication: no intervals");
    }
}

fn compare(dirs: &[PathBuf], out: Option<PathBuf>, force: bool, json: bool) -> Result<()> {
    let c = adsim::compare::compare(dirs)?;
    let labels = adsim::compare::labels(dirs);
    let out = out.unwrap_or_else(|| default_run_dir("compare", dirs.len() as u64, 0));
    adsim::compare::write(&c, &labels, &out, force)?;
    let table = &c.table;
    let (runs, modes, arms, rates) = (
        adsim::table::texts(table, "run"),
        adsim::table::texts(table, "mode"),
        adsim::table::texts(table, "arm"),
        adsim::table::floats(table, "rate"),
    );
    let metric = |name: &str| adsim::table::floats(table, name);
    let (achieved, prec, ctr, ca, rev) = (
        metric("achieved_rate"),
        metric("precision"),
        metric("ctr"),
        metric("ca_match_rate"),
        metric("revenue_change_musd"),
    );
    if json {
        let v = |x: f64| {
            if x.is_finite() {
                serde_json::json!(x)
            } else {
                serde_json::Value::Null
            }
        };
        let rows: Vec<serde_json::Value> = (0..table.height())
            .map(|i| {
                serde_json::json!({"run": runs[i], "mode": modes[i], "arm": arms[i], "rate": rates[i], "achieved_rate": v(achieved[i]), "precision": v(prec[i]), "ctr": v(ctr[i]), "ca_match_rate": v(ca[i]), "revenue_change_musd": v(rev[i])})
            })
            .collect();
        let differences: Vec<serde_json::Value> = c
            .differences
            .iter()
            .map(|(k, values)| serde_json::json!({"key": k, "values": values}))
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": labels, "rows": rows, "left_out": c.left_out, "differences": differences
            }))?
        );
        return Ok(());
    }
    say!(
        "{:<36} {:<24} {:>5} {:>8} {:>12} {:>8} {:>11} {:>16}",
        "run",
        "arm",
        "rate",
        "achieved",
        "precision %",
        "CTR %",
        "CA match %",
        "revenue change $M"
    );
    // The headline rates of rate-mode runs, and every arm of a behavioral run.
    let mut shown = adsim::table::headline_rows(table);
    shown.extend((0..table.height()).filter(|&i| modes[i] == "behavioral"));
    shown.sort_unstable();
    shown.dedup();
    for i in shown {
        say!(
            "{:<36} {:<24} {:>5.2} {:>8.3} {:>12.2} {:>8.3} {:>11.2} {:>16.1}",
            runs[i],
            arms[i],
            rates[i],
            achieved[i],
            prec[i] * 100.0,
            ctr[i] * 100.0,
            ca[i] * 100.0,
            rev[i]
        );
    }
    for l in &c.left_out {
        say!("left out: {l}");
    }
    if !c.differences.is_empty() {
        say!("the scenarios differ in ({}):", labels.join(" / "));
        for (k, values) in &c.differences {
            say!("  {k}: {}", values.join(" / "));
        }
    }
    say!(
        "wrote compare.csv, differences.csv and charts to {}",
        out.display()
    );
    Ok(())
}
