"""Private extension module of execnet (Rust engine). Not a public API."""

from collections.abc import Callable, Sequence
from os import PathLike
from types import CodeType
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

# -- compile (src/py/compile.rs) ---------------------------------------------------------------

def compile_exec(source: object, filename: object, future_flags: int) -> CodeType | None:
    """``compile(source, filename, "exec")`` as called from code with the ``__future__`` flags
    ``future_flags``, without the builtin's one-time set-up of the ``ast`` types; None when
    ``source`` or ``filename`` is not a ``str`` without NUL characters."""

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
    With ``encoded=True`` each item is ``dumps_internal(item)`` instead (``bytes``), except one
    the serializer would reject (a name that is not UTF-8), which stays the Python value.
    """

    def __new__(
        cls,
        root: str | PathLike[str],
        filter: Callable[[str], object] | None = None,
        chunk: int = 4096,
        encoded: bool = False,
    ) -> TreeWalk: ...
    def __iter__(self) -> TreeWalk: ...
    def __next__(self) -> tuple[list[Any], list[str]]: ...

def md5_file(path: str | PathLike[str]) -> bytes:
    """MD5 digest (16 raw bytes) of the file's content; ``OSError`` if it cannot be read."""

def md5_files(paths: Sequence[str | PathLike[str]]) -> list[bytes | None]:
    """MD5 digests of many files, hashed in parallel; ``None`` for files that cannot be read."""

def file_payload(path: str | PathLike[str]) -> bytes | None:
    """The file's content serialized as a ``bytes`` value (``dumps_internal(content)``), read
    straight into the message; ``None`` if it cannot be read, ``OverflowError`` from 2 GiB."""

def file_payloads(
    paths: Sequence[str | PathLike[str]], limit: int, threads: int = 1
) -> list[bytes | None]:
    """``file_payload`` of each file of at most ``limit`` bytes, read on up to ``threads``
    threads; ``None`` for a larger file or one that cannot be read."""

# -- gateway I/O core (src/py/mux.rs) ----------------------------------------------------------

@final
class ChannelQueue:
    """A channel's receive queue (unbounded, FIFO, thread-safe).

    Holds objects `put` by Python and CHANNEL_DATA payloads queued by a `Mux` reader thread
    without the GIL; payloads are decoded when taken, with the `strconfig` in force when they
    arrived. Created by `Mux.queue()` (routed) or directly (not routed).
    """

    strconfig: tuple[bool, bool]
    """`(py2str_as_py3str, py3str_as_py2str)` for payloads queued from now on."""

    def __new__(cls, strconfig: tuple[bool, bool] = ...) -> ChannelQueue: ...
    def put(self, item: Any) -> None:
        """Append any object."""
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item, like `queue.Queue.get`.

        Waits with the GIL released and runs signal handlers at least every 50 ms (Ctrl-C
        works). Raises `queue.Empty` on timeout or when non-blocking and empty, `ValueError`
        for a negative timeout, and whatever decoding a queued payload raises.
        """
    def qsize(self) -> int:
        """Number of queued items."""
    def empty(self) -> bool:
        """Whether nothing is queued."""

@final
class Mux:
    """One gateway connection: a reader thread that routes incoming frames, and whole-frame
    writes under a write lock.

    Both descriptors are duplicated (close-on-exec), so the caller may close its own file
    objects independently; the duplicates are closed by `close_read()`, `close_write()` and when
    the object goes away. `is_socket=None` detects sockets from the descriptors.
    """

    def __new__(cls, read_fd: int, write_fd: int, is_socket: bool | None = None) -> Mux: ...
    def send(self, code: int, channelid: int, payload: bytes, defer: bool = False) -> None:
        """Send one frame (header and payload) as a whole; frames from concurrent callers never
        interleave, and each caller's frames leave in the order it sent them.

        A frame sent on its own is written at once: with the GIL held when the descriptor can
        take it right away, otherwise with the GIL released, signal handlers running at least
        every 50 ms (Ctrl-C in the middle of a frame leaves the write side unusable: later sends
        raise OSError). Frames up to 16 KiB sent within 10 µs of the previous send (a burst),
        or while earlier ones wait, are buffered and written in batches by a writer thread
        (named `execnet-mux-writer`, started on first use); a sender waits once 64 KiB are
        buffered. `defer=True` buffers any frame up to 16 KiB, burst or not, and never waits
        (for sends from garbage-collector callbacks). `ValueError` for a code outside 0..7,
        `OverflowError` for a channel id outside int32, `OSError` (or a subclass such as
        `BrokenPipeError`) when the write fails, an earlier buffered write failed, or the write
        side is closed.
        """
    def send_item(self, channelid: int, item: object) -> None:
        """Encode `item` in the internal form and send it as CHANNEL_DATA on `channelid`, as
        `send(4, channelid, dumps_internal(item))` does, without the intermediate bytes object;
        raises what `dumps_internal` raises (nothing is sent then)."""
    def flush(self) -> None:
        """Wait until every frame buffered by `send()` is written; raise as `send()` does."""
    def start(
        self,
        dispatch: Callable[[int, int, bytes], object],
        on_exit: Callable[[BaseException | None], object],
    ) -> None:
        """Start the reader thread (named `execnet-mux-reader`).

        A CHANNEL_DATA frame for a routed channel whose payload is under 256 KiB and decodes
        without Python help (no channel references) goes straight into that channel's queue;
        every other frame is passed to `dispatch(code, channelid, payload)` in the reader thread,
        in wire order (frames already buffered are dispatched in one go, holding the GIL once). The reader
        ends, calling `on_exit(exc_or_None)` exactly once, on: end of stream (`EOFError`
        "couldn't load message header, expected 9 bytes, got N" or "expected N bytes, got M"),
        a malformed header (`ValueError`), a read error (`OSError`), an exception raised by
        `dispatch` (that exception), or `close_read()` (`None`). Exceptions from `on_exit` go to
        `sys.unraisablehook`. During interpreter shutdown the reader stops without calling
        anything. `RuntimeError` if already started, `OSError` if the read side is closed.
        """
    def queue(self, channelid: int, strconfig: tuple[bool, bool] = ...) -> ChannelQueue:
        """Create the queue of `channelid` and route its plain data there from now on
        (replacing an earlier route of that id)."""
    def route_callback(
        self,
        channelid: int,
        callback: Callable[[Any], object],
        on_error: Callable[[int, Exception], object],
        strconfig: tuple[bool, bool] = ...,
    ) -> None:
        """Deliver the plain data of `channelid` from now on to `callback(item)`, called in the
        reader thread with the item decoded there (with `strconfig`); an `Exception` raised by
        the callback goes to `on_error(channelid, exc)`, any other exception ends the reader as
        one raised by `dispatch` does. Data that needs Python to decode (channel references)
        still goes to `dispatch`. Replaces an earlier route (queue or callback) of that id;
        `unroute` removes it."""
    def in_reader_thread(self) -> bool:
        """Whether the calling thread is this mux's reader thread."""
    def unroute(self, channelid: int) -> None:
        """Stop routing `channelid`: once this returns, its data goes to `dispatch`. Items
        already queued stay in the queue."""
    def join(self, timeout: float | None = None) -> bool:
        """Wait until the reader has finished (including `on_exit`); return whether it has.

        A reader never started counts as finished. The GIL is released while waiting; signal
        handlers run at least every 50 ms. `RuntimeError` when called from the reader thread.
        """
    def stats(self) -> dict[str, int]:
        """Counters: `frames_received`, `bytes_received` (headers included), `frames_queued`
        (put into a channel queue without Python), `frames_dispatched`, `frames_sent`,
        `bytes_sent`, `frames_buffered` (sent through the burst buffer), `batches_written`
        (writes of buffered frames), `bytes_written` (bytes the descriptor took so far),
        `frames_called_back` (data passed to a callback route without `dispatch`)."""
    def is_alive(self) -> bool:
        """Whether the reader thread is running."""
    def close_read(self) -> None:
        """Stop the reader (it calls `on_exit(None)` unless it already ended) and close the
        read descriptor; a socket's reading direction is shut down. Idempotent; may be called
        from `dispatch`."""
    def close_write(self) -> None:
        """Write what `send()` buffered (waiting at most 1 s for a peer that does not read),
        then close the write descriptor; a socket's sending direction is shut down, so the peer
        sees end of stream. Later sends raise OSError. Idempotent."""

def _after_fork_in_child() -> None:
    """Run in the child of `os.fork()` (registered with `os.register_at_fork` on import):
    every existing `Mux` then belongs to the parent and refuses to be used."""
