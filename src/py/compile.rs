//! `compile()` for `remote_exec` sources without the cost of the builtin's first call.
//!
//! The builtin `compile()` checks whether its argument is an AST object, and that check builds
//! every `ast` node type (about 1.5 ms, once per process) before anything is compiled. A worker
//! compiles the source of each `remote_exec`; for its first one that cost lies on the critical
//! path of the gateway's first round trip. This calls the compiler the builtin ends in, with the
//! same flags, so the code object, the errors and their texts are the builtin's.

use std::ffi::{c_char, c_int, CString};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `PyCompilerFlags` of CPython's `Include/cpython/compile.h` (unchanged since 3.8).
#[repr(C)]
struct PyCompilerFlags {
    cf_flags: c_int,
    cf_feature_version: c_int,
}

/// `PyCF_SOURCE_IS_UTF8` and `PyCF_IGNORE_COOKIE`: what the builtin adds for a `str` source.
const SOURCE_FLAGS: c_int = 0x0100 | 0x0800;
/// `PyCF_MASK`: the `__future__` feature flags a caller may pass (they are inherited by the
/// builtin from the calling code).
const FUTURE_MASK: c_int = 0x1FE_0000;

#[allow(unsafe_code)]
extern "C" {
    /// Part of CPython's C API since 3.4 (outside the limited API, stable in every version
    /// this extension loads into); the builtin `compile()` ends in it.
    fn Py_CompileStringObject(
        source: *const c_char,
        filename: *mut ffi::PyObject,
        start: c_int,
        flags: *mut PyCompilerFlags,
        optimize: c_int,
    ) -> *mut ffi::PyObject;
}

/// Compile `source` in `exec` mode as `compile(source, filename, "exec")` called from code
/// with the `__future__` flags `future_flags` would; None when the source or the file name is
/// not a plain `str` without NUL characters (the caller then uses the builtin, which reports
/// the problem as it always does).
#[pyfunction]
#[allow(unsafe_code)]
pub fn compile_exec<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    filename: &Bound<'py, PyAny>,
    future_flags: c_int,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (Ok(source), Ok(filename)) = (source.cast::<PyString>(), filename.cast::<PyString>())
    else {
        return Ok(None);
    };
    let Ok(text) = source.to_str() else {
        return Ok(None);
    };
    let Ok(text) = CString::new(text) else {
        return Ok(None);
    };
    if filename.to_str().map_or(true, |name| name.contains('\0')) {
        return Ok(None);
    }
    let mut flags = PyCompilerFlags {
        cf_flags: (future_flags & FUTURE_MASK) | SOURCE_FLAGS,
        cf_feature_version: c_int::from(py.version_info().minor),
    };
    // SAFETY: `text` is a NUL-terminated UTF-8 buffer alive for the call, `filename` a live str
    // (borrowed, as the API takes it) and `flags` a valid PyCompilerFlags; the GIL is held. The
    // result is a new reference or NULL with an exception set, which `from_owned_ptr_or_err`
    // turns into a PyErr.
    unsafe {
        let code = Py_CompileStringObject(
            text.as_ptr(),
            filename.as_ptr(),
            ffi::Py_file_input,
            &mut flags,
            -1,
        );
        Bound::from_owned_ptr_or_err(py, code).map(Some)
    }
}
