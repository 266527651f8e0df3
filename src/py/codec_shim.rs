//! TEMPORARY SHIM for `crate::py::codec::decode_internal` until the native codec is merged;
//! delete this file then and point `crate::py::mux` at `crate::py::codec`. It decodes through
//! `execnet.gateway_base.loads_internal`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

static LOADS_INTERNAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Decodes one internal (unversioned) serializer payload.
pub fn decode_internal<'py>(
    py: Python<'py>,
    data: &[u8],
    strconfig: (bool, bool),
    channelfactory: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let loads = LOADS_INTERNAL.import(py, "execnet.gateway_base", "loads_internal")?;
    loads.call1((PyBytes::new(py, data), channelfactory, strconfig))
}
