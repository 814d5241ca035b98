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
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
