//! The serializer for Python objects: the encoder walks objects by exact type, the decoder is the
//! engine's stack machine with a [`Builder`] that makes Python objects.

use pyo3::exceptions::{
    PyAssertionError, PyEOFError, PyIndexError, PyMemoryError, PyRecursionError, PyRuntimeError,
    PyTypeError, PyUnicodeDecodeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};

use crate::codec::{self, opcodes as op, writer, Builder, DecodeError, Key, MAX_ENCODE_DEPTH};

static DUMP_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static LOAD_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static STRUCT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static STRUCT_PACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `execnet.gateway_base.<name>(message)`, or the import failure.
fn gateway_error(
    py: Python<'_>,
    cell: &PyOnceLock<Py<PyType>>,
    name: &str,
    message: String,
) -> PyErr {
    match cell.import(py, "execnet.gateway_base", name) {
        Ok(ty) => PyErr::from_type(ty.clone(), message),
        Err(err) => err,
    }
}

fn dump_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    gateway_error(py, &DUMP_ERROR, "DumpError", message.into())
}

fn load_error(py: Python<'_>, message: String) -> PyErr {
    gateway_error(py, &LOAD_ERROR, "LoadError", message)
}

fn struct_error(py: Python<'_>, message: String) -> PyErr {
    match STRUCT_ERROR.import(py, "struct", "error") {
        Ok(ty) => PyErr::from_type(ty.clone(), message),
        Err(err) => err,
    }
}

/// The one conversion of engine errors into the exceptions execnet raises.
impl From<DecodeError> for PyErr {
    fn from(err: DecodeError) -> Self {
        let message = err.message();
        match err {
            DecodeError::WrongVersion { .. }
            | DecodeError::UnknownOpcode { .. }
            | DecodeError::StackNotOne { .. }
            | DecodeError::SetItemUnderflow { .. } => Python::attach(|py| load_error(py, message)),
            DecodeError::Eof { .. } => PyEOFError::new_err(()),
            DecodeError::Truncated { .. } => Python::attach(|py| struct_error(py, message)),
            DecodeError::InvalidUtf8 { start, end, .. } => {
                PyUnicodeDecodeError::new_err(("utf-8", &b""[..], start, end, message))
            }
            DecodeError::InvalidInt { .. } => PyValueError::new_err(message),
            DecodeError::IndexOutOfRange { .. } | DecodeError::IndexTooLarge { .. } => {
                PyIndexError::new_err(message)
            }
            DecodeError::NotAssignable { .. }
            | DecodeError::BadListIndex { .. }
            | DecodeError::Unhashable { .. } => PyTypeError::new_err(message),
            DecodeError::NoChannelFactory { .. } => PyAssertionError::new_err(()),
            DecodeError::TooDeep { .. } => PyRecursionError::new_err(message),
            DecodeError::OutOfMemory { .. } => PyMemoryError::new_err(()),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Encoder

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
    /// Counts calls into user code (attribute lookups on `Channel` objects), after which
    /// containers being walked may have changed.
    user_code: u64,
}

fn too_long(py: Python<'_>, what: &str) -> PyErr {
    dump_error(py, format!("{what} is too long"))
}

impl Encoder<'_> {
    fn save(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        if let Ok(s) = obj.cast_exact::<PyString>() {
            let text = s
                .to_str()
                .map_err(|_| dump_error(py, "strings must be utf-8 encodable"))?;
            return writer::put_data(self.out, op::PY3STRING, text.as_bytes())
                .map_err(|_| too_long(py, "string"));
        }
        if let Ok(i) = obj.cast_exact::<PyInt>() {
            return self.save_int(i);
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            writer::put_float(self.out, f.value());
            return Ok(());
        }
        if obj.is_none() {
            self.out.push(op::NONE);
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            self.out
                .push(if b.is_true() { op::TRUE } else { op::FALSE });
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            return writer::put_data(self.out, op::BYTES, b.as_bytes())
                .map_err(|_| too_long(py, "string"));
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            return self.nested(|enc| enc.save_dict(d));
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            return self.nested(|enc| enc.save_list(l));
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            return self.nested(|enc| {
                for item in t.iter_borrowed() {
                    enc.save(&item)?;
                }
                writer::put_count(enc.out, op::BUILDTUPLE, t.len())
                    .map_err(|_| too_long(py, "tuple"))
            });
        }
        if obj.is_exact_instance_of::<PySet>() || obj.is_exact_instance_of::<PyFrozenSet>() {
            let opcode = if obj.is_exact_instance_of::<PySet>() {
                op::SET
            } else {
                op::FROZENSET
            };
            return self.nested(|enc| {
                for item in obj.try_iter()? {
                    enc.save(&item?)?;
                }
                writer::put_count(enc.out, opcode, obj.len()?).map_err(|_| too_long(py, "set"))
            });
        }
        if let Ok(c) = obj.cast_exact::<PyComplex>() {
            writer::put_complex(self.out, c.real(), c.imag());
            return Ok(());
        }
        let ty = obj.get_type();
        if ty.name()?.to_str()? == "Channel" {
            return self.save_channel(obj);
        }
        Err(dump_error(py, format!("can't serialize {}", ty.repr()?)))
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> PyResult<()>) -> PyResult<()> {
        if self.depth >= MAX_ENCODE_DEPTH {
            return Err(PyRecursionError::new_err(
                "maximum recursion depth exceeded while serializing an object",
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn save_int(&mut self, i: &Bound<'_, PyInt>) -> PyResult<()> {
        if let Ok(v) = i.extract::<i64>() {
            writer::put_int(self.out, v);
            return Ok(());
        }
        // Beyond i64 (both signs): LONGINT with Python's decimal text.
        let text = i.str()?;
        writer::put_data(self.out, op::LONGINT, text.to_str()?.as_bytes())
            .map_err(|_| too_long(i.py(), "string"))
    }

    fn save_list(&mut self, list: &Bound<'_, PyList>) -> PyResult<()> {
        let py = list.py();
        writer::put_count(self.out, op::NEWLIST, list.len()).map_err(|_| too_long(py, "list"))?;
        // Walk by index against the current length: user code may resize the list meanwhile.
        let mut index = 0;
        while index < list.len() {
            let item = list.get_item(index)?;
            let i = i32::try_from(index).map_err(|_| too_long(py, "list"))?;
            writer::put_int4(self.out, op::INT, i);
            self.save(&item)?;
            self.out.push(op::SETITEM);
            index += 1;
        }
        Ok(())
    }

    fn save_dict(&mut self, dict: &Bound<'_, PyDict>) -> PyResult<()> {
        self.out.push(op::NEWDICT);
        let len = dict.len();
        let before = self.user_code;
        let mut entries = dict.iter();
        for _ in 0..len {
            if self.user_code != before && dict.len() != len {
                return Err(PyRuntimeError::new_err(
                    "dictionary changed size during iteration",
                ));
            }
            let Some((key, value)) = entries.next() else {
                break;
            };
            self.save(&key)?;
            self.save(&value)?;
            self.out.push(op::SETITEM);
        }
        Ok(())
    }

    /// Any object whose exact type is named `Channel` travels as a channel id.
    fn save_channel(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        self.user_code += 1;
        let id = obj.getattr("id")?;
        if let Ok(Ok(small)) = id.cast_exact::<PyInt>().map(|i| i.extract::<i32>()) {
            writer::put_int4(self.out, op::CHANNEL, small);
            return Ok(());
        }
        // Unusual ids get execnet's checks and `struct.pack("!i", id)`'s own errors.
        if id.gt(i32::MAX)? {
            return Err(dump_error(py, "int must be less than 2147483647"));
        }
        let pack = STRUCT_PACK.import(py, "struct", "pack")?;
        let packed = pack.call1(("!i", id))?;
        self.out.push(op::CHANNEL);
        self.out
            .extend_from_slice(packed.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }
}

/// Appends the internal form of `obj` (ending in `STOP`) to `out`.
///
/// # Errors
/// `DumpError` for what execnet cannot serialize, `RecursionError` for excessive nesting, and
/// errors raised by user code (a `Channel`'s `id`).
pub fn encode_internal_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let start = out.len();
    let mut encoder = Encoder {
        out,
        depth: 0,
        user_code: 0,
    };
    let result = encoder.save(obj);
    if result.is_err() {
        out.truncate(start);
    }
    result?;
    out.push(op::STOP);
    Ok(())
}

/// The internal form of `obj` (no version byte, ending in `STOP`).
///
/// # Errors
/// As [`encode_internal_into`].
pub fn encode_internal(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    encode_internal_into(obj, &mut out)?;
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Decoder

struct PyBuilder<'a, 'py> {
    py: Python<'py>,
    py2str_as_py3str: bool,
    py3str_as_py2str: bool,
    channelfactory: Option<&'a Bound<'py, PyAny>>,
    strings: Option<StringCache<'py>>,
    /// Whether the input is long enough for a [`StringCache`] to pay off.
    share_keys: bool,
    /// Whether text dict keys (`PY3STRING`) go through the [`StringCache`]: `share_keys`, and
    /// they decode to text.
    cache_keys: bool,
}

/// Text values (not keys) this long at most are shared too: short repeated words.
const SHARED_VALUE_LEN: usize = 8;

/// Inputs at least this long share repeated dict keys.
const SHARE_KEYS_INPUT_LEN: usize = 1024;

/// Short strings this long at most are shared through the [`StringCache`].
const CACHED_STRING_LEN: usize = 24;

/// A direct-mapped cache of short decoded strings: repeated dict keys become one object whose
/// hash Python computes once (as pickle's memo achieves). Strings of up to 8 bytes (most keys)
/// have a compact table of their own, which stays in the CPU cache while objects stream by.
struct StringCache<'py> {
    short: Vec<ShortSlot<'py>>,
    long: Vec<LongSlot<'py>>,
    /// The keys of recent dicts in the order they came, and where the next one is expected:
    /// dicts of one shape repeat their keys in order, which this finds without hashing.
    trail: Vec<TrailSlot<'py>>,
    next: usize,
}

/// Keys the [`StringCache`] trail holds at most.
const TRAIL_LEN: usize = 32;

/// A string of at most 8 bytes: its bytes as one word (see [`words`]), its length, the string.
type ShortSlot<'py> = Option<(u64, u32, Bound<'py, PyString>)>;

/// A string of 9 to 24 bytes: its bytes as three words, its length, the string.
type LongSlot<'py> = Option<TrailSlot<'py>>;

/// A key in the [`StringCache`] trail: its bytes as three words, its length, the string.
type TrailSlot<'py> = ([u64; 3], u32, Bound<'py, PyString>);

const SHORT_BITS: u32 = 8;
const LONG_BITS: u32 = 7;

/// Whether two [`words`] results are equal, compared in registers (an array comparison loads
/// the freshly stored words back as one vector, which stalls).
#[inline(always)]
fn same(a: &[u64; 3], b: &[u64; 3]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2])) == 0
}

/// The first and the last `N` bytes of `bytes` (at least `N` long) as little-endian words.
#[inline(always)]
fn ends<const N: usize>(bytes: &[u8]) -> (u64, u64) {
    let word = |chunk: Option<&[u8; N]>| {
        chunk.map_or(0, |c| {
            let mut w = [0u8; 8];
            if let Some(head) = w.get_mut(..N) {
                head.copy_from_slice(c);
            }
            u64::from_le_bytes(w)
        })
    };
    (
        word(bytes.first_chunk::<N>()),
        word(bytes.last_chunk::<N>()),
    )
}

/// The bytes of a string of at most 24 bytes as three words, by overlapping loads: together
/// with the length they determine the bytes.
#[inline(always)]
fn words(bytes: &[u8]) -> [u64; 3] {
    let len = bytes.len();
    match len {
        0 => [0; 3],
        1..=3 => {
            let byte = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(0));
            [byte(0) | byte(len / 2) << 8 | byte(len - 1) << 16, 0, 0]
        }
        4..=8 => {
            let (first, last) = ends::<4>(bytes);
            [first | last << 32, 0, 0]
        }
        9..=16 => {
            let (first, last) = ends::<8>(bytes);
            [first, last, 0]
        }
        _ => {
            let (first, last) = ends::<8>(bytes);
            let middle = bytes
                .get(8..)
                .and_then(<[u8]>::first_chunk::<8>)
                .map_or(0, |c| u64::from_le_bytes(*c));
            [first, middle, last]
        }
    }
}

impl<'py> StringCache<'py> {
    fn new() -> Self {
        Self {
            short: std::iter::repeat_with(|| None)
                .take(1 << SHORT_BITS)
                .collect(),
            long: std::iter::repeat_with(|| None)
                .take(1 << LONG_BITS)
                .collect(),
            trail: Vec::with_capacity(TRAIL_LEN),
            next: 0,
        }
    }

    /// [`StringCache::get`] for a dict key, kept in the trail: its index there (valid until the
    /// next call). The key expected next in the trail is tried first.
    #[inline(always)]
    fn key(&mut self, py: Python<'py>, bytes: &[u8]) -> PyResult<usize> {
        let key = words(bytes);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let matches =
            |(cached, cached_len, _): &TrailSlot<'py>| same(cached, &key) && *cached_len == len;
        if self.next >= self.trail.len() {
            self.next = 0;
        }
        let expected = self.next;
        if self.trail.get(expected).is_some_and(matches) {
            self.next += 1;
            return Ok(expected);
        }
        if let Some(found) = self.trail.iter().position(matches) {
            self.next = found + 1;
            return Ok(found);
        }
        let obj = self.get(py, bytes)?;
        if self.trail.len() >= TRAIL_LEN {
            self.trail.clear();
        }
        self.trail.push((key, len, obj));
        self.next = self.trail.len();
        Ok(self.trail.len() - 1)
    }

    /// The key at `index` of the trail (see [`StringCache::key`]).
    #[inline(always)]
    fn held(&self, index: usize) -> Option<&Bound<'py, PyString>> {
        self.trail.get(index).map(|(_, _, obj)| obj)
    }

    /// The string for `bytes` (UTF-8, at most [`CACHED_STRING_LEN`] long), shared with earlier
    /// equal ones.
    #[inline]
    fn get(&mut self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
        let key = words(bytes);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let mixed = (key[0] ^ key[1].rotate_left(29) ^ key[2].rotate_left(47) ^ u64::from(len))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Slot indices are the top bits of the multiplicative hash.
        if bytes.len() <= 8 {
            let index = usize::try_from(mixed >> (64 - SHORT_BITS)).unwrap_or(0);
            let Some(slot) = self.short.get_mut(index) else {
                return PyString::from_bytes(py, bytes);
            };
            if let Some((word, cached_len, obj)) = slot {
                if *word == key[0] && *cached_len == len {
                    return Ok(obj.clone());
                }
            }
            let obj = PyString::from_bytes(py, bytes)?;
            *slot = Some((key[0], len, obj.clone()));
            return Ok(obj);
        }
        let index = usize::try_from(mixed >> (64 - LONG_BITS)).unwrap_or(0);
        let Some(slot) = self.long.get_mut(index) else {
            return PyString::from_bytes(py, bytes);
        };
        if let Some((cached, cached_len, obj)) = slot {
            if same(cached, &key) && *cached_len == len {
                return Ok(obj.clone());
            }
        }
        let obj = PyString::from_bytes(py, bytes)?;
        *slot = Some((key, len, obj.clone()));
        Ok(obj)
    }
}

/// A [`Key::Held`] whose key the cache no longer has: not reached ([`Builder::held_key`]'s
/// keys stay until its next call).
#[cold]
fn held_key_lost() -> PyErr {
    PyRuntimeError::new_err("dict key lost while decoding")
}

/// Lists at least this long are made as `[None] * n` (filled in one go; it reports allocation
/// failure).
const LARGE_LIST: usize = 16;

/// A list index from `key` as `list[key] = value` takes it. `None` for objects of other types
/// (channels), for which Python itself decides.
fn index_of(key: &Bound<'_, PyAny>, len: usize, offset: usize) -> PyResult<Option<usize>> {
    if !(key.is_exact_instance_of::<PyInt>() || key.is_exact_instance_of::<PyBool>()) {
        let decoded_type = key.is_none()
            || key.is_exact_instance_of::<PyFloat>()
            || key.is_exact_instance_of::<PyString>()
            || key.is_exact_instance_of::<PyBytes>()
            || key.is_exact_instance_of::<PyComplex>()
            || key.is_exact_instance_of::<PyTuple>()
            || key.is_exact_instance_of::<PyList>()
            || key.is_exact_instance_of::<PyDict>()
            || key.is_exact_instance_of::<PySet>()
            || key.is_exact_instance_of::<PyFrozenSet>();
        if decoded_type {
            let name = key.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "list indices must be integers or slices, not {name}"
            )));
        }
        return Ok(None);
    }
    let index: i64 = key
        .extract()
        .map_err(|_| PyErr::from(DecodeError::IndexTooLarge { offset }))?;
    Ok(Some(codec::normalize_index(index, len, offset)?))
}

impl<'py> Builder for PyBuilder<'_, 'py> {
    type Value = Bound<'py, PyAny>;
    type Error = PyErr;

    #[inline(always)]
    fn none(&mut self) -> PyResult<Self::Value> {
        Ok(self.py.None().into_bound(self.py))
    }
    #[inline(always)]
    fn boolean(&mut self, value: bool) -> PyResult<Self::Value> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }
    #[inline(always)]
    fn int(&mut self, value: i32) -> PyResult<Self::Value> {
        Ok(value.into_pyobject(self.py)?.into_any())
    }
    fn long(&mut self, literal: &[u8], _: usize, _: u8) -> PyResult<Self::Value> {
        if literal.len() <= 18 {
            if let Some(v) = codec::intlit::parse(literal).and_then(|l| l.to_i64()) {
                return Ok(v.into_pyobject(self.py)?.into_any());
            }
        }
        // Python's own int() for its exact errors and digit limit.
        self.py
            .get_type::<PyInt>()
            .call1((new_bytes(self.py, literal)?,))
    }
    #[inline(always)]
    fn float(&mut self, value: f64) -> PyResult<Self::Value> {
        Ok(PyFloat::new(self.py, value).into_any())
    }
    fn complex(&mut self, real: f64, imag: f64) -> PyResult<Self::Value> {
        Ok(PyComplex::from_doubles(self.py, real, imag).into_any())
    }
    fn bytes(&mut self, data: &[u8]) -> PyResult<Self::Value> {
        Ok(new_bytes(self.py, data)?.into_any())
    }
    #[inline(always)]
    fn string(&mut self, data: &[u8], _: usize, opcode: u8) -> PyResult<Self::Value> {
        let py = self.py;
        match opcode {
            op::PY2STRING if self.py2str_as_py3str => {
                let text: String = data.iter().map(|&b| char::from(b)).collect();
                Ok(PyString::from_bytes(py, text.as_bytes())?.into_any())
            }
            op::PY2STRING => Ok(new_bytes(py, data)?.into_any()),
            op::PY3STRING if self.py3str_as_py2str => Ok(new_bytes(py, data)?.into_any()),
            _ if self.share_keys && data.len() <= SHARED_VALUE_LEN => match self.strings.as_mut() {
                Some(cache) => Ok(cache.get(py, data)?.into_any()),
                None => Ok(PyString::from_bytes(py, data)?.into_any()),
            },
            // Python's own UTF-8 decoder: its exact UnicodeDecodeError for bad input.
            _ => Ok(PyString::from_bytes(py, data)?.into_any()),
        }
    }
    #[inline(always)]
    fn key_string(&mut self, data: &[u8], offset: usize, opcode: u8) -> PyResult<Self::Value> {
        match self.held_key(data, offset, opcode)? {
            Key::Value(key) => Ok(key),
            key @ Key::Held(_) => self.key_value(key),
        }
    }
    #[inline(always)]
    fn held_key(&mut self, data: &[u8], offset: usize, opcode: u8) -> PyResult<Key<Self::Value>> {
        if self.cache_keys && opcode == op::PY3STRING && data.len() <= CACHED_STRING_LEN {
            if let Some(cache) = self.strings.as_mut() {
                return Ok(Key::Held(cache.key(self.py, data)?));
            }
        }
        self.string(data, offset, opcode).map(Key::Value)
    }
    #[inline(always)]
    fn key_value(&mut self, key: Key<Self::Value>) -> PyResult<Self::Value> {
        match key {
            Key::Value(key) => Ok(key),
            Key::Held(index) => match self.strings.as_ref().and_then(|c| c.held(index)) {
                Some(key) => Ok(key.clone().into_any()),
                None => Err(held_key_lost()),
            },
        }
    }
    /// Stores with a borrowed key when the cache holds it (no reference count changes).
    #[inline(always)]
    fn dict_put(
        &mut self,
        dict: &mut Self::Value,
        key: Key<Self::Value>,
        value: Self::Value,
        _: usize,
    ) -> PyResult<()> {
        let dict = dict.cast_exact::<PyDict>()?;
        match key {
            Key::Value(key) => dict.set_item(key, value),
            Key::Held(index) => match self.strings.as_ref().and_then(|c| c.held(index)) {
                Some(key) => dict.set_item(key, value),
                None => Err(held_key_lost()),
            },
        }
    }
    fn channel(&mut self, id: i32, offset: usize) -> PyResult<Self::Value> {
        match self.channelfactory {
            Some(factory) => factory.call_method1("new", (id,)),
            None => Err(DecodeError::NoChannelFactory { offset }.into()),
        }
    }
    #[inline(always)]
    fn dict(&mut self) -> PyResult<Self::Value> {
        Ok(PyDict::new(self.py).into_any())
    }
    fn list(&mut self, len: usize, _: usize) -> PyResult<Self::Value> {
        let py = self.py;
        if len >= LARGE_LIST {
            return PyList::new(py, [py.None()])?.into_any().mul(len);
        }
        Ok(PyList::new(py, std::iter::repeat_n(py.None().into_bound(py), len))?.into_any())
    }
    const EAGER_LISTS: bool = true;
    /// Lists come from [`Builder::list`]: `None` in every slot until it is set (never NULL,
    /// as a finalizer running meanwhile may see the list through `gc.get_objects()`).
    #[inline(always)]
    fn list_put(
        &mut self,
        list: &mut Self::Value,
        index: usize,
        value: Self::Value,
    ) -> PyResult<()> {
        list.cast_exact::<PyList>()?.set_item(index, value)
    }
    fn list_from(&mut self, items: Vec<Self::Value>) -> PyResult<Self::Value> {
        Ok(PyList::new(self.py, items)?.into_any())
    }
    #[inline(always)]
    fn list_of<I: ExactSizeIterator<Item = Self::Value>>(
        &mut self,
        items: I,
        _: usize,
    ) -> PyResult<Self::Value> {
        Ok(PyList::new(self.py, items)?.into_any())
    }
    fn tuple<I: ExactSizeIterator<Item = Self::Value>>(
        &mut self,
        items: I,
    ) -> PyResult<Self::Value> {
        Ok(PyTuple::new(self.py, items)?.into_any())
    }
    fn set<I: ExactSizeIterator<Item = Self::Value>>(
        &mut self,
        items: I,
        frozen: bool,
        _: usize,
    ) -> PyResult<Self::Value> {
        if frozen {
            Ok(PyFrozenSet::new(self.py, items)?.into_any())
        } else {
            Ok(PySet::new(self.py, items)?.into_any())
        }
    }
    #[inline(always)]
    fn set_item(
        &mut self,
        target: &mut Self::Value,
        key: Self::Value,
        value: Self::Value,
        key_too_deep: bool,
        offset: usize,
    ) -> PyResult<()> {
        if let Ok(dict) = target.cast_exact::<PyDict>() {
            if key_too_deep {
                return Err(DecodeError::TooDeep { offset }.into());
            }
            return dict.set_item(key, value);
        }
        if let Ok(list) = target.cast_exact::<PyList>() {
            if let Some(index) = index_of(&key, list.len(), offset)? {
                return list.set_item(index, value);
            }
        }
        target.set_item(key, value)
    }
    fn list_index(
        &mut self,
        key: &Self::Value,
        len: usize,
        offset: usize,
    ) -> PyResult<Option<usize>> {
        index_of(key, len, offset)
    }
    fn set_index(
        &mut self,
        target: &mut Self::Value,
        index: i32,
        value: Self::Value,
        offset: usize,
    ) -> PyResult<()> {
        if let Ok(list) = target.cast_exact::<PyList>() {
            let index = codec::normalize_index(index.into(), list.len(), offset)?;
            return list.set_item(index, value);
        }
        let key = self.int(index)?;
        self.set_item(target, key, value, false, offset)
    }
}

/// Decodes the internal form (no version byte) with a string configuration
/// `(py2str_as_py3str, py3str_as_py2str)` and an optional channel factory (`CHANNEL` calls its
/// `new(id)`).
///
/// # Errors
/// What execnet's decoder raises for the same input.
pub fn decode_internal<'py>(
    py: Python<'py>,
    data: &[u8],
    strconfig: (bool, bool),
    channelfactory: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    decode_with(py, data, strconfig, channelfactory, false)
}

fn decode_with<'py>(
    py: Python<'py>,
    data: &[u8],
    strconfig: (bool, bool),
    channelfactory: Option<&Bound<'py, PyAny>>,
    versioned: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut builder = PyBuilder {
        py,
        py2str_as_py3str: strconfig.0,
        py3str_as_py2str: strconfig.1,
        channelfactory,
        strings: None,
        share_keys: data.len() >= SHARE_KEYS_INPUT_LEN,
        cache_keys: data.len() >= SHARE_KEYS_INPUT_LEN && !strconfig.1,
    };
    if builder.share_keys {
        builder.strings = Some(StringCache::new());
    }
    let _paused = (data.len() >= PAUSE_GC_INPUT_LEN).then(|| GcPause::new(py));
    codec::decode(&mut builder, data, versioned)
}

/// Inputs at least this long decode with the cyclic garbage collector paused.
const PAUSE_GC_INPUT_LEN: usize = 4096;

/// Pauses CPython's cyclic garbage collector while it lives, if it was enabled.
///
/// Decoded data is a tree: it holds no reference cycles, so collections triggered by the many
/// containers a big payload creates only traverse the young objects again and again (a third of
/// the time of a big `loads`). Pausing them makes one collection happen after the decode instead.
struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    #[allow(unsafe_code)]
    fn new(_py: Python<'_>) -> Self {
        // SAFETY: `PyGC_Disable` only flips the collector's flag; the GIL is held (`_py`).
        let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
        Self { was_enabled }
    }
}

impl Drop for GcPause {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: dropped on the thread that created it, which still holds the GIL (the guard
            // lives inside `decode_with`, whose `py` token outlives it).
            unsafe { pyo3::ffi::PyGC_Enable() };
        }
    }
}

/// Data this long and longer is copied into bytes through the constructor that reports
/// allocation failure as `MemoryError`.
const LARGE_BYTES: usize = 1 << 16;

/// `bytes(data)`.
fn new_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if data.len() < LARGE_BYTES {
        return Ok(PyBytes::new(py, data));
    }
    PyBytes::new_with(py, data.len(), |buf| {
        buf.copy_from_slice(data);
        Ok(())
    })
}

/// The bytes of a bytes-like argument.
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> PyResult<R> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return f(b.as_bytes());
    }
    let copy = data.py().get_type::<PyBytes>().call1((data,))?;
    f(copy.cast::<PyBytes>()?.as_bytes())
}

/// `dumps(obj) -> bytes`: the versioned form (version byte `\x02`, then the internal form).
#[pyfunction]
pub fn dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    with_scratch(|out| {
        out.push(op::DUMPFORMAT_VERSION);
        encode_internal_into(obj, out)?;
        new_bytes(py, out)
    })
}

/// `dumps_internal(obj) -> bytes`: the internal form used in message payloads.
#[pyfunction]
pub fn dumps_internal<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    with_scratch(|out| {
        encode_internal_into(obj, out)?;
        new_bytes(py, out)
    })
}

thread_local! {
    /// A reusable encoding buffer per thread (saves an allocation per `dumps`).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers larger than this are not kept for reuse.
const SCRATCH_KEEP: usize = 1 << 20;

/// Runs `f` with an empty buffer: the thread's scratch buffer, or a fresh one when it is in use
/// (a `dumps` nested in user code that runs during encoding).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let result = f(&mut buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::with_capacity(64)),
    })
}

/// `loads(data, py2str_as_py3str=False, py3str_as_py2str=False)`: decodes the versioned form.
#[pyfunction]
#[pyo3(signature = (data, py2str_as_py3str = false, py3str_as_py2str = false))]
pub fn loads<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    py2str_as_py3str: bool,
    py3str_as_py2str: bool,
) -> PyResult<Bound<'py, PyAny>> {
    with_bytes(data, |bytes| {
        decode_with(py, bytes, (py2str_as_py3str, py3str_as_py2str), None, true)
    })
}

/// `loads_internal(data, channelfactory=None, strconfig=(True, False))`: decodes the internal
/// form; `strconfig=None` means the default.
#[pyfunction]
#[pyo3(signature = (data, channelfactory = None, strconfig = None))]
pub fn loads_internal<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    channelfactory: Option<&Bound<'py, PyAny>>,
    strconfig: Option<(bool, bool)>,
) -> PyResult<Bound<'py, PyAny>> {
    let channelfactory = channelfactory.filter(|f| !f.is_none());
    let strconfig = strconfig.unwrap_or((true, false));
    with_bytes(data, |bytes| {
        decode_with(py, bytes, strconfig, channelfactory, false)
    })
}

/// `_scan(data) -> (channel_refs, needs_python_check)`: validates an internal-form payload without
/// building objects (the engine's `scan`); raises what decoding would raise.
#[pyfunction(name = "_scan")]
pub fn scan_payload(data: &Bound<'_, PyAny>) -> PyResult<(bool, bool)> {
    with_bytes(data, |bytes| {
        let info = codec::scan(bytes)?;
        Ok((info.channel_refs, info.needs_python_check))
    })
}
