//! Helpers shared by the test modules.

use std::path::Path;
use std::process::{Command, Output};

use adsim::population::Population;
use adsim::scenario::{Resolved, Scenario};

/// The default scenario at `users` users, resolved.
pub fn resolved(users: u64, seed: u64) -> Resolved {
    let mut s = Scenario::default();
    s.population.users = users;
    s.population.seed = seed;
    s.resolve("test", Path::new("."))
        .expect("default scenario resolves")
}

/// Replication 0 of the default scenario at `users` users.
pub fn population(users: u64, seed: u64) -> Population {
    Population::new(&resolved(users, seed), 0).expect("population builds")
}

/// The country codes of the built-in table, in table order (index = `User::country`).
pub fn country_codes() -> Vec<String> {
    resolved(1, 1)
        .data
        .countries
        .country
        .iter()
        .map(|c| c.code.clone())
        .collect()
}

/// Runs the adsim binary with `args` in `dir`, without a terminal.
pub fn adsim(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adsim"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("adsim runs")
}

/// Standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
