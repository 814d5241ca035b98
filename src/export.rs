//! Writing a population to Parquet or CSV with polars (`adsim generate`).
//!
//! Users are generated one batch of [`ROW_GROUP`] ids at a time, straight into columns, and
//! written as one Parquet row group (or one CSV block). Batches are built (and Parquet row
//! groups encoded and compressed) in parallel, as many at once as the pool has threads, at
//! most [`MAX_IN_FLIGHT`], then written in id order: memory stays at that many batches
//! whatever N is, and the file's bytes do not depend on the thread count or the engine's
//! chunk size. The file is written under a temporary name beside the target and renamed into
//! place when complete; an existing file is only replaced when asked. Columns are described
//! in [`DICTIONARY`], which `docs/data-dictionary.md` repeats (a test keeps the two equal).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use std::ops::Range;

use polars::io::parquet::write::{KeyValueMetadata, get_encodings};
use polars::prelude::*;
use polars_arrow::array::MutableBinaryViewArray;
use polars_parquet::write::{
    CompressedPage, Encoding, ParquetType, StatisticsOptions, Version, WriteOptions,
    array_to_columns, compress,
};
use rayon::prelude::*;

use crate::engine;
use crate::error::{Error, Result};
use crate::population::Population;
use crate::run::Progress;
use crate::scenario::Resolved;

/// Rows per Parquet row group and per generated batch.
pub const ROW_GROUP: u64 = 1 << 20;
/// The compression of every column: zstd at level 1 (at 10^7 users, 2.7% smaller than zstd's
/// default level 3, and no slower; reports/performance.md).
fn compression() -> ParquetCompression {
    ParquetCompression::Zstd(polars_parquet::write::ZstdLevel::try_new(1).ok())
}

/// Columns with a distinct value in (almost) every row: written plain, without trying a
/// dictionary (the writer would estimate their cardinality and fall back to plain anyway).
const DISTINCT: [&str; 4] = ["user_id", "phone_sha256", "phone_e164", "privacy_score"];
/// Row groups built and compressed at once, at most: each holds about 0.35 GB while in
/// flight, so memory stays under 3 GB on a machine of many cores (2 cores: about 0.8 GB).
pub const MAX_IN_FLIGHT: usize = 8;
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
    let schema = batch_frame(population, 0..0, &names, options.raw_phones)
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
                .with_compression(compression())
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
    let encoder = match &mut sink {
        Sink::Parquet(w) => Some(RowGroupEncoder::new(w, &schema).map_err(table_err)?),
        Sink::Csv(_) => None,
    };
    // Batches are built (and, for Parquet, encoded and compressed) in parallel, a wave at a
    // time: as many batches as the pool has threads, at most MAX_IN_FLIGHT, so memory stays
    // at that many batches. They are written in id order: the file's bytes do not depend on
    // the thread count.
    let threads = rayon::current_num_threads().clamp(1, MAX_IN_FLIGHT) as u64;
    let mut rows = 0;
    for wave in engine::batches(0..population.len(), ROW_GROUP * threads) {
        let batches: Vec<Range<u64>> = engine::batches(wave, ROW_GROUP).collect();
        let built = batches
            .into_par_iter()
            .map(|range| {
                let df = batch_frame(population, range, &names, options.raw_phones)?;
                Ok(match &encoder {
                    Some(encoder) => Built::Pages(df.height() as u64, encoder.encode(&df)?),
                    None => Built::Frame(df),
                })
            })
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(table_err)?;
        for batch in built {
            let n = match (&mut sink, batch) {
                (Sink::Parquet(w), Built::Pages(n, pages)) => {
                    w.write_row_group(n, &pages).map_err(table_err)?;
                    n
                }
                (Sink::Csv(w), Built::Frame(df)) => {
                    w.write_batch(&df).map_err(table_err)?;
                    df.height() as u64
                }
                // The encoder exists exactly when the sink is Parquet: never reached.
                _ => {
                    return Err(table_err(
                        polars_err!(ComputeError: "a batch built for another format"),
                    ));
                }
            };
            rows += n;
            progress(n);
        }
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

/// Encodes and compresses one row group's columns into pages, as polars' batched writer does
/// when it writes (same encodings, statistics and compression), but on the calling thread, so
/// that several row groups can be compressed at once and then written in order.
struct RowGroupEncoder {
    fields: Vec<ParquetType>,
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
}

impl RowGroupEncoder {
    fn new(writer: &mut ParquetBatchedWriter, schema: &Schema) -> PolarsResult<Self> {
        let arrow = schema.to_arrow(CompatLevel::newest());
        Ok(RowGroupEncoder {
            fields: writer.parquet_schema().fields().to_vec(),
            encodings: get_encodings(&arrow)
                .iter()
                .zip(schema.iter_names())
                .map(|(encoding, name)| {
                    if DISTINCT.contains(&name.as_str()) {
                        vec![Encoding::Plain]
                    } else {
                        encoding.clone()
                    }
                })
                .collect(),
            options: WriteOptions {
                statistics: StatisticsOptions::default(),
                version: Version::V1,
                compression: compression().into(),
                data_page_size: None,
            },
        })
    }

    /// The compressed pages of `df` (one chunk per column), column by column.
    fn encode(&self, df: &DataFrame) -> PolarsResult<Vec<Vec<CompressedPage>>> {
        let mut out = Vec::with_capacity(self.fields.len());
        for batch in df.iter_chunks(CompatLevel::newest(), false) {
            for ((array, field), encoding) in batch
                .columns()
                .iter()
                .zip(&self.fields)
                .zip(&self.encodings)
            {
                for pages in array_to_columns(array, field.clone(), self.options, encoding)? {
                    let compressed = pages
                        .map(|page| {
                            compress(page?, Vec::new(), self.options.compression)
                                .map_err(PolarsError::from)
                        })
                        .collect::<PolarsResult<Vec<_>>>()?;
                    out.push(compressed);
                }
            }
        }
        if out.len() != self.fields.len() {
            polars_bail!(ComputeError: "a row group of {} columns encoded as {} (one chunk a column expected)", self.fields.len(), out.len());
        }
        Ok(out)
    }
}

/// A batch ready to write: a Parquet row group's compressed pages (with its rows), or a
/// frame for the CSV writer.
enum Built {
    Pages(u64, Vec<Vec<CompressedPage>>),
    Frame(DataFrame),
}

type ParquetBatchedWriter = polars::io::parquet::write::BatchedWriter<BufWriter<File>>;

enum Sink {
    Parquet(Box<ParquetBatchedWriter>),
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

/// The rows of users `range`, built column by column as they are generated (no per-row
/// allocation: a phone's hash or E.164 form is formatted on the stack and copied into its
/// column's buffer).
fn batch_frame(
    population: &Population,
    range: Range<u64>,
    names: &CountryNames,
    raw_phones: bool,
) -> PolarsResult<DataFrame> {
    let n = (range.end - range.start) as usize;
    let phone_name = if raw_phones {
        "phone_e164"
    } else {
        "phone_sha256"
    };
    let mut ids = Vec::with_capacity(n);
    let mut countries = Vec::with_capacity(n);
    let mut bands = Vec::with_capacity(n);
    let mut phones = MutableBinaryViewArray::<str>::with_capacity(n);
    let mut histories = Vec::with_capacity(n);
    let mut on_file = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut interests = Vec::with_capacity(n);
    let mut customers = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let ends: Vec<u64> = population.country_ranges().iter().map(|r| r.end).collect();
    let mut country = if n == 0 {
        0
    } else {
        population.country_of(range.start)
    };
    let mut hex = [0u8; 64];
    let mut e164 = [0u8; 21];
    for id in range {
        while id >= ends[country] {
            country += 1;
        }
        let u = population.user_in(id, country);
        ids.push(u.id);
        countries.push(u.country);
        bands.push(u.age_band);
        if raw_phones {
            phones.push_value(u.phone.e164_into(&mut e164));
        } else {
            u.phone.sha256_hex_into(&mut hex);
            // Hex digits are ASCII.
            phones.push_value(std::str::from_utf8(&hex).unwrap_or_default());
        }
        histories.push(u.number_history.label());
        on_file.push(u.number_on_file_of);
        accounts.push(u.s_account.label());
        senders.push(u.s_account.foreign_sender());
        interests.push(u.interests);
        customers.push(u.customer_of);
        messages.push(u.messages_business);
        scores.push(u.privacy_score);
    }
    let labels = |name: &str, values: &[&str]| {
        StringChunked::from_iter_values(name.into(), values.iter().copied()).into_column()
    };
    let country_labels: Vec<&str> = countries
        .iter()
        .map(|&c| names.countries[c as usize].as_str())
        .collect();
    let band_labels: Vec<&str> = bands
        .iter()
        .map(|&b| names.bands[b as usize].as_str())
        .collect();
    let columns = vec![
        Series::from_vec("user_id".into(), ids).into_column(),
        labels("country", &country_labels),
        labels("age_band", &band_labels),
        StringChunked::with_chunk(phone_name.into(), phones.freeze()).into_column(),
        labels("number_history", &histories),
        UInt64Chunked::from_iter_options("number_on_file_of".into(), on_file.into_iter())
            .into_column(),
        labels("s_account", &accounts),
        UInt64Chunked::from_iter_options("s_account_sender".into(), senders.into_iter())
            .into_column(),
        Series::from_vec("interests".into(), interests).into_column(),
        Series::from_vec("customer_of".into(), customers).into_column(),
        Series::from_vec("messages_business".into(), messages).into_column(),
        Series::from_vec("privacy_score".into(), scores).into_column(),
    ];
    DataFrame::new(n, columns)
}
