//! Encoder building blocks: appending opcodes and their operands to a buffer.

use super::opcodes as op;

/// A length or count that does not fit the int4 length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// Appends `opcode` and a big-endian int4 operand.
#[inline]
pub fn put_int4(out: &mut Vec<u8>, opcode: u8, value: i32) {
    out.push(opcode);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends `opcode` and a count (a length field) that must fit int4.
///
/// # Errors
/// [`TooLong`] if `n` exceeds 2**31 - 1.
#[inline]
pub fn put_count(out: &mut Vec<u8>, opcode: u8, n: usize) -> Result<(), TooLong> {
    let n = i32::try_from(n).map_err(|_| TooLong)?;
    put_int4(out, opcode, n);
    Ok(())
}

/// Appends `opcode`, the length of `data` and `data` (`BYTES`, `PY3STRING`, `LONGINT`).
///
/// # Errors
/// [`TooLong`] if `data` is longer than 2**31 - 1 bytes.
#[inline]
pub fn put_data(out: &mut Vec<u8>, opcode: u8, data: &[u8]) -> Result<(), TooLong> {
    put_count(out, opcode, data.len())?;
    out.extend_from_slice(data);
    Ok(())
}

/// Appends an int: `INT` if it fits int4, else `LONGINT` with its decimal digits.
#[inline]
pub fn put_int(out: &mut Vec<u8>, value: i64) {
    match i32::try_from(value) {
        Ok(small) => put_int4(out, op::INT, small),
        Err(_) => {
            let digits = value.to_string();
            // A decimal i64 is at most 20 bytes, far below the length limit.
            let _ = put_data(out, op::LONGINT, digits.as_bytes());
        }
    }
}

/// Appends a float (`FLOAT`, big-endian IEEE-754 double).
#[inline]
pub fn put_float(out: &mut Vec<u8>, value: f64) {
    out.push(op::FLOAT);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a complex number (`COMPLEX`, real then imaginary part).
#[inline]
pub fn put_complex(out: &mut Vec<u8>, real: f64, imag: f64) {
    out.push(op::COMPLEX);
    out.extend_from_slice(&real.to_be_bytes());
    out.extend_from_slice(&imag.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_wire_format() {
        let mut out = Vec::new();
        put_int(&mut out, 1);
        assert_eq!(out, b"F\x00\x00\x00\x01");
        out.clear();
        put_int(&mut out, 2_147_483_648);
        assert_eq!(out, b"H\x00\x00\x00\x0a2147483648");
        out.clear();
        put_int(&mut out, -2_147_483_649);
        assert_eq!(out, b"H\x00\x00\x00\x0b-2147483649");
        out.clear();
        put_float(&mut out, 1.5);
        assert_eq!(out, b"D\x3f\xf8\x00\x00\x00\x00\x00\x00");
        out.clear();
        assert_eq!(put_data(&mut out, op::PY3STRING, b"a"), Ok(()));
        assert_eq!(out, b"N\x00\x00\x00\x01a");
        assert_eq!(put_count(&mut out, op::NEWLIST, 1 << 31), Err(TooLong));
    }
}
