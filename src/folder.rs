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
use std::sync::{Mutex, MutexGuard};

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
    hidden(out, "tmp")
}

/// `.NAME.KIND-PID` beside `out`.
fn hidden(out: &Path, kind: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.{kind}-{}", std::process::id()))
}

/// Temporary files and folders being written now: what an interrupted run removes.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn unfinished() -> MutexGuard<'static, Vec<PathBuf>> {
    UNFINISHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file or folder, registered while it exists so that an interruption removes it
/// ([`interrupted`]); dropping the guard forgets it (after it was renamed or removed).
pub struct Unfinished(PathBuf);

impl Unfinished {
    /// Registers `path` (before it is created).
    pub fn new(path: &Path) -> Self {
        unfinished().push(path.to_path_buf());
        Unfinished(path.to_path_buf())
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        unfinished().retain(|p| *p != self.0);
    }
}

fn remove_path(p: &Path) {
    // Writer threads may still add files while a folder is removed: try again.
    for _ in 0..5 {
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        if !p.exists() {
            return;
        }
    }
}

/// Removes every unfinished file and folder, says so on standard error and exits with `code`
/// (128 + the signal number): the handler of SIGINT, SIGTERM and SIGHUP. The registry stays
/// locked until the process ends, so nothing new is started meanwhile.
pub fn interrupted(signal: &str, code: i32) -> ! {
    let list = unfinished();
    for p in list.iter() {
        remove_path(p);
    }
    let removed: Vec<String> = list.iter().map(|p| p.display().to_string()).collect();
    if removed.is_empty() {
        eprintln!("error: interrupted by {signal}");
    } else {
        eprintln!(
            "error: interrupted by {signal}; removed the unfinished {}",
            removed.join(", ")
        );
    }
    std::process::exit(code)
}

/// Writes a folder through `fill` under a temporary name beside `out`, then renames it into
/// place. Without `force` an existing `out` is an error, also when another process put it
/// there while this one was writing (the first to finish wins; the other fails and leaves
/// nothing). With `force` the old folder is moved aside, the new one renamed into place and
/// the old one removed, so `out` is never half-written. A failure removes the temporary.
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
    let guard = Unfinished::new(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    let written = std::fs::create_dir_all(&tmp)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| fill(&tmp))
        .and_then(|value| publish_dir(&tmp, out, force).map(|()| value));
    if written.is_err() {
        remove_path(&tmp);
    }
    drop(guard);
    written
}

/// Renames the finished folder `tmp` to `out` (see [`write_dir`]).
fn publish_dir(tmp: &Path, out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        // rename(2) refuses to replace a non-empty folder: a folder another run published
        // since the check above stays, and this run fails.
        return std::fs::rename(tmp, out).map_err(|e| {
            if out.exists() {
                Error::Exists(out.to_path_buf())
            } else {
                Error::io(out, e)
            }
        });
    }
    if !force {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let old = hidden(out, "old");
    let _guard = Unfinished::new(&old);
    std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    if let Err(e) = std::fs::rename(tmp, out) {
        let _ = std::fs::rename(&old, out);
        return Err(Error::io(out, e));
    }
    remove_path(&old);
    Ok(())
}

/// Puts the finished file `tmp` at `out`: with `force` by rename (replacing `out`), without it
/// by a hard link, which fails if `out` appeared meanwhile (then `tmp` is removed).
pub fn publish_file(tmp: &Path, out: &Path, force: bool) -> Result<()> {
    let result = if force {
        std::fs::rename(tmp, out)
    } else {
        std::fs::hard_link(tmp, out)
    };
    let _ = std::fs::remove_file(tmp);
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists(out.to_path_buf())
        } else {
            Error::io(out, e)
        }
    })
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

/// What a folder's Parquet tables were made from, recorded in their metadata: the reference
/// data and the scenario (its canonical TOML), each as SHA-256 hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// [`data_hash`] of the scenario.
    pub data: String,
    /// SHA-256 of the scenario with defaults filled in ([`Scenario::to_toml`]).
    ///
    /// [`Scenario::to_toml`]: crate::scenario::Scenario::to_toml
    pub scenario: String,
    /// Which users the tables count: `all`, or a shard's `K/N`.
    pub part: String,
}

impl Stamp {
    /// The stamp of `resolved`, for tables of all its users.
    pub fn of(resolved: &Resolved) -> Self {
        Stamp {
            data: data_hash(resolved),
            scenario: hex::encode(Sha256::digest(resolved.scenario.to_toml().as_bytes())),
            part: "all".into(),
        }
    }

    /// The same stamp for tables of a part of the users (a shard's `K/N`).
    pub fn part(self, part: String) -> Self {
        Stamp { part, ..self }
    }
}

/// Key of the part of the users a count table holds, in the Parquet metadata.
pub const PART_KEY: &str = "adsim.part";

/// Key of the scenario's SHA-256 in the Parquet metadata.
const SCENARIO_KEY: &str = "adsim.scenario_sha256";

fn metadata(schema: &str, stamp: &Stamp) -> polars::io::parquet::write::KeyValueMetadata {
    polars::io::parquet::write::KeyValueMetadata::from_static(vec![
        ("adsim.schema_version".into(), schema.into()),
        ("adsim.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("adsim.data_sha256".into(), stamp.data.clone()),
        (SCENARIO_KEY.into(), stamp.scenario.clone()),
        (PART_KEY.into(), stamp.part.clone()),
    ])
}

fn table_error(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Table {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `df` to a zstd Parquet file with adsim's metadata.
pub fn write_parquet(path: &Path, df: &mut DataFrame, schema: &str, stamp: &Stamp) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    ParquetWriter::new(BufWriter::new(f))
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(metadata(schema, stamp)))
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
    stamp: Stamp,
    /// Frames not yet written, and their rows.
    pending: Vec<DataFrame>,
    rows: usize,
}

/// Rows of a count table's row group: batches (and replications) are gathered up to this
/// many rows before they are written, because the Parquet writer keeps a few kilobytes of
/// metadata per row group and column until the file is finished.
pub const ROW_GROUP_ROWS: usize = 1 << 17;

impl Batched {
    fn new(path: PathBuf, schema: &'static str, stamp: &Stamp) -> Self {
        Batched {
            path,
            writer: None,
            schema,
            stamp: stamp.clone(),
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
                .with_key_value_metadata(Some(metadata(self.schema, &self.stamp)))
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
    pub fn new(dir: &Path, names: Names, layout: Layout, stamp: &Stamp) -> Self {
        let batched = |file: &str| Batched::new(dir.join(file), CELLS_SCHEMA_VERSION, stamp);
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
                crate::cells::recycle(counts);
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
    metadata_value(path, "adsim.schema_version")?
        .ok_or_else(|| folder_error(path, "not written by adsim (no adsim.schema_version)"))
}

/// A key of a Parquet table's metadata, if the table has it (an error if the file is missing
/// or not Parquet).
pub fn metadata_value(path: &Path, key: &str) -> Result<Option<String>> {
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
    Ok(meta.key_value_metadata().as_ref().and_then(|kv| {
        kv.iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.clone())
    }))
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
    let resolved = scenario.resolve(&path.display().to_string(), dir)?;
    // A scenario.toml edited after the run would relabel or misread the tables: each table
    // records the scenario it was made from (tables of earlier versions record none).
    let stamp = Stamp::of(&resolved);
    // A table of another schema is refused by its reader with the regenerating command.
    for (table, schema) in [
        ("cells.parquet", CELLS_SCHEMA_VERSION),
        ("summary.parquet", crate::metrics::SCHEMA_VERSION),
    ] {
        let file = dir.join(table);
        // A table that cannot be read is refused by the command that needs it.
        let read = |key| metadata_value(&file, key).ok().flatten();
        if read("adsim.schema_version").as_deref() != Some(schema) {
            continue;
        }
        if let Some(made_from) = read(SCENARIO_KEY)
            && made_from != stamp.scenario
        {
            return Err(folder_error(
                &path,
                format!(
                    "is not the scenario {table} was made from (it was edited after the run): restore it, or run the edited scenario into a new folder: adsim run {} --out NEW_FOLDER",
                    path.display()
                ),
            ));
        }
    }
    let cells = dir.join("cells.parquet");
    let shard_part = metadata_value(&cells, PART_KEY)
        .ok()
        .flatten()
        .filter(|p| p != "all");
    if let Some(part) = shard_part
        && !dir.join("shard.json").is_file()
    {
        return Err(folder_error(
            &cells,
            format!(
                "holds the counts of shard {part} only: merge the shards first (adsim merge SHARD_FOLDERS --out FOLDER)"
            ),
        ));
    }
    Ok(resolved)
}
