//! Bindings of the rsync engine: the sender's walk and MD5 helpers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyNone};
use pyo3::{PyTraverseError, PyVisit};

use crate::rsync::{self, payload, Entry, Walk};

/// How long the walk runs without the GIL before it looks for pending signals.
const SLICE: Duration = Duration::from_millis(50);

/// Maps an engine error to the exception the pure-Python walk would raise.
fn to_pyerr(py: Python<'_>, err: rsync::Error<PyErr>) -> PyErr {
    match err {
        rsync::Error::Filter(err) => err,
        rsync::Error::Unsupported { path } => {
            let Ok(text) = path.as_os_str().into_pyobject(py);
            match text.repr() {
                Ok(repr) => PyValueError::new_err(format!("cannot sync {repr}")),
                Err(err) => err,
            }
        }
        rsync::Error::Io { path, source } => oserror(py, &path, &source),
    }
}

/// `OSError(errno, strerror, filename)`, which Python turns into the matching subclass.
fn oserror(py: Python<'_>, path: &Path, source: &std::io::Error) -> PyErr {
    static STRERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let Some(errno) = source.raw_os_error() else {
        return PyOSError::new_err((source.to_string(), path.as_os_str().to_os_string()));
    };
    let text = STRERROR
        .import(py, "os", "strerror")
        .and_then(|f| f.call1((errno,)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| source.to_string());
    PyOSError::new_err((errno, text, path.as_os_str().to_os_string()))
}

fn widen<E>(err: rsync::Error<E>) -> rsync::Error<PyErr>
where
    E: Into<PyErr>,
{
    match err {
        rsync::Error::Io { path, source } => rsync::Error::Io { path, source },
        rsync::Error::Unsupported { path } => rsync::Error::Unsupported { path },
        rsync::Error::Filter(err) => rsync::Error::Filter(err.into()),
    }
}

fn entry_to_py<'py>(py: Python<'py>, entry: &Entry) -> PyResult<Bound<'py, PyAny>> {
    Ok(match entry {
        Entry::Dir { mode, names } => {
            let list = PyList::empty(py);
            list.append(*mode)?;
            for name in names {
                list.append(name.as_os_str())?;
            }
            list.into_any()
        }
        Entry::File(info) => (info.mode, info.mtime, info.size)
            .into_pyobject(py)?
            .into_any(),
        Entry::Link => PyNone::get(py).to_owned().into_any(),
        Entry::Vanished => (PyNone::get(py), 0, 0).into_pyobject(py)?.into_any(),
    })
}

/// Walks `root` and returns `(items, links)`: the directory-structure stream of the sender
/// (`[mode, name, …]` lists, `(mode, mtime, size)` tuples, `None` for symlinks, `(None, 0, 0)`
/// for vanished entries) and the full paths of the symlinks met, in walk order.
///
/// Without `filter` the walk runs with the GIL released; with one, it is called with the full
/// path of every entry below `root` and the entries it rejects are left out.
#[pyfunction]
#[pyo3(signature = (root, filter=None))]
pub fn walk_tree<'py>(
    py: Python<'py>,
    root: PathBuf,
    filter: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let mut walker = rsync::Walker::new(&root);
    run_walker(py, &mut walker, filter.as_ref(), None)?;
    walk_to_py(py, &walker.finish())
}

/// The same walk as [`walk_tree`], handed out in parts of about `chunk` items so that the
/// caller can send the first items while the rest of the tree is walked.
///
/// Iterating yields `(items, links)` pairs; joined, they equal `walk_tree(root, filter)`.
/// Not frozen on purpose: the walk is state of one consumer, and pyo3's borrow check turns a
/// re-entrant `next()` (from inside `filter`) into a clean `RuntimeError`.
///
/// With `encoded=True` each item comes as `bytes`, already in its wire form
/// (`dumps_internal(item)`), except an item the serializer would reject (a name that is not
/// UTF-8), which comes as the Python value.
#[pyclass(name = "TreeWalk", module = "execnet._core")]
pub struct TreeWalkPy {
    walker: Option<rsync::Walker>,
    filter: Option<Py<PyAny>>,
    chunk: usize,
    encoded: bool,
}

#[pymethods]
impl TreeWalkPy {
    #[new]
    #[pyo3(signature = (root, filter=None, chunk=4096, encoded=false))]
    fn new(root: PathBuf, filter: Option<Py<PyAny>>, chunk: usize, encoded: bool) -> Self {
        TreeWalkPy {
            walker: Some(rsync::Walker::new(&root)),
            filter,
            chunk: chunk.max(1),
            encoded,
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyList>)>> {
        let Some(walker) = self.walker.as_mut() else {
            return Ok(None);
        };
        let filter = self.filter.as_ref().map(|f| f.bind(py).clone());
        let done = match run_walker(py, walker, filter.as_ref(), Some(self.chunk)) {
            Ok(done) => done,
            Err(err) => {
                self.walker = None;
                return Err(err);
            }
        };
        let part = walker.take();
        if done {
            self.walker = None;
        }
        if self.encoded {
            return encoded_walk_to_py(py, &part).map(Some);
        }
        walk_to_py(py, &part).map(Some)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(filter) = &self.filter {
            visit.call(filter)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.filter = None;
    }
}

/// Runs `walker` until the tree is done (`Ok(true)`) or `limit` items are ready. Without a
/// filter it runs without the GIL in slices of about 50 ms, checking for signals (Ctrl-C) in
/// between; a filter is Python code, which gets the GIL and sees signals itself.
fn run_walker(
    py: Python<'_>,
    walker: &mut rsync::Walker,
    filter: Option<&Bound<'_, PyAny>>,
    limit: Option<usize>,
) -> PyResult<bool> {
    if let Some(filter) = filter {
        let mut call =
            |path: &Path| -> PyResult<bool> { filter.call1((path.as_os_str(),))?.is_truthy() };
        return walker
            .run(&mut call, None, limit)
            .map_err(|e| to_pyerr(py, e));
    }
    let mut keep = |_: &Path| Ok::<bool, std::convert::Infallible>(true);
    loop {
        let slice_done = py
            .detach(|| walker.run(&mut keep, Some(Instant::now() + SLICE), limit))
            .map_err(|e| to_pyerr(py, widen(e)))?;
        if slice_done {
            return Ok(true);
        }
        if limit.is_some_and(|n| walker.pending_items() >= n) {
            return Ok(false);
        }
        py.check_signals()?;
    }
}

fn walk_to_py<'py>(
    py: Python<'py>,
    walked: &Walk,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let items = PyList::empty(py);
    for entry in &walked.entries {
        items.append(entry_to_py(py, entry)?)?;
    }
    let links = PyList::empty(py);
    for link in &walked.links {
        links.append(link.as_os_str())?;
    }
    Ok((items, links))
}

fn encoded_walk_to_py<'py>(
    py: Python<'py>,
    walked: &Walk,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let items = PyList::empty(py);
    for entry in &walked.entries {
        match rsync::encode_entry(entry) {
            Some(data) => items.append(PyBytes::new(py, &data))?,
            None => items.append(entry_to_py(py, entry)?)?,
        }
    }
    let links = PyList::empty(py);
    for link in &walked.links {
        links.append(link.as_os_str())?;
    }
    Ok((items, links))
}

/// MD5 digest (16 raw bytes) of the file at `path`; the GIL is released while hashing.
#[pyfunction]
pub fn md5_file<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let digest = py
        .detach(|| rsync::md5_file(&path))
        .map_err(|e| to_pyerr(py, widen(e)))?;
    Ok(PyBytes::new(py, &digest))
}

/// MD5 digests of many files, hashed in parallel with the GIL released; `None` for a file that
/// cannot be read.
#[pyfunction]
pub fn md5_files<'py>(py: Python<'py>, paths: Vec<PathBuf>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    // Slices keep Ctrl-C responsive while a large batch is hashed.
    for slice in paths.chunks(16) {
        let digests = py.detach(|| rsync::md5_files(slice));
        for digest in digests {
            match digest {
                Ok(d) => out.append(PyBytes::new(py, &d))?,
                Err(_) => out.append(PyNone::get(py))?,
            }
        }
        py.check_signals()?;
    }
    Ok(out)
}

/// Bytes read from a file between two looks for pending signals (Ctrl-C).
const READ_SLICE: usize = 16 * 1024 * 1024;

/// The content of the file at `path` as the channel carries it: the serialized form of a
/// `bytes` value, which `execnet.gateway_base.loads_internal` turns back into the content.
/// The file is read straight into the message (the GIL released), so a large file is copied
/// once. `None` when the file cannot be opened or read; `OverflowError` when it is 2 GiB or
/// larger, which the serializer cannot encode.
#[pyfunction]
pub fn file_payload<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let opened = py.detach(|| {
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    });
    let Ok((mut file, len)) = opened else {
        return Ok(None);
    };
    if len > payload::MAX_CONTENT {
        return Err(PyOverflowError::new_err(format!(
            "{} is too large to send ({len} bytes)",
            path.display()
        )));
    }
    let len = usize::try_from(len).map_err(|e| PyOverflowError::new_err(e.to_string()))?;
    let Some(head) = payload::header(len) else {
        return Err(PyOverflowError::new_err("file too large"));
    };
    // Whether the file still had exactly `len` bytes when it was read.
    let mut exact = true;
    let mut failed = false;
    let bytes = PyBytes::new_with(py, len + payload::OVERHEAD, |buf| {
        let (front, rest) = buf.split_at_mut(payload::HEADER_LEN);
        front.copy_from_slice(&head);
        let (body, tail) = rest.split_at_mut(len);
        tail.fill(payload::STOP);
        for slice in body.chunks_mut(READ_SLICE) {
            let want = slice.len();
            match py.detach(|| payload::read_full(&mut file, slice)) {
                Ok(n) if n == want => {}
                Ok(_) => {
                    exact = false;
                    return Ok(());
                }
                Err(_) => {
                    failed = true;
                    return Ok(());
                }
            }
            py.check_signals()?;
        }
        match py.detach(|| payload::at_end(&mut file)) {
            Ok(end) => exact = end,
            Err(_) => failed = true,
        }
        Ok(())
    })?;
    if failed {
        return Ok(None);
    }
    if exact {
        return Ok(Some(bytes));
    }
    // The file changed size while it was read: send what it holds now, as a plain read would.
    drop(bytes);
    let Ok(data) = py.detach(|| std::fs::read(&path)) else {
        return Ok(None);
    };
    match payload::encode(&data) {
        Some(encoded) => Ok(Some(PyBytes::new(py, &encoded))),
        None => Err(PyOverflowError::new_err(format!(
            "{} is too large to send ({} bytes)",
            path.display(),
            data.len()
        ))),
    }
}

/// [`file_payload`] for a batch of small files: the payload of each file of at most `limit`
/// bytes, read on up to `threads` threads with the GIL released, and `None` for a larger file
/// (to be read with `file_payload`) or one that cannot be read.
#[pyfunction]
#[pyo3(signature = (paths, limit, threads=1))]
pub fn file_payloads<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    limit: u64,
    threads: usize,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    // Slices keep Ctrl-C responsive while a large batch is read.
    for slice in paths.chunks(256) {
        let read = py.detach(|| payload::read_small_files(slice, limit, threads));
        for result in read {
            match result {
                Ok(Some(data)) => out.append(PyBytes::new(py, &data))?,
                Ok(None) | Err(_) => out.append(PyNone::get(py))?,
            }
        }
        py.check_signals()?;
    }
    Ok(out)
}
