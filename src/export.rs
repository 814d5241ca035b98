//! Writing a population to Parquet or CSV with polars (`adsim generate`).
//!
//! Users are generated one batch of [`ROW_GROUP`] ids at a time by the engine and written as
//! one Parquet row group (or one CSV block), so memory stays at one batch whatever N is, and
//! the file's bytes do not depend on the thread count or the engine's chunk size. The file is
//! written under a temporary name beside the target and renamed into place when complete; an
//! existing file is only replaced when asked. Columns are described in [`DICTIONARY`], which
//! `docs/data-dictionary.md` repeats (a test keeps the two equal).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use polars::io::parquet::write::KeyValueMetadata;
use polars::prelude::*;
use rayon::prelude::*;

use crate::engine;
use crate::error::{Error, Result};
use crate::population::{Population, User};
use crate::run::Progress;
use crate::scenario::Resolved;

/// Rows per Parquet row group and per generated batch.
pub const ROW_GROUP: u64 = 1 << 20;
/// Version of the population table's schema; bumped on any change of columns or meaning.
pub const SCHEMA_VERSION: &str = "population/1";

/// Output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet, zstd-compressed, one row group per 2^20 users.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
}

/// One column of the population table.
#[derive(Clone, Copy, Debug)]
pub struct ColumnDoc {
    /// Column name.
    pub name: &'static str,
    /// polars/Arrow type.
    pub dtype: &'static str,
    /// What it holds, with its unit or codes.
    pub description: &'static str,
}

/// The data dictionary of the population table, in column order. The phone column is
/// `phone_sha256` by default and `phone_e164` with `--raw-phones`.
pub const DICTIONARY: &[ColumnDoc] = &[
    ColumnDoc {
        name: "user_id",
        dtype: "u64",
        description: "User id, 0..N. Users of one country have consecutive ids, countries in table order.",
    },
    ColumnDoc {
        name: "country",
        dtype: "str",
        description: "ISO 3166-1 alpha-2 code of the user's country (data/countries.toml).",
    },
    ColumnDoc {
        name: "age_band",
        dtype: "str",
        description: "Age band label (data/age_bands.toml): 13-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+.",
    },
    ColumnDoc {
        name: "phone_sha256",
        dtype: "str",
        description: "Lower-case hex SHA-256 of the normalized number (digits, country code first, no \"+\"), as S matches Custom Audiences.",
    },
    ColumnDoc {
        name: "phone_e164",
        dtype: "str",
        description: "With --raw-phones only, instead of phone_sha256: the number in E.164 (\"+\" and digits). Synthetic, valid, and possibly a real person's.",
    },
    ColumnDoc {
        name: "number_history",
        dtype: "str",
        description: "fresh, recycled (the number belonged to another user before) or shared (a household member registered the phone on S).",
    },
    ColumnDoc {
        name: "number_on_file_of",
        dtype: "u64, null",
        description: "user_id of the user whose S account holds this user's number (previous owner or household member), when that account has a phone on file; null otherwise.",
    },
    ColumnDoc {
        name: "s_account",
        dtype: "str",
        description: "none (no S account), no_phone, own (holds the user's number), stale (holds the user's old number, now recycled to s_account_sender) or household (holds the shared phone of s_account_sender).",
    },
    ColumnDoc {
        name: "s_account_sender",
        dtype: "u64, null",
        description: "For stale and household accounts: user_id of the M user whose number the account holds; null otherwise.",
    },
    ColumnDoc {
        name: "interests",
        dtype: "u64",
        description: "Bit set of interests: bit s (value 2^s) is segment s of data/segments.toml, in file order.",
    },
    ColumnDoc {
        name: "customer_of",
        dtype: "u64",
        description: "Bit set: the user is a customer of a business in segment s, which holds the user's number.",
    },
    ColumnDoc {
        name: "messages_business",
        dtype: "u64",
        description: "Bit set: the user messages businesses of segment s on M (the M-side signal).",
    },
    ColumnDoc {
        name: "privacy_score",
        dtype: "f64",
        description: "Latent opt-out propensity, logistic scale: heterogeneity x (country + age + interest shifts) + Logistic(0, 1) noise.",
    },
];

/// What to write and how.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The target file.
    pub out: PathBuf,
    /// Parquet or CSV.
    pub format: Format,
    /// Write E.164 numbers instead of their SHA-256.
    pub raw_phones: bool,
    /// Replace an existing file.
    pub force: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Rows (users) written.
    pub rows: u64,
    /// Bytes of the finished file.
    pub bytes: u64,
}

/// Writes the population of replication `replication` of `resolved` to `options.out`.
pub fn write_population(
    resolved: &Resolved,
    replication: u32,
    options: &ExportOptions,
    progress: Progress,
) -> Result<ExportSummary> {
    let out = &options.out;
    if out.exists() && !options.force {
        return Err(Error::Exists(out.clone()));
    }
    let population = Population::new(resolved, replication)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = crate::folder::temp_path(out);
    let _guard = crate::folder::Unfinished::new(&tmp);
    let result = write_to(&population, resolved, replication, options, &tmp, progress);
    match result {
        Ok(rows) => {
            crate::folder::publish_file(&tmp, out, options.force)?;
            let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
            Ok(ExportSummary { rows, bytes })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_to(
    population: &Population,
    resolved: &Resolved,
    replication: u32,
    options: &ExportOptions,
    tmp: &Path,
    progress: Progress,
) -> Result<u64> {
    let table_err = |source| Error::Table {
        path: options.out.clone(),
        source,
    };
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let names = CountryNames::new(resolved);
    let schema = batch_frame(&[], &names, options.raw_phones)
        .map_err(table_err)?
        .schema()
        .as_ref()
        .clone();
    let mut sink = match options.format {
        Format::Parquet => {
            let metadata = KeyValueMetadata::from_static(vec![
                ("adsim.schema_version".into(), SCHEMA_VERSION.into()),
                ("adsim.version".into(), env!("CARGO_PKG_VERSION").into()),
                ("adsim.replication".into(), replication.to_string()),
                ("adsim.scenario".into(), resolved.scenario.to_toml()),
            ]);
            let writer = ParquetWriter::new(BufWriter::new(file))
                .with_compression(ParquetCompression::Zstd(None))
                .with_row_group_size(Some(ROW_GROUP as usize))
                .with_key_value_metadata(Some(metadata))
                .batched(&schema)
                .map_err(table_err)?;
            Sink::Parquet(Box::new(writer))
        }
        Format::Csv => Sink::Csv(
            CsvWriter::new(BufWriter::new(file))
                .batched(&schema)
                .map_err(table_err)?,
        ),
    };
    let chunk = resolved.scenario.engine.chunk_size;
    let mut rows = 0;
    for range in engine::batches(0..population.len(), ROW_GROUP) {
        let users = engine::generate(population, range, chunk);
        let df = batch_frame(&users, &names, options.raw_phones).map_err(table_err)?;
        match &mut sink {
            Sink::Parquet(w) => w.write_batch(&df),
            Sink::Csv(w) => w.write_batch(&df),
        }
        .map_err(table_err)?;
        rows += users.len() as u64;
        progress(users.len() as u64);
    }
    match sink {
        Sink::Parquet(w) => {
            w.finish().map_err(table_err)?;
        }
        Sink::Csv(mut w) => w.finish().map_err(table_err)?,
    }
    // The writers flush their buffers on finish; make sure the bytes are on disk before the
    // rename makes the file look complete.
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp, e))?;
    Ok(rows)
}

enum Sink {
    Parquet(Box<polars::io::parquet::write::BatchedWriter<BufWriter<File>>>),
    Csv(polars::io::csv::write::BatchedWriter<BufWriter<File>>),
}

/// Country codes and age band labels, by index.
struct CountryNames {
    countries: Vec<String>,
    bands: Vec<String>,
}

impl CountryNames {
    fn new(resolved: &Resolved) -> Self {
        CountryNames {
            countries: resolved
                .data
                .country_codes()
                .into_iter()
                .map(String::from)
                .collect(),
            bands: resolved
                .data
                .age_labels()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

fn batch_frame(users: &[User], names: &CountryNames, raw_phones: bool) -> PolarsResult<DataFrame> {
    let n = users.len();
    let phone_name = if raw_phones {
        "phone_e164"
    } else {
        "phone_sha256"
    };
    let phones: Vec<String> = if raw_phones {
        users.par_iter().map(|u| u.phone.e164()).collect()
    } else {
        users.par_iter().map(|u| u.phone.sha256_hex()).collect()
    };
    let col_u64 = |name: &str, f: &dyn Fn(&User) -> u64| {
        Series::from_vec(name.into(), users.iter().map(f).collect::<Vec<u64>>()).into_column()
    };
    let col_opt = |name: &str, f: &dyn Fn(&User) -> Option<u64>| {
        UInt64Chunked::from_iter_options(name.into(), users.iter().map(f)).into_column()
    };
    fn col_str<'a>(users: &'a [User], name: &str, f: impl Fn(&'a User) -> &'a str) -> Column {
        StringChunked::from_iter_values(name.into(), users.iter().map(f)).into_column()
    }
    let columns = vec![
        col_u64("user_id", &|u| u.id),
        col_str(users, "country", |u| {
            names.countries[u.country as usize].as_str()
        }),
        col_str(users, "age_band", |u| {
            names.bands[u.age_band as usize].as_str()
        }),
        StringChunked::from_iter_values(phone_name.into(), phones.iter().map(String::as_str))
            .into_column(),
        col_str(users, "number_history", |u| u.number_history.label()),
        col_opt("number_on_file_of", &|u| u.number_on_file_of),
        col_str(users, "s_account", |u| u.s_account.label()),
        col_opt("s_account_sender", &|u| u.s_account.foreign_sender()),
        col_u64("interests", &|u| u.interests),
        col_u64("customer_of", &|u| u.customer_of),
        col_u64("messages_business", &|u| u.messages_business),
        Series::from_vec(
            "privacy_score".into(),
            users.iter().map(|u| u.privacy_score).collect::<Vec<f64>>(),
        )
        .into_column(),
    ];
    DataFrame::new(n, columns)
}
