//! `adsim._adsim`: the Rust half of the Python package (python/adsim is the other). It exposes the
//! core's entry points, [`adsim::run::evaluate`], [`adsim::run::run`], studies, validation and the
//! parameter registry, and hands tables over as Arrow C streams (`__arrow_c_stream__`), so that
//! polars, pyarrow and DuckDB read them without a pinned polars version.
//!
//! Every call that simulates releases the GIL and runs on a worker thread inside a thread pool
//! of its own; the calling thread wakes every 100 ms to run Python's signal handlers (Ctrl-C
//! cancels the work through [`adsim::cancel`] and raises `KeyboardInterrupt`) and the progress
//! callback.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use adsim::Error;
use adsim::scenario::Scenario as CoreScenario;
use adsim::study::{Plan, Study};
use polars::prelude::{CompatLevel, DataFrame};
use polars_arrow::array::{Array, StructArray};
use polars_arrow::datatypes::{ArrowDataType, Field as ArrowField};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileExistsError, PyKeyboardInterrupt, PyMemoryError, PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyCapsule, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

create_exception!(
    adsim._adsim,
    ScenarioError,
    PyValueError,
    "A scenario, plan or argument is invalid: `file`, `key`, `value` and `expected` say where and what would be accepted."
);
create_exception!(
    adsim._adsim,
    FolderError,
    PyValueError,
    "A folder handed back to adsim is not one adsim wrote, or is damaged."
);
create_exception!(
    adsim._adsim,
    AdsimError,
    PyRuntimeError,
    "An internal failure of adsim (a table could not be built or written)."
);

/// Turns a core error into the Python exception a user expects.
fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let (file, key, value, expected) = match &e {
            Error::Invalid {
                file,
                key,
                value,
                expected,
            } => (
                Some(file.clone()),
                key.clone(),
                Some(value.clone()),
                expected.clone(),
            ),
            Error::Parse { file, key, message } => {
                (Some(file.clone()), key.clone(), None, message.clone())
            }
            Error::Argument {
                name,
                value,
                expected,
            } => (None, name.clone(), Some(value.clone()), expected.clone()),
            Error::Exists(p) => {
                return PyFileExistsError::new_err((
                    17,
                    "already exists: pass force=True to overwrite it",
                    p.display().to_string(),
                ));
            }
            Error::Memory(m) => return PyMemoryError::new_err(m.clone()),
            Error::Cancelled => return PyKeyboardInterrupt::new_err("adsim: cancelled"),
            Error::Io { path, source } => {
                return PyOSError::new_err((
                    source.raw_os_error().unwrap_or(0),
                    source.to_string(),
                    path.display().to_string(),
                ));
            }
            Error::Folder { .. } => return FolderError::new_err(e.to_string()),
            Error::Table { .. } => return AdsimError::new_err(format!("{e}: {e:?}")),
        };
        let err = ScenarioError::new_err(e.to_string());
        let obj = err.value(py);
        // Setting attributes on a fresh exception object cannot fail.
        let _ = obj.setattr("file", file);
        let _ = obj.setattr("key", key);
        let _ = obj.setattr("value", value);
        let _ = obj.setattr("expected", expected);
        err
    })
}

fn argument(name: &str, value: impl std::fmt::Display, expected: &str) -> PyErr {
    to_py(Error::Argument {
        name: name.into(),
        value: value.to_string(),
        expected: expected.into(),
    })
}

/// The process that first started adsim's threads (polars' pool among them): a forked child
/// inherits none of them, and would wait on them for ever.
static STARTED_IN: OnceLock<u32> = OnceLock::new();

fn not_forked() -> PyResult<()> {
    let me = std::process::id();
    let started = *STARTED_IN.get_or_init(|| me);
    if started != me {
        return Err(PyRuntimeError::new_err(format!(
            "adsim was used in process {started} before this process ({me}) was forked from it; \
             its worker threads do not exist here. Use multiprocessing with the 'spawn' or \
             'forkserver' start method (multiprocessing.get_context('spawn')), or import and use \
             adsim only in the children"
        )));
    }
    Ok(())
}

/// Runs `work` on a worker thread, handing it a pool of `threads` threads (all cores when
/// `None`) to run on, with the GIL released. The calling thread wakes every 100 ms: it runs Python's signal
/// handlers (a `KeyboardInterrupt` cancels the work and is raised once the work has stopped) and
/// calls `progress(done, total)` with what `work` reported through its argument.
fn blocking<T, W>(
    py: Python<'_>,
    threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
    total: u64,
    work: W,
) -> PyResult<T>
where
    T: Send,
    W: FnOnce(&rayon::ThreadPool, &(dyn Fn(u64) + Sync)) -> adsim::Result<T> + Send,
{
    not_forked()?;
    if threads == Some(0) {
        return Err(argument(
            "threads",
            0,
            "at least 1 thread, or None for all cores",
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .thread_name(|i| format!("adsim-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("starting adsim's thread pool: {e}")))?;
    let done = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let mut stopped: Option<PyErr> = None;
    let result = std::thread::scope(|scope| {
        let done = &done;
        let pool = &pool;
        let worker = scope.spawn(move || {
            let report = |n: u64| {
                done.fetch_add(n, Ordering::Relaxed);
            };
            let r = work(pool, &report);
            let _ = tx.send(());
            r
        });
        loop {
            let finished = py.detach(|| {
                rx.lock()
                    .is_ok_and(|r| r.recv_timeout(Duration::from_millis(100)).is_ok())
            });
            if finished || worker.is_finished() {
                break;
            }
            if stopped.is_some() {
                continue;
            }
            if let Err(e) = py.check_signals() {
                adsim::cancel::request();
                stopped = Some(e);
                continue;
            }
            if let Some(p) = progress
                && let Err(e) = p.call1((done.load(Ordering::Relaxed), total))
            {
                adsim::cancel::request();
                stopped = Some(e);
            }
        }
        worker.join()
    });
    if stopped.is_some() {
        adsim::cancel::clear();
    }
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            return Err(PyRuntimeError::new_err(
                "adsim: a worker thread panicked (a defect: please report it)",
            ));
        }
    };
    if let Some(e) = stopped {
        return Err(e);
    }
    let value = result.map_err(to_py)?;
    if let Some(p) = progress {
        p.call1((total, total))?;
    }
    Ok(value)
}

/// A table of adsim's, readable by any Arrow consumer through `__arrow_c_stream__`.
#[pyclass(frozen, module = "adsim._adsim")]
pub struct Table {
    name: String,
    df: DataFrame,
}

impl Table {
    fn new(name: &str, mut df: DataFrame) -> Table {
        df.rechunk_mut();
        Table {
            name: name.into(),
            df,
        }
    }
}

#[pymethods]
impl Table {
    /// The table's name (`summary`, `segments`, ...).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.df.height()
    }

    /// Column names, in order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.df
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.df.height()
    }

    fn __repr__(&self) -> String {
        format!(
            "<adsim table {}: {} rows x {} columns>",
            self.name,
            self.df.height(),
            self.df.width()
        )
    }

    /// The Arrow PyCapsule stream protocol: one struct array per chunk, strings as large UTF-8
    /// (the oldest Arrow layout, which every consumer reads). `requested_schema` is not
    /// honoured, as the protocol allows.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let compat = CompatLevel::oldest();
        let fields: Vec<ArrowField> = self
            .df
            .columns()
            .iter()
            .map(|c| c.field().to_arrow(compat))
            .collect();
        let dtype = ArrowDataType::Struct(fields);
        let batches: Vec<Box<dyn Array>> = if self.df.width() == 0 {
            Vec::new()
        } else {
            self.df
                .iter_chunks(compat, false)
                .map(|b| {
                    let height = b.height();
                    StructArray::new(dtype.clone(), height, b.into_arrays(), None).boxed()
                })
                .collect()
        };
        let stream = polars_arrow::ffi::export_iterator(
            Box::new(batches.into_iter().map(Ok)),
            ArrowField::new("".into(), dtype, false),
        );
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}

/// A scenario: the model's settings (docs/model.md), from a built-in or a TOML file or text.
#[pyclass(frozen, module = "adsim._adsim")]
#[derive(Clone)]
pub struct Scenario {
    inner: CoreScenario,
    /// Where it came from, as errors name it.
    source: String,
    /// The folder its data paths are relative to.
    base: PathBuf,
}

impl Scenario {
    /// Checks the whole scenario, reference data included, as a run would.
    fn checked(self) -> PyResult<Scenario> {
        self.resolved()?;
        Ok(self)
    }

    fn resolved(&self) -> PyResult<adsim::scenario::Resolved> {
        self.inner
            .clone()
            .resolve(&self.source, &self.base)
            .map_err(to_py)
    }
}

/// A Python value as a TOML value: bool, int, float, str, and lists and dicts of them.
fn to_toml(key: &str, v: &Bound<'_, PyAny>) -> PyResult<toml::Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v
            .extract::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| argument(key, v, "a whole number that fits 64 bits"));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut table = toml::map::Map::new();
        for (k, item) in d.iter() {
            let k: String = k
                .extract()
                .map_err(|_| argument(key, &k, "a table whose keys are strings"))?;
            let value = to_toml(&format!("{key}.{k}"), &item)?;
            table.insert(k, value);
        }
        return Ok(toml::Value::Table(table));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = v.extract()?;
        return items
            .iter()
            .map(|i| to_toml(key, i))
            .collect::<PyResult<Vec<_>>>()
            .map(toml::Value::Array);
    }
    // NumPy's scalars: integers have __index__, floats __float__.
    if let Ok(i) = v.extract::<i64>() {
        return Ok(toml::Value::Integer(i));
    }
    if let Ok(x) = v.extract::<f64>() {
        return Ok(toml::Value::Float(x));
    }
    Err(argument(
        key,
        v.repr().map_or_else(|_| "?".into(), |r| r.to_string()),
        "a bool, int, float, str, or a list or dict of them",
    ))
}

fn from_toml<'py>(py: Python<'py>, v: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        toml::Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        toml::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        toml::Value::Float(x) => x.into_pyobject(py)?.into_any(),
        toml::Value::String(s) => s.into_pyobject(py)?.into_any(),
        toml::Value::Datetime(d) => d.to_string().into_pyobject(py)?.into_any(),
        toml::Value::Array(a) => {
            let items = a
                .iter()
                .map(|i| from_toml(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        toml::Value::Table(t) => {
            let d = PyDict::new(py);
            for (k, item) in t {
                d.set_item(k, from_toml(py, item)?)?;
            }
            d.into_any()
        }
    })
}

#[pymethods]
impl Scenario {
    /// A built-in scenario by name (`adsim scenarios` lists them).
    #[staticmethod]
    fn builtin(name: &str) -> PyResult<Scenario> {
        let (inner, source) = CoreScenario::builtin(name).map_err(to_py)?;
        Scenario {
            inner,
            source,
            base: PathBuf::from("."),
        }
        .checked()
    }

    /// The names of the built-in scenarios.
    #[staticmethod]
    fn builtins() -> Vec<String> {
        adsim::scenario::BUILTINS
            .iter()
            .map(|b| b.0.to_string())
            .collect()
    }

    /// A scenario from a TOML file (a path, or a string ending in `.toml`) or from TOML text.
    #[staticmethod]
    fn from_toml(path_or_text: &Bound<'_, PyAny>) -> PyResult<Scenario> {
        if let Ok(text) = path_or_text.cast::<PyString>() {
            let text = text.to_string();
            if text.contains('\n') || text.contains('=') || text.trim().is_empty() {
                return Scenario::from_text(&text, None);
            }
            return Scenario::from_file(PathBuf::from(text));
        }
        let path: PathBuf = path_or_text.extract().map_err(|_| {
            argument(
                "path_or_text",
                path_or_text,
                "a path (str or os.PathLike) to a TOML file, or TOML text",
            )
        })?;
        Scenario::from_file(path)
    }

    /// A scenario from a TOML file.
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Scenario> {
        let inner = CoreScenario::from_file(&path).map_err(to_py)?;
        let base = folder_of(&path);
        Scenario {
            inner,
            source: path.display().to_string(),
            base,
        }
        .checked()
    }

    /// A scenario from TOML text; its data paths are relative to `base` (the current folder by
    /// default).
    #[staticmethod]
    #[pyo3(signature = (text, base=None))]
    fn from_text(text: &str, base: Option<PathBuf>) -> PyResult<Scenario> {
        let source = "<scenario text>".to_string();
        let inner: CoreScenario = adsim::data::parse_toml(text, &source).map_err(to_py)?;
        Scenario {
            inner,
            source,
            base: base.unwrap_or_else(|| PathBuf::from(".")),
        }
        .checked()
    }

    /// A copy with `overrides` (scenario keys of the parameter registry, such as
    /// `targeting.m_recall` or `population.users`) set, checked as a run would check them.
    fn with_(&self, overrides: &Bound<'_, PyDict>) -> PyResult<Scenario> {
        let mut list = Vec::new();
        for (k, v) in overrides.iter() {
            let key: String = k
                .extract()
                .map_err(|_| argument("overrides", &k, "keys that are strings"))?;
            let value = to_toml(&key, &v)?;
            list.push((key, value));
        }
        let source = if self.source.ends_with(" with overrides") {
            self.source.clone()
        } else {
            format!("{} with overrides", self.source)
        };
        let inner = self.inner.with_overrides(&list, &source).map_err(to_py)?;
        Scenario {
            inner,
            source,
            base: self.base.clone(),
        }
        .checked()
    }

    /// The value of a scenario key (a dotted path such as `targeting.m_recall`), or `None`.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner.get(key).map(|v| from_toml(py, &v)).transpose()
    }

    /// The scenario as TOML, every default written out.
    fn to_toml(&self) -> String {
        self.inner.to_toml()
    }

    /// The scenario's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Where the scenario came from.
    #[getter]
    fn source(&self) -> String {
        self.source.clone()
    }

    fn __repr__(&self) -> String {
        let p = &self.inner.population;
        format!(
            "<adsim Scenario {:?}: {} users x {} replications, seed {} ({})>",
            self.inner.name, p.users, p.replications, p.seed, self.source
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Scenario>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }
}

const TABLES: [&str; 7] = [
    "summary",
    "segments",
    "countries",
    "timeline",
    "ages",
    "revenue_days",
    "market",
];

fn tables(e: adsim::metrics::Estimates) -> Vec<Table> {
    let frames = [
        e.summary,
        e.segments,
        e.countries,
        e.timeline,
        e.ages,
        e.revenue_days,
        e.market,
    ];
    TABLES
        .iter()
        .zip(frames)
        .map(|(n, df)| Table::new(n, df))
        .collect()
}

fn simulated(r: &adsim::scenario::Resolved) -> u64 {
    let p = &r.scenario.population;
    p.users * u64::from(p.replications)
}

/// Refuses a run whose predicted peak memory exceeds what the machine has (docs/model.md §11).
fn memory_guard(r: &adsim::scenario::Resolved, threads: usize) -> PyResult<()> {
    let plan = adsim::plan::Plan::of(r, &adsim::run::layout(r), threads);
    let (limit, source) =
        adsim::plan::memory_available().unwrap_or((u64::MAX, "no limit known".into()));
    plan.check(limit, &source).map_err(to_py)
}

fn pool_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    })
}

/// Simulates `scenario` and returns its estimate tables (what `adsim run` writes), writing no
/// file.
#[pyfunction]
#[pyo3(signature = (scenario, *, threads=None, progress=None))]
fn evaluate(
    py: Python<'_>,
    scenario: &Scenario,
    threads: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Table>> {
    let resolved = scenario.resolved()?;
    memory_guard(&resolved, pool_threads(threads))?;
    let total = simulated(&resolved);
    let e = blocking(py, threads, progress.as_ref(), total, |pool, report| {
        pool.install(|| adsim::run::evaluate(&resolved, report))
    })?;
    Ok(tables(e))
}

/// Runs `scenario` and writes its results folder to `out` (as `adsim run --out`); returns the
/// estimate tables.
#[pyfunction]
#[pyo3(signature = (scenario, out, *, force=false, threads=None, progress=None))]
fn run(
    py: Python<'_>,
    scenario: &Scenario,
    out: PathBuf,
    force: bool,
    threads: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Table>> {
    let resolved = scenario.resolved()?;
    if out.exists() && !force {
        return Err(to_py(Error::Exists(out)));
    }
    memory_guard(&resolved, pool_threads(threads))?;
    let total = simulated(&resolved);
    let options = adsim::run::RunOptions {
        out,
        force,
        extra: None,
    };
    let r = blocking(py, threads, progress.as_ref(), total, |pool, report| {
        pool.install(|| adsim::run::run(&resolved, &options, report))
    })?;
    Ok(tables(r.estimates))
}

/// The folder a file's relative paths start from (the current one for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A plan from a TOML file, or a built-in by name: the plan, its name in errors, its folder.
fn load_plan(plan: &str) -> PyResult<(Plan, String, PathBuf)> {
    let path = Path::new(plan);
    if plan.ends_with(".toml") || path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| to_py(Error::io(path, e)))?;
        let file = path.display().to_string();
        let dir = folder_of(path);
        Ok((Plan::parse(&text, &file).map_err(to_py)?, file, dir))
    } else {
        let (p, file) = Plan::builtin(plan).map_err(to_py)?;
        Ok((p, file, PathBuf::from(".")))
    }
}

/// Runs a study plan (a TOML file or a built-in name) and writes its folder to `out`.
#[pyfunction]
#[pyo3(signature = (plan, out, *, force=false, threads=None, progress=None))]
fn study(
    py: Python<'_>,
    plan: &str,
    out: PathBuf,
    force: bool,
    threads: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (parsed, file, dir) = load_plan(plan)?;
    let s = Study::new(parsed, &file, &dir).map_err(to_py)?;
    if out.exists() && !force && s.plan.then.is_none() && s.plan.seeds.is_empty() {
        return Err(to_py(Error::Exists(out)));
    }
    let total = s.all_points().len() as u64;
    blocking(py, threads, progress.as_ref(), total, |pool, report| {
        // Each stage (and seed) counts from 0 again: a count below the last starts a new one.
        let last = std::sync::Mutex::new(0u64);
        let each = |finished: usize, _all: usize| {
            let f = finished as u64;
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            report(if f >= *l { f - *l } else { f });
            *l = f;
        };
        pool.install(|| {
            if !s.plan.seeds.is_empty() {
                adsim::study::seeds::run_seeds(&s, &out, force, &each).map(|_| ())
            } else if s.plan.then.is_some() {
                adsim::study::batch::run_staged(&s, &out, force, &each).map(|_| ())
            } else {
                adsim::study::batch::run(&s, &out, force, None, &each).map(|_| ())
            }
        })
    })
}

/// Runs every validation case at `users` x `replications` and returns the outcomes; writes the
/// validation folder to `out` when given.
#[pyfunction]
#[pyo3(signature = (*, users=20_000, replications=5, seed=2016, out=None, force=false, threads=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn validate(
    py: Python<'_>,
    users: u64,
    replications: u32,
    seed: u64,
    out: Option<PathBuf>,
    force: bool,
    threads: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Table> {
    if let Some(o) = &out
        && o.exists()
        && !force
    {
        return Err(to_py(Error::Exists(o.clone())));
    }
    let scenarios = adsim::validate::cases()
        .iter()
        .map(|c| c.scenario)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let outcomes = blocking(py, threads, progress.as_ref(), scenarios, |pool, report| {
        let outcomes = pool.install(|| {
            adsim::validate::validate(users, replications, seed, &|_| report(1), &|resolved| {
                adsim::run::evaluate(resolved, &adsim::run::quiet)
            })
        })?;
        if let Some(o) = &out {
            adsim::validate::write(&outcomes, users, replications, o, force)?;
        }
        Ok(outcomes)
    })?;
    let df = adsim::validate::frame(&outcomes).map_err(|source| {
        to_py(Error::Table {
            path: "validation".into(),
            source,
        })
    })?;
    Ok(Table::new("validation", df))
}

/// The parameter registry (`adsim parameters`) as a table: one row per parameter with its
/// type, unit, default, legal and plausible ranges and source.
#[pyfunction]
fn parameters() -> PyResult<Table> {
    adsim::registry::frame()
        .map(|df| Table::new("parameters", df))
        .map_err(|source| {
            to_py(Error::Table {
                path: "parameters".into(),
                source,
            })
        })
}

/// A function from factor values to outputs, for sensitivity and optimisation libraries: the
/// factors are registry keys (at their plausible ranges unless bounds are given), the outputs
/// `(metric, arm, rate)`; every row is evaluated with the scenario's seed (common random
/// numbers, docs/model.md §16.3), rows in parallel.
#[pyclass(frozen, module = "adsim._adsim")]
pub struct Model {
    study: Study,
    bounds: Vec<(f64, f64)>,
    threads: Option<usize>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (scenario, factors, outputs, *, users=None, replications=None, threads=None))]
    fn new(
        scenario: &Scenario,
        factors: Vec<Bound<'_, PyAny>>,
        outputs: Vec<(String, String, f64)>,
        users: Option<u64>,
        replications: Option<u32>,
        threads: Option<usize>,
    ) -> PyResult<Model> {
        let mut text = String::from("name = \"python-model\"\nscenario = \"python\"\n");
        let p = &scenario.inner.population;
        text += &format!(
            "users = {}\nreplications = {}\ndesign = \"lhs\"\nsamples = {}\n",
            users.unwrap_or(p.users),
            replications.unwrap_or(p.replications),
            (2 * (factors.len() + 1)).max(10)
        );
        for (i, f) in factors.iter().enumerate() {
            let quoted = |s: &str| toml::Value::String(s.into()).to_string();
            if let Ok(key) = f.extract::<String>() {
                let Some([low, high]) = adsim::registry::find(&key).and_then(|p| p.plausible)
                else {
                    return Err(argument(
                        &format!("factors[{i}]"),
                        &key,
                        "a registry key with a plausible range (adsim.parameters(), plausible_low and plausible_high), or (key, low, high)",
                    ));
                };
                text += &format!(
                    "[[factor]]\nkey = {}\nlow = {:?}\nhigh = {:?}\n",
                    quoted(&key),
                    low,
                    high
                );
            } else if let Ok((key, low, high)) = f.extract::<(String, f64, f64)>() {
                text += &format!(
                    "[[factor]]\nkey = {}\nlow = {:?}\nhigh = {:?}\n",
                    quoted(&key),
                    low,
                    high
                );
            } else {
                return Err(argument(
                    &format!("factors[{i}]"),
                    f,
                    "a registry key, or (key, low, high)",
                ));
            }
        }
        for (metric, arm, rate) in &outputs {
            let quoted = |s: &str| toml::Value::String(s.into()).to_string();
            text += &format!(
                "[[output]]\nmetric = {}\narm = {}\nrate = {:?}\n",
                quoted(metric),
                quoted(arm),
                rate
            );
        }
        let file = "Model";
        let plan = Plan::parse(&text, file).map_err(to_py)?;
        let study = Study::from_base(
            plan,
            scenario.inner.clone(),
            scenario.source.clone(),
            file,
            &scenario.base,
        )
        .map_err(to_py)?;
        let bounds = study
            .plan
            .factor
            .iter()
            .map(|f| (f.low.unwrap_or(f64::NAN), f.high.unwrap_or(f64::NAN)))
            .collect();
        Ok(Model {
            study,
            bounds,
            threads,
        })
    }

    /// The factors' registry keys, in column order.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.study
            .plan
            .factor
            .iter()
            .map(|f| f.key.clone())
            .collect()
    }

    /// Each factor's (low, high).
    #[getter]
    fn bounds(&self) -> Vec<(f64, f64)> {
        self.bounds.clone()
    }

    /// The outputs' names, `metric@arm@rate`, in column order.
    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.study.output_names()
    }

    /// Evaluates every row of `x` (n rows of one value per factor) and returns n rows of one
    /// value per output (NaN where a metric is undefined).
    #[pyo3(signature = (x, *, progress=None))]
    fn evaluate(
        &self,
        py: Python<'_>,
        x: Vec<Vec<f64>>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Vec<f64>>> {
        let k = self.bounds.len();
        for (i, row) in x.iter().enumerate() {
            if row.len() != k {
                return Err(argument(
                    &format!("x[{i}]"),
                    format!("{} values", row.len()),
                    &format!("{k} values, one per factor ({})", self.names().join(", ")),
                ));
            }
        }
        let study = &self.study;
        let n = x.len();
        blocking(
            py,
            self.threads,
            progress.as_ref(),
            n as u64,
            |pool, report| {
                let next = std::sync::atomic::AtomicUsize::new(0);
                let rows: Vec<std::sync::Mutex<Option<adsim::Result<Vec<f64>>>>> =
                    (0..n).map(|_| std::sync::Mutex::new(None)).collect();
                // As a study does: two evaluations at a time per pool thread, each on a worker
                // outside the pool whose parallel loops run on the pool.
                let workers = (2 * pool.current_num_threads()).min(n);
                std::thread::scope(|scope| {
                    for _ in 0..workers {
                        scope.spawn(|| {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= n || adsim::cancel::requested() {
                                    break;
                                }
                                let r =
                                    pool.install(|| study.evaluate_at(&x[i], &format!("row {i}")));
                                let failed = r.is_err();
                                *rows[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                                report(1);
                                if failed {
                                    break;
                                }
                            }
                        });
                    }
                });
                adsim::cancel::check()?;
                rows.into_iter()
                    .map(|m| {
                        m.into_inner()
                            .unwrap_or_else(|e| e.into_inner())
                            .unwrap_or(Err(Error::Cancelled))
                    })
                    .collect()
            },
        )
    }
}

#[pymodule]
fn _adsim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // polars adds floats in an order that depends on its threads: one polars thread makes the
    // tables a pure function of the counts, as in the command line (src/main.rs).
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        // SAFETY: set while the module initialises, before adsim starts any thread or polars
        // reads it; Python's own threads do not read this variable.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", "1") };
    }
    m.add_class::<Scenario>()?;
    m.add_class::<Table>()?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(study, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(parameters, m)?)?;
    m.add("ScenarioError", m.py().get_type::<ScenarioError>())?;
    m.add("FolderError", m.py().get_type::<FolderError>())?;
    m.add("AdsimError", m.py().get_type::<AdsimError>())?;
    m.add("TABLES", TABLES.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
