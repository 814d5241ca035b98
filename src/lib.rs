//! # adsim: what sharing a messenger's phone numbers with a social network does to ads
//!
//! adsim simulates the 2016 WhatsApp ("M") to Facebook ("S") phone-number sharing, from a
//! handful of users up to M's real billion. The pipeline, one module per stage:
//!
//! 1. [`scenario`]: a TOML scenario (size, seed, replications, knobs, reference data),
//!    validated before any work; [`data`] holds the reference tables (countries, segments,
//!    age bands) with their sources.
//! 2. [`population`]: every user is a pure function of `(seed, replication, id)` through the
//!    counter-based generators of [`rng`]; unique, valid phone numbers come from a keyed
//!    bijection ([`permutation`]) onto each country's mobile number blocks ([`phone`]).
//! 3. [`engine`]: users are generated in chunks on rayon and streamed onwards; no stage holds
//!    all users, so memory does not grow with N, and the output does not depend on the thread
//!    count or chunk size.
//! 4. [`policy`], [`calibration`], [`sweep`], [`targeting`], [`audiences`]: the simulation.
//!    Arms and opt-out (who, when; thresholds from a calibration sample), linking, noisy-OR
//!    targeting with a fixed impression supply, Custom Audience matching; every arm and rate
//!    level in one pass, folded into integer counts ([`cells`], one table of measures).
//! 5. [`metrics`], [`revenue`]: each replication's counts are summed into margins and turned
//!    into metrics by polars, then folded across replications with their intervals.
//! 6. [`run`]: the evaluation path ([`run::evaluate`], no files) and a whole run, which also
//!    writes the results folder ([`folder`]: atomic publishing, count tables written one
//!    replication at a time); [`plan`] predicts a run's memory and time before it starts;
//!    [`charts`] and [`report`] draw and explain it; [`compare`] sets folders side by side;
//!    [`table`] reads the estimated tables.
//! 7. [`shard`]: slices of users on other machines, merged by adding counts.
//! 8. [`export`]: a population written to Parquet or CSV (`adsim generate`).
//! 9. [`registry`]: every parameter with its legal and plausible range and its source.
//!
//! Any user can be regenerated from its id, and S's phone index (the inverse number map) finds
//! the holder of any number:
//!
//! ```
//! use adsim::population::Population;
//! use adsim::scenario::Scenario;
//!
//! let resolved = Scenario::default().resolve("example", std::path::Path::new("."))?;
//! let population = Population::new(&resolved, 0)?;
//! let user = population.user(42);
//! assert_eq!(population.user(42), user);
//! assert_eq!(population.holder_of(&user.phone), Some(42));
//! assert!(user.phone.e164().starts_with("+91")); // the first ids are Indian users
//! # Ok::<(), adsim::Error>(())
//! ```
//!
//! The model is specified in docs/model.md; every default number in `data/` carries its
//! source or the word "assumption".
#![deny(missing_docs)]

pub mod audiences;
pub mod calibration;
pub mod cancel;
pub mod capacity;
pub mod cells;
pub mod charts;
pub mod compare;
pub mod data;
pub mod demand;
pub mod document;
pub mod engine;
pub mod error;
pub mod export;
pub mod folder;
pub mod market;
pub mod metrics;
pub mod permutation;
pub mod phone;
pub mod plan;
pub mod policy;
pub mod population;
pub mod registry;
pub mod report;
pub mod revenue;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod study;
pub mod sweep;
pub mod table;
pub mod targeting;
pub mod validate;

pub use error::{Error, Result};
