//! A Rust value tree for the serializer, with a [`Builder`] and an encoder: used by tests and
//! property tests of the engine without Python.
//!
//! Differences from Python objects: dict keys and set elements are compared structurally (no
//! `1 == 1.0 == True` merging); `LONGINT` literals have no digit-count limit; lists longer than
//! [`MAX_LIST_LEN`] are refused with [`DecodeError::OutOfMemory`].

use super::decoder::{normalize_index, Builder};
use super::error::DecodeError;
use super::intlit;
use super::opcodes as op;
use super::writer::{self, TooLong};

/// Longest list the [`ValueBuilder`] builds.
pub const MAX_LIST_LEN: usize = 1 << 20;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int outside `i64`, as canonical decimal text.
    BigInt(String),
    Float(f64),
    Complex(f64, f64),
    Bytes(Vec<u8>),
    Str(String),
    Channel(i32),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
}

impl Value {
    /// Python's type name of the value.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "NoneType",
            Self::Bool(_) => "bool",
            Self::Int(_) | Self::BigInt(_) => "int",
            Self::Float(_) => "float",
            Self::Complex(..) => "complex",
            Self::Bytes(_) => "bytes",
            Self::Str(_) => "str",
            Self::Channel(_) => "Channel",
            Self::List(_) => "list",
            Self::Tuple(_) => "tuple",
            Self::Dict(_) => "dict",
            Self::Set(_) => "set",
            Self::FrozenSet(_) => "frozenset",
        }
    }

    /// The type name of the first unhashable part Python's `hash()` would hit, if any.
    fn unhashable(&self) -> Option<&'static str> {
        let mut work = vec![self];
        while let Some(v) = work.pop() {
            match v {
                Self::List(_) | Self::Dict(_) | Self::Set(_) => return Some(v.type_name()),
                Self::Tuple(items) => work.extend(items.iter().rev()),
                _ => {}
            }
        }
        None
    }

    fn children(&mut self, out: &mut Vec<Value>) {
        match self {
            Self::List(items) | Self::Tuple(items) | Self::Set(items) | Self::FrozenSet(items) => {
                out.append(items);
            }
            Self::Dict(items) => {
                for (k, v) in std::mem::take(items) {
                    out.push(k);
                    out.push(v);
                }
            }
            _ => {}
        }
    }
}

impl Drop for Value {
    // Deeply nested trees are dropped without recursion.
    fn drop(&mut self) {
        let mut work = Vec::new();
        self.children(&mut work);
        while let Some(mut v) = work.pop() {
            v.children(&mut work);
        }
    }
}

/// Builds [`Value`]s, with a string configuration and an optional channel table.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueBuilder {
    /// `PY2STRING` decodes as latin-1 text instead of bytes.
    pub py2str_as_py3str: bool,
    /// `PY3STRING` stays bytes instead of UTF-8 text.
    pub py3str_as_py2str: bool,
    /// Whether a channel factory exists (`CHANNEL` fails without one).
    pub channels: bool,
}

fn utf8(data: &[u8], offset: usize, opcode: u8) -> Result<Value, DecodeError> {
    match std::str::from_utf8(data) {
        Ok(s) => Ok(Value::Str(s.to_owned())),
        Err(_) => Err(DecodeError::InvalidUtf8 {
            offset,
            opcode,
            start: 0,
            end: data.len(),
        }),
    }
}

impl Builder for ValueBuilder {
    type Value = Value;
    type Error = DecodeError;

    fn none(&mut self) -> Result<Value, DecodeError> {
        Ok(Value::None)
    }
    fn boolean(&mut self, value: bool) -> Result<Value, DecodeError> {
        Ok(Value::Bool(value))
    }
    fn int(&mut self, value: i32) -> Result<Value, DecodeError> {
        Ok(Value::Int(value.into()))
    }
    fn long(&mut self, literal: &[u8], offset: usize, opcode: u8) -> Result<Value, DecodeError> {
        let parsed = intlit::parse(literal)
            .ok_or_else(|| DecodeError::invalid_int(offset, opcode, literal))?;
        Ok(parsed
            .to_i64()
            .map_or_else(|| Value::BigInt(parsed.to_decimal()), Value::Int))
    }
    fn float(&mut self, value: f64) -> Result<Value, DecodeError> {
        Ok(Value::Float(value))
    }
    fn complex(&mut self, real: f64, imag: f64) -> Result<Value, DecodeError> {
        Ok(Value::Complex(real, imag))
    }
    fn bytes(&mut self, data: &[u8]) -> Result<Value, DecodeError> {
        Ok(Value::Bytes(data.to_vec()))
    }
    fn string(&mut self, data: &[u8], offset: usize, opcode: u8) -> Result<Value, DecodeError> {
        match opcode {
            op::PY2STRING if self.py2str_as_py3str => {
                Ok(Value::Str(data.iter().map(|&b| char::from(b)).collect()))
            }
            op::PY2STRING => Ok(Value::Bytes(data.to_vec())),
            op::PY3STRING if self.py3str_as_py2str => Ok(Value::Bytes(data.to_vec())),
            _ => utf8(data, offset, opcode),
        }
    }
    fn channel(&mut self, id: i32, offset: usize) -> Result<Value, DecodeError> {
        if self.channels {
            Ok(Value::Channel(id))
        } else {
            Err(DecodeError::NoChannelFactory { offset })
        }
    }
    fn dict(&mut self) -> Result<Value, DecodeError> {
        Ok(Value::Dict(Vec::new()))
    }
    fn list(&mut self, len: usize, offset: usize) -> Result<Value, DecodeError> {
        if len > MAX_LIST_LEN {
            return Err(DecodeError::OutOfMemory { offset });
        }
        let mut items = Vec::new();
        items
            .try_reserve_exact(len)
            .map_err(|_| DecodeError::OutOfMemory { offset })?;
        items.resize(len, Value::None);
        Ok(Value::List(items))
    }
    fn list_from(&mut self, items: Vec<Value>) -> Result<Value, DecodeError> {
        Ok(Value::List(items))
    }
    fn tuple<I: ExactSizeIterator<Item = Value>>(
        &mut self,
        items: I,
    ) -> Result<Value, DecodeError> {
        Ok(Value::Tuple(items.collect()))
    }
    fn set<I: ExactSizeIterator<Item = Value>>(
        &mut self,
        items: I,
        frozen: bool,
        offset: usize,
    ) -> Result<Value, DecodeError> {
        let mut out: Vec<Value> = Vec::with_capacity(items.len());
        for item in items {
            if let Some(type_name) = item.unhashable() {
                return Err(DecodeError::Unhashable { offset, type_name });
            }
            if !out.contains(&item) {
                out.push(item);
            }
        }
        Ok(if frozen {
            Value::FrozenSet(out)
        } else {
            Value::Set(out)
        })
    }
    fn set_item(
        &mut self,
        target: &mut Value,
        key: Value,
        value: Value,
        key_too_deep: bool,
        offset: usize,
    ) -> Result<(), DecodeError> {
        match target {
            Value::Dict(entries) => {
                if key_too_deep {
                    return Err(DecodeError::TooDeep { offset });
                }
                if let Some(type_name) = key.unhashable() {
                    return Err(DecodeError::Unhashable { offset, type_name });
                }
                match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = value,
                    None => entries.push((key, value)),
                }
                Ok(())
            }
            Value::List(items) => {
                let len = items.len();
                let Some(index) = self.list_index(&key, len, offset)? else {
                    return Err(DecodeError::BadListIndex {
                        offset,
                        type_name: key.type_name(),
                    });
                };
                if let Some(slot) = items.get_mut(index) {
                    *slot = value;
                }
                Ok(())
            }
            other => Err(DecodeError::NotAssignable {
                offset,
                type_name: other.type_name(),
            }),
        }
    }
    fn list_index(
        &mut self,
        key: &Value,
        len: usize,
        offset: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let index = match key {
            Value::Bool(b) => i64::from(*b),
            Value::Int(i) => *i,
            Value::BigInt(_) => return Err(DecodeError::IndexTooLarge { offset }),
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

/// An encoding failure of [`encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A length field would exceed int4.
    TooLong,
    /// Nesting deeper than the limit.
    TooDeep,
}

impl From<TooLong> for EncodeError {
    fn from(_: TooLong) -> Self {
        Self::TooLong
    }
}

/// Deepest nesting [`encode`] accepts.
pub const MAX_ENCODE_DEPTH: usize = 1000;

/// Appends the internal form of `value` (without `STOP`), as execnet's encoder writes it.
///
/// # Errors
/// [`EncodeError`] for oversized lengths or excessive nesting.
pub fn encode_into(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_ENCODE_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    match value {
        Value::None => out.push(op::NONE),
        Value::Bool(true) => out.push(op::TRUE),
        Value::Bool(false) => out.push(op::FALSE),
        Value::Int(i) => writer::put_int(out, *i),
        Value::BigInt(digits) => writer::put_data(out, op::LONGINT, digits.as_bytes())?,
        Value::Float(f) => writer::put_float(out, *f),
        Value::Complex(re, im) => writer::put_complex(out, *re, *im),
        Value::Bytes(b) => writer::put_data(out, op::BYTES, b)?,
        Value::Str(s) => writer::put_data(out, op::PY3STRING, s.as_bytes())?,
        Value::Channel(id) => writer::put_int4(out, op::CHANNEL, *id),
        Value::List(items) => {
            writer::put_count(out, op::NEWLIST, items.len())?;
            for (i, item) in items.iter().enumerate() {
                writer::put_int4(
                    out,
                    op::INT,
                    i32::try_from(i).map_err(|_| EncodeError::TooLong)?,
                );
                encode_into(item, out, depth + 1)?;
                out.push(op::SETITEM);
            }
        }
        Value::Dict(entries) => {
            out.push(op::NEWDICT);
            for (k, v) in entries {
                encode_into(k, out, depth + 1)?;
                encode_into(v, out, depth + 1)?;
                out.push(op::SETITEM);
            }
        }
        Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            for item in items {
                encode_into(item, out, depth + 1)?;
            }
            let opcode = match value {
                Value::Tuple(_) => op::BUILDTUPLE,
                Value::Set(_) => op::SET,
                _ => op::FROZENSET,
            };
            writer::put_count(out, opcode, items.len())?;
        }
    }
    Ok(())
}

/// The internal form of `value`, ending in `STOP`.
///
/// # Errors
/// [`EncodeError`] for oversized lengths or excessive nesting.
pub fn encode(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(value, &mut out, 0)?;
    out.push(op::STOP);
    Ok(out)
}

/// Decodes the internal form into a [`Value`] with the given builder settings.
///
/// # Errors
/// The [`DecodeError`] execnet's decoder would raise.
pub fn decode_value(
    data: &[u8],
    builder: &mut ValueBuilder,
    versioned: bool,
) -> Result<Value, DecodeError> {
    super::decoder::decode(builder, data, versioned)
}
