//! The sender's pre-order tree walk (`lstat` based, symlinks never followed).

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::{Error, Result};

/// What `lstat` reports for a regular file, in the shape the protocol sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileInfo {
    /// Full `st_mode`, file-type bits included.
    pub mode: u32,
    /// `st_mtime` as the float Python's `os.lstat` computes (`sec + nsec * 1e-9`), so that the
    /// receiver's float comparison after `os.utime` round-trips.
    pub mtime: f64,
    /// `st_size`.
    pub size: u64,
}

/// One item of the directory-structure stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A directory: its `st_mode` and the names kept by the filter, in `readdir` order. The
    /// entries for those names follow, in the same order.
    Dir {
        /// Full `st_mode`.
        mode: u32,
        /// Kept entry names.
        names: Vec<OsString>,
    },
    /// A regular file.
    File(FileInfo),
    /// A symlink; its path is the next element of [`Walk::links`].
    Link,
    /// The entry vanished between listing and `lstat`.
    Vanished,
}

/// The result of a walk: the structure stream and the paths of the symlinks met, in walk order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walk {
    /// Pre-order structure items; the first describes the root.
    pub entries: Vec<Entry>,
    /// Full paths (root joined with the relative components) of every [`Entry::Link`].
    pub links: Vec<PathBuf>,
}

impl FileInfo {
    fn from_metadata(meta: &fs::Metadata) -> Self {
        // Same arithmetic as CPython's `fill_time`: a double from the seconds plus the
        // nanoseconds scaled by 1e-9. Computing it differently breaks the receiver's `!=` test.
        #[allow(clippy::cast_precision_loss)]
        let mtime = meta.mtime() as f64 + meta.mtime_nsec() as f64 * 1e-9;
        FileInfo {
            mode: meta.mode(),
            mtime,
            size: meta.size(),
        }
    }
}

/// Walks `root` in pre-order and calls `filter` with the full path of every directory entry
/// (never the root), all entries of a directory before descending into it, as the sender does.
/// An entry for which `filter` returns `false` is neither listed nor visited. Symlinks are
/// never followed, except `root` itself.
///
/// # Errors
///
/// [`Error::Io`] when a directory cannot be listed, [`Error::Unsupported`] for a fifo, socket or
/// device, [`Error::Filter`] when `filter` fails.
pub fn walk<F, E>(root: &Path, mut filter: F) -> Result<Walk, E>
where
    F: FnMut(&Path) -> std::result::Result<bool, E>,
{
    let mut walker = Walker::new(root);
    walker.run(&mut filter, None, None)?;
    Ok(walker.finish())
}

/// A walk that can be run in slices, so that a caller can do other work (such as checking for
/// signals) between them. [`walk`] is `Walker::new` + `run` without a deadline + `finish`.
pub struct Walker {
    stack: Vec<Pending>,
    out: Walk,
}

impl Walker {
    /// A walk of `root`, not started.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Walker {
            stack: vec![Pending::Root(root.to_path_buf())],
            out: Walk::default(),
        }
    }

    /// Walks on until the tree is done (`Ok(true)`), or `deadline` has passed or at least
    /// `limit` entries are waiting in the result (`Ok(false)`).
    ///
    /// # Errors
    ///
    /// As [`walk`]; the walker must not be run again after an error.
    pub fn run<F, E>(
        &mut self,
        filter: &mut F,
        deadline: Option<Instant>,
        limit: Option<usize>,
    ) -> Result<bool, E>
    where
        F: FnMut(&Path) -> std::result::Result<bool, E>,
    {
        let mut steps = 0u32;
        while let Some(pending) = self.stack.pop() {
            self.step(pending, filter)?;
            if limit.is_some_and(|n| self.out.entries.len() >= n) {
                return Ok(self.stack.is_empty());
            }
            steps = steps.wrapping_add(1);
            if steps % 256 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(self.stack.is_empty());
            }
        }
        Ok(true)
    }

    /// Number of entries walked and not yet taken.
    #[must_use]
    pub fn pending_items(&self) -> usize {
        self.out.entries.len()
    }

    /// Takes the entries and links walked so far out of the result.
    pub fn take(&mut self) -> Walk {
        std::mem::take(&mut self.out)
    }

    /// The result; entries not yet walked are missing from it.
    #[must_use]
    pub fn finish(self) -> Walk {
        self.out
    }

    fn step<F, E>(&mut self, pending: Pending, filter: &mut F) -> Result<(), E>
    where
        F: FnMut(&Path) -> std::result::Result<bool, E>,
    {
        // A listed entry is examined relative to its open directory (no path resolution),
        // and only now, after the filter saw all its siblings, as the protocol's walk does.
        let (meta, path) = match pending {
            // The root is followed: a source given as a symlink to a directory means that
            // directory.
            Pending::Root(path) => (fs::metadata(&path), path),
            Pending::Child(dirent, path) => (dirent.metadata(), path),
        };
        let Ok(meta) = meta else {
            self.out.entries.push(Entry::Vanished);
            return Ok(());
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let mut kept = Vec::new();
            let listing = fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
            for dirent in listing {
                let dirent = dirent.map_err(|e| Error::io(&path, e))?;
                let child = path.join(dirent.file_name());
                if filter(&child).map_err(Error::Filter)? {
                    kept.push((dirent, child));
                }
            }
            let names = kept.iter().map(|(dirent, _)| dirent.file_name()).collect();
            self.stack.extend(
                kept.into_iter()
                    .rev()
                    .map(|(dirent, child)| Pending::Child(dirent, child)),
            );
            self.out.entries.push(Entry::Dir {
                mode: meta.mode(),
                names,
            });
        } else if kind.is_file() {
            self.out
                .entries
                .push(Entry::File(FileInfo::from_metadata(&meta)));
        } else if kind.is_symlink() {
            self.out.entries.push(Entry::Link);
            self.out.links.push(path);
        } else {
            return Err(Error::Unsupported { path });
        }
        Ok(())
    }
}

/// A walk position not yet examined.
enum Pending {
    Root(PathBuf),
    /// A listed entry and its full path; the entry keeps its directory open.
    Child(fs::DirEntry, PathBuf),
}

/// [`walk`] keeping every entry.
///
/// # Errors
///
/// As [`walk`], without [`Error::Filter`].
pub fn walk_unfiltered(root: &Path) -> Result<Walk> {
    walk(root, |_| Ok::<bool, Infallible>(true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tempdir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("execnet-rsync-walk-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(entry: &Entry) -> Vec<String> {
        match entry {
            Entry::Dir { names, .. } => names
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect(),
            other => panic!("not a directory: {other:?}"),
        }
    }

    #[test]
    fn preorder_in_readdir_order() {
        let root = tempdir("order");
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/inner"), b"12345").unwrap();
        fs::write(root.join("top"), b"x").unwrap();
        symlink("top", root.join("link")).unwrap();
        let walk = walk_unfiltered(&root).unwrap();
        let listed: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names(&walk.entries[0]), listed);
        assert_eq!(walk.entries.len(), 5);
        let mut expect = 1;
        for name in &listed {
            match name.as_str() {
                "sub" => {
                    assert_eq!(names(&walk.entries[expect]), vec!["inner".to_string()]);
                    match &walk.entries[expect + 1] {
                        Entry::File(info) => assert_eq!(info.size, 5),
                        other => panic!("{other:?}"),
                    }
                    expect += 2;
                }
                "top" => {
                    assert!(matches!(
                        walk.entries[expect],
                        Entry::File(FileInfo { size: 1, .. })
                    ));
                    expect += 1;
                }
                "link" => {
                    assert_eq!(walk.entries[expect], Entry::Link);
                    expect += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(walk.links, vec![root.join("link")]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn filter_sees_full_paths_and_prunes() {
        let root = tempdir("filter");
        fs::create_dir(root.join("skip")).unwrap();
        fs::write(root.join("skip/deep"), b"").unwrap();
        fs::write(root.join("keep"), b"").unwrap();
        let mut seen = Vec::new();
        let walk = walk(&root, |p: &Path| {
            seen.push(p.to_path_buf());
            Ok::<_, ()>(!p.ends_with("skip"))
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, vec![root.join("keep"), root.join("skip")]);
        assert_eq!(names(&walk.entries[0]), vec!["keep".to_string()]);
        assert_eq!(walk.entries.len(), 2);
        let err = super::walk(&root, |_| Err::<bool, _>("boom")).unwrap_err();
        assert!(matches!(err, Error::Filter("boom")));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn vanished_unsupported_and_unreadable() {
        let root = tempdir("odd");
        fs::write(root.join("gone"), b"").unwrap();
        let walk = walk(&root, |p: &Path| {
            let _ = fs::remove_file(p);
            Ok::<_, ()>(true)
        })
        .unwrap();
        assert_eq!(walk.entries[1], Entry::Vanished);

        let missing = walk_unfiltered(&root.join("nope")).unwrap();
        assert_eq!(missing.entries, vec![Entry::Vanished]);

        let fifo = root.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        match walk_unfiltered(&root) {
            Err(Error::Unsupported { path }) => assert_eq!(path, fifo),
            other => panic!("{other:?}"),
        }
        fs::remove_file(&fifo).unwrap();

        let locked = root.join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads any directory; only an unprivileged user sees the listing fail.
        if fs::read_dir(&locked).is_err() {
            assert!(matches!(walk_unfiltered(&root), Err(Error::Io { .. })));
        }
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sliced_walk_equals_whole_walk() {
        let root = tempdir("sliced");
        for d in 0..20 {
            let sub = root.join(format!("d{d}"));
            fs::create_dir(&sub).unwrap();
            for f in 0..40 {
                fs::write(sub.join(format!("f{f}")), b"x").unwrap();
            }
        }
        let whole = walk_unfiltered(&root).unwrap();
        let mut walker = Walker::new(&root);
        let mut slices = 0;
        let mut keep = |_: &Path| Ok::<bool, ()>(true);
        while !walker.run(&mut keep, Some(Instant::now()), None).unwrap() {
            slices += 1;
        }
        assert!(slices >= 2, "{slices}");
        assert_eq!(walker.finish(), whole);

        let mut walker = Walker::new(&root);
        let mut joined = Walk::default();
        loop {
            let done = walker.run(&mut keep, None, Some(100)).unwrap();
            let part = walker.take();
            assert!(part.entries.len() <= 100);
            joined.entries.extend(part.entries);
            joined.links.extend(part.links);
            if done {
                break;
            }
        }
        assert_eq!(joined, whole);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn file_info_matches_lstat() {
        let root = tempdir("info");
        let file = root.join("f");
        fs::write(&file, b"abc").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let walk = walk_unfiltered(&file).unwrap();
        let meta = fs::symlink_metadata(&file).unwrap();
        match walk.entries[0] {
            Entry::File(info) => {
                assert_eq!(info.mode, 0o100_640);
                assert_eq!(info.size, 3);
                #[allow(clippy::cast_precision_loss)]
                let secs = meta.mtime() as f64;
                assert!((info.mtime - secs).abs() < 1.0);
            }
            ref other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
