//! The decoder: a stack machine over the opcodes, driving a [`Builder`] that makes the values.
//!
//! It never recurses and never allocates more than the input justifies: a length operand larger
//! than the rest of the input reads what is there (as reading from a byte stream does), and a
//! list declared longer than the rest of the input is kept as a sparse "lazy" list until it is
//! complete.

use std::collections::BTreeMap;

use super::error::DecodeError;
use super::opcodes as op;

/// Tuples nested deeper than this are refused as dict keys or set elements: hashing them
/// recurses in C and would overflow the stack.
pub const MAX_HASH_DEPTH: u32 = 1000;

/// A list declared longer than the rest of its input and this long is refused with
/// [`DecodeError::OutOfMemory`] instead of being allocated (as `[None] * n`) at the end.
pub const MAX_UNFILLED_LIST_LEN: usize = 1 << 24;

/// Makes values for the decoder. Implemented for Python objects (the bindings), for the Rust
/// [`Value`](super::Value) tree and for the validating scanner.
pub trait Builder {
    /// The values built.
    type Value;
    /// The builder's error type; decoder failures convert into it.
    type Error: From<DecodeError>;

    /// `None`.
    fn none(&mut self) -> Result<Self::Value, Self::Error>;
    /// `True` / `False`.
    fn boolean(&mut self, value: bool) -> Result<Self::Value, Self::Error>;
    /// An int that fits int4 (`INT`, `LONG`).
    fn int(&mut self, value: i32) -> Result<Self::Value, Self::Error>;
    /// `int(literal)` of a `LONGINT`/`LONGLONG` operand.
    fn long(
        &mut self,
        literal: &[u8],
        offset: usize,
        opcode: u8,
    ) -> Result<Self::Value, Self::Error>;
    /// A float.
    fn float(&mut self, value: f64) -> Result<Self::Value, Self::Error>;
    /// A complex number.
    fn complex(&mut self, real: f64, imag: f64) -> Result<Self::Value, Self::Error>;
    /// `BYTES`.
    fn bytes(&mut self, data: &[u8]) -> Result<Self::Value, Self::Error>;
    /// `PY2STRING`, `PY3STRING` or `UNICODE` text, interpreted per the string configuration.
    fn string(
        &mut self,
        data: &[u8],
        offset: usize,
        opcode: u8,
    ) -> Result<Self::Value, Self::Error>;
    /// Text pushed right onto a dict: in execnet's encoding, a dict key. The default is
    /// [`Builder::string`]; builders may share repeated keys.
    fn key_string(
        &mut self,
        data: &[u8],
        offset: usize,
        opcode: u8,
    ) -> Result<Self::Value, Self::Error> {
        self.string(data, offset, opcode)
    }
    /// `CHANNEL`.
    fn channel(&mut self, id: i32, offset: usize) -> Result<Self::Value, Self::Error>;
    /// An empty dict.
    fn dict(&mut self) -> Result<Self::Value, Self::Error>;
    /// A list of `len` `None`s.
    fn list(&mut self, len: usize, offset: usize) -> Result<Self::Value, Self::Error>;
    /// A list of exactly `items`. The default fills [`Builder::list`] by index.
    fn list_from(&mut self, items: Vec<Self::Value>) -> Result<Self::Value, Self::Error> {
        let mut list = self.list(items.len(), 0)?;
        for (index, value) in items.into_iter().enumerate() {
            let index =
                i32::try_from(index).map_err(|_| DecodeError::IndexTooLarge { offset: 0 })?;
            self.set_index(&mut list, index, value, 0)?;
        }
        Ok(list)
    }
    /// A tuple of `items`.
    fn tuple<I>(&mut self, items: I) -> Result<Self::Value, Self::Error>
    where
        I: ExactSizeIterator<Item = Self::Value>;
    /// A set (or frozenset) of `items`.
    fn set<I>(&mut self, items: I, frozen: bool, offset: usize) -> Result<Self::Value, Self::Error>
    where
        I: ExactSizeIterator<Item = Self::Value>;
    /// `target[key] = value`. `key_too_deep` says hashing `key` would recurse too deeply.
    fn set_item(
        &mut self,
        target: &mut Self::Value,
        key: Self::Value,
        value: Self::Value,
        key_too_deep: bool,
        offset: usize,
    ) -> Result<(), Self::Error>;
    /// The list position `key` designates in a list of `len` entries: `Some(i)` for an
    /// integer key, `None` for keys of other types (the list is then built and
    /// [`Builder::set_item`] decides).
    fn list_index(
        &mut self,
        key: &Self::Value,
        len: usize,
        offset: usize,
    ) -> Result<Option<usize>, Self::Error>;
    /// `target[index] = value` for an int key (the usual list item). The default makes the key
    /// and calls [`Builder::set_item`]; builders may shortcut lists.
    fn set_index(
        &mut self,
        target: &mut Self::Value,
        index: i32,
        value: Self::Value,
        offset: usize,
    ) -> Result<(), Self::Error> {
        let key = self.int(index)?;
        self.set_item(target, key, value, false, offset)
    }
}

/// Normalizes a Python list index (possibly negative) for a list of `len` entries, as
/// `list[index] = value` does (`IndexError` outside).
///
/// # Errors
/// [`DecodeError::IndexOutOfRange`].
pub fn normalize_index(index: i64, len: usize, offset: usize) -> Result<usize, DecodeError> {
    let len_i = i64::try_from(len).map_err(|_| DecodeError::IndexOutOfRange { offset })?;
    let i = if index < 0 {
        index.saturating_add(len_i)
    } else {
        index
    };
    usize::try_from(i)
        .ok()
        .filter(|&i| i < len)
        .ok_or(DecodeError::IndexOutOfRange { offset })
}

/// Stack entry flag: the entry is a list (made by `NEWLIST`). The other bits hold the entry's
/// hash depth.
const LIST_FLAG: u32 = 1 << 31;
/// Stack entry flag: the entry is a dict (made by `NEWDICT`).
const DICT_FLAG: u32 = 1 << 30;
const DEPTH_MASK: u32 = DICT_FLAG - 1;

fn hash_depth(meta: u32) -> u32 {
    meta & DEPTH_MASK
}

/// A stack entry whose value is not built yet (its stack slot holds a placeholder).
enum Deferred<V> {
    /// An `INT` pushed onto a list: almost always the index of the next `SETITEM`, which then
    /// needs no int object.
    Int(i32),
    /// A list (`NEWLIST`): its entries are collected and the list is built when it is used,
    /// from exactly its items when they came in order (the encoder's way), without allocating
    /// for a declared length the input does not fill.
    List {
        len: usize,
        entries: Entries<V>,
        /// Declared longer than the rest of the input at the time: cannot have been filled.
        unfillable: bool,
        offset: usize,
    },
}

/// The entries assigned to a deferred list so far.
enum Entries<V> {
    /// Indices 0, 1, 2, ... so far.
    Dense(Vec<V>),
    /// Any indices.
    Sparse(BTreeMap<usize, V>),
}

impl<V> Entries<V> {
    fn set(&mut self, index: usize, value: V) {
        match self {
            Self::Dense(items) if index == items.len() => items.push(value),
            Self::Dense(items) => match items.get_mut(index) {
                Some(slot) => *slot = value,
                None => {
                    let mut sparse: BTreeMap<usize, V> =
                        std::mem::take(items).into_iter().enumerate().collect();
                    sparse.insert(index, value);
                    *self = Self::Sparse(sparse);
                }
            },
            Self::Sparse(map) => {
                map.insert(index, value);
            }
        }
    }
}

struct Pending<V> {
    /// Index of the placeholder on the stack.
    slot: usize,
    what: Deferred<V>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fixed<const N: usize>(&mut self, offset: usize, opcode: u8) -> Result<[u8; N], DecodeError> {
        let end = self.pos.saturating_add(N);
        match self
            .data
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
        {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes)
            }
            None => Err(DecodeError::Truncated {
                offset,
                opcode,
                needed: N,
            }),
        }
    }

    fn int4(&mut self, offset: usize, opcode: u8) -> Result<i32, DecodeError> {
        self.fixed::<4>(offset, opcode).map(i32::from_be_bytes)
    }

    fn float(&mut self, offset: usize, opcode: u8) -> Result<f64, DecodeError> {
        self.fixed::<8>(offset, opcode).map(f64::from_be_bytes)
    }

    /// Up to `len` bytes; a negative length means "the rest" (byte-stream `read(-n)`).
    fn chunk(&mut self, len: i32) -> &'a [u8] {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let take = usize::try_from(len).map_or(rest.len(), |n| n.min(rest.len()));
        self.pos += take;
        rest.get(..take).unwrap_or_default()
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

type Stack<V> = Vec<(V, u32)>;

/// `Vec::pop_if` (Rust 1.86) for the crate's minimum Rust version.
#[inline]
fn pop_if<T>(items: &mut Vec<T>, f: impl FnOnce(&T) -> bool) -> Option<T> {
    if items.last().is_some_and(f) {
        items.pop()
    } else {
        None
    }
}

/// Builds the value of a deferred entry into its stack slot.
fn realize<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    pending: Pending<B::Value>,
) -> Result<(), B::Error> {
    let value = match pending.what {
        Deferred::Int(i) => builder.int(i)?,
        Deferred::List {
            len,
            entries,
            unfillable,
            offset,
        } => match entries {
            Entries::Dense(items) if items.len() == len => builder.list_from(items)?,
            entries => {
                if unfillable && len > MAX_UNFILLED_LIST_LEN {
                    return Err(DecodeError::OutOfMemory { offset }.into());
                }
                let mut list = builder.list(len, offset)?;
                let entries: Box<dyn Iterator<Item = (usize, B::Value)>> = match entries {
                    Entries::Dense(items) => Box::new(items.into_iter().enumerate()),
                    Entries::Sparse(map) => Box::new(map.into_iter()),
                };
                for (index, value) in entries {
                    let index =
                        i32::try_from(index).map_err(|_| DecodeError::IndexTooLarge { offset })?;
                    builder.set_index(&mut list, index, value, offset)?;
                }
                list
            }
        },
    };
    if let Some(entry) = stack.get_mut(pending.slot) {
        entry.0 = value;
    }
    Ok(())
}

/// Builds every deferred entry at stack index `from` or above. With `stand_in`, deferred lists
/// become empty lists: for uses where only their type matters (set elements and dict keys,
/// which fail for lists anyway).
#[inline]
fn realize_from<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    pendings: &mut Vec<Pending<B::Value>>,
    from: usize,
    stand_in: bool,
) -> Result<(), B::Error> {
    while let Some(p) = pop_if(pendings, |p| p.slot >= from) {
        if stand_in && matches!(p.what, Deferred::List { .. }) {
            let empty = builder.list(0, 0)?;
            if let Some(entry) = stack.get_mut(p.slot) {
                entry.0 = empty;
            }
        } else {
            realize(builder, stack, p)?;
        }
    }
    Ok(())
}

/// Where `BUILDTUPLE`/`SET`/`FROZENSET` with count `n` start taking entries: the last `n`
/// (all if fewer); for a negative `n`, everything from index `-n` on (Python's `stack[-n:]`).
fn collection_start(stack_len: usize, n: i32) -> usize {
    if n == 0 {
        stack_len
    } else if n > 0 {
        stack_len.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
    } else {
        usize::try_from(n.unsigned_abs()).map_or(stack_len, |k| k.min(stack_len))
    }
}

/// `SETITEM`: pops value and key, assigns into the entry below.
#[inline]
fn set_item<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    pendings: &mut Vec<Pending<B::Value>>,
    offset: usize,
) -> Result<(), B::Error> {
    if stack.len() < 3 {
        return Err(DecodeError::SetItemUnderflow { offset }.into());
    }
    let top = stack.len() - 1;
    realize_from(builder, stack, pendings, top, false)?;
    let deferred_key = pop_if(pendings, |p| p.slot == top - 1).map(|p| p.what);
    let (value, _) = stack
        .pop()
        .ok_or(DecodeError::SetItemUnderflow { offset })?;
    let (mut key, key_meta) = stack
        .pop()
        .ok_or(DecodeError::SetItemUnderflow { offset })?;
    let target_slot = top - 2;
    match deferred_key {
        Some(Deferred::Int(index)) => {
            if let Some(p) = pendings.last_mut().filter(|p| p.slot == target_slot) {
                if let Deferred::List { len, entries, .. } = &mut p.what {
                    entries.set(normalize_index(index.into(), *len, offset)?, value);
                    return Ok(());
                }
                realize_from(builder, stack, pendings, target_slot, false)?;
            }
            let target = &mut stack
                .last_mut()
                .ok_or(DecodeError::SetItemUnderflow { offset })?
                .0;
            return builder.set_index(target, index, value, offset);
        }
        // A list as key only ever fails (unhashable, not an index): an empty one stands in.
        Some(Deferred::List { .. }) => key = builder.list(0, offset)?,
        None => {}
    }
    if let Some(p) = pendings.last_mut().filter(|p| p.slot == target_slot) {
        if let Deferred::List { len, entries, .. } = &mut p.what {
            if let Some(index) = builder.list_index(&key, *len, offset)? {
                entries.set(index, value);
                return Ok(());
            }
        }
        realize_from(builder, stack, pendings, target_slot, false)?;
    }
    let target = &mut stack
        .last_mut()
        .ok_or(DecodeError::SetItemUnderflow { offset })?
        .0;
    builder.set_item(
        target,
        key,
        value,
        hash_depth(key_meta) > MAX_HASH_DEPTH,
        offset,
    )
}

/// Decodes one value. `versioned` expects (and checks) the leading version byte. Bytes after
/// `STOP` are ignored.
///
/// # Errors
/// The [`DecodeError`] matching what execnet 2.1.2 raises for the input, or the builder's error.
pub fn decode<B: Builder>(
    builder: &mut B,
    data: &[u8],
    versioned: bool,
) -> Result<B::Value, B::Error> {
    let mut r = Reader { data, pos: 0 };
    if versioned {
        match data.first() {
            Some(&op::DUMPFORMAT_VERSION) => r.pos = 1,
            found => {
                return Err(DecodeError::WrongVersion {
                    found: found.copied(),
                }
                .into())
            }
        }
    }
    let mut stack: Stack<B::Value> = Vec::new();
    let mut pendings: Vec<Pending<B::Value>> = Vec::new();
    loop {
        let offset = r.pos;
        let Some(&opcode) = data.get(offset) else {
            return Err(DecodeError::Eof { offset }.into());
        };
        r.pos += 1;
        let mut meta = 1;
        let value = match opcode {
            op::NONE => builder.none()?,
            op::TRUE => builder.boolean(true)?,
            op::FALSE => builder.boolean(false)?,
            op::INT | op::LONG => {
                let v = r.int4(offset, opcode)?;
                if stack.last().is_some_and(|e| e.1 & LIST_FLAG != 0) {
                    pendings.push(Pending {
                        slot: stack.len(),
                        what: Deferred::Int(v),
                    });
                    builder.none()?
                } else {
                    builder.int(v)?
                }
            }
            op::FLOAT => {
                let v = r.float(offset, opcode)?;
                builder.float(v)?
            }
            op::COMPLEX => {
                let both = r.fixed::<16>(offset, opcode)?;
                let (re, im) = both.split_at(8);
                let re = <[u8; 8]>::try_from(re).map_or(0.0, f64::from_be_bytes);
                let im = <[u8; 8]>::try_from(im).map_or(0.0, f64::from_be_bytes);
                builder.complex(re, im)?
            }
            op::LONGINT | op::LONGLONG => {
                let n = r.int4(offset, opcode)?;
                let literal = r.chunk(n);
                builder.long(literal, offset, opcode)?
            }
            op::BYTES => {
                let n = r.int4(offset, opcode)?;
                let chunk = r.chunk(n);
                builder.bytes(chunk)?
            }
            op::PY2STRING | op::PY3STRING | op::UNICODE => {
                let n = r.int4(offset, opcode)?;
                let chunk = r.chunk(n);
                if stack.last().is_some_and(|e| e.1 & DICT_FLAG != 0) {
                    builder.key_string(chunk, offset, opcode)?
                } else {
                    builder.string(chunk, offset, opcode)?
                }
            }
            op::CHANNEL => {
                let id = r.int4(offset, opcode)?;
                builder.channel(id, offset)?
            }
            op::NEWDICT => {
                meta |= DICT_FLAG;
                builder.dict()?
            }
            op::NEWLIST => {
                let n = r.int4(offset, opcode)?;
                let len = usize::try_from(n).unwrap_or(0);
                meta |= LIST_FLAG;
                let unfillable = len > r.remaining();
                // Filled lists take at least one byte per item: the capacity is bounded by the
                // input.
                let capacity = if unfillable { 0 } else { len };
                pendings.push(Pending {
                    slot: stack.len(),
                    what: Deferred::List {
                        len,
                        entries: Entries::Dense(Vec::with_capacity(capacity)),
                        unfillable,
                        offset,
                    },
                });
                builder.none()?
            }
            op::BUILDTUPLE | op::SET | op::FROZENSET => {
                let n = r.int4(offset, opcode)?;
                let start = collection_start(stack.len(), n);
                let tuple = opcode == op::BUILDTUPLE;
                realize_from(builder, &mut stack, &mut pendings, start, !tuple)?;
                let items = stack.drain(start..);
                let deepest = items.as_slice().iter().map(|e| hash_depth(e.1)).max();
                if tuple {
                    meta = deepest.unwrap_or(0).saturating_add(1).min(DEPTH_MASK);
                    builder.tuple(items.map(|e| e.0))?
                } else if deepest.is_some_and(|d| d > MAX_HASH_DEPTH) {
                    return Err(DecodeError::TooDeep { offset }.into());
                } else {
                    builder.set(items.map(|e| e.0), opcode == op::FROZENSET, offset)?
                }
            }
            op::SETITEM => {
                set_item(builder, &mut stack, &mut pendings, offset)?;
                continue;
            }
            op::STOP => {
                if stack.len() != 1 {
                    return Err(DecodeError::StackNotOne {
                        offset,
                        depth: stack.len(),
                    }
                    .into());
                }
                realize_from(builder, &mut stack, &mut pendings, 0, false)?;
                return match stack.pop() {
                    Some((value, _)) => Ok(value),
                    None => Err(DecodeError::StackNotOne { offset, depth: 0 }.into()),
                };
            }
            _ => return Err(DecodeError::UnknownOpcode { offset, opcode }.into()),
        };
        stack.push((value, meta));
    }
}
