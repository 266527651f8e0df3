"""Private extension module of execnet (Rust engine). Not a public API."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, Protocol, final

__version__: str

class _ChannelFactory(Protocol):
    def new(self, id: int) -> Any: ...

def dumps(obj: object) -> bytes:
    """Serializes ``obj`` in execnet's versioned format (version byte ``\\x02``, then the
    internal form). Raises ``execnet.gateway_base.DumpError`` for what execnet cannot serialize
    (dispatch is on the exact type; any class named ``Channel`` travels as a channel id)."""

def dumps_internal(obj: object) -> bytes:
    """Serializes ``obj`` in the unversioned internal form used in message payloads."""

def loads(
    data: bytes | bytearray | memoryview,
    py2str_as_py3str: bool = False,
    py3str_as_py2str: bool = False,
) -> Any:
    """Deserializes the versioned form. Raises ``LoadError``, ``EOFError``, ``struct.error``,
    ``UnicodeDecodeError``, ``ValueError``, ``TypeError`` or ``IndexError`` where execnet 2.1.2
    does."""

def loads_internal(
    data: bytes | bytearray | memoryview,
    channelfactory: _ChannelFactory | None = None,
    strconfig: tuple[bool, bool] | None = None,
) -> Any:
    """Deserializes the internal form; ``CHANNEL`` opcodes call ``channelfactory.new(id)``
    (``AssertionError`` without a factory). ``strconfig`` is ``(py2str_as_py3str,
    py3str_as_py2str)``; ``None`` means the default ``(True, False)``."""

def _scan(data: bytes | bytearray | memoryview) -> tuple[bool, bool]:
    """Validates an internal-form payload without building objects; returns ``(channel_refs,
    needs_python_check)`` or raises what decoding would raise."""

# -- rsync (src/py/rsync.rs) -------------------------------------------------------------------

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
