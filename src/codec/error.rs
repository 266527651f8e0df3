//! The decoder's error type. Each variant corresponds to the exception execnet 2.1.2's decoder
//! raises for the same input; [`DecodeError::message`] is that exception's exact text.

use std::fmt;

/// A decoding failure, located by byte offset (and opcode where one was being run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The versioned form does not start with `\x02` (`LoadError`); `None` for empty input.
    WrongVersion { found: Option<u8> },
    /// An opcode byte that is not one of the 21 (`LoadError`).
    UnknownOpcode { offset: usize, opcode: u8 },
    /// The input ended where an opcode was expected (bare `EOFError`).
    Eof { offset: usize },
    /// A fixed-size operand (4, 8 or 16 bytes) is cut short (`struct.error`).
    Truncated {
        offset: usize,
        opcode: u8,
        needed: usize,
    },
    /// `STOP` with a stack that does not hold exactly one entry (`LoadError`).
    StackNotOne { offset: usize, depth: usize },
    /// `SETITEM` with fewer than three stack entries (`LoadError`).
    SetItemUnderflow { offset: usize },
    /// Text that is not valid UTF-8 (`UnicodeDecodeError`); `start..end` locate the operand.
    InvalidUtf8 {
        offset: usize,
        opcode: u8,
        start: usize,
        end: usize,
    },
    /// A `LONGINT`/`LONGLONG` operand that Python's `int()` rejects (`ValueError`); `literal`
    /// is the operand's `repr()` as Python's message shows it (at most 200 characters).
    InvalidInt {
        offset: usize,
        opcode: u8,
        literal: String,
    },
    /// `SETITEM` on a list with an index outside it (`IndexError`).
    IndexOutOfRange { offset: usize },
    /// `SETITEM` on a list with an index beyond the platform's index range (`IndexError`).
    IndexTooLarge { offset: usize },
    /// `SETITEM` on a value that does not support item assignment (`TypeError`).
    NotAssignable {
        offset: usize,
        type_name: &'static str,
    },
    /// `SETITEM` on a list with a key that is not an integer (`TypeError`).
    BadListIndex {
        offset: usize,
        type_name: &'static str,
    },
    /// A dict key or set element that cannot be hashed (`TypeError`).
    Unhashable {
        offset: usize,
        type_name: &'static str,
    },
    /// `CHANNEL` without a channel factory (bare `AssertionError`).
    NoChannelFactory { offset: usize },
    /// A tuple nested too deeply to be hashed without risking the C stack (`RecursionError`).
    TooDeep { offset: usize },
    /// A collection too large to allocate (`MemoryError`).
    OutOfMemory { offset: usize },
}

/// Result alias of the codec engine.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// Python's `repr()` of a `bytes` value.
#[must_use]
pub fn bytes_repr(data: &[u8]) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(data.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\'' if quote == '\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

impl DecodeError {
    /// [`DecodeError::InvalidInt`] for the operand `literal`.
    #[must_use]
    pub fn invalid_int(offset: usize, opcode: u8, literal: &[u8]) -> Self {
        let literal = bytes_repr(literal).chars().take(200).collect();
        Self::InvalidInt {
            offset,
            opcode,
            literal,
        }
    }

    /// The exact text of the exception execnet raises for this failure.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::WrongVersion { found } => {
                let byte: &[u8] = match found {
                    Some(b) => std::slice::from_ref(b),
                    None => &[],
                };
                format!("wrong dumpformat version {}", bytes_repr(byte))
            }
            Self::UnknownOpcode { opcode, .. } => format!(
                "unknown opcode {} - wire protocol corruption?",
                bytes_repr(std::slice::from_ref(opcode))
            ),
            Self::Eof { .. } | Self::NoChannelFactory { .. } => String::new(),
            Self::Truncated { needed, .. } => format!("unpack requires a buffer of {needed} bytes"),
            Self::StackNotOne { .. } => "internal unserialization error".to_owned(),
            Self::SetItemUnderflow { .. } => "not enough items for setitem".to_owned(),
            Self::InvalidUtf8 { .. } => "invalid utf-8".to_owned(),
            Self::InvalidInt { literal, .. } => {
                format!("invalid literal for int() with base 10: {literal}")
            }
            Self::IndexOutOfRange { .. } => "list assignment index out of range".to_owned(),
            Self::IndexTooLarge { .. } => "cannot fit 'int' into an index-sized integer".to_owned(),
            Self::NotAssignable { type_name, .. } => {
                format!("'{type_name}' object does not support item assignment")
            }
            Self::BadListIndex { type_name, .. } => {
                format!("list indices must be integers or slices, not {type_name}")
            }
            Self::Unhashable { type_name, .. } => format!("unhashable type: '{type_name}'"),
            Self::TooDeep { .. } => {
                "maximum recursion depth exceeded while hashing decoded data".to_owned()
            }
            Self::OutOfMemory { .. } => String::new(),
        }
    }

    /// Byte offset in the input where the failing opcode (or version byte) starts.
    #[must_use]
    pub fn offset(&self) -> usize {
        match self {
            Self::WrongVersion { .. } => 0,
            Self::UnknownOpcode { offset, .. }
            | Self::Eof { offset }
            | Self::Truncated { offset, .. }
            | Self::StackNotOne { offset, .. }
            | Self::SetItemUnderflow { offset }
            | Self::InvalidUtf8 { offset, .. }
            | Self::InvalidInt { offset, .. }
            | Self::IndexOutOfRange { offset }
            | Self::IndexTooLarge { offset }
            | Self::NotAssignable { offset, .. }
            | Self::BadListIndex { offset, .. }
            | Self::Unhashable { offset, .. }
            | Self::NoChannelFactory { offset }
            | Self::TooDeep { offset }
            | Self::OutOfMemory { offset } => *offset,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = self.message();
        let kind = match self {
            Self::WrongVersion { .. }
            | Self::UnknownOpcode { .. }
            | Self::StackNotOne { .. }
            | Self::SetItemUnderflow { .. } => "LoadError",
            Self::Eof { .. } => "EOFError",
            Self::Truncated { .. } => "struct.error",
            Self::InvalidUtf8 { .. } => "UnicodeDecodeError",
            Self::InvalidInt { .. } => "ValueError",
            Self::IndexOutOfRange { .. } | Self::IndexTooLarge { .. } => "IndexError",
            Self::NotAssignable { .. } | Self::BadListIndex { .. } | Self::Unhashable { .. } => {
                "TypeError"
            }
            Self::NoChannelFactory { .. } => "AssertionError",
            Self::TooDeep { .. } => "RecursionError",
            Self::OutOfMemory { .. } => "MemoryError",
        };
        write!(f, "{kind} at byte {}", self.offset())?;
        if !msg.is_empty() {
            write!(f, ": {msg}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_repr_matches_python() {
        assert_eq!(bytes_repr(b""), "b''");
        assert_eq!(bytes_repr(b"\x01"), "b'\\x01'");
        assert_eq!(bytes_repr(b"Z"), "b'Z'");
        assert_eq!(bytes_repr(b"'"), "b\"'\"");
        assert_eq!(bytes_repr(b"\\"), "b'\\\\'");
        assert_eq!(bytes_repr(b"\n\xff"), "b'\\n\\xff'");
        assert_eq!(bytes_repr(b"'\""), "b'\\'\"'");
    }

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(
            DecodeError::WrongVersion { found: Some(1) }.message(),
            "wrong dumpformat version b'\\x01'"
        );
        assert_eq!(
            DecodeError::WrongVersion { found: None }.message(),
            "wrong dumpformat version b''"
        );
        assert_eq!(
            DecodeError::UnknownOpcode {
                offset: 3,
                opcode: b'Z'
            }
            .message(),
            "unknown opcode b'Z' - wire protocol corruption?"
        );
        let e = DecodeError::Truncated {
            offset: 1,
            opcode: b'F',
            needed: 4,
        };
        assert_eq!(
            e.to_string(),
            "struct.error at byte 1: unpack requires a buffer of 4 bytes"
        );
    }
}
