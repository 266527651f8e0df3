//! Validation without building objects: the decoder run with a builder whose values are type
//! tags.

use super::decoder::normalize_index;
use super::decoder::{decode, Builder};
use super::error::DecodeError;
use super::intlit;
use super::opcodes as op;

/// Operand length beyond which Python's configurable int digit limit may reject a literal.
const SAFE_INT_DIGITS: usize = 640;

/// What [`scan`](super::scan) learned about a payload it accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanInfo {
    /// A `CHANNEL` opcode occurs: decoding creates or looks up channels.
    pub channel_refs: bool,
    /// Whether decoding can still fail in a way only Python can tell: a `PY3STRING` that is
    /// not UTF-8 (fine if strings stay bytes) or a `LONGINT` long enough for Python's digit
    /// limit (`sys.set_int_max_str_digits`).
    pub needs_python_check: bool,
}

/// A value reduced to what decides later failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int(i64),
    BigInt,
    Bool(bool),
    /// Hashable, not assignable, not an index.
    Scalar(&'static str),
    Dict,
    List(usize),
    /// A tuple; the type name of the first unhashable part, if any.
    Tuple(Option<&'static str>),
    Set,
    FrozenSet,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Self::Int(_) | Self::BigInt => "int",
            Self::Bool(_) => "bool",
            Self::Scalar(name) => name,
            Self::Dict => "dict",
            Self::List(_) => "list",
            Self::Tuple(_) => "tuple",
            Self::Set => "set",
            Self::FrozenSet => "frozenset",
        }
    }

    fn unhashable(self) -> Option<&'static str> {
        match self {
            Self::Dict | Self::List(_) | Self::Set => Some(self.type_name()),
            Self::Tuple(inner) => inner,
            _ => None,
        }
    }
}

#[derive(Default)]
struct Scanner {
    info: ScanInfo,
}

impl Builder for Scanner {
    type Value = Kind;
    type Error = DecodeError;

    fn none(&mut self) -> Result<Kind, DecodeError> {
        Ok(Kind::Scalar("NoneType"))
    }
    fn boolean(&mut self, value: bool) -> Result<Kind, DecodeError> {
        Ok(Kind::Bool(value))
    }
    fn int(&mut self, value: i32) -> Result<Kind, DecodeError> {
        Ok(Kind::Int(value.into()))
    }
    fn long(&mut self, literal: &[u8], offset: usize, opcode: u8) -> Result<Kind, DecodeError> {
        let parsed = intlit::parse(literal)
            .ok_or_else(|| DecodeError::invalid_int(offset, opcode, literal))?;
        if literal.len() > SAFE_INT_DIGITS {
            self.info.needs_python_check = true;
        }
        Ok(parsed.to_i64().map_or(Kind::BigInt, Kind::Int))
    }
    fn float(&mut self, _: f64) -> Result<Kind, DecodeError> {
        Ok(Kind::Scalar("float"))
    }
    fn complex(&mut self, _: f64, _: f64) -> Result<Kind, DecodeError> {
        Ok(Kind::Scalar("complex"))
    }
    fn bytes(&mut self, _: &[u8]) -> Result<Kind, DecodeError> {
        Ok(Kind::Scalar("bytes"))
    }
    fn string(&mut self, data: &[u8], offset: usize, opcode: u8) -> Result<Kind, DecodeError> {
        match opcode {
            op::PY2STRING => Ok(Kind::Scalar("str")),
            _ if std::str::from_utf8(data).is_ok() => Ok(Kind::Scalar("str")),
            op::PY3STRING => {
                self.info.needs_python_check = true;
                Ok(Kind::Scalar("bytes"))
            }
            _ => Err(DecodeError::InvalidUtf8 {
                offset,
                opcode,
                start: 0,
                end: data.len(),
            }),
        }
    }
    fn channel(&mut self, _: i32, _: usize) -> Result<Kind, DecodeError> {
        self.info.channel_refs = true;
        Ok(Kind::Scalar("Channel"))
    }
    fn dict(&mut self) -> Result<Kind, DecodeError> {
        Ok(Kind::Dict)
    }
    fn list(&mut self, len: usize, _: usize) -> Result<Kind, DecodeError> {
        Ok(Kind::List(len))
    }
    fn list_from(&mut self, items: Vec<Kind>) -> Result<Kind, DecodeError> {
        Ok(Kind::List(items.len()))
    }
    fn tuple<I: ExactSizeIterator<Item = Kind>>(&mut self, items: I) -> Result<Kind, DecodeError> {
        let mut first = None;
        for item in items {
            if first.is_none() {
                first = item.unhashable();
            }
        }
        Ok(Kind::Tuple(first))
    }
    fn set<I: ExactSizeIterator<Item = Kind>>(
        &mut self,
        items: I,
        frozen: bool,
        offset: usize,
    ) -> Result<Kind, DecodeError> {
        for item in items {
            if let Some(type_name) = item.unhashable() {
                return Err(DecodeError::Unhashable { offset, type_name });
            }
        }
        Ok(if frozen { Kind::FrozenSet } else { Kind::Set })
    }
    fn set_item(
        &mut self,
        target: &mut Kind,
        key: Kind,
        _: Kind,
        key_too_deep: bool,
        offset: usize,
    ) -> Result<(), DecodeError> {
        match *target {
            Kind::Dict => {
                if key_too_deep {
                    return Err(DecodeError::TooDeep { offset });
                }
                match key.unhashable() {
                    Some(type_name) => Err(DecodeError::Unhashable { offset, type_name }),
                    None => Ok(()),
                }
            }
            Kind::List(len) => match self.list_index(&key, len, offset)? {
                Some(_) => Ok(()),
                None => Err(DecodeError::BadListIndex {
                    offset,
                    type_name: key.type_name(),
                }),
            },
            other => Err(DecodeError::NotAssignable {
                offset,
                type_name: other.type_name(),
            }),
        }
    }
    fn list_index(
        &mut self,
        key: &Kind,
        len: usize,
        offset: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let index = match *key {
            Kind::Bool(b) => i64::from(b),
            Kind::Int(i) => i,
            Kind::BigInt => return Err(DecodeError::IndexTooLarge { offset }),
            other => {
                return Err(DecodeError::BadListIndex {
                    offset,
                    type_name: other.type_name(),
                })
            }
        };
        normalize_index(index, len, offset).map(Some)
    }
}

/// Validates an internal-form payload (no version byte) without building any object.
///
/// Accepts exactly what the real decoder accepts, except where [`ScanInfo::needs_python_check`]
/// says only a Python decode can tell.
///
/// # Errors
/// The [`DecodeError`] the decoder raises for the payload when `PY3STRING` stays bytes (with
/// text, a `PY3STRING` that is not UTF-8 fails earlier); for unhashable keys and the like with
/// the type name a real decode reports.
pub fn scan(payload: &[u8]) -> Result<ScanInfo, DecodeError> {
    let mut scanner = Scanner::default();
    decode(&mut scanner, payload, false)?;
    Ok(scanner.info)
}
