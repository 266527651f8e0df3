//! Property tests of the pure-Rust codec engine: round trips, and the validator (`scan`)
//! agreeing with the decoder on arbitrary and mutated input, which must never panic.

use _core::codec::{decode, decode_value, encode, scan, Builder, DecodeError, Value, ValueBuilder};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|i| Value::Int(i.into())),
        any::<i64>().prop_map(Value::Int),
        "[1-9][0-9]{19,40}".prop_map(Value::BigInt),
        "-[1-9][0-9]{19,40}".prop_map(Value::BigInt),
        any::<f64>().prop_map(Value::Float),
        (any::<f64>(), any::<f64>()).prop_map(|(a, b)| Value::Complex(a, b)),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ".{0,12}".prop_map(Value::Str),
        any::<i32>().prop_map(Value::Channel),
    ]
}

fn hashable() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Tuple),
            proptest::collection::vec(inner, 0..4).prop_map(|v| Value::FrozenSet(dedup(v))),
        ]
    })
}

fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec((hashable(), inner), 0..5).prop_map(|entries| {
                let mut out: Vec<(Value, Value)> = Vec::new();
                for (k, v) in entries {
                    if !out.iter().any(|(existing, _)| *existing == k) {
                        out.push((k, v));
                    }
                }
                Value::Dict(out)
            }),
            proptest::collection::vec(hashable(), 0..5).prop_map(|v| Value::Set(dedup(v))),
        ]
    })
}

fn channels() -> ValueBuilder {
    ValueBuilder {
        channels: true,
        ..ValueBuilder::default()
    }
}

/// Errors with `str` and `bytes` in the same place alike: which one a string opcode makes
/// depends on the string configuration.
fn normalize(err: &DecodeError) -> DecodeError {
    let fix = |name: &'static str| if name == "bytes" { "str" } else { name };
    match err.clone() {
        DecodeError::BadListIndex { offset, type_name } => DecodeError::BadListIndex {
            offset,
            type_name: fix(type_name),
        },
        DecodeError::NotAssignable { offset, type_name } => DecodeError::NotAssignable {
            offset,
            type_name: fix(type_name),
        },
        other => other,
    }
}

/// The validator and the decoder agree exactly (the validator's view of `PY3STRING` is the
/// configuration that keeps it as bytes; text that is not UTF-8 only flags a Python check).
fn assert_agree(data: &[u8]) -> Result<(), TestCaseError> {
    let mut as_bytes = ValueBuilder {
        channels: true,
        py3str_as_py2str: true,
        ..ValueBuilder::default()
    };
    let decoded = decode_value(data, &mut as_bytes, false);
    let scanned = scan(data);
    if matches!(decoded, Err(DecodeError::OutOfMemory { .. })) {
        // The value tree caps list sizes (`MAX_LIST_LEN`); the validator allocates nothing.
        return Ok(());
    }
    prop_assert_eq!(
        scanned.as_ref().map(|_| ()).map_err(normalize),
        decoded.as_ref().map(|_| ()).map_err(normalize),
        "{:?}",
        data
    );
    if let Ok(info) = scanned {
        if !info.needs_python_check {
            prop_assert!(decode_value(data, &mut channels(), false).is_ok());
        }
    }
    Ok(())
}

/// The value builder with lists made when declared and filled in place
/// ([`Builder::EAGER_LISTS`], as the Python builder does).
struct Eager(ValueBuilder);

impl Builder for Eager {
    type Value = Value;
    type Error = DecodeError;
    const EAGER_LISTS: bool = true;

    fn none(&mut self) -> Result<Value, DecodeError> {
        self.0.none()
    }
    fn boolean(&mut self, value: bool) -> Result<Value, DecodeError> {
        self.0.boolean(value)
    }
    fn int(&mut self, value: i32) -> Result<Value, DecodeError> {
        self.0.int(value)
    }
    fn long(&mut self, literal: &[u8], offset: usize, opcode: u8) -> Result<Value, DecodeError> {
        self.0.long(literal, offset, opcode)
    }
    fn float(&mut self, value: f64) -> Result<Value, DecodeError> {
        self.0.float(value)
    }
    fn complex(&mut self, real: f64, imag: f64) -> Result<Value, DecodeError> {
        self.0.complex(real, imag)
    }
    fn bytes(&mut self, data: &[u8]) -> Result<Value, DecodeError> {
        self.0.bytes(data)
    }
    fn string(&mut self, data: &[u8], offset: usize, opcode: u8) -> Result<Value, DecodeError> {
        self.0.string(data, offset, opcode)
    }
    fn channel(&mut self, id: i32, offset: usize) -> Result<Value, DecodeError> {
        self.0.channel(id, offset)
    }
    fn dict(&mut self) -> Result<Value, DecodeError> {
        self.0.dict()
    }
    fn list(&mut self, len: usize, offset: usize) -> Result<Value, DecodeError> {
        self.0.list(len, offset)
    }
    fn list_new(&mut self, len: usize, _: usize) -> Result<Value, DecodeError> {
        // Unset slots hold a marker no input makes, so that a slot left unset shows.
        Ok(Value::List(vec![Value::BigInt("unset".into()); len]))
    }
    fn list_put(
        &mut self,
        list: &mut Value,
        index: usize,
        value: Value,
    ) -> Result<(), DecodeError> {
        match list {
            Value::List(items) if index < items.len() => {
                items[index] = value;
                Ok(())
            }
            _ => Err(DecodeError::IndexOutOfRange { offset: usize::MAX }),
        }
    }
    fn list_fill(&mut self, list: &mut Value, from: usize, len: usize) -> Result<(), DecodeError> {
        if let Value::List(items) = list {
            for item in items.iter_mut().take(len).skip(from) {
                *item = Value::None;
            }
        }
        Ok(())
    }
    fn tuple<I: ExactSizeIterator<Item = Value>>(
        &mut self,
        items: I,
    ) -> Result<Value, DecodeError> {
        self.0.tuple(items)
    }
    fn set<I: ExactSizeIterator<Item = Value>>(
        &mut self,
        items: I,
        frozen: bool,
        offset: usize,
    ) -> Result<Value, DecodeError> {
        self.0.set(items, frozen, offset)
    }
    fn set_item(
        &mut self,
        target: &mut Value,
        key: Value,
        value: Value,
        key_too_deep: bool,
        offset: usize,
    ) -> Result<(), DecodeError> {
        self.0.set_item(target, key, value, key_too_deep, offset)
    }
    fn list_index(
        &mut self,
        key: &Value,
        len: usize,
        offset: usize,
    ) -> Result<Option<usize>, DecodeError> {
        self.0.list_index(key, len, offset)
    }
}

/// Lists made when declared and filled in place decode exactly as collected ones.
fn assert_eager_agrees(data: &[u8]) -> Result<(), TestCaseError> {
    let collected = decode_value(data, &mut channels(), false);
    if matches!(collected, Err(DecodeError::OutOfMemory { .. })) {
        return Ok(());
    }
    let eager = decode(&mut Eager(channels()), data, false);
    prop_assert_eq!(eager, collected, "{:?}", data);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_is_byte_stable(v in value()) {
        let data = encode(&v).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let back = decode_value(&data, &mut channels(), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(encode(&back).ok(), Some(data.clone()));
        let info = scan(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!info.needs_python_check || data.len() > 640);
    }

    #[test]
    fn truncated_or_mutated_encodings_agree(v in value(), cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let data = encode(&v).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let cut = cut.index(data.len());
        let truncated = &data[..cut];
        prop_assert!(decode_value(truncated, &mut channels(), false).is_err());
        assert_agree(truncated)?;
        assert_eager_agrees(&data)?;
        assert_eager_agrees(truncated)?;
        let mut mutated = data.clone();
        mutated[at.index(data.len())] = byte;
        assert_agree(&mutated)?;
        assert_eager_agrees(&mutated)?;
    }

    #[test]
    fn arbitrary_bytes_agree(data in proptest::collection::vec(any::<u8>(), 0..80)) {
        assert_agree(&data)?;
        let mut stopped = data.clone();
        stopped.push(b'Q');
        assert_agree(&stopped)?;
        assert_eager_agrees(&stopped)?;
    }

    #[test]
    fn opcode_soup_agrees(ops in proptest::collection::vec(prop::sample::select(b"@ABCDEFGHIJKLMNOPQRST\x00\x01\xff".to_vec()), 0..60)) {
        assert_agree(&ops)?;
        assert_eager_agrees(&ops)?;
    }
}

#[test]
fn deep_nesting_neither_recurses_nor_overflows() {
    let depth = 200_000;
    let mut data = vec![b'L'];
    for _ in 0..depth {
        data.extend_from_slice(b"@\x00\x00\x00\x01");
    }
    data.push(b'Q');
    let value = decode_value(&data, &mut ValueBuilder::default(), false);
    assert!(value.is_ok());
    drop(value);
    assert!(scan(&data).is_ok());
    let mut keyed = vec![b'J'];
    keyed.extend_from_slice(&data[..data.len() - 1]);
    keyed.extend_from_slice(b"LPQ");
    assert!(matches!(scan(&keyed), Err(DecodeError::TooDeep { .. })));
}

#[test]
fn huge_declared_lengths_read_what_is_there() {
    for op in [b'A', b'N', b'M', b'S', b'H'] {
        let data = [&[op][..], b"\x7f\xff\xff\xff", b"12"].concat();
        assert!(
            matches!(scan(&data), Err(DecodeError::Eof { offset: 7 })),
            "{op}"
        );
    }
    assert!(matches!(
        scan(b"K\x7f\xff\xff\xff"),
        Err(DecodeError::Eof { .. })
    ));
    assert!(matches!(
        scan(b"K\x7f\xff\xff\xffQ"),
        Err(DecodeError::OutOfMemory { .. })
    ));
    assert!(matches!(
        decode_value(
            b"K\x7f\xff\xff\xffF\x7f\xff\xff\xfeRP",
            &mut ValueBuilder::default(),
            false
        ),
        Err(DecodeError::Eof { .. })
    ));
}

#[test]
fn version_byte() {
    let mut b = ValueBuilder::default();
    assert_eq!(decode_value(b"\x02LQ", &mut b, true), Ok(Value::None));
    assert_eq!(
        decode_value(b"", &mut b, true),
        Err(DecodeError::WrongVersion { found: None })
    );
    assert_eq!(
        decode_value(b"\x01", &mut b, true),
        Err(DecodeError::WrongVersion { found: Some(1) })
    );
}
