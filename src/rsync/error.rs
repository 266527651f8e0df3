//! Errors of the rsync engine.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a walk or a hash failed. `F` is the error type of the caller's filter.
#[derive(Debug)]
pub enum Error<F = std::convert::Infallible> {
    /// An I/O operation on `path` failed (listing a directory, reading a file).
    Io {
        /// The path the operation was applied to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// `path` is neither a regular file, a directory nor a symlink (a fifo, socket or device).
    Unsupported {
        /// The offending entry.
        path: PathBuf,
    },
    /// The caller's filter failed; the walk stopped at that entry.
    Filter(F),
}

/// Result alias of the rsync engine.
pub type Result<T, F = std::convert::Infallible> = std::result::Result<T, Error<F>>;

impl<F> Error<F> {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl<F: fmt::Display> fmt::Display for Error<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Unsupported { path } => {
                write!(f, "cannot sync {:?}", path.display().to_string())
            }
            Error::Filter(err) => write!(f, "filter failed: {err}"),
        }
    }
}

impl<F: fmt::Debug + fmt::Display> std::error::Error for Error<F> {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_path() {
        let err: Error = Error::Unsupported {
            path: PathBuf::from("/tmp/fifo"),
        };
        assert_eq!(err.to_string(), "cannot sync \"/tmp/fifo\"");
        let err: Error = Error::io(Path::new("/x"), io::Error::from(io::ErrorKind::NotFound));
        assert!(err.to_string().starts_with("/x: "));
    }
}
