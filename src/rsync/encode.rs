//! Structure items in their wire form: what `dumps_internal(item)` gives for the Python value
//! of an [`Entry`], built without creating the Python objects first.
//!
//! Only the opcodes these items need are produced (execnet's frozen serializer format):
//! `K n` list, `F i32` int, `H len digits` larger int, `D f64` float, `N len utf8` str,
//! `L` None, `P` set item, `@ n` tuple, `Q` stop.

use std::io::Write as _;

use super::walk::{Entry, FileInfo};

const INT: u8 = b'F';
const LONGINT: u8 = b'H';
const FLOAT: u8 = b'D';
const STR: u8 = b'N';
const NONE: u8 = b'L';
const NEWLIST: u8 = b'K';
const SETITEM: u8 = b'P';
const BUILDTUPLE: u8 = b'@';
const STOP: u8 = b'Q';

fn int(out: &mut Vec<u8>, value: u64) {
    match i32::try_from(value) {
        Ok(v) => {
            out.push(INT);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Err(_) => {
            let mut digits = Vec::with_capacity(20);
            // Writing into a Vec cannot fail.
            let _ = write!(digits, "{value}");
            out.push(LONGINT);
            out.extend_from_slice(&len32(digits.len()).to_be_bytes());
            out.extend_from_slice(&digits);
        }
    }
}

fn len32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn index(out: &mut Vec<u8>, i: usize) {
    out.push(INT);
    out.extend_from_slice(&len32(i).to_be_bytes());
}

/// `dumps_internal(item)` for the Python value of `entry`: `[mode, name, …]`,
/// `(mode, mtime, size)`, `None` or `(None, 0, 0)`. `None` when a name is not valid UTF-8 or
/// too long (the serializer raises for those; the caller lets it).
#[must_use]
pub fn encode_entry(entry: &Entry) -> Option<Vec<u8>> {
    match entry {
        Entry::Dir { mode, names } => {
            let count = i32::try_from(names.len() + 1).ok()?;
            let size: usize = names.iter().map(|n| n.len() + 15).sum::<usize>() + 20;
            let mut out = Vec::with_capacity(size);
            out.push(NEWLIST);
            out.extend_from_slice(&count.to_be_bytes());
            index(&mut out, 0);
            int(&mut out, u64::from(*mode));
            out.push(SETITEM);
            for (i, name) in names.iter().enumerate() {
                let text = name.to_str()?;
                let len = i32::try_from(text.len()).ok()?;
                index(&mut out, i + 1);
                out.push(STR);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(text.as_bytes());
                out.push(SETITEM);
            }
            out.push(STOP);
            Some(out)
        }
        Entry::File(FileInfo { mode, mtime, size }) => {
            let mut out = Vec::with_capacity(32);
            int(&mut out, u64::from(*mode));
            out.push(FLOAT);
            out.extend_from_slice(&mtime.to_be_bytes());
            int(&mut out, *size);
            out.push(BUILDTUPLE);
            out.extend_from_slice(&3i32.to_be_bytes());
            out.push(STOP);
            Some(out)
        }
        Entry::Link => Some(vec![NONE, STOP]),
        Entry::Vanished => {
            let mut out = vec![NONE];
            index(&mut out, 0);
            index(&mut out, 0);
            out.push(BUILDTUPLE);
            out.extend_from_slice(&3i32.to_be_bytes());
            out.push(STOP);
            Some(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn known_encodings() {
        // Bytes as the serializer's specification gives them.
        assert_eq!(encode_entry(&Entry::Link).unwrap(), b"LQ");
        assert_eq!(
            encode_entry(&Entry::Vanished).unwrap(),
            b"LF\0\0\0\0F\0\0\0\0@\0\0\0\x03Q"
        );
        let dir = Entry::Dir {
            mode: 0o40755,
            names: vec![OsString::from("a"), OsString::from("é")],
        };
        let mut want = b"K\0\0\0\x03F\0\0\0\0F\0\0\x41\xedP".to_vec();
        want.extend_from_slice(b"F\0\0\0\x01N\0\0\0\x01aP");
        want.extend_from_slice(b"F\0\0\0\x02N\0\0\0\x02\xc3\xa9PQ");
        assert_eq!(encode_entry(&dir).unwrap(), want);
        let file = Entry::File(FileInfo {
            mode: 0o100644,
            mtime: 1.5,
            size: 1 << 31,
        });
        let mut want = b"F\0\0\x81\xa4D\x3f\xf8\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(b"H\0\0\0\x0a2147483648@\0\0\0\x03Q");
        assert_eq!(encode_entry(&file).unwrap(), want);
    }

    #[test]
    fn names_that_are_not_utf8_are_left_to_the_serializer() {
        use std::os::unix::ffi::OsStringExt;
        let dir = Entry::Dir {
            mode: 0o40755,
            names: vec![OsString::from_vec(b"bad\xff".to_vec())],
        };
        assert!(encode_entry(&dir).is_none());
    }
}
