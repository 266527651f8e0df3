//! RSync engine: the sender's tree walk and the MD5 hashing used for change detection.
//!
//! The walk produces the directory-structure stream that `execnet.rsync.RSync` broadcasts to its
//! targets, in pre-order and in `readdir` order (the order `os.listdir` reports on the same
//! directory). Hashing is plain MD5 over whole files, the only digest the protocol knows.
//!
//! Nothing here touches Python; `crate::py::rsync` converts the results.

mod encode;
mod error;
mod hash;
pub mod payload;
mod walk;

pub use encode::encode_entry;
pub use error::{Error, Result};
pub use hash::{md5_bytes, md5_file, md5_files, read_file, Digest};
pub use walk::{walk, walk_unfiltered, Entry, FileInfo, Walk, Walker};
