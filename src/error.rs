//! The library's error type. Every variant is fatal for the command that met it: the command
//! stops before writing anything that could look complete, and the binary exits non-zero.

use std::path::PathBuf;

/// Everything that can go wrong in adsim's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value in an input file (scenario or reference data) is out of range or inconsistent.
    #[error("{file}: key `{key}` = {value}: expected {expected}")]
    Invalid {
        /// The file (or built-in table) that holds the value.
        file: String,
        /// The key path of the value, as in the file (`population.users`, `country[3].blocks[1]`).
        key: String,
        /// The offending value, as written.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A file is not valid TOML, or a value has the wrong type, or a key is unknown.
    #[error("{file}: key `{key}`: {message}")]
    Parse {
        /// The file that failed to parse.
        file: String,
        /// The key path where parsing failed (`.` for the whole file).
        key: String,
        /// The parser's message, with the value and what was expected, and the line.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An output already exists and overwriting was not asked for.
    #[error("{0} already exists: pass --force to overwrite it")]
    Exists(PathBuf),
    /// A command-line or API argument is out of range.
    #[error("{name} = {value}: expected {expected}")]
    Argument {
        /// The argument's name (`--users`).
        name: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// polars failed while building, reading or writing a table.
    #[error("table {path}")]
    Table {
        /// The file the table is read from or written to.
        path: PathBuf,
        /// polars' error.
        source: polars::error::PolarsError,
    },
    /// A folder given back to adsim (`plot`, `compare`, `merge`) or one of its files is not
    /// what adsim wrote: missing, truncated, of another schema version, or from another
    /// scenario.
    #[error("{path}: {problem}")]
    Folder {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong, and what would be accepted.
        problem: String,
    },
    /// A run would need more memory than it may use; refused before any work.
    #[error("{0}")]
    Memory(String),
    /// The work was cancelled ([`crate::cancel::request`]) before it finished.
    #[error("cancelled")]
    Cancelled,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Invalid`] from displayable parts.
    pub fn invalid(
        file: impl Into<String>,
        key: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            file: file.into(),
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Returns an [`Error::Invalid`] unless `cond` holds: `ensure!(cond, file, key, value, expected)`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $file:expr, $key:expr, $value:expr, $expected:expr $(,)?) => {
        let holds: bool = $cond;
        if !holds {
            return Err($crate::error::Error::invalid(
                $file, $key, $value, $expected,
            ));
        }
    };
}
