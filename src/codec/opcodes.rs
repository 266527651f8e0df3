//! The serializer's opcodes: one ASCII byte each. The set is frozen; stored data depends on it.

/// Pops n entries, pushes a tuple. Operand: int4 n.
pub const BUILDTUPLE: u8 = b'@';
/// Pushes bytes. Operands: int4 length, raw bytes.
pub const BYTES: u8 = b'A';
/// Pushes the channel with the given id. Operand: int4 id.
pub const CHANNEL: u8 = b'B';
/// Pushes `False`.
pub const FALSE: u8 = b'C';
/// Pushes a float. Operand: 8-byte big-endian IEEE-754 double.
pub const FLOAT: u8 = b'D';
/// Pops n entries, pushes a frozenset. Operand: int4 n.
pub const FROZENSET: u8 = b'E';
/// Pushes an int. Operand: int4 value.
pub const INT: u8 = b'F';
/// Python 2 `long` that fits int4; decoded as [`INT`].
pub const LONG: u8 = b'G';
/// Pushes an int given as ASCII decimal. Operands: int4 length, digits.
pub const LONGINT: u8 = b'H';
/// Python 2 long as decimal; decoded as [`LONGINT`].
pub const LONGLONG: u8 = b'I';
/// Pushes an empty dict.
pub const NEWDICT: u8 = b'J';
/// Pushes a list of n `None`s. Operand: int4 n.
pub const NEWLIST: u8 = b'K';
/// Pushes `None`.
pub const NONE: u8 = b'L';
/// Python 2 `str`: bytes or latin-1 text depending on the string configuration.
pub const PY2STRING: u8 = b'M';
/// Text as UTF-8 (bytes if the configuration asks for Python 2 strings).
pub const PY3STRING: u8 = b'N';
/// Pops n entries, pushes a set. Operand: int4 n.
pub const SET: u8 = b'O';
/// Pops value and key, then stores `top[key] = value`.
pub const SETITEM: u8 = b'P';
/// Ends the stream; the stack must hold exactly one entry.
pub const STOP: u8 = b'Q';
/// Pushes `True`.
pub const TRUE: u8 = b'R';
/// Python 2 `unicode` as UTF-8: always text.
pub const UNICODE: u8 = b'S';
/// Pushes a complex number. Operands: two 8-byte doubles (real, imaginary).
pub const COMPLEX: u8 = b'T';

/// The version byte that starts the versioned form (`dumps`/`loads`).
pub const DUMPFORMAT_VERSION: u8 = 0x02;

/// The largest length or count a length field can carry.
pub const MAX_LENGTH: usize = i32::MAX as usize;

/// Name of an opcode, for error messages.
#[must_use]
pub fn name(op: u8) -> &'static str {
    match op {
        BUILDTUPLE => "BUILDTUPLE",
        BYTES => "BYTES",
        CHANNEL => "CHANNEL",
        FALSE => "FALSE",
        FLOAT => "FLOAT",
        FROZENSET => "FROZENSET",
        INT => "INT",
        LONG => "LONG",
        LONGINT => "LONGINT",
        LONGLONG => "LONGLONG",
        NEWDICT => "NEWDICT",
        NEWLIST => "NEWLIST",
        NONE => "NONE",
        PY2STRING => "PY2STRING",
        PY3STRING => "PY3STRING",
        SET => "SET",
        SETITEM => "SETITEM",
        STOP => "STOP",
        TRUE => "TRUE",
        UNICODE => "UNICODE",
        COMPLEX => "COMPLEX",
        _ => "unknown",
    }
}
