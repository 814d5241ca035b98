//! Results folders on disk: atomic publishing, the table writers and readers, and the checks
//! that a folder given back to adsim (`plot`, `compare`, `merge`) is one it can read.
//!
//! A folder is built under a temporary name beside its target and renamed into place when
//! every file is written, so an interrupted run leaves nothing that looks complete. The count
//! tables are written one replication at a time ([`CountsWriter`], rows gathered into Parquet
//! row groups of [`ROW_GROUP_ROWS`]) and read back one replication at a time
//! ([`read_counts`]), so neither writing nor reading holds more than one replication's counts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::cells::{
    CELLS_SCHEMA_VERSION, Counts, Layout, Names, add_cells, add_timeline, cells_frame,
    level_batches, timeline_frame,
};
use crate::error::{Error, Result};
use crate::scenario::Resolved;

/// The program and its version, as recorded in every folder.
pub const PROGRAM: &str = concat!("adsim ", env!("CARGO_PKG_VERSION"));

/// The hidden temporary name of `out` while it is being written (unique to this process).
pub fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes a folder through `fill` under a temporary name beside `out`, then renames it into
/// place (replacing an existing `out` only when `force`). A failure removes the temporary.
pub fn write_dir<T>(out: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.exists() && !force {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = temp_path(out);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let value = match fill(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(value)
}

/// Writes `text` to `path`.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// SHA-256 (hex) of the reference data a scenario resolved to: recorded in every folder, so a
/// result says which tables made it.
pub fn data_hash(resolved: &Resolved) -> String {
    let d = &resolved.data;
    let text = serde_json::json!({
        "countries": d.countries,
        "segments": d.segments,
        "age_bands": d.age_bands,
    });
    hex::encode(Sha256::digest(text.to_string().as_bytes()))
}

fn metadata(schema: &str, data_hash: &str) -> polars::io::parquet::write::KeyValueMetadata {
    polars::io::parquet::write::KeyValueMetadata::from_static(vec![
        ("adsim.schema_version".into(), schema.into()),
        ("adsim.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("adsim.data_sha256".into(), data_hash.into()),
    ])
}

fn table_error(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Table {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `df` to a zstd Parquet file with adsim's metadata.
pub fn write_parquet(path: &Path, df: &mut DataFrame, schema: &str, data_hash: &str) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    ParquetWriter::new(BufWriter::new(f))
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(metadata(schema, data_hash)))
        .finish(df)
        .map_err(table_error(path))?;
    Ok(())
}

/// Writes `df` as CSV with six significant decimals.
pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    CsvWriter::new(BufWriter::new(f))
        .with_float_precision(Some(6))
        .finish(df)
        .map_err(table_error(path))
}

/// A Parquet table written a batch at a time.
struct Batched {
    path: PathBuf,
    writer: Option<BatchedWriter<BufWriter<File>>>,
    schema: &'static str,
    data_hash: String,
    /// Frames not yet written, and their rows.
    pending: Vec<DataFrame>,
    rows: usize,
}

/// Rows of a count table's row group: batches (and replications) are gathered up to this
/// many rows before they are written, because the Parquet writer keeps a few kilobytes of
/// metadata per row group and column until the file is finished.
pub const ROW_GROUP_ROWS: usize = 1 << 17;

impl Batched {
    fn new(path: PathBuf, schema: &'static str, data_hash: &str) -> Self {
        Batched {
            path,
            writer: None,
            schema,
            data_hash: data_hash.to_string(),
            pending: Vec::new(),
            rows: 0,
        }
    }

    /// Adds `df`'s rows; writes a row group once enough are gathered.
    fn write(&mut self, df: DataFrame) -> Result<()> {
        self.rows += df.height();
        self.pending.push(df);
        if self.rows >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the gathered rows as one row group.
    fn flush(&mut self) -> Result<()> {
        let err = table_error(&self.path);
        let mut frames = std::mem::take(&mut self.pending).into_iter();
        self.rows = 0;
        let Some(mut df) = frames.next() else {
            return Ok(());
        };
        for f in frames {
            df.vstack_mut_owned(f).map_err(&err)?;
        }
        df.rechunk_mut();
        if self.writer.is_none() {
            let f = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            // Min, max and null counts per row group (a reader skips the row groups of other
            // replications); no distinct counts, which cost as much as the encoding.
            let statistics = StatisticsOptions {
                distinct_count: false,
                ..StatisticsOptions::default()
            };
            let writer = ParquetWriter::new(BufWriter::new(f))
                .with_compression(ParquetCompression::Zstd(None))
                .with_statistics(statistics)
                .with_key_value_metadata(Some(metadata(self.schema, &self.data_hash)))
                .batched(df.schema())
                .map_err(&err)?;
            self.writer = Some(writer);
        }
        if let Some(w) = &mut self.writer {
            w.write_batch(&df).map_err(&err)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush()?;
        match self.writer {
            Some(w) => w.finish().map(|_| ()).map_err(table_error(&self.path)),
            None => Ok(()),
        }
    }
}

/// The count tables of one folder, written on the calling thread.
struct CountTables {
    names: Names,
    layout: Layout,
    cells: Batched,
    timeline: Batched,
}

impl CountTables {
    fn write(&mut self, replication: u32, counts: &Counts) -> Result<()> {
        for levels in level_batches(&self.layout) {
            let df = cells_frame(&self.names, &self.layout, replication, counts, &levels)
                .map_err(table_error(&self.cells.path))?;
            self.cells.write(df)?;
        }
        let df = timeline_frame(&self.names, &self.layout, replication, counts)
            .map_err(table_error(&self.timeline.path))?;
        self.timeline.write(df)
    }

    fn finish(self) -> Result<()> {
        self.cells.finish()?;
        self.timeline.finish()
    }
}

/// Writes `cells.parquet` and `timeline_cells.parquet` of a folder, one replication at a time,
/// on a thread of its own: encoding a replication's tables (single-threaded in polars) overlaps
/// the simulation of the next. At most one replication waits for the writer, so memory stays
/// bounded.
pub struct CountsWriter {
    sender: Option<std::sync::mpsc::SyncSender<(u32, Counts)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl CountsWriter {
    /// Writers for the count tables of `dir`.
    pub fn new(dir: &Path, names: Names, layout: Layout, data_hash: &str) -> Self {
        let batched = |file: &str| Batched::new(dir.join(file), CELLS_SCHEMA_VERSION, data_hash);
        let mut tables = CountTables {
            names,
            layout,
            cells: batched("cells.parquet"),
            timeline: batched("timeline_cells.parquet"),
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(u32, Counts)>(1);
        let thread = std::thread::spawn(move || {
            for (r, counts) in receiver {
                tables.write(r, &counts)?;
            }
            tables.finish()
        });
        CountsWriter {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    /// Appends replication `replication`'s finished counts (waits while the writer is still
    /// busy with the one before the last).
    pub fn write(&mut self, replication: u32, counts: Counts) -> Result<()> {
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send((replication, counts)).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            self.join()
        }
    }

    /// Writes the files' footers and waits for the writer to finish.
    pub fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.sender = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Io {
                path: PathBuf::from("cells.parquet"),
                source: std::io::Error::other("the table writer stopped unexpectedly"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for CountsWriter {
    fn drop(&mut self) {
        // An abandoned writer (an error elsewhere) still ends its thread before the folder is
        // removed.
        let _ = self.join();
    }
}

/// An [`Error::Folder`] for `path`.
fn folder_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Folder {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The `adsim.schema_version` of a Parquet file of a results folder.
pub fn schema_version(path: &Path) -> Result<String> {
    if !path.is_file() {
        return Err(folder_error(
            path,
            "missing (a results folder written by `adsim run` has it)",
        ));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ParquetReader::new(f);
    let meta = reader
        .get_metadata()
        .map_err(|e| folder_error(path, format!("not a Parquet table adsim can read ({e})")))?;
    meta.key_value_metadata()
        .as_ref()
        .and_then(|kv| {
            kv.iter()
                .find(|k| k.key == "adsim.schema_version")
                .and_then(|k| k.value.clone())
        })
        .ok_or_else(|| folder_error(path, "not written by adsim (no adsim.schema_version)"))
}

/// Checks that a table of a results folder has the schema `expected`, which this program
/// reads; otherwise the error gives the command that regenerates the folder.
pub fn check_schema(path: &Path, expected: &str, scenario: &Path) -> Result<()> {
    let found = schema_version(path)?;
    if found != expected {
        return Err(folder_error(
            path,
            format!(
                "schema {found}, but this adsim reads {expected}; regenerate the folder with: adsim run {} --out NEW_FOLDER",
                scenario.display()
            ),
        ));
    }
    Ok(())
}

/// Reads the rows of replication `replication` of a count table.
fn read_replication(path: &Path, replication: u32) -> Result<DataFrame> {
    let args = ScanArgsParquet {
        glob: false,
        ..ScanArgsParquet::default()
    };
    let text = path.to_string_lossy();
    LazyFrame::scan_parquet(PlRefPath::new(text.as_ref()), args)
        .and_then(|lf| lf.filter(col("replication").eq(lit(replication))).collect())
        .map_err(|e| folder_error(path, format!("cannot be read ({e})")))
}

/// Adds replication `replication` of the count tables of folder `dir` to `counts`.
pub fn read_counts(
    dir: &Path,
    names: &Names,
    layout: &Layout,
    replication: u32,
    counts: &mut Counts,
) -> Result<()> {
    let scenario = dir.join("scenario.toml");
    let cells = dir.join("cells.parquet");
    let timeline = dir.join("timeline_cells.parquet");
    for p in [&cells, &timeline] {
        check_schema(p, CELLS_SCHEMA_VERSION, &scenario)?;
    }
    let df = read_replication(&cells, replication)?;
    add_cells(names, layout, &df, counts)
        .map_err(|e| folder_error(&cells, format!("holds {}", e.0)))?;
    let df = read_replication(&timeline, replication)?;
    add_timeline(names, layout, &df, counts)
        .map_err(|e| folder_error(&timeline, format!("holds {}", e.0)))
}

/// Reads a Parquet table of a results folder.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    if !path.is_file() {
        return Err(folder_error(path, "missing"));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| folder_error(path, format!("not a Parquet table adsim can read ({e})")))
}

/// Loads the resolved scenario of a results folder.
pub fn load_scenario(dir: &Path) -> Result<Resolved> {
    if !dir.is_dir() {
        return Err(folder_error(
            dir,
            "not a folder (expected a results folder written by `adsim run`)",
        ));
    }
    let path = dir.join("scenario.toml");
    if !path.is_file() {
        return Err(folder_error(
            dir,
            "has no scenario.toml (expected a results folder written by `adsim run`)",
        ));
    }
    let scenario = crate::scenario::Scenario::from_file(&path)?;
    scenario.resolve(&path.display().to_string(), dir)
}
