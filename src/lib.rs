//! The Rust engine of execnet.
//!
//! The engine modules are pure Rust and build without libpython
//! (`cargo test --no-default-features`); the pyo3 bindings live in the `py` module behind the
//! default `python` feature and make up the private extension module `execnet._core`.

pub mod codec;
pub mod frame;
pub mod mux;
#[cfg(feature = "python")]
pub mod py;
pub mod rsync;
