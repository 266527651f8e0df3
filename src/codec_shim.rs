//! TEMPORARY SHIM for `crate::codec::scan`, used by the multiplexer until the codec module is
//! merged; delete this file then and point `crate::mux` at `crate::codec`.
//!
//! A conservative structural pass over an internal (unversioned) serializer payload: it accepts
//! only streams that certainly decode, and flags anything whose decoding depends on Python
//! (hashing, list indexes, integer parsing) as `needs_python_check`.

use std::fmt;

/// What a successful scan learned about a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanInfo {
    /// The payload contains a channel reference (`B` opcode).
    pub channel_refs: bool,
    /// Decoding might still fail in Python (dict keys, set members, SETITEM, long ints).
    pub needs_python_check: bool,
}

/// The payload is not a well-formed internal serializer stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the fault.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// Checks that `payload` is one complete internal serializer stream.
pub fn scan(payload: &[u8]) -> Result<ScanInfo, DecodeError> {
    let mut info = ScanInfo::default();
    let mut depth: usize = 0;
    let mut pos = 0usize;
    let fail = |offset: usize, reason: &'static str| Err(DecodeError { offset, reason });
    let int4 = |at: usize| -> Option<i32> {
        let bytes = payload.get(at..at.checked_add(4)?)?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    while let Some(&op) = payload.get(pos) {
        let at = pos;
        pos += 1;
        match op {
            b'@' | b'E' | b'O' => {
                let Some(n) = int4(pos) else {
                    return fail(at, "truncated count");
                };
                pos += 4;
                let n = usize::try_from(n).unwrap_or(0);
                depth = depth - n.min(depth) + 1;
                if op != b'@' {
                    info.needs_python_check = true;
                }
            }
            b'A' | b'M' | b'N' | b'S' | b'H' | b'I' => {
                let Some(len) = int4(pos).and_then(|n| usize::try_from(n).ok()) else {
                    return fail(at, "truncated or negative length");
                };
                pos += 4;
                let Some(data) = pos.checked_add(len).and_then(|end| payload.get(pos..end)) else {
                    return fail(at, "truncated data");
                };
                pos += len;
                match op {
                    b'N' | b'S' if std::str::from_utf8(data).is_err() => {
                        return fail(at, "invalid UTF-8");
                    }
                    b'H' | b'I' => info.needs_python_check = true,
                    _ => {}
                }
                depth += 1;
            }
            b'B' | b'F' | b'G' | b'K' => {
                let Some(value) = int4(pos) else {
                    return fail(at, "truncated int4");
                };
                if op == b'K' && value < 0 {
                    return fail(at, "negative list length");
                }
                if op == b'B' {
                    info.channel_refs = true;
                }
                pos += 4;
                depth += 1;
            }
            b'C' | b'R' | b'L' | b'J' => depth += 1,
            b'D' | b'T' => {
                let width = if op == b'D' { 8 } else { 16 };
                if payload.len() < pos + width {
                    return fail(at, "truncated float");
                }
                pos += width;
                depth += 1;
            }
            b'P' => {
                if depth < 3 {
                    return fail(at, "not enough items for setitem");
                }
                depth -= 2;
                info.needs_python_check = true;
            }
            b'Q' => {
                return if depth == 1 {
                    Ok(info)
                } else {
                    fail(at, "internal unserialization error")
                };
            }
            _ => return fail(at, "unknown opcode"),
        }
    }
    fail(pos, "missing STOP")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_fast() {
        // (1, "a", b"b", None, 1.5)
        let payload = b"F\x00\x00\x00\x01N\x00\x00\x00\x01aA\x00\x00\x00\x01bLD?\xf8\x00\x00\x00\x00\x00\x00@\x00\x00\x00\x05Q";
        assert_eq!(scan(payload), Ok(ScanInfo::default()));
    }

    #[test]
    fn channel_and_dict_are_flagged() {
        let info = scan(b"B\x00\x00\x00\x03Q");
        assert_eq!(info.map(|i| i.channel_refs), Ok(true));
        let info = scan(b"JN\x00\x00\x00\x01aF\x00\x00\x00\x01PQ");
        assert_eq!(info.map(|i| i.needs_python_check), Ok(true));
    }

    #[test]
    fn malformed_is_rejected() {
        for bad in [
            &b""[..],
            b"Q",
            b"F\x00\x00",
            b"FF\x00\x00\x00\x01\x00\x00\x00\x01Q",
            b"N\x00\x00\x00\x02\xff\xfeQ",
            b"Z",
            b"N\xff\xff\xff\xffQ",
            b"LP",
            b"L",
        ] {
            assert!(scan(bad).is_err(), "{bad:?}");
        }
    }
}
