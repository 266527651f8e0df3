//! File contents in the form the sender puts them on the channel: execnet's serialization of a
//! `bytes` value (`A`, a big-endian `i32` length, the data, then `STOP`), built while the file is
//! read so that the content is copied once, from the file into the message.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

/// Serializer opcode of a `bytes` value.
pub const BYTES: u8 = b'A';
/// Serializer opcode that ends a value.
pub const STOP: u8 = b'Q';
/// Bytes in front of the content: the opcode and the length.
pub const HEADER_LEN: usize = 5;
/// Bytes around the content: the header and `STOP`.
pub const OVERHEAD: usize = HEADER_LEN + 1;
/// The longest content the serializer can encode (its length field is an `i32`).
pub const MAX_CONTENT: u64 = i32::MAX as u64;

/// The header for `len` bytes of content; `None` when the serializer cannot encode that many.
#[must_use]
pub fn header(len: usize) -> Option<[u8; HEADER_LEN]> {
    let len = i32::try_from(len).ok()?;
    let mut out = [BYTES, 0, 0, 0, 0];
    out[1..].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

/// The whole payload for `data`; `None` when it is too long to encode.
#[must_use]
pub fn encode(data: &[u8]) -> Option<Vec<u8>> {
    let head = header(data.len())?;
    let mut out = Vec::with_capacity(data.len() + OVERHEAD);
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out.push(STOP);
    Some(out)
}

/// Fills `buf` from `file`; returns how many bytes were read, fewer than `buf.len()` only at
/// the end of the file.
///
/// # Errors
///
/// The first read error other than `Interrupted`.
pub fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether `file` has no more bytes to read.
///
/// # Errors
///
/// A read error other than `Interrupted`.
pub fn at_end(file: &mut File) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    Ok(read_full(file, &mut probe)? == 0)
}

/// The payload of the file at `path` if it holds at most `limit` bytes: `Ok(None)` for a
/// larger file (the caller reads it in place instead).
///
/// # Errors
///
/// When the file cannot be opened or read.
pub fn read_small(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit || len > MAX_CONTENT {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let Some(head) = header(len) else {
        return Ok(None);
    };
    let mut out = vec![0u8; len + OVERHEAD];
    out[..HEADER_LEN].copy_from_slice(&head);
    let got = read_full(&mut file, &mut out[HEADER_LEN..HEADER_LEN + len])?;
    if got == len && at_end(&mut file)? {
        out[HEADER_LEN + len] = STOP;
        return Ok(Some(out));
    }
    // It changed size while being read: take what it holds now.
    let data = std::fs::read(path)?;
    if data.len() as u64 > limit {
        return Ok(None);
    }
    Ok(encode(&data))
}

/// What [`read_small`] returns for one file.
pub type SmallRead = io::Result<Option<Vec<u8>>>;

/// [`read_small`] for many files, in input order, on up to `threads` threads.
#[must_use]
pub fn read_small_files(paths: &[PathBuf], limit: u64, threads: usize) -> Vec<SmallRead> {
    let workers = threads.min(paths.len() / MIN_FILES_PER_THREAD).max(1);
    if workers < 2 {
        return paths.iter().map(|p| read_small(p, limit)).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<SmallRead>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(index) else { break };
                let result = read_small(path, limit);
                if let Some(slot) = slots.get(index) {
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| Err(io::Error::other("not read")))
        })
        .collect()
}

/// Fewer files than this per thread are read by the calling thread alone.
const MIN_FILES_PER_THREAD: usize = 32;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn header_and_encode() {
        assert_eq!(header(0), Some([b'A', 0, 0, 0, 0]));
        assert_eq!(header(0x0102_0304), Some([b'A', 1, 2, 3, 4]));
        assert_eq!(
            header(i32::MAX as usize),
            Some([b'A', 0x7f, 0xff, 0xff, 0xff])
        );
        assert_eq!(header(i32::MAX as usize + 1), None);
        assert_eq!(encode(b"xy"), Some(b"A\x00\x00\x00\x02xyQ".to_vec()));
        assert_eq!(encode(b""), Some(b"A\x00\x00\x00\x00Q".to_vec()));
    }

    #[test]
    fn reads_whole_files_and_notices_the_end() {
        let dir =
            std::env::temp_dir().join(format!("execnet-rsync-payload-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&path, &data).unwrap();
        let mut file = File::open(&path).unwrap();
        let mut buf = vec![0u8; 100_000];
        assert_eq!(read_full(&mut file, &mut buf).unwrap(), 100_000);
        assert_eq!(buf[..], data[..100_000]);
        assert!(!at_end(&mut file).unwrap());
        let mut rest = vec![0u8; 300_000];
        assert_eq!(read_full(&mut file, &mut rest).unwrap(), 199_999);
        assert!(at_end(&mut file).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn small_files_in_batches() {
        let dir = std::env::temp_dir().join(format!("execnet-rsync-small-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        for i in 0..100usize {
            let path = dir.join(format!("f{i}"));
            fs::write(&path, vec![(i % 256) as u8; i * 10]).unwrap();
            paths.push(path);
        }
        paths.push(dir.join("missing"));
        for threads in [1, 4] {
            let got = read_small_files(&paths, 500, threads);
            assert_eq!(got.len(), 101);
            for (i, result) in got.iter().take(100).enumerate() {
                let result = result.as_ref().unwrap();
                if i * 10 > 500 {
                    assert!(result.is_none());
                } else {
                    assert_eq!(
                        result.as_deref(),
                        encode(&vec![(i % 256) as u8; i * 10]).as_deref()
                    );
                }
            }
            assert!(got[100].is_err());
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
