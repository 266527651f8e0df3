//! pyo3 bindings: the private module `execnet._core`. Conversions, GIL handling and exceptions
//! only; the engine lives in the pure-Rust modules.

use pyo3::prelude::*;

pub mod codec;
pub mod compile;
pub mod mux;
pub mod rsync;

/// The private extension module `execnet._core`.
#[pymodule(gil_used = false)]
pub mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::codec::{dumps, dumps_internal, loads, loads_internal, scan_payload};

    #[pymodule_export]
    use super::rsync::{file_payload, file_payloads, md5_file, md5_files, walk_tree, TreeWalkPy};

    #[pymodule_export]
    use super::compile::compile_exec;

    #[pymodule_export]
    use super::mux::{ChannelQueuePy, MuxPy};

    #[pymodule_export]
    use super::mux::after_fork_in_child;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        super::mux::register_fork_hook(m)?;
        Ok(())
    }
}
