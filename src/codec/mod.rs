//! execnet's serializer, engine side (no Python).
//!
//! The format is a postfix program of one-byte [`opcodes`] with big-endian operands, ending in
//! `STOP`; the versioned form (`dumps`/`loads`) starts with the byte `0x02`. [`decode`] runs
//! it as a stack machine over a [`Builder`]; the Python bindings implement the builder for
//! Python objects, [`ValueBuilder`] for the [`Value`] tree, and [`scan`] for validation only.
//!
//! ```
//! use _core::codec::*;
//! let data = b"K\x00\x00\x00\x01F\x00\x00\x00\x00N\x00\x00\x00\x01aPQ";
//! let value = decode_value(data, &mut ValueBuilder::default(), false).unwrap();
//! assert_eq!(value, Value::List(vec![Value::Str("a".into())]));
//! assert_eq!(encode(&value).unwrap(), data);
//! assert!(!scan(data).unwrap().channel_refs);
//! ```

mod decoder;
mod error;
pub mod intlit;
pub mod opcodes;
mod scan;
mod value;
pub mod writer;

pub use decoder::{decode, normalize_index, Builder, Key, MAX_HASH_DEPTH, MAX_UNFILLED_LIST_LEN};
pub use error::{bytes_repr, DecodeError, DecodeResult};
pub use scan::{scan, ScanInfo};
pub use value::{
    decode_value, encode, encode_into, EncodeError, Value, ValueBuilder, MAX_ENCODE_DEPTH,
    MAX_LIST_LEN,
};
