"""Private extension module of execnet (Rust engine). Not a public API."""

__version__: str

# -- rsync (src/py/rsync.rs) -------------------------------------------------------------------

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, final

def walk_tree(
    root: str | PathLike[str], filter: Callable[[str], object] | None = None
) -> tuple[list[Any], list[str]]:
    """Walk ``root`` (lstat, symlinks not followed) and return ``(items, links)``.

    ``items`` is the RSync directory-structure stream in pre-order: ``[st_mode, name, ...]`` for
    a directory (names in ``os.listdir`` order, then one item per name), ``(st_mode, st_mtime,
    st_size)`` for a regular file, ``None`` for a symlink and ``(None, 0, 0)`` for an entry that
    vanished before it could be examined. ``links`` holds the full paths of the symlinks in walk
    order. ``filter`` (called with the full path of every entry below ``root``) drops the entries
    it returns a false value for; without it the walk runs with the GIL released. Raises
    ``ValueError("cannot sync '<path>'")`` for fifos, sockets and devices and ``OSError`` when a
    directory cannot be listed.
    """

@final
class TreeWalk:
    """The walk of :func:`walk_tree` in parts of about ``chunk`` items.

    Iterating yields ``(items, links)`` pairs that, joined, equal ``walk_tree(root, filter)``;
    the tree is walked as the parts are taken (without the GIL when there is no ``filter``).
    """

    def __new__(
        cls,
        root: str | PathLike[str],
        filter: Callable[[str], object] | None = None,
        chunk: int = 4096,
    ) -> TreeWalk: ...
    def __iter__(self) -> TreeWalk: ...
    def __next__(self) -> tuple[list[Any], list[str]]: ...

def md5_file(path: str | PathLike[str]) -> bytes:
    """MD5 digest (16 raw bytes) of the file's content; ``OSError`` if it cannot be read."""

def md5_files(paths: Sequence[str | PathLike[str]]) -> list[bytes | None]:
    """MD5 digests of many files, hashed in parallel; ``None`` for files that cannot be read."""
