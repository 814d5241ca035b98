//! The `adsim` command line: a thin clap shell over the library.

mod cli;

fn main() {
    // polars adds floats in an order that depends on how its worker threads split the work,
    // so means and deviations can differ in the last bit from run to run. One polars thread
    // makes every derived table a pure function of the counts (docs/model.md §2: same scenario and
    // seed, same bytes). The simulation itself runs on rayon's pool, unaffected. Set before
    // any thread exists and before polars reads it.
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        // SAFETY: no other thread runs yet, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", "1") };
    }
    watch_signals();
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: remove what is being written, say so, and exit with 128 plus
/// the signal's number (docs/model.md §2: nothing half-written survives).
fn watch_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            adsim::folder::interrupted(name, 128 + signal);
        }
    });
}
