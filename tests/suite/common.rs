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

/// Runs the adsim binary with `args` in `dir` and asserts that it succeeds; its stdout.
pub fn adsim_ok(dir: &Path, args: &[&str]) -> String {
    let out = adsim(dir, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every leaf of a TOML value as `(key path, value)`; an array of tables is a leaf itself
/// and its tables' keys are under `path[]`.
pub fn toml_leaves(prefix: &str, v: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                toml_leaves(&p, v, out);
            }
        }
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table) => {
            out.push((prefix.to_string(), v.clone()));
            for x in a {
                toml_leaves(&format!("{prefix}[]"), x, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}
