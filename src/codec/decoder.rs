//! The decoder: a stack machine over the opcodes, driving a [`Builder`] that makes the values.
//!
//! It never recurses beyond a fixed depth (the shortcuts below read one level of nested dicts)
//! and never allocates more than the input justifies: a length operand larger than the rest of
//! the input reads what is there (as reading from a byte stream does), and a list declared
//! longer than the rest of the input is kept as a sparse "lazy" list until it is complete.
//!
//! The encoder's own shapes take shortcuts with the same results: a list item ("INT index, a
//! value, SETITEM" for the next slot) is set in place and a dict item ("key, a value, SETITEM")
//! stored at once, in a loop over the items that follow, without the stack, for values that are
//! scalars, tuples of scalars, short lists and (one level down) dicts of such items; list indices
//! need no int objects; lists are made when declared (for builders with
//! [`Builder::EAGER_LISTS`]; short ones from their items) and their slots set in order. Where
//! the input leaves these shapes, the stack holds what the general machine would hold there.

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
    /// [`Builder::key_string`] for a key that is stored right away with [`Builder::dict_put`]:
    /// builders may keep the key themselves and hand out a [`Key::Held`] instead (valid until
    /// the next call of this method).
    fn held_key(
        &mut self,
        data: &[u8],
        offset: usize,
        opcode: u8,
    ) -> Result<Key<Self::Value>, Self::Error> {
        self.key_string(data, offset, opcode).map(Key::Value)
    }
    /// The value of a key from [`Builder::held_key`].
    fn key_value(&mut self, key: Key<Self::Value>) -> Result<Self::Value, Self::Error> {
        match key {
            Key::Value(value) => Ok(value),
            Key::Held(_) => self.none(),
        }
    }
    /// `dict[key] = value` for a dict from [`Builder::dict`] and a key from
    /// [`Builder::held_key`].
    fn dict_put(
        &mut self,
        dict: &mut Self::Value,
        key: Key<Self::Value>,
        value: Self::Value,
        offset: usize,
    ) -> Result<(), Self::Error> {
        let key = self.key_value(key)?;
        self.set_item(dict, key, value, false, offset)
    }
    /// `CHANNEL`.
    fn channel(&mut self, id: i32, offset: usize) -> Result<Self::Value, Self::Error>;
    /// An empty dict.
    fn dict(&mut self) -> Result<Self::Value, Self::Error>;
    /// A list of `len` `None`s.
    fn list(&mut self, len: usize, offset: usize) -> Result<Self::Value, Self::Error>;
    /// Whether lists are made when `NEWLIST` comes ([`Builder::list_new`]) and filled in place,
    /// instead of collecting their items first (lists declared longer than the rest of the input
    /// are collected either way).
    const EAGER_LISTS: bool = false;
    /// A list of `len` slots that the decoder sets with [`Builder::list_put`] (in order from 0)
    /// and [`Builder::list_fill`] before it is used in any way. The default is
    /// [`Builder::list`].
    fn list_new(&mut self, len: usize, offset: usize) -> Result<Self::Value, Self::Error> {
        self.list(len, offset)
    }
    /// Sets the slot `index` of a list from [`Builder::list_new`], the first slot not set yet.
    fn list_put(
        &mut self,
        list: &mut Self::Value,
        index: usize,
        value: Self::Value,
    ) -> Result<(), Self::Error> {
        let index = i32::try_from(index).map_err(|_| DecodeError::IndexTooLarge { offset: 0 })?;
        self.set_index(list, index, value, 0)
    }
    /// Sets the slots `from..len` of a list from [`Builder::list_new`] to `None`. The default
    /// does nothing ([`Builder::list`] fills with `None`).
    fn list_fill(
        &mut self,
        _list: &mut Self::Value,
        _from: usize,
        _len: usize,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
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
    /// A list of exactly `items`, known before it is made (short lists in the encoder's shape,
    /// for builders with [`Builder::EAGER_LISTS`]). The default fills [`Builder::list_new`].
    fn list_of<I>(&mut self, items: I, offset: usize) -> Result<Self::Value, Self::Error>
    where
        I: ExactSizeIterator<Item = Self::Value>,
    {
        let mut list = self.list_new(items.len(), offset)?;
        for (index, value) in items.enumerate() {
            self.list_put(&mut list, index, value)?;
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

/// A dict key from [`Builder::held_key`].
pub enum Key<V> {
    /// The key itself.
    Value(V),
    /// A key the builder holds, by the builder's own number.
    Held(usize),
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

/// Stack entry flag: the entry is a list (made by `NEWLIST`); the bits below the flags hold its
/// length. Other entries hold their hash depth there.
const LIST_FLAG: u32 = 1 << 31;
/// Stack entry flag: the entry is a dict (made by `NEWDICT`).
const DICT_FLAG: u32 = 1 << 30;
/// Stack entry flag: the entry is an `INT` pushed onto a list, not made yet (its value is the
/// entry's `aux`): almost always the index of the next `SETITEM`, which then needs no int object.
const INT_FLAG: u32 = 1 << 29;
const DEPTH_MASK: u32 = INT_FLAG - 1;
/// `aux` of a list whose slots all hold values.
const FILLED: u32 = u32::MAX;

fn hash_depth(meta: u32) -> u32 {
    if meta & LIST_FLAG == 0 {
        meta & DEPTH_MASK
    } else {
        1
    }
}

/// The length of a list entry.
fn list_len(meta: u32) -> u32 {
    meta & DEPTH_MASK
}

/// A stack entry.
struct Entry<V> {
    /// The value; `None` while it is not built yet (a deferred `INT`, or a list in the pending
    /// lists).
    value: Option<V>,
    /// Flags, and the hash depth or a list's length.
    meta: u32,
    /// A deferred `INT`: its bits. A list: how many slots are set, in order from 0 (the others
    /// are unset, see [`Builder::list_new`]), or [`FILLED`].
    aux: u32,
}

impl<V> Entry<V> {
    fn new(value: V, meta: u32) -> Self {
        Self {
            value: Some(value),
            meta,
            aux: 0,
        }
    }
}

/// A list (`NEWLIST`) made only when it is used: its entries are collected, and the list is
/// built from exactly its items when they came in order (the encoder's way), without
/// allocating for a declared length the input does not fill. Builders without
/// [`Builder::EAGER_LISTS`] get all lists this way, the others only lists declared longer than
/// the rest of the input.
struct Pending<V> {
    /// Index of the placeholder on the stack.
    slot: usize,
    len: usize,
    entries: Entries<V>,
    /// Declared longer than the rest of the input at the time: cannot have been filled.
    unfillable: bool,
    offset: usize,
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

/// The input and the part of it not read yet. Reads split the rest (one length check each).
struct Reader<'a> {
    data: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The position of the next byte in the input.
    #[inline(always)]
    fn offset(&self) -> usize {
        // `rest` is a suffix of `data`.
        self.data.len().wrapping_sub(self.rest.len())
    }

    /// The next byte, not consumed.
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Consumes one byte (the one [`Reader::peek`] saw).
    #[inline(always)]
    fn bump(&mut self) {
        if let Some((_, rest)) = self.rest.split_first() {
            self.rest = rest;
        }
    }

    #[inline(always)]
    fn fixed<const N: usize>(&mut self, offset: usize, opcode: u8) -> Result<[u8; N], DecodeError> {
        match self.rest.split_first_chunk::<N>() {
            Some((bytes, rest)) => {
                self.rest = rest;
                Ok(*bytes)
            }
            None => Err(DecodeError::Truncated {
                offset,
                opcode,
                needed: N,
            }),
        }
    }

    #[inline(always)]
    fn int4(&mut self, offset: usize, opcode: u8) -> Result<i32, DecodeError> {
        self.fixed::<4>(offset, opcode).map(i32::from_be_bytes)
    }

    #[inline(always)]
    fn float(&mut self, offset: usize, opcode: u8) -> Result<f64, DecodeError> {
        self.fixed::<8>(offset, opcode).map(f64::from_be_bytes)
    }

    /// Up to `len` bytes; a negative length means "the rest" (byte-stream `read(-n)`).
    #[inline(always)]
    fn chunk(&mut self, len: i32) -> &'a [u8] {
        let rest = self.rest;
        let take = usize::try_from(len).map_or(rest.len(), |n| n.min(rest.len()));
        let (chunk, rest) = rest.split_at_checked(take).unwrap_or((rest, &[]));
        self.rest = rest;
        chunk
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether the input continues with `BUILDTUPLE n` then `SETITEM`.
    #[inline(always)]
    fn at_tuple_item(&self, n: usize) -> bool {
        match self.rest.first_chunk::<6>() {
            Some(&[op::BUILDTUPLE, a, b, c, d, op::SETITEM]) => {
                usize::try_from(i32::from_be_bytes([a, b, c, d])) == Ok(n)
            }
            _ => false,
        }
    }

    /// Consumes `n` bytes (that the caller has seen).
    #[inline(always)]
    fn skip(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
    }
}

type Stack<V> = Vec<Entry<V>>;

/// `Vec::pop_if` (Rust 1.86) for the crate's minimum Rust version.
#[inline]
fn pop_if<T>(items: &mut Vec<T>, f: impl FnOnce(&T) -> bool) -> Option<T> {
    if items.last().is_some_and(f) {
        items.pop()
    } else {
        None
    }
}

/// Builds a pending list into its stack slot.
fn realize<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    pending: Pending<B::Value>,
) -> Result<(), B::Error> {
    let Pending {
        slot,
        len,
        entries,
        unfillable,
        offset,
    } = pending;
    let value = match entries {
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
    };
    if let Some(entry) = stack.get_mut(slot) {
        entry.value = Some(value);
        entry.aux = FILLED;
    }
    Ok(())
}

/// Builds every pending list at stack index `from` or above. With `stand_in`, they become
/// empty lists: for uses where only their type matters (set elements, which fail for lists
/// anyway).
#[inline]
fn realize_from<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    pendings: &mut Vec<Pending<B::Value>>,
    from: usize,
    stand_in: bool,
) -> Result<(), B::Error> {
    while let Some(p) = pop_if(pendings, |p| p.slot >= from) {
        if stand_in {
            let empty = builder.list(0, 0)?;
            if let Some(entry) = stack.get_mut(p.slot) {
                entry.value = Some(empty);
                entry.aux = FILLED;
            }
        } else {
            realize(builder, stack, p)?;
        }
    }
    Ok(())
}

/// Completes an entry whose value is about to be used: a deferred `INT` is made, a list's unset
/// slots become `None`. Pending lists must have been realized.
#[inline(always)]
fn settle<B: Builder>(builder: &mut B, entry: &mut Entry<B::Value>) -> Result<(), B::Error> {
    if entry.value.is_some() && entry.meta & LIST_FLAG == 0 {
        return Ok(());
    }
    settle_slow(builder, entry)
}

#[inline(never)]
fn settle_slow<B: Builder>(builder: &mut B, entry: &mut Entry<B::Value>) -> Result<(), B::Error> {
    match &mut entry.value {
        None if entry.meta & INT_FLAG != 0 => {
            let value = builder.int(entry.aux as i32)?;
            entry.value = Some(value);
            entry.meta &= !INT_FLAG;
        }
        Some(list) if entry.meta & LIST_FLAG != 0 && entry.aux < list_len(entry.meta) => {
            builder.list_fill(list, entry.aux as usize, list_len(entry.meta) as usize)?;
            entry.aux = FILLED;
        }
        _ => {}
    }
    Ok(())
}

/// The value of an entry leaving the stack (see [`settle`]).
#[inline(always)]
fn finish<B: Builder>(builder: &mut B, mut entry: Entry<B::Value>) -> Result<B::Value, B::Error> {
    if entry.meta & LIST_FLAG == 0 {
        if let Some(value) = entry.value {
            return Ok(value);
        }
    }
    settle_slow(builder, &mut entry)?;
    match entry.value {
        Some(value) => Ok(value),
        // Only a pending list that was not realized: not reached.
        None => builder.none(),
    }
}

/// The values of settled entries.
struct Values<I>(I);

impl<V, I: Iterator<Item = Entry<V>>> Iterator for Values<I> {
    type Item = V;
    fn next(&mut self) -> Option<V> {
        self.0.by_ref().find_map(|e| e.value)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<V, I: ExactSizeIterator<Item = Entry<V>>> ExactSizeIterator for Values<I> {}

/// Scalars that came in a row after a dict key, at most [`RUN`]: the items of a tuple value.
struct Run<V> {
    items: [Option<V>; RUN],
    len: usize,
    next: usize,
}

/// The longest tuple of scalars that a dict value is built from directly (see [`dict_item`]).
const RUN: usize = 4;

impl<V> Iterator for Run<V> {
    type Item = V;
    fn next(&mut self) -> Option<V> {
        let item = self.items.get_mut(self.next)?.take();
        self.next += 1;
        item
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl<V> ExactSizeIterator for Run<V> {}

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

/// `target[index] = value` for an int index into the entry `target`: a list's next slot in
/// order is set in place.
#[inline]
fn put_index<B: Builder>(
    builder: &mut B,
    target: &mut Entry<B::Value>,
    index: i32,
    value: B::Value,
    offset: usize,
) -> Result<(), B::Error> {
    if target.meta & LIST_FLAG != 0 && target.aux != FILLED {
        if let Some(list) = &mut target.value {
            let len = list_len(target.meta) as usize;
            let i = normalize_index(index.into(), len, offset)?;
            if target.aux as usize == i {
                builder.list_put(list, i, value)?;
                target.aux += 1;
                return Ok(());
            }
        }
    }
    settle(builder, target)?;
    match &mut target.value {
        Some(target) => builder.set_index(target, index, value, offset),
        None => Err(DecodeError::SetItemUnderflow { offset }.into()),
    }
}

/// `SETITEM` in the encoder's shapes, without pending lists: a complete value stored into a
/// dict under a hashable key, or into a list's next slot. `false`, with nothing done, for
/// everything else (the general [`set_item`] then runs).
#[inline(always)]
fn set_item_fast<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    offset: usize,
) -> Result<bool, B::Error> {
    let [.., target, key, value] = stack.as_slice() else {
        return Ok(false);
    };
    let value_done =
        value.value.is_some() && (value.meta & LIST_FLAG == 0 || value.aux >= list_len(value.meta));
    if !value_done {
        return Ok(false);
    }
    let into_dict = target.meta & DICT_FLAG != 0
        && key.value.is_some()
        && key.meta & LIST_FLAG == 0
        && key.meta & DEPTH_MASK <= MAX_HASH_DEPTH;
    let into_next_slot = !into_dict
        && key.value.is_none()
        && key.meta & INT_FLAG != 0
        && target.meta & LIST_FLAG != 0
        && target.aux == key.aux
        && target.aux < list_len(target.meta);
    if !(into_dict || into_next_slot) {
        return Ok(false);
    }
    let (Some(value), Some(key)) = (stack.pop(), stack.pop()) else {
        return Ok(false);
    };
    let (Some(value), Some(target)) = (value.value, stack.last_mut()) else {
        return Ok(false);
    };
    let Some(container) = &mut target.value else {
        return Ok(false);
    };
    match key.value {
        Some(key) => builder.set_item(container, key, value, false, offset)?,
        None => {
            builder.list_put(container, target.aux as usize, value)?;
            target.aux += 1;
        }
    }
    Ok(true)
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
    let pending_key = pop_if(pendings, |p| p.slot == top - 1).is_some();
    let value = stack
        .pop()
        .ok_or(DecodeError::SetItemUnderflow { offset })?;
    let value = finish(builder, value)?;
    let key = stack
        .pop()
        .ok_or(DecodeError::SetItemUnderflow { offset })?;
    let target_slot = top - 2;
    if key.value.is_none() && key.meta & INT_FLAG != 0 {
        let index = key.aux as i32;
        if let Some(p) = pendings.last_mut().filter(|p| p.slot == target_slot) {
            p.entries
                .set(normalize_index(index.into(), p.len, offset)?, value);
            return Ok(());
        }
        let target = stack
            .last_mut()
            .ok_or(DecodeError::SetItemUnderflow { offset })?;
        return put_index(builder, target, index, value, offset);
    }
    let key_meta = key.meta;
    // A list as key only ever fails (unhashable, not an index): an empty one stands in.
    let key = if pending_key {
        builder.list(0, offset)?
    } else {
        finish(builder, key)?
    };
    if let Some(p) = pendings.last_mut().filter(|p| p.slot == target_slot) {
        if let Some(index) = builder.list_index(&key, p.len, offset)? {
            p.entries.set(index, value);
            return Ok(());
        }
        realize_from(builder, stack, pendings, target_slot, false)?;
    }
    let target = stack
        .last_mut()
        .ok_or(DecodeError::SetItemUnderflow { offset })?;
    settle(builder, target)?;
    let Some(target) = &mut target.value else {
        return Err(DecodeError::SetItemUnderflow { offset }.into());
    };
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
    let mut r = Reader { data, rest: data };
    if versioned {
        match data.first() {
            Some(&op::DUMPFORMAT_VERSION) => r.bump(),
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
        let offset = r.offset();
        let Some(opcode) = r.peek() else {
            return Err(DecodeError::Eof { offset }.into());
        };
        let mut meta = 1;
        let value = match opcode {
            op::INT | op::LONG if stack.last().is_some_and(|e| e.meta & LIST_FLAG != 0) => {
                r.bump();
                let v = r.int4(offset, opcode)?;
                list_item(builder, &mut stack, &mut r, v)?;
                continue;
            }
            op::PY2STRING | op::PY3STRING | op::UNICODE
                if stack.last().is_some_and(|e| e.meta & DICT_FLAG != 0) =>
            {
                r.bump();
                let n = r.int4(offset, opcode)?;
                let chunk = r.chunk(n);
                let key = builder.held_key(chunk, offset, opcode)?;
                dict_item(builder, &mut stack, &mut r, key)?;
                continue;
            }
            op::CHANNEL => {
                r.bump();
                let id = r.int4(offset, opcode)?;
                builder.channel(id, offset)?
            }
            op::NEWDICT => {
                r.bump();
                meta |= DICT_FLAG;
                builder.dict()?
            }
            op::NEWLIST => {
                r.bump();
                let n = r.int4(offset, opcode)?;
                let len = usize::try_from(n).unwrap_or(0);
                let unfillable = len > r.remaining();
                let eager_len = u32::try_from(len).ok().filter(|&n| n <= DEPTH_MASK);
                if B::EAGER_LISTS && len <= RUN && !unfillable {
                    small_list(builder, &mut stack, &mut r, len, offset)?;
                } else if let Some(eager_len) = eager_len.filter(|_| B::EAGER_LISTS && !unfillable)
                {
                    // Filled lists take at least one byte per item: the allocation is bounded
                    // by the input.
                    stack.push(Entry {
                        value: Some(builder.list_new(len, offset)?),
                        meta: LIST_FLAG | eager_len,
                        aux: 0,
                    });
                } else {
                    let capacity = if unfillable { 0 } else { len };
                    pendings.push(Pending {
                        slot: stack.len(),
                        len,
                        entries: Entries::Dense(Vec::with_capacity(capacity)),
                        unfillable,
                        offset,
                    });
                    stack.push(Entry {
                        value: None,
                        meta: LIST_FLAG,
                        aux: FILLED,
                    });
                }
                continue;
            }
            op::BUILDTUPLE | op::SET | op::FROZENSET => {
                r.bump();
                let n = r.int4(offset, opcode)?;
                let start = collection_start(stack.len(), n);
                let tuple = opcode == op::BUILDTUPLE;
                if !pendings.is_empty() {
                    realize_from(builder, &mut stack, &mut pendings, start, !tuple)?;
                }
                let mut deepest = None;
                for entry in stack.get_mut(start..).unwrap_or_default() {
                    settle(builder, entry)?;
                    deepest = deepest.max(Some(hash_depth(entry.meta)));
                }
                let items = Values(stack.drain(start..));
                if tuple {
                    meta = deepest.unwrap_or(0).saturating_add(1).min(DEPTH_MASK);
                    builder.tuple(items)?
                } else if deepest.is_some_and(|d| d > MAX_HASH_DEPTH) {
                    return Err(DecodeError::TooDeep { offset }.into());
                } else {
                    builder.set(items, opcode == op::FROZENSET, offset)?
                }
            }
            op::SETITEM => {
                r.bump();
                if !(pendings.is_empty() && set_item_fast(builder, &mut stack, offset)?) {
                    set_item(builder, &mut stack, &mut pendings, offset)?;
                }
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
                    Some(entry) => finish(builder, entry),
                    None => Err(DecodeError::StackNotOne { offset, depth: 0 }.into()),
                };
            }
            _ => match scalar(builder, &mut r)? {
                Some(value) => value,
                None => return Err(DecodeError::UnknownOpcode { offset, opcode }.into()),
            },
        };
        stack.push(Entry::new(value, meta));
    }
}

/// Runs the opcode at the reader's position if it makes a scalar (not a container, not a
/// channel) and returns that; `None`, with nothing read, for other opcodes and at the end.
#[inline(always)]
fn scalar<B: Builder>(builder: &mut B, r: &mut Reader<'_>) -> Result<Option<B::Value>, B::Error> {
    let offset = r.offset();
    let Some(opcode) = r.peek() else {
        return Ok(None);
    };
    let value = match opcode {
        op::NONE => {
            r.bump();
            builder.none()?
        }
        op::TRUE | op::FALSE => {
            r.bump();
            builder.boolean(opcode == op::TRUE)?
        }
        op::INT | op::LONG => {
            r.bump();
            let v = r.int4(offset, opcode)?;
            builder.int(v)?
        }
        op::FLOAT => {
            r.bump();
            let v = r.float(offset, opcode)?;
            builder.float(v)?
        }
        op::PY2STRING | op::PY3STRING | op::UNICODE => {
            r.bump();
            let n = r.int4(offset, opcode)?;
            let chunk = r.chunk(n);
            builder.string(chunk, offset, opcode)?
        }
        op::COMPLEX => {
            r.bump();
            let both = r.fixed::<16>(offset, opcode)?;
            let (re, im) = both.split_at(8);
            let re = <[u8; 8]>::try_from(re).map_or(0.0, f64::from_be_bytes);
            let im = <[u8; 8]>::try_from(im).map_or(0.0, f64::from_be_bytes);
            builder.complex(re, im)?
        }
        op::LONGINT | op::LONGLONG => {
            r.bump();
            let n = r.int4(offset, opcode)?;
            let literal = r.chunk(n);
            builder.long(literal, offset, opcode)?
        }
        op::BYTES => {
            r.bump();
            let n = r.int4(offset, opcode)?;
            let chunk = r.chunk(n);
            builder.bytes(chunk)?
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

/// `INT v` pushed onto a list. The encoder's list items, "INT index, a scalar, SETITEM" for the
/// next slot, are set in place, as many as come in a row; otherwise the int waits on the
/// stack, deferred.
#[inline(always)]
fn list_item<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    r: &mut Reader<'_>,
    mut v: i32,
) -> Result<(), B::Error> {
    let pending = 'items: {
        let Some(Entry {
            value: Some(list),
            meta,
            aux,
        }) = stack.last_mut()
        else {
            break 'items ListPending::Nothing;
        };
        let len = list_len(*meta);
        loop {
            if *aux >= len || *aux != v as u32 {
                break 'items ListPending::Nothing;
            }
            let value = match scalar(builder, r)? {
                Some(value) if r.peek() == Some(op::SETITEM) => value,
                Some(value) => break 'items ListPending::Value(value),
                // A dict item: its items are stored as they come, as in [`dict_item`].
                None if r.peek() == Some(op::NEWDICT) => {
                    r.bump();
                    let mut dict = builder.dict()?;
                    if let Some(first) = next_key(builder, r)? {
                        if let Some(stopped) = dict_items(builder, r, &mut dict, first)? {
                            break 'items ListPending::Dict(dict, Some(stopped));
                        }
                    }
                    if r.peek() != Some(op::SETITEM) {
                        break 'items ListPending::Dict(dict, None);
                    }
                    dict
                }
                None => break 'items ListPending::Nothing,
            };
            r.bump();
            builder.list_put(list, *aux as usize, value)?;
            *aux += 1;
            // The next item?
            let offset = r.offset();
            match r.peek() {
                Some(opcode @ (op::INT | op::LONG)) => {
                    r.bump();
                    v = r.int4(offset, opcode)?;
                }
                _ => return Ok(()),
            }
        }
    };
    stack.push(Entry {
        value: None,
        meta: INT_FLAG | 1,
        aux: v as u32,
    });
    match pending {
        ListPending::Nothing => Ok(()),
        ListPending::Value(value) => {
            stack.push(Entry::new(value, 1));
            Ok(())
        }
        ListPending::Dict(dict, stopped) => {
            stack.push(Entry::new(dict, DICT_FLAG | 1));
            match stopped {
                Some(stopped) => push_stopped(builder, stack, stopped),
                None => Ok(()),
            }
        }
    }
}

/// What [`list_item`] read of an item it does not store itself, after the index.
enum ListPending<V> {
    /// Nothing.
    Nothing,
    /// A scalar, not followed by `SETITEM`.
    Value(V),
    /// A dict read in part, and where its items stopped (see [`dict_items`]).
    Dict(V, Option<Stopped<V>>),
}

/// The items of a list of at most [`RUN`] slots read ahead (see [`small_list`]), and where
/// their shape ended: an index read and maybe its value.
struct ListRun<V> {
    items: Run<V>,
    rest: Option<(i32, Option<V>)>,
}

/// Reads the items of a list of `len` (at most [`RUN`]) slots in the encoder's shape ("INT i,
/// a scalar, SETITEM" for i = 0, 1, ...), up to where the input has another shape.
#[inline(always)]
fn read_list_run<B: Builder>(
    builder: &mut B,
    r: &mut Reader<'_>,
    len: usize,
) -> Result<ListRun<B::Value>, B::Error> {
    let mut items = Run {
        items: [None, None, None, None],
        len: 0,
        next: 0,
    };
    while items.len < len {
        let Some(&[op::INT | op::LONG, a, b, c, d]) = r.rest.first_chunk::<5>() else {
            break;
        };
        let index = i32::from_be_bytes([a, b, c, d]);
        if usize::try_from(index) != Ok(items.len) {
            break;
        }
        r.skip(5);
        let Some(value) = scalar(builder, r)? else {
            return Ok(ListRun {
                items,
                rest: Some((index, None)),
            });
        };
        if r.peek() != Some(op::SETITEM) {
            return Ok(ListRun {
                items,
                rest: Some((index, Some(value))),
            });
        }
        r.bump();
        if let Some(slot) = items.items.get_mut(items.len) {
            *slot = Some(value);
        }
        items.len += 1;
    }
    Ok(ListRun { items, rest: None })
}

/// Pushes a list of `len` (at most [`RUN`]) slots read by [`read_list_run`], as the eager path
/// leaves it: the list with the items read set, then what was read of the next item.
#[inline(always)]
fn push_list_run<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    run: ListRun<B::Value>,
    len: usize,
    offset: usize,
) -> Result<(), B::Error> {
    // At most RUN: fits the length bits.
    let meta = LIST_FLAG | (len as u32);
    let ListRun { items, rest } = run;
    let set = items.len as u32;
    let list = if items.len == len {
        builder.list_of(items, offset)?
    } else {
        let mut list = builder.list_new(len, offset)?;
        for (index, value) in items.enumerate() {
            builder.list_put(&mut list, index, value)?;
        }
        list
    };
    stack.push(Entry {
        value: Some(list),
        meta,
        aux: set,
    });
    if let Some((index, value)) = rest {
        stack.push(Entry {
            value: None,
            meta: INT_FLAG | 1,
            aux: index as u32,
        });
        if let Some(value) = value {
            stack.push(Entry::new(value, 1));
        }
    }
    Ok(())
}

/// `NEWLIST n` (read) for a list of at most [`RUN`] slots: its items in the encoder's shape are
/// read first and the list is made of them at once.
#[inline(always)]
fn small_list<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    r: &mut Reader<'_>,
    len: usize,
    offset: usize,
) -> Result<(), B::Error> {
    let run = read_list_run(builder, r, len)?;
    push_list_run(builder, stack, run, len, offset)
}

/// A key pushed onto a dict. The encoder's dict items ("key, value, SETITEM") are stored right
/// away, as many as come in a row with text keys, for values that are scalars, tuples of
/// scalars, short lists and dicts of such items (see [`dict_items`]); otherwise the key, and
/// what was read of its value, wait on the stack.
#[inline(always)]
fn dict_item<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    r: &mut Reader<'_>,
    key: Key<B::Value>,
) -> Result<(), B::Error> {
    let stopped = match stack.last_mut() {
        Some(Entry {
            value: Some(dict), ..
        }) => dict_items(builder, r, dict, key)?,
        _ => Some(Stopped::Value(key, None)),
    };
    match stopped {
        Some(stopped) => push_stopped(builder, stack, stopped),
        None => Ok(()),
    }
}

/// What [`item_value`] read of a value that it does not make itself, for the stack.
enum Unfinished<V> {
    /// Scalars in a row.
    Scalars(Run<V>),
    /// A short list (its length and offset) and what was read of its items.
    List(ListRun<V>, usize, usize),
}

/// A dict value read by [`item_value`].
enum Item<V> {
    /// Complete, with `SETITEM` next (not consumed).
    Ready(V),
    /// Read in part.
    Partial(Unfinished<V>),
    /// Nothing read: not a scalar, a tuple of scalars or a short list.
    Other,
}

/// A key, and what was read of its value.
type Stop<V> = (Key<V>, Option<Unfinished<V>>);

/// Where [`dict_items`] stopped, for the stack.
enum Stopped<V> {
    /// At a key, with what was read of its value.
    Value(Key<V>, Option<Unfinished<V>>),
    /// At a key whose value is a dict read in part: the key, the dict, and where the dict's
    /// own items stopped (`None`: they ended but no `SETITEM` followed).
    Nested(V, V, Option<Stop<V>>),
}

/// Reads a dict value that is a scalar, a tuple of scalars ("scalars, BUILDTUPLE n, SETITEM")
/// or a short list ("NEWLIST n, its items, SETITEM"), up to the `SETITEM`.
#[inline(always)]
fn item_value<B: Builder>(builder: &mut B, r: &mut Reader<'_>) -> Result<Item<B::Value>, B::Error> {
    if let Some(first) = scalar(builder, r)? {
        if r.peek() == Some(op::SETITEM) {
            return Ok(Item::Ready(first));
        }
        let mut run = Run {
            items: [Some(first), None, None, None],
            len: 1,
            next: 0,
        };
        while run.len < RUN && !r.at_tuple_item(run.len) {
            let Some(item) = scalar(builder, r)? else {
                break;
            };
            if let Some(slot) = run.items.get_mut(run.len) {
                *slot = Some(item);
            }
            run.len += 1;
        }
        if !r.at_tuple_item(run.len) {
            return Ok(Item::Partial(Unfinished::Scalars(run)));
        }
        r.skip(5);
        return Ok(Item::Ready(builder.tuple(run)?));
    }
    if B::EAGER_LISTS {
        if let Some(&[op::NEWLIST, a, b, c, d]) = r.rest.first_chunk::<5>() {
            let len = usize::try_from(i32::from_be_bytes([a, b, c, d])).unwrap_or(RUN + 1);
            if len <= RUN && len <= r.remaining() - 5 {
                let offset = r.offset();
                r.skip(5);
                let run = read_list_run(builder, r, len)?;
                if run.items.len != len || run.rest.is_some() || r.peek() != Some(op::SETITEM) {
                    return Ok(Item::Partial(Unfinished::List(run, len, offset)));
                }
                return Ok(Item::Ready(builder.list_of(run.items, offset)?));
            }
        }
    }
    Ok(Item::Other)
}

/// Stores the items of `dict` that come in a row from `key` on, with values [`item_value`]
/// reads. `None` when no further key follows, else where it stopped.
#[inline(always)]
fn flat_items<B: Builder>(
    builder: &mut B,
    r: &mut Reader<'_>,
    dict: &mut B::Value,
    mut key: Key<B::Value>,
) -> Result<Option<Stop<B::Value>>, B::Error> {
    loop {
        let value = match item_value(builder, r)? {
            Item::Ready(value) => value,
            Item::Partial(unfinished) => return Ok(Some((key, Some(unfinished)))),
            Item::Other => return Ok(Some((key, None))),
        };
        let offset = r.offset();
        r.bump();
        builder.dict_put(dict, key, value, offset)?;
        match next_key(builder, r)? {
            Some(next) => key = next,
            None => return Ok(None),
        }
    }
}

/// [`flat_items`], with dict values whose own items [`flat_items`] stores (one level).
#[inline(always)]
fn dict_items<B: Builder>(
    builder: &mut B,
    r: &mut Reader<'_>,
    dict: &mut B::Value,
    mut key: Key<B::Value>,
) -> Result<Option<Stopped<B::Value>>, B::Error> {
    loop {
        let value = match item_value(builder, r)? {
            Item::Ready(value) => value,
            Item::Partial(unfinished) => return Ok(Some(Stopped::Value(key, Some(unfinished)))),
            Item::Other if r.peek() == Some(op::NEWDICT) => {
                r.bump();
                // The inner keys may replace a held key: this one is made now.
                let outer = builder.key_value(key)?;
                let mut inner = builder.dict()?;
                if let Some(first) = next_key(builder, r)? {
                    if let Some(stop) = flat_items(builder, r, &mut inner, first)? {
                        return Ok(Some(Stopped::Nested(outer, inner, Some(stop))));
                    }
                }
                if r.peek() != Some(op::SETITEM) {
                    return Ok(Some(Stopped::Nested(outer, inner, None)));
                }
                key = Key::Value(outer);
                inner
            }
            Item::Other => return Ok(Some(Stopped::Value(key, None))),
        };
        let offset = r.offset();
        r.bump();
        builder.dict_put(dict, key, value, offset)?;
        match next_key(builder, r)? {
            Some(next) => key = next,
            None => return Ok(None),
        }
    }
}

/// Pushes a key and what was read of its value.
fn push_key_value<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    key: Key<B::Value>,
    value: Option<Unfinished<B::Value>>,
) -> Result<(), B::Error> {
    stack.push(Entry::new(builder.key_value(key)?, 1));
    match value {
        Some(Unfinished::Scalars(run)) => {
            for value in run {
                stack.push(Entry::new(value, 1));
            }
            Ok(())
        }
        Some(Unfinished::List(run, len, offset)) => push_list_run(builder, stack, run, len, offset),
        None => Ok(()),
    }
}

/// Pushes where [`dict_items`] stopped, as the general machine would have left the stack.
fn push_stopped<B: Builder>(
    builder: &mut B,
    stack: &mut Stack<B::Value>,
    stopped: Stopped<B::Value>,
) -> Result<(), B::Error> {
    match stopped {
        Stopped::Value(key, value) => push_key_value(builder, stack, key, value),
        Stopped::Nested(key, dict, stop) => {
            stack.push(Entry::new(key, 1));
            stack.push(Entry::new(dict, DICT_FLAG | 1));
            match stop {
                Some((key, value)) => push_key_value(builder, stack, key, value),
                None => Ok(()),
            }
        }
    }
}

/// The next dict key, if text comes next.
#[inline(always)]
fn next_key<B: Builder>(
    builder: &mut B,
    r: &mut Reader<'_>,
) -> Result<Option<Key<B::Value>>, B::Error> {
    let offset = r.offset();
    match r.peek() {
        Some(opcode @ (op::PY2STRING | op::PY3STRING | op::UNICODE)) => {
            r.bump();
            let n = r.int4(offset, opcode)?;
            let chunk = r.chunk(n);
            Ok(Some(builder.held_key(chunk, offset, opcode)?))
        }
        _ => Ok(None),
    }
}
