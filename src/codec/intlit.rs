//! Python's `int(bytes)` (base 10) grammar, for `LONGINT`/`LONGLONG` operands.

/// A decimal integer literal accepted by Python's `int()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntLiteral {
    /// True for a `-` sign (never for zero).
    pub negative: bool,
    /// The magnitude's digits without underscores or leading zeros (`"0"` for zero).
    pub digits: String,
}

impl IntLiteral {
    /// The value if it fits an `i64`.
    #[must_use]
    pub fn to_i64(&self) -> Option<i64> {
        let magnitude: i128 = if self.digits.len() > 19 {
            return None;
        } else {
            self.digits.parse().ok()?
        };
        let value = if self.negative { -magnitude } else { magnitude };
        i64::try_from(value).ok()
    }

    /// The canonical decimal text (`str(int(literal))`).
    #[must_use]
    pub fn to_decimal(&self) -> String {
        if self.negative {
            format!("-{}", self.digits)
        } else {
            self.digits.clone()
        }
    }
}

fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses `literal` the way Python's `int(literal)` does for `bytes` in base 10: surrounding ASCII
/// whitespace, an optional sign, digits with single underscores between them. `None` where
/// Python raises `ValueError` (Python's digit-count limit for huge literals is not applied here).
#[must_use]
pub fn parse(literal: &[u8]) -> Option<IntLiteral> {
    let start = literal.iter().position(|&b| !is_py_space(b))?;
    let end = literal.iter().rposition(|&b| !is_py_space(b))? + 1;
    let mut body = literal.get(start..end)?;
    let mut negative = false;
    if let Some((&sign, rest)) = body.split_first() {
        if sign == b'-' || sign == b'+' {
            negative = sign == b'-';
            body = rest;
        }
    }
    let mut digits = String::with_capacity(body.len());
    let mut previous_was_digit = false;
    for &b in body {
        match b {
            b'0'..=b'9' => {
                if !(digits.is_empty() && b == b'0') {
                    digits.push(char::from(b));
                }
                previous_was_digit = true;
            }
            b'_' if previous_was_digit => previous_was_digit = false,
            _ => return None,
        }
    }
    if !previous_was_digit {
        return None;
    }
    if digits.is_empty() {
        digits.push('0');
        negative = false;
    }
    Some(IntLiteral { negative, digits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &[u8]) -> Option<String> {
        parse(s).map(|l| l.to_decimal())
    }

    #[test]
    fn accepts_what_python_accepts() {
        assert_eq!(value(b"123").as_deref(), Some("123"));
        assert_eq!(value(b" -1_0").as_deref(), Some("-10"));
        assert_eq!(value(b"+1 ").as_deref(), Some("1"));
        assert_eq!(value(b"\x0b1\x0c").as_deref(), Some("1"));
        assert_eq!(value(b"007").as_deref(), Some("7"));
        assert_eq!(value(b"-0").as_deref(), Some("0"));
        assert_eq!(value(b"0_0").as_deref(), Some("0"));
    }

    #[test]
    fn rejects_what_python_rejects() {
        for bad in [
            &b""[..],
            b" ",
            b"-",
            b"abc",
            b"1__0",
            b"_1",
            b"1_",
            b"-_1",
            b"\x1c1",
            b"1\x00",
            b"0x10",
            b"1 2",
            b"+-1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn i64_bounds() {
        assert_eq!(
            parse(b"9223372036854775807").and_then(|l| l.to_i64()),
            Some(i64::MAX)
        );
        assert_eq!(
            parse(b"-9223372036854775808").and_then(|l| l.to_i64()),
            Some(i64::MIN)
        );
        assert_eq!(parse(b"9223372036854775808").and_then(|l| l.to_i64()), None);
        assert_eq!(
            parse(b"99999999999999999999").and_then(|l| l.to_i64()),
            None
        );
    }
}
