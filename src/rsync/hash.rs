//! MD5 of files and buffers; batches of files are hashed on several threads.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use md5::{Digest as _, Md5};

use super::error::{Error, Result};

/// A raw 16-byte MD5 digest, as `hashlib.md5(data).digest()` returns it.
pub type Digest = [u8; 16];

/// Read size for hashing: large enough to amortise the syscall, small enough to stay in cache.
const CHUNK: usize = 256 * 1024;

/// Below this many bytes in a batch, starting threads costs more than it saves.
const PARALLEL_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// MD5 of a buffer.
#[must_use]
pub fn md5_bytes(data: &[u8]) -> Digest {
    Md5::digest(data).into()
}

/// MD5 of the whole content of the file at `path`.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be opened or read.
pub fn md5_file(path: &Path) -> Result<Digest> {
    hash_reader(File::open(path).map_err(|e| Error::io(path, e))?).map_err(|e| Error::io(path, e))
}

fn hash_reader(mut reader: impl Read) -> io::Result<Digest> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// MD5 of each file in `paths`, in input order, each `Ok` or the error for that file.
///
/// Hashing runs on up to `available_parallelism()` threads when the batch is large enough for
/// that to pay; the result is the same either way.
#[must_use]
pub fn md5_files(paths: &[PathBuf]) -> Vec<Result<Digest>> {
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let workers = thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(paths.len());
    if workers < 2 || total < PARALLEL_MIN_BYTES {
        return paths.iter().map(|p| md5_file(p)).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Digest>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(index) else { break };
                let digest = md5_file(path);
                if let Some(slot) = slots.get(index) {
                    *slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(digest);
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(paths)
        .map(|(slot, path)| {
            slot.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unwrap_or_else(|| Err(Error::io(path, io::Error::other("not hashed"))))
        })
        .collect()
}

/// The whole content of the file at `path`.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be opened or read.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    fn hex(d: &Digest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(hex(&md5_bytes(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5_bytes(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn files_serial_and_parallel_agree() {
        let dir = std::env::temp_dir().join(format!("execnet-rsync-hash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        let mut expected = Vec::new();
        for i in 0..12u32 {
            let data: Vec<u8> = (0..(i as usize * 700_001))
                .map(|j| (j % 251) as u8)
                .collect();
            let path = dir.join(format!("f{i}"));
            fs::write(&path, &data).unwrap();
            expected.push(md5_bytes(&data));
            paths.push(path);
        }
        paths.push(dir.join("missing"));
        let got = md5_files(&paths);
        assert_eq!(got.len(), paths.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.as_ref().unwrap(), e);
        }
        assert!(matches!(got.last(), Some(Err(Error::Io { .. }))));
        assert_eq!(md5_file(&paths[3]).unwrap(), expected[3]);
        assert_eq!(read_file(&paths[2]).unwrap().len(), 2 * 700_001);
        assert!(md5_files(&[]).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
