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
use polars_arrow::array::{
    ArrayRef, DictionaryArray, MutableBinaryViewArray, PrimitiveArray, Utf8ViewArray,
};
use polars_arrow::datatypes::{ArrowDataType, IntegerType};
use polars_parquet::write::{
    CompressedPage, Encoding, ParquetType, StatisticsOptions, Version, WriteOptions,
    array_to_columns, compress,
};
use rayon::prelude::*;

use crate::engine;
use crate::error::{Error, Result};
use crate::population::{KnownNumber, NumberHistory, Population, SAccount};
use crate::run::Progress;
use crate::scenario::Resolved;

/// Rows per Parquet row group and per generated batch.
pub const ROW_GROUP: u64 = 1 << 20;
/// The compression of every column: zstd at level 1 (at 10^7 users, 2.7% smaller than zstd's
/// default level 3, and no slower; reports/performance.md).
fn compression() -> ParquetCompression {
    ParquetCompression::Zstd(polars_parquet::write::ZstdLevel::try_new(1).ok())
}

/// Columns written plain, without trying a dictionary: those with a distinct value in
/// (almost) every row (the writer would estimate their cardinality and fall back to plain
/// anyway), the bit sets (plain and zstd-compressed they are a little smaller than
/// dictionary-encoded, and the export 10% faster: reports/performance.md) and the nullable
/// ids.
const PLAIN: [&str; 9] = [
    "user_id",
    "phone_sha256",
    "phone_e164",
    "privacy_score",
    "interests",
    "customer_of",
    "messages_business",
    "number_on_file_of",
    "s_account_sender",
];
/// Row groups built and compressed at once, at most: each holds about 0.35 GB while in
/// flight, and a wave waits while the one before is written, so memory stays under 6 GB on a
/// machine of many cores (2 cores: about 1 GB).
pub const MAX_IN_FLIGHT: usize = 8;
/// Version of the population table's schema; bumped on any change of columns or meaning.
pub const SCHEMA_VERSION: &str = "population/3";

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
        dtype: "binary (Parquet), str (CSV)",
        description: "SHA-256 of the normalized number (digits, country code first, no \"+\"), as S matches Custom Audiences: the 32-byte digest in Parquet (lower-case hex one cast away: `pl.col(\"phone_sha256\").bin.encode(\"hex\")` in polars, `lower(hex(phone_sha256))` in DuckDB), lower-case hex in CSV.",
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
        name: "number_known",
        dtype: "str",
        description: "How S knew the user's current number on the user's own account before any sharing (docs/model.md §3.5): unknown (it did not, or no S account), on_file (the phone on file), security_or_messenger (given for two-factor authentication or to Messenger) or contact_uploads (matched from other users' uploaded contacts).",
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
    let form = match options.format {
        _ if options.raw_phones => PhoneForm::E164,
        Format::Parquet => PhoneForm::Sha256,
        Format::Csv => PhoneForm::Sha256Hex,
    };
    let schema = Batch::generate(population, 0..0, form)
        .into_frame(&names)
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
    // time: as many batches as the pool has threads, at most MAX_IN_FLIGHT. They are written in
    // id order, by a thread of their own while the next wave is built (the hand-over waits
    // until the writer is free, so at most two waves are held: the one being written and the
    // one built); the file's bytes do not depend on the thread count.
    let threads = rayon::current_num_threads().clamp(1, MAX_IN_FLIGHT) as u64;
    let (rows, sink) = std::thread::scope(|scope| -> Result<(u64, Sink)> {
        let (hand, take) = std::sync::mpsc::sync_channel::<Vec<Built>>(0);
        let writer = scope.spawn(move || -> Result<(u64, Sink)> {
            let mut rows = 0;
            for wave in take {
                for batch in wave {
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
            Ok((rows, sink))
        });
        for wave in engine::batches(0..population.len(), ROW_GROUP * threads) {
            let batches: Vec<Range<u64>> = engine::batches(wave, ROW_GROUP).collect();
            let built = batches
                .into_par_iter()
                .map(|range| {
                    let batch = Batch::generate(population, range, form);
                    Ok(match &encoder {
                        Some(encoder) => {
                            let rows = batch.ids.len() as u64;
                            let arrays = batch.into_arrays(&names)?;
                            Built::Pages(rows, encoder.encode(&arrays)?)
                        }
                        None => Built::Frame(batch.into_frame(&names)?),
                    })
                })
                .collect::<PolarsResult<Vec<_>>>()
                .map_err(table_err)?;
            // A writer that stopped has an error to report, below.
            if hand.send(built).is_err() {
                break;
            }
        }
        drop(hand);
        writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
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
                    if PLAIN.contains(&name.as_str()) {
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

    /// The compressed pages of a row group's `arrays` (one a column), column by column.
    fn encode(&self, arrays: &[ArrayRef]) -> PolarsResult<Vec<Vec<CompressedPage>>> {
        let mut out = Vec::with_capacity(self.fields.len());
        for ((array, field), encoding) in arrays.iter().zip(&self.fields).zip(&self.encodings) {
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
struct CountryNames<'a> {
    countries: Vec<&'a str>,
    bands: Vec<&'a str>,
}

impl<'a> CountryNames<'a> {
    fn new(resolved: &'a Resolved) -> Self {
        CountryNames {
            countries: resolved.data.country_codes(),
            bands: resolved.data.age_labels(),
        }
    }
}

/// How the phone column holds numbers: E.164 text (`--raw-phones`), or their SHA-256, as 32
/// bytes in Parquet and as lower-case hex in CSV (a text format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhoneForm {
    E164,
    Sha256Hex,
    Sha256,
}

/// The columns of one batch of users, as generated: labels as indices into their tables
/// ([`CountryNames`], [`NumberHistory::LABELS`], [`SAccount::LABELS`],
/// [`KnownNumber::LABELS`]).
struct Batch {
    form: PhoneForm,
    ids: Vec<u64>,
    countries: Vec<u32>,
    bands: Vec<u32>,
    phones: ArrayRef,
    histories: Vec<u32>,
    on_file: Vec<Option<u64>>,
    accounts: Vec<u32>,
    known: Vec<u32>,
    senders: Vec<Option<u64>>,
    interests: Vec<u64>,
    customers: Vec<u64>,
    messages: Vec<u64>,
    scores: Vec<f64>,
}

impl Batch {
    /// Users `range`, built column by column as they are generated (no per-row allocation: a
    /// phone's hash or E.164 form is formatted on the stack and copied into its column).
    fn generate(population: &Population, range: Range<u64>, form: PhoneForm) -> Self {
        let n = (range.end - range.start) as usize;
        let mut b = Batch {
            form,
            ids: Vec::with_capacity(n),
            countries: Vec::with_capacity(n),
            bands: Vec::with_capacity(n),
            phones: Utf8ViewArray::new_empty(ArrowDataType::Utf8View).boxed(),
            histories: Vec::with_capacity(n),
            on_file: Vec::with_capacity(n),
            accounts: Vec::with_capacity(n),
            known: Vec::with_capacity(n),
            senders: Vec::with_capacity(n),
            interests: Vec::with_capacity(n),
            customers: Vec::with_capacity(n),
            messages: Vec::with_capacity(n),
            scores: Vec::with_capacity(n),
        };
        let mut text = MutableBinaryViewArray::<str>::with_capacity(match form {
            PhoneForm::Sha256 => 0,
            _ => n,
        });
        let mut digests = MutableBinaryViewArray::<[u8]>::with_capacity(match form {
            PhoneForm::Sha256 => n,
            _ => 0,
        });
        let ends: Vec<u64> = population.country_ranges().iter().map(|r| r.end).collect();
        let mut country = if n == 0 {
            0
        } else {
            population.country_of(range.start)
        };
        let mut hex = [0u8; 64];
        let mut e164 = [0u8; 21];
        let mut digest = [0u8; 32];
        for id in range {
            while id >= ends[country] {
                country += 1;
            }
            let u = population.user_in(id, country);
            b.ids.push(u.id);
            b.countries.push(u32::from(u.country));
            b.bands.push(u32::from(u.age_band));
            match form {
                PhoneForm::E164 => text.push_value(u.phone.e164_into(&mut e164)),
                PhoneForm::Sha256Hex => {
                    u.phone.sha256_hex_into(&mut hex);
                    // Hex digits are ASCII.
                    text.push_value(std::str::from_utf8(&hex).unwrap_or_default());
                }
                PhoneForm::Sha256 => {
                    u.phone.sha256_into(&mut digest);
                    digests.push_value(digest);
                }
            }
            b.histories.push(u.number_history.code() as u32);
            b.on_file.push(u.number_on_file_of);
            b.accounts.push(u.s_account.code() as u32);
            b.known.push(u.number_known.code() as u32);
            b.senders.push(u.s_account.foreign_sender());
            b.interests.push(u.interests);
            b.customers.push(u.customer_of);
            b.messages.push(u.messages_business);
            b.scores.push(u.privacy_score);
        }
        b.phones = match form {
            PhoneForm::Sha256 => digests.freeze().boxed(),
            _ => text.freeze().boxed(),
        };
        b
    }

    /// The batch as a frame of [`DICTIONARY`]'s columns, labels as strings (for the CSV
    /// writer, and for the file's schema).
    fn into_frame(mut self, names: &CountryNames) -> PolarsResult<DataFrame> {
        let n = self.ids.len();
        let labels = self.labels(names).map(|(name, codes, table)| {
            StringChunked::from_iter_values(name.into(), codes.iter().map(|&c| table[c as usize]))
                .into_column()
        });
        DataFrame::new(n, with_labels(self.numbers()?, labels))
    }

    /// The batch's columns as Arrow arrays in [`DICTIONARY`]'s order, for the Parquet encoder.
    /// Label columns are dictionary arrays, keyed in order of first appearance: the pages the
    /// encoder makes of them are those it makes of the string column once it has
    /// dictionary-encoded it, without hashing a string a row.
    fn into_arrays(mut self, names: &CountryNames) -> PolarsResult<Vec<ArrayRef>> {
        let [a, b, c, d, e] = self
            .labels(names)
            .map(|(_, codes, table)| dictionary(codes, table));
        let labels = [a?, b?, c?, d?, e?];
        let numbers = self
            .numbers()?
            .iter()
            .map(|c| {
                c.as_materialized_series()
                    .to_arrow(0, CompatLevel::newest())
            })
            .collect();
        Ok(with_labels(numbers, labels))
    }

    /// The label columns: name, codes and the labels they index.
    fn labels<'s>(
        &'s self,
        names: &'s CountryNames,
    ) -> [(&'static str, &'s [u32], &'s [&'s str]); 5] {
        [
            ("country", &self.countries, &names.countries),
            ("age_band", &self.bands, &names.bands),
            ("number_history", &self.histories, &NumberHistory::LABELS),
            ("s_account", &self.accounts, &SAccount::LABELS),
            ("number_known", &self.known, &KnownNumber::LABELS),
        ]
    }

    /// The columns that are not labels, in [`DICTIONARY`]'s order.
    fn numbers(&mut self) -> PolarsResult<Vec<Column>> {
        let phone_name = match self.form {
            PhoneForm::E164 => "phone_e164",
            PhoneForm::Sha256Hex | PhoneForm::Sha256 => "phone_sha256",
        };
        use std::mem::take;
        let options = |name: &str, v: Vec<Option<u64>>| {
            UInt64Chunked::from_iter_options(name.into(), v.into_iter()).into_column()
        };
        let phones = std::mem::replace(
            &mut self.phones,
            Utf8ViewArray::new_empty(ArrowDataType::Utf8View).boxed(),
        );
        Ok(vec![
            Series::from_vec("user_id".into(), take(&mut self.ids)).into_column(),
            Series::from_arrow(phone_name.into(), phones)?.into_column(),
            options("number_on_file_of", take(&mut self.on_file)),
            options("s_account_sender", take(&mut self.senders)),
            Series::from_vec("interests".into(), take(&mut self.interests)).into_column(),
            Series::from_vec("customer_of".into(), take(&mut self.customers)).into_column(),
            Series::from_vec("messages_business".into(), take(&mut self.messages)).into_column(),
            Series::from_vec("privacy_score".into(), take(&mut self.scores)).into_column(),
        ])
    }
}

/// The columns that are not labels with the four label columns ([`Batch::labels`]' order)
/// put in their places: [`DICTIONARY`]'s order.
fn with_labels<T>(mut numbers: Vec<T>, [country, band, history, account, known]: [T; 5]) -> Vec<T> {
    numbers.insert(1, country);
    numbers.insert(2, band);
    numbers.insert(4, history);
    numbers.insert(6, account);
    numbers.insert(7, known);
    numbers
}

/// A dictionary array of the labels `table[code]` of `codes`, keys in order of first
/// appearance (as polars' cast of a string column to a dictionary numbers them).
fn dictionary(codes: &[u32], table: &[&str]) -> PolarsResult<ArrayRef> {
    let mut key_of = vec![u32::MAX; table.len()];
    let mut values = MutableBinaryViewArray::<str>::new();
    let keys: Vec<u32> = codes
        .iter()
        .map(|&c| {
            let key = &mut key_of[c as usize];
            if *key == u32::MAX {
                *key = values.len() as u32;
                values.push_value(table[c as usize]);
            }
            *key
        })
        .collect();
    let dtype = ArrowDataType::Dictionary(
        IntegerType::UInt32,
        Box::new(ArrowDataType::Utf8View),
        false,
    );
    let values: Utf8ViewArray = values.freeze();
    Ok(DictionaryArray::try_new(dtype, PrimitiveArray::from_vec(keys), values.boxed())?.boxed())
}
