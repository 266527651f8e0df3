"""The execnet worker runtime: IO, message framing, serializer, channels and gateways.

This module ships as source. Its text is sent to remote interpreters at bootstrap and executed
there (in ``__main__``, or imported as the top-level module ``gateway_base``), so it must stay a
single, self-contained, stdlib-only file that runs on Python 3.8 and later: no package or
relative imports at module level, no syntax newer than 3.8.

When it is imported as ``execnet.gateway_base`` and the native extension ``execnet._core``
provides the codec, the module-level serializer functions use it; the pure-Python codec below is
the reference and the path every shipped-source worker runs.

Exceptions::

    Exception
    +-- RemoteError            an error raised by the peer, carried as formatted text
    +-- DataFormatError
    |   +-- DumpError          an object cannot be serialized
    |   +-- LoadError          malformed serialized data
    +-- OSError
        +-- TimeoutError       a receive/waitclose/get timed out
"""

from __future__ import annotations

import abc
import os
import sys
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]
from _weakref import ref as _weakref
from _weakrefset import WeakSet
from io import BytesIO

# Every popen worker imports this module while its master waits: ``typing``, ``collections.abc``
# and ``traceback`` would cost more than the module itself, so they are for type checkers only
# or imported where needed (type checkers treat any name TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, Protocol

# ---------------------------------------------------------------------------------------------
# tracing (EXECNET_DEBUG is read once, at import)
# ---------------------------------------------------------------------------------------------

DEBUG = os.environ.get("EXECNET_DEBUG")
pid = os.getpid()

if DEBUG == "2":

    def trace(*msg: object) -> None:
        """Write a trace line, prefixed with the process id, to stderr."""
        try:
            line = " ".join(map(str, msg))
            sys.stderr.write(f"[{pid}] {line}\n")
            sys.stderr.flush()
        except Exception:
            pass

elif DEBUG:
    import tempfile

    fn = os.path.join(tempfile.gettempdir(), "execnet-debug-%d" % pid)
    debugfile = open(fn, "w")

    def trace(*msg: object) -> None:
        """Append a trace line to the per-process debug file."""
        try:
            line = " ".join(map(str, msg))
            debugfile.write(line + "\n")
            debugfile.flush()
        except Exception as exc:
            try:
                sys.stderr.write(f"[{pid}] exception during tracing: {exc!r}\n")
            except Exception:
                pass

else:

    def notrace(*msg: object) -> None:
        """Tracing is off: do nothing."""

    trace = notrace


# ---------------------------------------------------------------------------------------------
# exceptions
# ---------------------------------------------------------------------------------------------

INTERRUPT_TEXT = "keyboard-interrupted"
MAIN_THREAD_ONLY_DEADLOCK_TEXT = (
    "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
)

sysex = (KeyboardInterrupt, SystemExit)


class RemoteError(Exception):
    """An exception raised in the remote interpreter, carried as its formatted traceback."""

    def __init__(self, formatted: str) -> None:
        super().__init__()
        self.formatted = formatted

    def __str__(self) -> str:
        return self.formatted

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}: {self.formatted}"

    def warn(self) -> None:
        """Report this error on stderr (unless it is the keyboard-interrupt marker)."""
        if self.formatted != INTERRUPT_TEXT:
            sys.stderr.write(f"[{os.getpid()}] Warning: unhandled {self!r}\n")


class TimeoutError(IOError):
    """A blocking operation did not finish within its timeout."""


class DataFormatError(Exception):
    """Base class of the serializer errors."""


class DumpError(DataFormatError):
    """An object could not be serialized."""


class LoadError(DataFormatError):
    """Serialized data could not be loaded."""


class GatewayReceivedTerminate(Exception):
    """The receiver got a GATEWAY_TERMINATE message."""


def geterrortext(
    exc: BaseException,
    format_exception: Callable[..., list[str]] | None = None,
    sysex: tuple[type[BaseException], ...] = sysex,
) -> str:
    """Return the full formatted traceback of ``exc`` (or ``"Type: text"`` if that fails).

    ``format_exception`` defaults to :func:`traceback.format_exception`.
    """
    try:
        if format_exception is None:
            import traceback

            format_exception = traceback.format_exception
        lines = format_exception(type(exc), exc, exc.__traceback__)
        errortext = "".join(lines)
    except sysex:
        raise
    except BaseException:
        errortext = f"{type(exc).__name__}: {exc}"
    return errortext


# ---------------------------------------------------------------------------------------------
# execution models
# ---------------------------------------------------------------------------------------------


class ExecModel(metaclass=abc.ABCMeta):
    """How threads, queues, locks, events and file objects are made (threads or greenlets)."""

    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """The model's name: ``thread``, ``main_thread_only``, ``eventlet`` or ``gevent``."""

    def __repr__(self) -> str:
        return "<ExecModel %r>" % self.backend

    @property
    @abc.abstractmethod
    def queue(self) -> Any:
        """A module offering ``Queue`` and ``Empty``."""

    @property
    @abc.abstractmethod
    def subprocess(self) -> Any:
        """The subprocess module to use."""

    @property
    @abc.abstractmethod
    def socket(self) -> Any:
        """The socket module to use."""

    @abc.abstractmethod
    def start(self, func: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        """Run ``func(*args)`` in a new thread (or greenlet), fire and forget."""

    @abc.abstractmethod
    def get_ident(self) -> int:
        """Identify the current thread (or greenlet)."""

    @abc.abstractmethod
    def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds."""

    @abc.abstractmethod
    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        """Open a file object on a file descriptor."""

    @abc.abstractmethod
    def Lock(self) -> Any:
        """A new lock."""

    @abc.abstractmethod
    def RLock(self) -> Any:
        """A new re-entrant lock."""

    @abc.abstractmethod
    def Event(self) -> Event:
        """A new event."""


class ThreadExecModel(ExecModel):
    """Native threads (started with ``_thread``, so nothing joins them at exit)."""

    backend = "thread"

    @property
    def queue(self) -> Any:
        import queue

        return queue

    @property
    def subprocess(self) -> Any:
        import subprocess

        return subprocess

    @property
    def socket(self) -> Any:
        import socket

        return socket

    def get_ident(self) -> int:
        import _thread

        return _thread.get_ident()

    def sleep(self, delay: float) -> None:
        import time

        time.sleep(delay)

    def start(self, func: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        import _thread

        _thread.start_new_thread(func, args)

    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        encoding = None if "b" in mode else "utf-8"
        return os.fdopen(fd, mode, bufsize, encoding=encoding, closefd=closefd)

    def Lock(self) -> Any:
        import threading

        # A re-entrant lock: channel code may send from inside a callback that already sends.
        return threading.RLock()

    def RLock(self) -> Any:
        import threading

        return threading.RLock()

    def Event(self) -> Event:
        import threading

        return threading.Event()


class MainThreadOnlyExecModel(ThreadExecModel):
    """Threads, but every ``remote_exec`` runs in the worker's main thread, one at a time."""

    backend = "main_thread_only"


class EventletExecModel(ExecModel):
    """Eventlet green threads."""

    backend = "eventlet"

    def __init__(self) -> None:
        import eventlet

        self.eventlet = eventlet

    @property
    def queue(self) -> Any:
        return self.eventlet.queue

    @property
    def subprocess(self) -> Any:
        import eventlet.green.subprocess

        return eventlet.green.subprocess

    @property
    def socket(self) -> Any:
        import eventlet.green.socket

        return eventlet.green.socket

    def get_ident(self) -> int:
        import eventlet.green.thread

        return eventlet.green.thread.get_ident()  # type: ignore[no-any-return]

    def sleep(self, delay: float) -> None:
        self.eventlet.sleep(delay)

    def start(self, func: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        self.eventlet.spawn_n(func, *args)

    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        import eventlet.green.os

        return eventlet.green.os.fdopen(fd, mode, bufsize, closefd=closefd)

    def Lock(self) -> Any:
        import eventlet.green.threading

        return eventlet.green.threading.RLock()

    def RLock(self) -> Any:
        import eventlet.green.threading

        return eventlet.green.threading.RLock()

    def Event(self) -> Event:
        import eventlet.green.threading

        return eventlet.green.threading.Event()  # type: ignore[no-any-return]


class GeventExecModel(ExecModel):
    """Gevent greenlets."""

    backend = "gevent"

    def __init__(self) -> None:
        import gevent

        self.gevent = gevent

    @property
    def queue(self) -> Any:
        import gevent.queue

        return gevent.queue

    @property
    def subprocess(self) -> Any:
        import gevent.subprocess

        return gevent.subprocess

    @property
    def socket(self) -> Any:
        import gevent

        return gevent.socket

    def get_ident(self) -> int:
        import gevent.thread

        return gevent.thread.get_ident()  # type: ignore[no-any-return]

    def sleep(self, delay: float) -> None:
        self.gevent.sleep(delay)

    def start(self, func: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        self.gevent.spawn(func, *args)

    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        # FileObject (cooperative, on the event loop), not FileObjectThread: the thread-pool
        # variant hangs at interpreter shutdown and makes workers exit with status 120.
        import gevent.fileobject

        return gevent.fileobject.FileObject(fd, mode, bufsize, close=closefd)

    def Lock(self) -> Any:
        import gevent.lock

        return gevent.lock.RLock()

    def RLock(self) -> Any:
        import gevent.lock

        return gevent.lock.RLock()

    def Event(self) -> Event:
        import gevent.event

        return gevent.event.Event()  # type: ignore[no-any-return]


_EXECMODELS: dict[str, Callable[[], ExecModel]] = {
    "thread": ThreadExecModel,
    "main_thread_only": MainThreadOnlyExecModel,
    "eventlet": EventletExecModel,
    "gevent": GeventExecModel,
}


def get_execmodel(backend: str | ExecModel) -> ExecModel:
    """Return a new exec model for the name ``backend`` (an ``ExecModel`` is returned as is)."""
    if isinstance(backend, ExecModel):
        return backend
    factory = _EXECMODELS.get(backend)
    if factory is None:
        raise ValueError(f"unknown execmodel {backend!r}")
    return factory()


# ---------------------------------------------------------------------------------------------
# worker pool
# ---------------------------------------------------------------------------------------------


class Reply:
    """The result of a task spawned in a :class:`WorkerPool`."""

    def __init__(
        self,
        task: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]],
        threadmodel: ExecModel,
    ) -> None:
        self.task = task
        self._result_ready = threadmodel.Event()
        self.running = True
        self._result: Any = None
        self._exc: BaseException | None = None
        self._epilogue = False

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the task; return its result or re-raise its exception."""
        self.waitfinish(timeout)
        if self._exc is not None:
            raise self._exc
        return self._result

    def waitfinish(self, timeout: float | None = None) -> None:
        """Wait for the task to finish; ``OSError`` on timeout."""
        if not self._result_ready.wait(timeout):
            raise OSError(f"timeout waiting for {self.task!r}")

    def run(self) -> None:
        """Run the task, recording its result or exception."""
        func, args, kwargs = self.task
        try:
            try:
                self._result = func(*args, **kwargs)
            except BaseException as exc:
                self._exc = exc
        finally:
            self.running = False
            self._result_ready.set()


class WorkerPool:
    """Runs tasks in threads (or greenlets) of an exec model.

    With ``hasprimary=True`` one thread can integrate itself as the *primary thread*
    (:meth:`integrate_as_primary_thread`): tasks are handed to it whenever it is idle, and with
    the ``main_thread_only`` model every task goes to it, one at a time.
    """

    def __init__(self, execmodel: ExecModel, hasprimary: bool = False) -> None:
        self.execmodel = execmodel
        self._running_lock = execmodel.Lock()
        self._running: set[Reply] = set()
        self._shuttingdown = False
        self._waitall_events: list[Event] = []
        self._primary_task: Reply | None = None
        if hasprimary:
            if execmodel.backend not in ("thread", "main_thread_only"):
                raise ValueError("hasprimary=True requires thread model")
            self._primary_ready: Event | None = execmodel.Event()
            self._primary_idle: Event | None = execmodel.Event()
            self._primary_idle.set()
        else:
            self._primary_ready = None
            self._primary_idle = None

    def integrate_as_primary_thread(self) -> None:
        """Serve tasks handed to the primary thread in the calling thread until shutdown."""
        ready = self._primary_ready
        idle = self._primary_idle
        if ready is None or idle is None:
            raise ValueError("integrate_as_primary_thread() requires hasprimary=True")
        while True:
            ready.wait()
            with self._running_lock:
                reply = self._primary_task
                if reply is None:
                    if self._shuttingdown:
                        return
                    ready.clear()
                    continue
            try:
                self._perform_spawn(reply, primary=True)
            finally:
                with self._running_lock:
                    self._primary_task = None
                    ready.clear()
                    idle.set()
                    stop = self._shuttingdown
                self._run_epilogue(reply)
            if stop:
                return

    def _wait_primary_idle(self, timeout: float | None) -> bool:
        """Wait until the primary thread has no task; False on timeout."""
        idle = self._primary_idle
        if idle is None:
            return True
        return idle.wait(timeout)

    def trigger_shutdown(self) -> None:
        """Refuse further spawns and let the primary thread leave after its current task."""
        with self._running_lock:
            self._shuttingdown = True
            if self._primary_ready is not None:
                self._primary_ready.set()

    def active_count(self) -> int:
        """The number of tasks not yet finished."""
        return len(self._running)

    def _perform_spawn(self, reply: Reply, primary: bool = False) -> None:
        reply.run()
        if not primary:
            self._run_epilogue(reply)
        with self._running_lock:
            self._running.discard(reply)
            if not self._running:
                while self._waitall_events:
                    self._waitall_events.pop().set()

    def _try_hand_to_primary(self, reply: Reply) -> bool:
        # called with _running_lock held
        if self._primary_ready is None or self._primary_idle is None:
            return False
        if self._primary_task is not None:
            return False
        self._primary_task = reply
        self._primary_idle.clear()
        self._primary_ready.set()
        return True

    @staticmethod
    def _run_epilogue(reply: Reply) -> None:
        # the epilogue is the callable the task returned; it runs after the primary thread
        # was marked idle (in other threads: right after the task)
        if not reply._epilogue or reply._exc is not None:
            return
        epilogue, reply._result = reply._result, None
        try:
            epilogue()
        except BaseException as exc:
            reply._exc = exc

    def _spawn_with_epilogue(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Reply:
        """Like :meth:`spawn`; ``func`` returns a callable run once the thread is idle."""
        reply = Reply((func, args, {}), self.execmodel)
        reply._epilogue = True
        return self._schedule(reply)

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Reply:
        """Run ``func(*args, **kwargs)`` asynchronously; return its :class:`Reply`."""
        return self._schedule(Reply((func, args, kwargs), self.execmodel))

    def _schedule(self, reply: Reply) -> Reply:
        main_only = self.execmodel.backend == "main_thread_only" and self._primary_idle is not None
        while True:
            with self._running_lock:
                if self._shuttingdown:
                    raise ValueError("pool is shutting down")
                if self._try_hand_to_primary(reply):
                    self._running.add(reply)
                    return reply
                if not main_only:
                    self._running.add(reply)
                    break
            # main_thread_only: wait for the primary thread to finish its current task
            self._wait_primary_idle(None)
        self.execmodel.start(self._perform_spawn, (reply,))
        return reply

    def terminate(self, timeout: float | None = None) -> bool:
        """Trigger shutdown and wait for running tasks; False on timeout."""
        self.trigger_shutdown()
        return self.waitall(timeout=timeout)

    def waitall(self, timeout: float | None = None) -> bool:
        """Wait until no task runs; False on timeout."""
        with self._running_lock:
            if not self._running:
                return True
            event = self.execmodel.Event()
            self._waitall_events.append(event)
        return event.wait(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# IO
# ---------------------------------------------------------------------------------------------


class Popen2IO:
    """Protocol IO over a pair of file objects (the binary layers of text files if present)."""

    error = (OSError, EOFError)

    def __init__(self, outfile: Any, infile: Any, execmodel: ExecModel) -> None:
        # we do not close outfile/infile here: the caller owns them until close_*()
        self.outfile, self.infile = outfile, infile
        if sys.platform == "win32":
            import msvcrt

            try:
                msvcrt.setmode(infile.fileno(), os.O_BINARY)  # type: ignore[attr-defined]
                msvcrt.setmode(outfile.fileno(), os.O_BINARY)  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pass
        self._inbuf = getattr(infile, "buffer", infile)
        self._outbuf = getattr(outfile, "buffer", outfile)
        self._read = self._inbuf.read
        self._write = self._outbuf.write
        self.execmodel = execmodel

    def read(self, numbytes: int) -> bytes:
        """Read exactly ``numbytes`` bytes; ``EOFError`` if the stream ends first."""
        data = self._read(numbytes)
        if len(data) == numbytes:
            return data  # type: ignore[no-any-return]
        parts = [data]
        got = len(data)
        while got < numbytes:
            more = self._read(numbytes - got)
            if not more:
                raise EOFError("expected %d bytes, got %d" % (numbytes, got))
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        """Write ``data`` and flush."""
        self._write(data)
        self._outbuf.flush()

    def close_read(self) -> None:
        self.infile.close()
        mux = getattr(self, "_mux", None)
        if mux is not None:
            mux.close_read()

    def close_write(self) -> None:
        self.outfile.close()
        mux = getattr(self, "_mux", None)
        if mux is not None:
            # the Mux writes through its own duplicate: close it too, so the peer sees EOF
            mux.close_write()

    def _mux_fds(self) -> tuple[int, int, bool | None]:
        """``(read_fd, write_fd, is_socket)`` for a native multiplexer."""
        return self.infile.fileno(), self.outfile.fileno(), None

    def wait(self) -> int | None:
        return None

    def kill(self) -> None:
        pass


def init_popen_io(execmodel: ExecModel) -> Popen2IO:
    """Take over stdin/stdout as the protocol pipes and point fds 0 and 1 at the null device.

    Output written by remote code to stdout (or fd 1) is lost rather than corrupting the
    protocol; on POSIX stderr stays connected.
    """
    if not hasattr(os, "dup"):  # jython
        io = Popen2IO(sys.stdout, sys.stdin, execmodel)
        import tempfile

        sys.stdin = tempfile.TemporaryFile("r")
        sys.stdout = tempfile.TemporaryFile("w")
        return io
    stdin = execmodel.fdopen(os.dup(0), "r", 1)
    stdout = execmodel.fdopen(os.dup(1), "w", 1)
    io = Popen2IO(stdout, stdin, execmodel)
    devnull_r = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull_r, 0)
    os.close(devnull_r)
    devnull_w = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull_w, 1)
    if sys.platform == "win32":
        sys.stderr = execmodel.fdopen(os.dup(2), "w", 1)
        os.dup2(devnull_w, 2)
    os.close(devnull_w)
    sys.stdin = execmodel.fdopen(0, "r", 1, closefd=False)
    sys.stdout = execmodel.fdopen(1, "w", 1, closefd=False)
    # this process exists to serve this IO: serve() may end it quickly (_exit_worker_process)
    io._worker_process = True  # type: ignore[attr-defined]
    return io


# ---------------------------------------------------------------------------------------------
# typing protocols (made on first use: importing typing is a large part of a worker's start-up)
# ---------------------------------------------------------------------------------------------

_PROTOCOLS = ("Event", "ReadIO", "WriteIO", "IO")


def _make_protocols() -> dict[str, type]:
    from typing import Protocol

    class Event(Protocol):
        """The event interface the execution models provide (``threading.Event`` and friends)."""

        def is_set(self) -> bool: ...

        def set(self) -> None: ...

        def clear(self) -> None: ...

        def wait(self, timeout: float | None = None) -> bool: ...

    class ReadIO(Protocol):
        """Something to read protocol bytes from."""

        def read(self, numbytes: int, /) -> bytes: ...

    class WriteIO(Protocol):
        """Something to write protocol bytes to."""

        def write(self, data: bytes, /) -> None: ...

    class IO(Protocol):
        """The transport interface a gateway runs on."""

        execmodel: ExecModel

        def read(self, numbytes: int, /) -> bytes: ...

        def write(self, data: bytes, /) -> None: ...

        def close_read(self) -> None: ...

        def close_write(self) -> None: ...

        def wait(self) -> int | None: ...

        def kill(self) -> None: ...

    protocols: dict[str, type] = {"Event": Event, "ReadIO": ReadIO, "WriteIO": WriteIO, "IO": IO}
    for name, cls in protocols.items():
        cls.__qualname__ = name
    return protocols


if TYPE_CHECKING:

    class Event(Protocol):
        """The event interface the execution models provide (``threading.Event`` and friends)."""

        def is_set(self) -> bool: ...

        def set(self) -> None: ...

        def clear(self) -> None: ...

        def wait(self, timeout: float | None = None) -> bool: ...

    class ReadIO(Protocol):
        """Something to read protocol bytes from."""

        def read(self, numbytes: int, /) -> bytes: ...

    class WriteIO(Protocol):
        """Something to write protocol bytes to."""

        def write(self, data: bytes, /) -> None: ...

    class IO(Protocol):
        """The transport interface a gateway runs on."""

        execmodel: ExecModel

        def read(self, numbytes: int, /) -> bytes: ...

        def write(self, data: bytes, /) -> None: ...

        def close_read(self) -> None: ...

        def close_write(self) -> None: ...

        def wait(self) -> int | None: ...

        def kill(self) -> None: ...


def __getattr__(name: str) -> Any:
    if name in _PROTOCOLS:
        protocols = _make_protocols()
        globals().update(protocols)
        return protocols[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------

# ``struct`` serves only the pure-Python framing and codec, so a worker on the native core never
# imports it (0.5 ms of a popen start): the packers are made by _load_struct() on first use.
_HEADER: Any = None  # struct.Struct("!bii"): code, channel id, payload length
_pack_int4: Any = None
_unpack_int4: Any = None
_pack_float: Any = None
_unpack_float: Any = None
_pack_complex: Any = None
_unpack_complex: Any = None


def _load_struct() -> Any:
    """Make the module's packers (idempotent) and return the frame header's ``Struct``."""
    global _HEADER, _pack_int4, _unpack_int4, _pack_float, _unpack_float
    global _pack_complex, _unpack_complex
    import struct

    int4, flt, cpx = struct.Struct("!i"), struct.Struct(FLOAT_FORMAT), struct.Struct(COMPLEX_FORMAT)
    _pack_int4, _unpack_int4 = int4.pack, int4.unpack
    _pack_float, _unpack_float = flt.pack, flt.unpack
    _pack_complex, _unpack_complex = cpx.pack, cpx.unpack
    _HEADER = struct.Struct("!bii")
    return _HEADER


class Message:
    """One protocol frame: ``!bii`` header (code, channel id, payload length) plus payload."""

    STATUS = 0
    RECONFIGURE = 1
    GATEWAY_TERMINATE = 2
    CHANNEL_EXEC = 3
    CHANNEL_DATA = 4
    CHANNEL_CLOSE = 5
    CHANNEL_CLOSE_ERROR = 6
    CHANNEL_LAST_MESSAGE = 7

    _types: dict[int, tuple[str, Callable[[Message, BaseGateway], None]]]

    def __init__(self, msgcode: int, channelid: int = 0, data: bytes = b"") -> None:
        self.msgcode = msgcode
        self.channelid = channelid
        self.data = data

    @staticmethod
    def from_io(io: ReadIO) -> Message:
        """Read one message; ``EOFError`` at end of stream or on a corrupt header."""
        try:
            header = io.read(9)
        except EOFError as exc:
            # a bare EOFError (no args) is wrapped too, instead of failing with IndexError
            inner = str(exc.args[0]) if exc.args else ""
            raise EOFError("couldn't load message header, " + inner) from None
        msgcode, channelid, length = (_HEADER or _load_struct()).unpack(header)
        if msgcode not in Message._types or length < 0:
            # Refuse garbage before trying to read a bogus payload length.
            raise EOFError(
                "couldn't load message, invalid header %r - wire protocol corruption?" % (header,)
            )
        return Message(msgcode, channelid, io.read(length))

    def to_io(self, io: WriteIO) -> None:
        """Write the message with a single ``write`` call."""
        header = (_HEADER or _load_struct()).pack(self.msgcode, self.channelid, len(self.data))
        io.write(header + self.data)

    def received(self, gateway: BaseGateway) -> None:
        """Dispatch the message to its handler."""
        self._types[self.msgcode][1](self, gateway)

    def __repr__(self) -> str:
        name = self._types[self.msgcode][0] if self.msgcode in self._types else self.msgcode
        return f"<Message {name} channel={self.channelid} lendata={len(self.data)}>"


def _status(message: Message, gateway: BaseGateway) -> None:
    # Answered in the receiver thread on the requester's id; no channel object is created.
    # (An upstream master's receiver died on STATUS; both sides answer here.)
    active_channels = gateway._channelfactory.channels()
    pool = getattr(gateway, "_execpool", None)
    if pool is not None:
        numexec = pool.active_count()
    else:
        numexec = sum(1 for ch in active_channels if ch._executing)
    info = {
        "numchannels": len(active_channels),
        "numexecuting": numexec,
        "execmodel": gateway.execmodel.backend,
    }
    gateway._send(Message.CHANNEL_DATA, message.channelid, dumps_internal(info))
    gateway._send(Message.CHANNEL_CLOSE, message.channelid)


def _reconfigure(message: Message, gateway: BaseGateway) -> None:
    data = loads_internal(message.data, gateway)
    if message.channelid == 0:
        gateway._strconfig = data
    else:
        gateway._channelfactory.new(message.channelid)._strconfig = data


def _gateway_terminate(message: Message, gateway: BaseGateway) -> None:
    raise GatewayReceivedTerminate(gateway)


def _channel_exec(message: Message, gateway: BaseGateway) -> None:
    channel = gateway._channelfactory.new(message.channelid)
    gateway._local_schedulexec(channel=channel, sourcetask=message.data)


def _channel_data(message: Message, gateway: BaseGateway) -> None:
    gateway._channelfactory._local_receive(message.channelid, message.data)


def _channel_close(message: Message, gateway: BaseGateway) -> None:
    gateway._channelfactory._local_close(message.channelid)


def _channel_close_error(message: Message, gateway: BaseGateway) -> None:
    text = loads_internal(message.data)
    if not isinstance(text, str):
        # upstream's receiver died on an assertion here; keep the connection, show the value
        text = repr(text)
    gateway._channelfactory._local_close(message.channelid, RemoteError(text))


def _channel_last_message(message: Message, gateway: BaseGateway) -> None:
    gateway._channelfactory._local_close(message.channelid, sendonly=True)


Message._types = {
    Message.STATUS: ("STATUS", _status),
    Message.RECONFIGURE: ("RECONFIGURE", _reconfigure),
    Message.GATEWAY_TERMINATE: ("GATEWAY_TERMINATE", _gateway_terminate),
    Message.CHANNEL_EXEC: ("CHANNEL_EXEC", _channel_exec),
    Message.CHANNEL_DATA: ("CHANNEL_DATA", _channel_data),
    Message.CHANNEL_CLOSE: ("CHANNEL_CLOSE", _channel_close),
    Message.CHANNEL_CLOSE_ERROR: ("CHANNEL_CLOSE_ERROR", _channel_close_error),
    Message.CHANNEL_LAST_MESSAGE: ("CHANNEL_LAST_MESSAGE", _channel_last_message),
}


# ---------------------------------------------------------------------------------------------
# channels
# ---------------------------------------------------------------------------------------------


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


ENDMARKER: Any = _Sentinel("ENDMARKER")
NO_ENDMARKER_WANTED: Any = _Sentinel("NO_ENDMARKER_WANTED")


class Channel:
    """One bidirectional, ordered stream of items between the two sides of a gateway.

    States: *opened*; *sendonly* (the peer dropped its end or the connection ended: queued items
    can still be received, then EOF); *closed* (closed locally or by the peer). See
    :meth:`send`, :meth:`receive`, :meth:`setcallback`, :meth:`close`, :meth:`waitclose`.
    """

    RemoteError = RemoteError
    TimeoutError = TimeoutError
    _INTERNALWAKEUP = 1000
    _executing = False

    def __init__(self, gateway: Any, id: int) -> None:
        self.gateway = gateway
        self.id = id
        strconfig: tuple[bool, bool] = getattr(gateway, "_strconfig", (True, False))
        self._strconfig_value = strconfig
        mux = getattr(gateway, "_mux", None)
        if mux is not None:
            # plain data for this id now goes straight into the queue, past _local_receive
            self._items: Any = mux.queue(id, strconfig)
        else:
            self._items = gateway.execmodel.queue.Queue()
        self._closed = False
        self._receiveclosed = gateway.execmodel.Event()
        self._remoteerrors: list[RemoteError] = []

    @property
    def _strconfig(self) -> tuple[bool, bool]:
        """How strings are decoded on this channel (``(py2str_as_py3str, py3str_as_py2str)``)."""
        return self._strconfig_value

    @_strconfig.setter
    def _strconfig(self, value: tuple[bool, bool]) -> None:
        self._strconfig_value = value
        items = self._items
        queuetype = _native_queue_type
        if queuetype is not None and isinstance(items, queuetype):
            # payloads queued by the reader thread from now on are decoded with it
            items.strconfig = value
        elif items is None:
            # a callback route decodes in the reader thread: give it the new setting
            self._route_callback()

    def _route_callback(self) -> None:
        # Plain data for this id then goes from the reader thread straight to the callback,
        # past dispatch and _local_receive (which still handle what the mux hands over).
        mux = getattr(self.gateway, "_mux", None)
        factory = self.gateway._channelfactory
        registered = factory._callbacks.get(self.id)
        if mux is None or registered is None:
            return
        try:
            mux.route_callback(self.id, registered[0], factory._callback_failed, self._strconfig)
        except OSError:
            pass  # a Mux inherited through fork() routes nothing

    def _unroute(self) -> None:
        # Routed data bypasses _receivelock and _local_receive; wherever upstream stops
        # queueing for this id, routing stops first.
        mux = getattr(self.gateway, "_mux", None)
        if mux is not None:
            try:
                mux.unroute(self.id)
            except OSError:
                pass  # a Mux inherited through fork() routes nothing

    def _trace(self, *msg: object) -> None:
        self.gateway._trace(self.id, *msg)

    def setcallback(
        self, callback: Callable[[Any], Any], endmarker: object = NO_ENDMARKER_WANTED
    ) -> None:
        """Deliver every item to ``callback`` instead of the receive queue.

        Items already queued are passed in the calling thread; later ones in the gateway's
        receiver thread. ``callback(endmarker)`` is called once when the channel ends, if an
        endmarker is given.
        """
        _callbacks = self.gateway._channelfactory._callbacks
        with self.gateway._receivelock:
            if self._items is None:
                raise OSError(f"{self!r} has callback already registered")
            self._unroute()
            items = self._items
            self._items = None
            empty = self.gateway.execmodel.queue.Empty
            while True:
                try:
                    olditem = items.get(block=False)
                except empty:
                    if not (self._closed or self._receiveclosed.is_set()):
                        _callbacks[self.id] = (callback, endmarker, self._strconfig)
                        self._route_callback()
                    break
                if olditem is ENDMARKER:
                    items.put(olditem)  # for other receivers
                    if endmarker is not NO_ENDMARKER_WANTED:
                        callback(endmarker)
                    break
                callback(olditem)

    def __repr__(self) -> str:
        flag = "closed" if self.isclosed() else "open"
        return "<Channel id=%d %s>" % (self.id, flag)

    def __del__(self) -> None:
        try:
            if self.gateway is None:
                return
            self._trace("channel.__del__")
            if self._closed:
                # state "closed": report errors nobody has read
                for error in self._remoteerrors:
                    error.warn()
            elif self._receiveclosed.is_set():
                pass  # state "sendonly": the peer is gone already
            else:
                # state "opened": tell the peer we are gone
                if self._items is None:
                    msgcode = Message.CHANNEL_LAST_MESSAGE
                else:
                    msgcode = Message.CHANNEL_CLOSE
                try:
                    send = getattr(self.gateway, "_send_deferrable", self.gateway._send)
                    send(msgcode, self.id)
                except (OSError, ValueError):
                    pass
        except Exception:
            # interpreter shutdown may have cleared the globals we use
            pass

    def _getremoteerror(self) -> BaseException | None:
        try:
            return self._remoteerrors.pop(0)
        except IndexError:
            try:
                return self.gateway._error  # type: ignore[no-any-return]
            except AttributeError:
                pass
            return None

    #
    # public API for channel objects
    #
    def isclosed(self) -> bool:
        """True if the channel is closed (locally, or by the peer)."""
        return self._closed

    def makefile(self, mode: str = "w", proxyclose: bool = False) -> ChannelFile:
        """A file-like view: ``"w"`` sends each write as an item, ``"r"`` reads items."""
        if mode == "w":
            return ChannelFileWrite(channel=self, proxyclose=proxyclose)
        elif mode == "r":
            return ChannelFileRead(channel=self, proxyclose=proxyclose)
        raise ValueError(f"mode {mode!r} not available")

    def close(self, error: object = None) -> None:
        """Close the channel; with ``error`` (a str) the peer sees a ``RemoteError``."""
        if self._executing:
            raise OSError("cannot explicitly close channel within remote_exec")
        if self._closed:
            self._trace("ignoring redundant call to close()")
            return
        # state "opened" or "sendonly" --> "closed"; a sendonly peer is not told (it is gone)
        tell_peer = not self._receiveclosed.is_set()
        # str(): a non-str error (e.g. a RemoteError) would otherwise fail to serialize
        payload = dumps_internal(str(error)) if error is not None else b""
        if isinstance(error, RemoteError):
            self._remoteerrors.append(error)
        self._closed = True
        self._receiveclosed.set()
        queue = self._items
        if queue is not None:
            self._unroute()
            queue.put(ENDMARKER)
        # update local state before the peer can react to the close message
        self.gateway._channelfactory._no_longer_opened(self.id)
        if tell_peer:
            if error is not None:
                self.gateway._send(Message.CHANNEL_CLOSE_ERROR, self.id, payload)
            else:
                self.gateway._send(Message.CHANNEL_CLOSE, self.id)
            self._trace("sent channel close message")

    def waitclose(self, timeout: float | None = None) -> None:
        """Wait until the channel stops receiving; raise a recorded remote error, if any.

        ``TimeoutError`` if it is still open after ``timeout`` seconds.
        """
        self._receiveclosed.wait(timeout=timeout)
        if not self._receiveclosed.is_set():
            raise self.TimeoutError("Timeout after %r seconds" % timeout)
        error = self._getremoteerror()
        if error:
            raise error

    def send(self, item: object) -> None:
        """Send ``item`` to the peer (``OSError`` if the channel is closed)."""
        if self._closed:
            raise OSError(f"cannot send to {self!r}")
        gateway = self.gateway
        mux = gateway._mux
        if mux is not None and not DEBUG and type(gateway)._send is _BASE_SEND:
            # encoded straight into the frame (what _send(CHANNEL_DATA, ...) does, one copy
            # less; a subclass or patch of _send is still called); encoding errors
            # (DumpError, UnicodeEncodeError, ...) pass unchanged, while the sending itself
            # fails with OSError only
            try:
                mux.send_item(self.id, item)
            except OSError as e:
                raise OSError("cannot send (already closed?)") from e
            return
        self.gateway._send(4, self.id, dumps_internal(item))  # Message.CHANNEL_DATA

    def receive(self, timeout: float | None = None) -> Any:
        """Return the next item; ``EOFError`` (or the remote error) once the channel ended.

        ``TimeoutError`` if nothing arrives within ``timeout`` seconds.
        """
        itemqueue = self._items
        if itemqueue is None:
            raise OSError("cannot receive(), channel has receiver callback")
        if timeout is None and itemqueue.empty() and self._in_receiver_thread():
            # only the receiver thread could deliver the item: upstream hung here forever
            raise OSError(f"receive() on {self!r} in the receiver thread would never return")
        try:
            x = itemqueue.get(timeout=timeout)
        except self.gateway.execmodel.queue.Empty:
            raise self.TimeoutError("no item after %r seconds" % timeout) from None
        if x is ENDMARKER:
            itemqueue.put(x)  # for other receivers
            raise self._getremoteerror() or EOFError()
        return x

    def _in_receiver_thread(self) -> bool:
        mux = getattr(self.gateway, "_mux", None)
        if mux is not None:
            return mux.in_reader_thread()  # type: ignore[no-any-return]
        ident = getattr(self.gateway, "_receiver_ident", None)
        return ident is not None and ident == self.gateway.execmodel.get_ident()

    def __iter__(self) -> Iterator[Any]:
        return self

    def next(self) -> Any:
        """The next item; ``StopIteration`` at the end of the channel."""
        try:
            return self.receive()
        except EOFError:
            raise StopIteration from None

    __next__ = next

    def reconfigure(self, py2str_as_py3str: bool = True, py3str_as_py2str: bool = False) -> None:
        """Set how strings are decoded on this channel, on both sides."""
        self._strconfig = (py2str_as_py3str, py3str_as_py2str)
        data = dumps_internal(self._strconfig)
        self.gateway._send(Message.RECONFIGURE, self.id, data=data)


class ChannelFile:
    """Common part of the channel file views."""

    def __init__(self, channel: Channel, proxyclose: bool = True) -> None:
        self.channel = channel
        self._proxyclose = proxyclose

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        """Close the channel too, if the file was made with ``proxyclose=True``."""
        if self._proxyclose:
            self.channel.close()

    def __repr__(self) -> str:
        state = "closed" if self.channel.isclosed() else "open"
        return "<ChannelFile %d %s>" % (self.channel.id, state)


class ChannelFileWrite(ChannelFile):
    """``write(x)`` sends ``x`` as one item."""

    def write(self, out: object) -> None:
        self.channel.send(out)

    def flush(self) -> None:
        pass


class ChannelFileRead(ChannelFile):
    """Reads concatenate received items (str or bytes)."""

    def __init__(self, channel: Channel, proxyclose: bool = True) -> None:
        super().__init__(channel, proxyclose)
        self._buffer: Any = None

    def read(self, n: int) -> Any:
        """Return ``n`` characters, fewer at the end of the channel."""
        try:
            if self._buffer is None:
                self._buffer = self.channel.receive()
            while len(self._buffer) < n:
                self._buffer += self.channel.receive()
        except EOFError:
            self.close()
        if self._buffer is None:
            ret = ""
        else:
            ret = self._buffer[:n]
            self._buffer = self._buffer[n:]
        return ret

    def readline(self) -> Any:
        """Return through the next newline, or what remains at the end of the channel."""
        while True:
            buf = self._buffer
            if buf is not None:
                i = buf.find("\n" if isinstance(buf, str) else b"\n")
                if i != -1:
                    return self.read(i + 1)
            try:
                item = self.channel.receive()
            except EOFError:
                self.close()
                if buf is None:
                    return ""
                self._buffer = buf[:0]
                return buf
            self._buffer = item if buf is None else buf + item


class _KeyedRef(_weakref):  # type: ignore[type-arg]
    """A weak reference that knows its key in a :class:`_ChannelMap`."""

    __slots__ = ("key",)
    key: int

    def __new__(cls, ob: Any, callback: Any, key: int) -> _KeyedRef:
        self = super().__new__(cls, ob, callback)
        self.key = key
        return self

    def __init__(self, ob: Any, callback: Any, key: int) -> None:
        super().__init__(ob, callback)  # type: ignore[call-arg]


class _ChannelMap:
    """Channel id to channel, holding the channels weakly (a ``WeakValueDictionary`` subset).

    ``data`` maps ids to references. Its own class, because importing ``weakref`` would cost
    every popen worker 0.5 ms of its start; ``threading`` loads ``_weakrefset`` anyway.
    """

    __slots__ = ("data", "_remove", "__weakref__")

    def __init__(self) -> None:
        self.data: dict[int, _KeyedRef] = {}
        selfref = _weakref(self)

        def remove(wr: _KeyedRef) -> None:
            map = selfref()
            if map is not None:
                # atomic, and only if the entry is still a dead reference: a channel made
                # meanwhile for the same id (an incoming reference) keeps its entry
                _remove_dead_weakref(map.data, wr.key)

        self._remove = remove

    def __getitem__(self, id: int) -> Channel:
        channel = self.data[id]()
        if channel is None:
            raise KeyError(id)
        return channel  # type: ignore[no-any-return]

    def get(self, id: int, default: Any = None) -> Any:
        wr = self.data.get(id)
        channel = wr() if wr is not None else None
        return default if channel is None else channel

    def __setitem__(self, id: int, channel: Channel) -> None:
        self.data[id] = _KeyedRef(channel, self._remove, id)

    def __delitem__(self, id: int) -> None:
        del self.data[id]

    def __contains__(self, id: object) -> bool:
        wr = self.data.get(id)  # type: ignore[call-overload]
        return wr is not None and wr() is not None

    def __len__(self) -> int:
        return sum(1 for wr in list(self.data.values()) if wr() is not None)

    def __iter__(self) -> Iterator[int]:
        return iter([id for id, wr in list(self.data.items()) if wr() is not None])

    def keys(self) -> list[int]:
        return list(self)

    def values(self) -> list[Channel]:
        channels = [wr() for wr in list(self.data.values())]
        return [ch for ch in channels if ch is not None]

    def items(self) -> list[tuple[int, Channel]]:
        pairs = [(id, wr()) for id, wr in list(self.data.items())]
        return [(id, ch) for id, ch in pairs if ch is not None]

    def clear(self) -> None:
        self.data.clear()

    def __repr__(self) -> str:
        return f"<_ChannelMap {dict(self.items())!r}>"


class ChannelFactory:
    """Creates channels with this side's ids and routes incoming channel messages."""

    def __init__(self, gateway: Any, startcount: int = 1) -> None:
        self._channels = _ChannelMap()
        self._callbacks: dict[int, tuple[Callable[[Any], Any], object, tuple[bool, bool]]] = {}
        self._writelock = gateway.execmodel.Lock()
        self.gateway = gateway
        self.count = startcount
        self.finished = False
        self._list = list  # still usable during interpreter shutdown

    def new(self, id: int | None = None) -> Channel:
        """Return the channel with ``id`` (created if needed), or a new one with a fresh id."""
        with self._writelock:
            if self.finished:
                raise OSError(f"connection already closed: {self.gateway!r}")
            if id is None:
                id = self.count
                self.count += 2
            try:
                channel = self._channels[id]
            except KeyError:
                channel = self._channels[id] = Channel(self.gateway, id)
            return channel

    def channels(self) -> list[Channel]:
        """The live channel objects."""
        return self._list(self._channels.values())

    #
    # internal methods, called from the receiver thread
    #
    def _no_longer_opened(self, id: int) -> None:
        mux = getattr(self.gateway, "_mux", None)
        if mux is not None:
            try:
                mux.unroute(id)
            except OSError:
                pass
        try:
            del self._channels[id]
        except KeyError:
            pass
        try:
            callback, endmarker, _strconfig = self._callbacks.pop(id)
        except KeyError:
            pass
        else:
            if endmarker is not NO_ENDMARKER_WANTED:
                callback(endmarker)

    def _local_close(self, id: int, remoteerror: Any = None, sendonly: bool = False) -> None:
        channel = self._channels.get(id)
        if channel is None:
            # channel already in "deleted" state
            if remoteerror:
                remoteerror.warn()
            self._no_longer_opened(id)
        else:
            # state transition to "closed" (or "sendonly")
            if remoteerror:
                channel._remoteerrors.append(remoteerror)
            if not sendonly:
                channel._closed = True
            channel._receiveclosed.set()
            queue = channel._items
            if queue is not None:
                channel._unroute()
                queue.put(ENDMARKER)
            self._no_longer_opened(id)

    def _local_receive(self, id: int, data: bytes) -> None:
        # executes in the receiver thread, under the gateway's receive lock; kept lean, as it
        # runs once per item for channels with a callback
        ref = self._channels.data.get(id)  # its dict: no Python call
        channel = ref() if ref is not None else None
        registered = self._callbacks.get(id)
        if registered is None:
            queue = channel._items if channel is not None else None
            if queue is not None:
                queue.put(_loads_wire(data, self, channel._strconfig))  # type: ignore[union-attr]
            # else nobody listens: drop the data
        else:
            callback, _endmarker, strconfig = registered
            try:
                if channel is not None:
                    strconfig = channel._strconfig
                core = _core
                if core is not None:
                    item = core.loads_internal(data, self, strconfig)
                else:
                    item = _loads_wire(data, self, strconfig)
                callback(item)  # even if the channel object was closed already
            except Exception as exc:
                self._report_callback_error(id, exc)

    def _callback_failed(self, id: int, exc: Exception) -> None:
        # called by the mux's reader thread when a routed callback raised
        with self.gateway._receivelock:
            self._report_callback_error(id, exc)

    def _report_callback_error(self, id: int, exc: Exception) -> None:
        self.gateway._trace("exception during callback: %s" % exc)
        errortext = self.gateway._geterrortext(exc)
        try:
            self.gateway._send(Message.CHANNEL_CLOSE_ERROR, id, dumps_internal(errortext))
        except OSError:
            pass
        # upstream records the bare text here (and later fails to warn() it);
        # a RemoteError keeps _remoteerrors homogeneous.
        self._local_close(id, RemoteError(errortext))

    def _finished_receiving(self) -> None:
        with self._writelock:
            self.finished = True
        for id in self._list(self._channels):
            self._local_close(id, sendonly=True)
        for id in self._list(self._callbacks):
            self._no_longer_opened(id)


# ---------------------------------------------------------------------------------------------
# gateways
# ---------------------------------------------------------------------------------------------


class _ForkedIO:
    """Stands in for a gateway's IO in a forked child: the streams belong to the parent."""

    def __init__(self, execmodel: ExecModel, message: str) -> None:
        self.execmodel = execmodel
        self._message = message

    def read(self, numbytes: int) -> bytes:
        raise EOFError(self._message)

    def write(self, data: bytes) -> None:
        raise OSError(self._message)

    def close_read(self) -> None:
        pass

    def close_write(self) -> None:
        pass

    def wait(self) -> int | None:
        return None

    def kill(self) -> None:
        pass


_live_gateways: WeakSet[BaseGateway] = WeakSet()
_fork_keepalive: list[Any] = []


def _after_fork_in_child() -> None:
    for gateway in list(_live_gateways):
        try:
            gateway._forked_in_child()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BaseGateway:
    """The part of a gateway shared by both sides: receiver thread, dispatch and sending."""

    _sysex = sysex
    id = "<worker>"

    def __init__(self, io: IO, id: str, _startcount: int = 2) -> None:
        self.execmodel = io.execmodel
        self._io = io
        self.id = id
        self._strconfig = (Unserializer.py2str_as_py3str, Unserializer.py3str_as_py2str)
        self._channelfactory = ChannelFactory(self, _startcount)
        self._receivelock = self.execmodel.RLock()
        # globals may be None at interpreter shutdown, so keep references
        self._receivepool = WorkerPool(self.execmodel)
        self._error: BaseException | None = None
        self._sendlock = self.execmodel.Lock()
        self._send_depth = 0
        self._deferred_sends: list[Message] = []
        self._receiver_ident: int | None = None
        self._pid = os.getpid()
        self._dispatch_error: BaseException | None = None
        #: the native multiplexer doing this gateway's IO, or None (pure-Python IO)
        self._mux: Any = _make_mux(io, self.execmodel)
        _live_gateways.add(self)

    def _trace(self, *msg: object) -> None:
        trace(self.id, *msg)

    def _initreceive(self) -> None:
        mux = self._mux
        if mux is not None:
            mux.start(self._mux_dispatch, self._mux_exit)
            return
        self._receivepool.spawn(self._thread_receiver)

    def _mux_dispatch(self, code: int, channelid: int, data: bytes) -> None:
        # one turn of _thread_receiver's loop, for the frames the reader did not queue itself
        if self._receiver_ident is None:
            self._receiver_ident = self.execmodel.get_ident()
        if code == 4 and not DEBUG:  # Message.CHANNEL_DATA: callbacks, large items
            try:
                with self._receivelock:
                    self._channelfactory._local_receive(channelid, data)
            except BaseException as exc:
                self._dispatch_error = exc
                raise
            return
        msg = Message(code, channelid, data)
        self._trace("[receiver-thread]", "received", msg)
        try:
            with self._receivelock:
                msg.received(self)
        except BaseException as exc:
            self._dispatch_error = exc
            raise

    def _mux_exit(self, exc: BaseException | None) -> None:
        # the except clauses of _thread_receiver, for the reason the reader ended
        if exc is None or isinstance(exc, (KeyboardInterrupt, GatewayReceivedTerminate)):
            pass
        elif isinstance(exc, EOFError):
            self._trace("[receiver-thread]", "EOF without prior gateway termination message")
            self._error = exc
        elif isinstance(exc, ValueError) and exc is not self._dispatch_error:
            # a malformed header
            error = EOFError(f"couldn't load message, {exc} - wire protocol corruption?")
            error.__cause__ = exc
            self._error = error
        else:
            self._trace("[receiver-thread]", self._geterrortext(exc))
            error = EOFError(f"receiver failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._error = error
        self._dispatch_error = None
        self._receiver_finished()

    def _thread_receiver(self) -> None:
        def log(*msg: object) -> None:
            self._trace("[receiver-thread]", *msg)

        self._receiver_ident = self.execmodel.get_ident()
        log("RECEIVERTHREAD: starting to run")
        io = self._io
        try:
            while True:
                msg = Message.from_io(io)
                log("received", msg)
                with self._receivelock:
                    msg.received(self)
                    del msg
        except (KeyboardInterrupt, GatewayReceivedTerminate):
            pass
        except EOFError as exc:
            log("EOF without prior gateway termination message")
            self._error = exc
        except Exception as exc:
            log(self._geterrortext(exc))
            # Upstream leaves _error unset here, so receive() raised a bare EOFError; keep the
            # EOFError type (connection lost) but say why.
            error = EOFError(f"receiver failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._error = error
        self._receiver_finished()

    def _receiver_finished(self) -> None:
        def log(*msg: object) -> None:
            self._trace("[receiver-thread]", *msg)

        log("finishing receiving thread")
        write_closed = False
        if self._error is not None:
            # The peer is gone: close our write side before waking anybody up, so that a
            # send() after receive()/waitclose() reported the loss fails reliably instead of
            # racing the peer's teardown.
            write_closed = self._close_write(log)
        try:
            self._record_end()
        except Exception as exc:
            log("recording the end failed:", repr(exc))
        if not write_closed and self._error is not None:
            write_closed = self._close_write(log)
        # wake up and terminate any execution waiting to receive
        self._channelfactory._finished_receiving()
        log("terminating execution")
        self._terminate_execution()
        log("closing read")
        try:
            self._io.close_read()
        except Exception as exc:
            log("close_read failed:", repr(exc))
        if not write_closed:
            self._close_write(log)
        log("terminating our receive pseudo pool")
        self._receivepool.trigger_shutdown()

    def _close_write(self, log: Callable[..., None]) -> bool:
        log("closing write")
        try:
            self._io.close_write()
        except Exception as exc:
            log("close_write failed:", repr(exc))
        return True

    def _terminate_execution(self) -> None:
        pass

    def _record_end(self) -> None:
        """Hook run once receiving ended, before any waiter wakes up (the master records why)."""

    def _forked_in_child(self) -> None:
        """Turn this gateway into a dead object in a forked child process.

        The child must never write to (or flush, or close) the parent's streams, and must not
        wait for a receiver thread that does not exist in it. Locks are replaced because
        another thread may have held them at the moment of the fork.
        """
        if self._pid == os.getpid():
            return
        em = self.execmodel
        message = "gateway %r belongs to process %d, not to this forked process %d" % (
            self.id,
            self._pid,
            os.getpid(),
        )
        _fork_keepalive.append(self._io)
        self._io = _ForkedIO(em, message)
        if self._mux is not None:
            # the parent's Mux is a dead object here; keep it referenced, never dropped
            _fork_keepalive.append(self._mux)
            self._mux = None
        self._error = EOFError(message)
        self._sendlock = em.Lock()
        self._receivelock = em.RLock()
        self._send_depth = 0
        self._deferred_sends = []
        self._receivepool = WorkerPool(em)
        self._receivepool._shuttingdown = True
        factory = self._channelfactory
        factory._writelock = em.Lock()
        factory.finished = True
        factory._callbacks.clear()
        for channel in factory.channels():
            channel._receiveclosed = em.Event()
            channel._receiveclosed.set()
            if channel._items is not None:
                channel._items = em.queue.Queue()
                channel._items.put(ENDMARKER)
        factory._channels.clear()
        execpool = getattr(self, "_execpool", None)
        if execpool is not None:
            # let the primary thread leave after the task it runs in this process
            execpool._running_lock = em.Lock()
            execpool._running = set()
            execpool._waitall_events = []
            execpool._shuttingdown = True

    def _send(self, msgcode: int, channelid: int = 0, data: bytes = b"") -> None:
        mux = self._mux
        if mux is not None and not DEBUG:
            # The common case, kept short: the mux writes whole frames in order under its own
            # lock and never runs Python code while it holds it, so no send lock is needed
            # (garbage-collector sends go through ``_send_deferrable``, which never waits).
            try:
                mux.send(msgcode, channelid, data)
            except (OSError, ValueError) as e:
                raise OSError("cannot send (already closed?)") from e
            return
        try:
            with self._sendlock:
                self._send_depth += 1
                try:
                    if mux is not None:
                        mux.send(msgcode, channelid, data)
                    else:
                        Message(msgcode, channelid, data).to_io(self._io)
                    if self._deferred_sends:
                        self._write_deferred()
                finally:
                    self._send_depth -= 1
            if self._deferred_sends:
                self._flush_deferred()
            if DEBUG:
                self._trace("sent", Message(msgcode, channelid, data))
        except (OSError, ValueError) as e:
            self._trace("failed to send", Message(msgcode, channelid, data), e)
            raise OSError("cannot send (already closed?)") from e

    def _write_deferred(self) -> None:
        # called with the send lock held
        deferred = self._deferred_sends
        mux = self._mux
        while deferred:
            message = deferred.pop(0)
            if mux is not None:
                # buffered for the mux's writer thread: never waits for the write lock
                mux.send(message.msgcode, message.channelid, message.data, True)
            else:
                message.to_io(self._io)

    def _flush_deferred(self) -> None:
        # Never blocks: whoever holds the send lock writes the queue after its own frame and
        # checks it again after releasing the lock.
        lock = self._sendlock
        if not lock.acquire(False):
            return
        try:
            if not self._send_depth:
                self._send_depth += 1
                try:
                    self._write_deferred()
                finally:
                    self._send_depth -= 1
        finally:
            lock.release()

    def _send_deferrable(self, msgcode: int, channelid: int) -> None:
        """Send without ever blocking on the send lock (used by ``Channel.__del__``).

        Garbage collection runs ``__del__`` at arbitrary points: in the middle of a write by the
        same thread (a nested frame would corrupt the stream), or in the receiver thread while
        another thread is blocked writing to a full pipe (waiting for the lock would deadlock
        with a peer that waits for us to read). The frame is queued and written by whoever
        holds, or next takes, the send lock; with a native mux, by the mux's writer thread.
        """
        mux = self._mux
        try:
            if mux is not None and not DEBUG:
                mux.send(msgcode, channelid, b"", True)
                return
            self._deferred_sends.append(Message(msgcode, channelid))
            self._flush_deferred()
        except (OSError, ValueError) as e:
            self._trace("failed to send deferred messages", e)

    def _local_schedulexec(self, channel: Channel, sourcetask: bytes) -> None:
        channel.close("execution disallowed")

    _geterrortext = staticmethod(geterrortext)

    # _____________________________________________________________________
    #
    # High Level Interface
    # _____________________________________________________________________
    #
    def newchannel(self) -> Channel:
        """Return a new channel with a fresh local id."""
        return self._channelfactory.new()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the receiver thread to finish (returns on timeout too)."""
        mux = self._mux
        # (with a mux, callbacks may run in its reader before any dispatch set _receiver_ident)
        in_receiver = mux.in_reader_thread() if mux is not None else False
        if in_receiver or self._receiver_ident == self.execmodel.get_ident():
            self._trace("join() called from receiver thread, not waiting")
            return
        self._trace("waiting for receiver thread to finish")
        if mux is not None:
            mux.join(timeout)
            return
        self._receivepool.waitall(timeout)

    def _receiving(self) -> bool:
        """Whether the receiver (thread or native reader) is still running."""
        mux = self._mux
        if mux is not None:
            return mux.is_alive()  # type: ignore[no-any-return]
        return self._receivepool.active_count() > 0


class WorkerGateway(BaseGateway):
    """The worker side: executes ``remote_exec`` requests."""

    def __init__(self, io: IO, id: str, _startcount: int = 2) -> None:
        super().__init__(io, id, _startcount)
        self._execpool = WorkerPool(
            self.execmodel,
            hasprimary=self.execmodel.backend in ("thread", "main_thread_only"),
        )
        self._terminate_reason_eof = False

    def _local_schedulexec(self, channel: Channel, sourcetask: bytes) -> None:
        if self.execmodel.backend == "main_thread_only":
            # The main thread runs one execution at a time: wait briefly for the previous one,
            # then refuse rather than queueing behind code that may wait for this one. The pool
            # signals idleness after every execution, failing ones included (upstream stopped
            # accepting work for good after an execution raised).
            if not self._execpool._wait_primary_idle(1.0):
                channel.close(MAIN_THREAD_ONLY_DEADLOCK_TEXT)
                return
        task = loads_internal(sourcetask)
        try:
            # The channel is closed only after the pool has marked the thread idle again, so a
            # remote_exec sent in reaction to that close finds the main thread free (no race
            # into an extra thread, no spurious main_thread_only refusal).
            self._execpool._spawn_with_epilogue(self._execute, ((channel, task),))
        except ValueError as exc:
            channel.close(geterrortext(exc))

    def _terminate_execution(self) -> None:
        # called from the receiver thread once receiving ended
        eof = self._error is not None
        # After a terminate message, upstream's 5 s + 10 s grace periods; when the master just
        # vanished (EOF, corrupt data) nobody waits for results, so give up much sooner.
        first_wait, second_wait = (1.0, 2.0) if eof else (5.0, 10.0)
        self._trace("shutting down execution pool")
        self._execpool.trigger_shutdown()
        if not self._execpool.waitall(first_wait):
            self._trace("execution ongoing after %s secs, trying interrupt_main" % first_wait)
            # assumes one gateway per process, as is the case for every worker
            if sys.platform != "win32":
                self._trace("sending ourselves a SIGINT")
                os.kill(os.getpid(), 2)
            else:
                import _thread

                _thread.interrupt_main()
            if not self._execpool.waitall(second_wait):
                self._trace(
                    "execution did not finish in another %s secs, calling os._exit()" % second_wait
                )
                os._exit(1)

    def serve(self) -> None:
        """Run the worker until the connection ends."""

        def trace(msg: str) -> None:
            self._trace("[serve] " + msg)

        hasprimary = self.execmodel.backend in ("thread", "main_thread_only")
        trace("spawning receiver thread")
        self._initreceive()
        try:
            if hasprimary:
                # this will return when we are in shutdown
                trace("integrating as primary thread")
                self._execpool.integrate_as_primary_thread()
            trace("joining receiver thread")
            self.join()
        except KeyboardInterrupt:
            # in the worker we can't really do anything sensible
            trace("swallowing keyboardinterrupt, serve finished")

    def executetask(self, item: tuple[Any, Any]) -> None:
        """Run one ``remote_exec`` request ``(channel, (source, file_name, call_name, kwargs))``."""
        self._execute(item)()

    def _execute(self, item: tuple[Any, Any]) -> Callable[[], None]:
        """Run the request; return the step that closes its channel (see ``_local_schedulexec``)."""
        channel, task = item
        try:
            source, file_name, call_name, kwargs = task
            loc = {"channel": channel, "__name__": "__channelexec__"}
            self._trace(f"execution starts[{channel.id}]: {repr(source)[:50]}")
            channel._executing = True
            try:
                co = _compile_exec(source + "\n", file_name or "<remote exec>")
                exec(co, loc)
                if call_name:
                    self._trace("calling %s(**%60r)" % (call_name, kwargs))
                    function = loc[call_name]
                    function(channel, **kwargs)
            finally:
                channel._executing = False
                self._trace("execution finished")
        except KeyboardInterrupt:
            channel.close(INTERRUPT_TEXT)
            raise
        except EOFError:
            # typically receive() after the peer dropped the channel: a quiet end
            self._trace("ignoring EOFError because receiving finished")
        except BaseException as exc:
            if channel.gateway._channelfactory.finished:
                return _nothing
            self._trace(f"got exception: {exc!r}")
            errortext = self._geterrortext(exc)
            return lambda: self._close_quietly(channel, errortext)
        return lambda: self._close_quietly(channel)

    def _close_quietly(self, channel: Any, error: str | None = None) -> None:
        try:
            channel.close(error)
        except OSError as exc:
            # the connection went away while the execution ended
            self._trace("could not close channel:", repr(exc))


def _nothing() -> None:
    pass


#: The ``__future__`` flags of this module (``annotations``), which ``compile()`` called here
#: hands on to the code it compiles (``PyCF_MASK`` of the code flags).
_FUTURE_FLAGS = _nothing.__code__.co_flags & 0x1FE0000


def _compile_exec(source: str, filename: str) -> Any:
    """``compile(source, filename, "exec")``, by the native module when it is loaded.

    The builtin's first call in a process sets up the ``ast`` types (about 1.5 ms), which would
    delay a new worker's first answer; the native call compiles the same code with the same
    flags and errors.
    """
    core = _core
    native = getattr(core, "compile_exec", None) if core is not None else None
    if native is not None:
        code = native(source, filename, _FUTURE_FLAGS)
        if code is not None:
            return code
    return compile(source, filename, "exec")


def serve(io: IO, id: str) -> None:
    """Run a worker gateway with id ``id`` on ``io`` until the connection ends.

    A worker process started for this connection (its IO made by :func:`init_popen_io`) then
    ends at once, see :func:`_exit_worker_process`.
    """
    trace(f"creating workergateway on {io!r}")
    gateway = WorkerGateway(io=io, id=id, _startcount=2)
    gateway.serve()
    if getattr(io, "_worker_process", False) and gateway.execmodel.backend in (
        "thread",
        "main_thread_only",
    ):
        _exit_worker_process()


def _exit_worker_process() -> None:
    """End a worker process whose connection ended, doing what user code can observe.

    Non-daemon threads are waited for, ``atexit`` handlers run and the standard streams are
    flushed, as at a normal exit; the module teardown and final garbage collection that follow
    are skipped (``os._exit(0)``): they are most of a worker's exit time, so a master waiting
    for many workers to end (``Group.terminate``) waits far less. ``EXECNET_FULL_EXIT=1`` keeps
    the full interpreter shutdown.
    """
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or os.environ.get("EXECNET_FULL_EXIT", "") not in ("", "0"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    trace("worker process: exiting")
    try:
        shutdown()
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()  # type: ignore[union-attr]
            except Exception:
                pass
    os._exit(0)


# ---------------------------------------------------------------------------------------------
# serializer
# ---------------------------------------------------------------------------------------------

FOUR_BYTE_INT_MAX = 2147483647
_FOUR_BYTE_INT_MIN = -2147483648

FLOAT_FORMAT = "!d"
FLOAT_FORMAT_SIZE = 8  # struct.calcsize(FLOAT_FORMAT)
COMPLEX_FORMAT = "!dd"
COMPLEX_FORMAT_SIZE = 16  # struct.calcsize(COMPLEX_FORMAT)

DUMPFORMAT_VERSION = b"\x02"


def bchr(n: int) -> bytes:
    """The single byte with value ``n``."""
    return bytes([n])


class opcode:
    """The serializer's opcodes: one ASCII byte each (this set is frozen)."""

    BUILDTUPLE = b"@"
    BYTES = b"A"
    CHANNEL = b"B"
    FALSE = b"C"
    FLOAT = b"D"
    FROZENSET = b"E"
    INT = b"F"
    LONG = b"G"
    LONGINT = b"H"
    LONGLONG = b"I"
    NEWDICT = b"J"
    NEWLIST = b"K"
    NONE = b"L"
    PY2STRING = b"M"
    PY3STRING = b"N"
    SET = b"O"
    SETITEM = b"P"
    STOP = b"Q"
    TRUE = b"R"
    UNICODE = b"S"
    COMPLEX = b"T"


class _Stop(Exception):
    pass


class Unserializer:
    """Decodes one serialized object from a stream with ``read(n)``.

    With a channel or gateway, channel references are resolved on its gateway and its current
    string configuration is used; otherwise ``strconfig`` (or the class defaults) applies.
    """

    num2func: dict[bytes, Callable[[Unserializer], None]] = {}
    py2str_as_py3str = True  # True
    py3str_as_py2str = False  # false means py2 will get unicode

    def __init__(
        self,
        stream: ReadIO,
        channel_or_gateway: Any = None,
        strconfig: tuple[bool, bool] | None = None,
    ) -> None:
        factory: Any = None
        if channel_or_gateway is not None:
            own = getattr(channel_or_gateway, "_strconfig", None)
            if own is not None:
                strconfig = own
            if isinstance(channel_or_gateway, Channel):
                factory = channel_or_gateway.gateway._channelfactory
            else:
                factory = getattr(channel_or_gateway, "_channelfactory", channel_or_gateway)
        if strconfig:
            self.py2str_as_py3str, self.py3str_as_py2str = strconfig
        self.stream = stream
        self._read = stream.read
        self.channelfactory = factory
        if _unpack_int4 is None:
            _load_struct()
        self.stack: list[Any] = []

    def load(self, versioned: bool = False) -> Any:
        """Decode and return the object (reading the version byte first if ``versioned``)."""
        read = self._read
        if versioned:
            ver = read(1)
            if ver != DUMPFORMAT_VERSION:
                raise LoadError("wrong dumpformat version %r" % ver)
        self.stack = []
        num2func = self.num2func
        try:
            while True:
                opc = read(1)
                if not opc:
                    raise EOFError
                try:
                    loader = num2func[opc]
                except KeyError:
                    raise LoadError(f"unknown opcode {opc!r} - wire protocol corruption?") from None
                loader(self)
        except _Stop:
            if len(self.stack) != 1:
                raise LoadError("internal unserialization error") from None
            return self.stack.pop(0)

    def _read_int4(self) -> int:
        return _unpack_int4(self._read(4))[0]  # type: ignore[no-any-return]

    def _read_byte_string(self) -> bytes:
        return self._read(_unpack_int4(self._read(4))[0])

    def _load_collection(self, factory: Callable[[list[Any]], Any]) -> None:
        num = _unpack_int4(self._read(4))[0]
        stack = self.stack
        if num:
            items = stack[-num:]
            del stack[-num:]
        else:
            items = []
        stack.append(factory(items))

    def load_none(self) -> None:
        self.stack.append(None)

    def load_true(self) -> None:
        self.stack.append(True)

    def load_false(self) -> None:
        self.stack.append(False)

    def load_int(self) -> None:
        self.stack.append(_unpack_int4(self._read(4))[0])

    def load_longint(self) -> None:
        self.stack.append(int(self._read_byte_string()))

    load_long = load_int
    load_longlong = load_longint

    def load_float(self) -> None:
        self.stack.append(_unpack_float(self._read(FLOAT_FORMAT_SIZE))[0])

    def load_complex(self) -> None:
        real, imag = _unpack_complex(self._read(COMPLEX_FORMAT_SIZE))
        self.stack.append(complex(real, imag))

    def load_py2string(self) -> None:
        data: Any = self._read_byte_string()
        if self.py2str_as_py3str:
            data = data.decode("latin-1")
        self.stack.append(data)

    def load_py3string(self) -> None:
        data: Any = self._read_byte_string()
        if not self.py3str_as_py2str:
            data = data.decode("utf-8")
        self.stack.append(data)

    def load_unicode(self) -> None:
        self.stack.append(self._read_byte_string().decode("utf-8"))

    def load_bytes(self) -> None:
        self.stack.append(self._read_byte_string())

    def load_newlist(self) -> None:
        length = _unpack_int4(self._read(4))[0]
        self.stack.append([None] * length)

    def load_setitem(self) -> None:
        stack = self.stack
        if len(stack) < 3:
            raise LoadError("not enough items for setitem")
        value = stack.pop()
        key = stack.pop()
        stack[-1][key] = value

    def load_newdict(self) -> None:
        self.stack.append({})

    def load_buildtuple(self) -> None:
        self._load_collection(tuple)

    def load_set(self) -> None:
        self._load_collection(set)

    def load_frozenset(self) -> None:
        self._load_collection(frozenset)

    def load_channel(self) -> None:
        id = _unpack_int4(self._read(4))[0]
        if self.channelfactory is None:
            raise AssertionError("no channel factory to resolve channel %d" % id)
        self.stack.append(self.channelfactory.new(id))

    def load_stop(self) -> None:
        raise _Stop


for _name, _value in list(vars(opcode).items()):
    if not _name.startswith("__"):
        Unserializer.num2func[_value] = getattr(Unserializer, "load_" + _name.lower())
del _name, _value


class _Serializer:
    """Encodes objects; dispatch is on the exact type's name (``save_<typename>``).

    Without ``write`` the fragments are collected and :meth:`save` returns the bytes.
    """

    _dispatch: dict[type, Callable[[_Serializer, Any], None]] = {}

    def __init__(self, write: Callable[[bytes], Any] | None = None) -> None:
        if _pack_int4 is None:
            _load_struct()
        if write is None:
            self._streamlist: list[bytes] | None = []
            write = self._streamlist.append
        else:
            self._streamlist = None
        self._write = write

    def save(self, obj: object, versioned: bool = False) -> bytes | None:
        """Encode ``obj`` (preceded by the version byte if ``versioned``) followed by STOP."""
        if versioned:
            self._write(DUMPFORMAT_VERSION)
        self._save(obj)
        self._write(opcode.STOP)
        if self._streamlist is None:
            return None
        return b"".join(self._streamlist)

    def _save(self, obj: object) -> None:
        tp = type(obj)
        try:
            dispatch = self._dispatch[tp]
        except KeyError:
            methodname = "save_" + tp.__name__
            meth = getattr(self.__class__, methodname, None)
            if meth is None:
                raise DumpError(f"can't serialize {tp}") from None
            dispatch = self._dispatch[tp] = meth
        dispatch(self, obj)

    def save_NoneType(self, non: None) -> None:
        self._write(opcode.NONE)

    def save_bool(self, boolean: bool) -> None:
        self._write(opcode.TRUE if boolean else opcode.FALSE)

    def save_bytes(self, bytes_: bytes) -> None:
        self._write(opcode.BYTES + self._length(len(bytes_), "string is too long"))
        self._write(bytes_)

    def save_str(self, s: str) -> None:
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError:
            raise DumpError("strings must be utf-8 encodable") from None
        self._write(opcode.PY3STRING + self._length(len(data), "string is too long") + data)

    @staticmethod
    def _length(n: int, error: str) -> bytes:
        if n > FOUR_BYTE_INT_MAX:
            raise DumpError(error)
        return _pack_int4(n)

    def save_int(self, i: int) -> None:
        # Ints outside the int4 range use the decimal form. Upstream only checks the upper
        # bound and raises struct.error below -2**31; the decimal form decodes everywhere.
        if _FOUR_BYTE_INT_MIN <= i <= FOUR_BYTE_INT_MAX:
            self._write(opcode.INT + _pack_int4(i))
        else:
            digits = str(i).encode("ascii")
            self._write(opcode.LONGINT + self._length(len(digits), "string is too long") + digits)

    def save_float(self, flt: float) -> None:
        self._write(opcode.FLOAT + _pack_float(flt))

    def save_complex(self, cpx: complex) -> None:
        self._write(opcode.COMPLEX + _pack_complex(cpx.real, cpx.imag))

    def _write_int4(
        self, i: int, error: str = "int must be less than %i" % FOUR_BYTE_INT_MAX
    ) -> None:
        self._write(self._length(i, error))

    def save_list(self, L: list[Any]) -> None:
        write = self._write
        save = self._save
        write(opcode.NEWLIST + self._length(len(L), "list is too long"))
        for i, item in enumerate(L):
            # the index is written as INT directly: lists never reach 2**31 items
            write(opcode.INT + _pack_int4(i))
            save(item)
            write(opcode.SETITEM)

    def save_dict(self, d: dict[Any, Any]) -> None:
        write = self._write
        save = self._save
        write(opcode.NEWDICT)
        for key, value in d.items():
            save(key)
            save(value)
            write(opcode.SETITEM)

    def save_tuple(self, tup: tuple[Any, ...]) -> None:
        save = self._save
        for item in tup:
            save(item)
        self._write(opcode.BUILDTUPLE + self._length(len(tup), "tuple is too long"))

    def _write_set(self, s: set[Any] | frozenset[Any], op: bytes) -> None:
        save = self._save
        for item in s:
            save(item)
        self._write(op + self._length(len(s), "set is too long"))

    def save_set(self, s: set[Any]) -> None:
        self._write_set(s, opcode.SET)

    def save_frozenset(self, s: frozenset[Any]) -> None:
        self._write_set(s, opcode.FROZENSET)

    def save_Channel(self, channel: Channel) -> None:
        self._write(opcode.CHANNEL + _pack_int4(channel.id))


def _load_native_codec() -> Any:
    # Only the installed package uses the extension; shipped source stays pure Python.
    if __name__ != "execnet.gateway_base":
        return None
    try:
        import execnet._core as core
    except Exception:
        return None
    for name in ("dumps", "loads", "dumps_internal", "loads_internal"):
        if not hasattr(core, name):
            return None
    return core


#: the native codec module, or None (pure Python); tests may set it to None
_core: Any = _load_native_codec()

#: EXECNET_NO_NATIVE_IO=1 keeps gateways on the pure-Python IO path (read once, at import)
NATIVE_IO = os.environ.get("EXECNET_NO_NATIVE_IO", "") in ("", "0")

_native_queue_type: Any = getattr(_core, "ChannelQueue", None)


def _stop_native_readers(timeout: float = 2.0) -> None:
    """Stop the native readers still running at interpreter exit, waiting up to ``timeout``.

    Runs after the groups' own exit hooks. A reader thread that would need the interpreter once
    finalization has begun (to report end of stream, say) is ended by the interpreter in a way
    the native frames cannot survive, so readers are ended while that is still safe.
    """
    import time

    deadline = time.monotonic() + timeout
    gateways = [gw for gw in list(_live_gateways) if getattr(gw, "_mux", None) is not None]
    for gateway in gateways:
        try:
            if gateway._pid == os.getpid():
                gateway._mux.close_read()
        except Exception:
            pass
    for gateway in gateways:
        try:
            if gateway._pid == os.getpid():
                gateway._mux.join(max(0.0, deadline - time.monotonic()))
        except Exception:
            pass


def _make_mux(io: Any, execmodel: ExecModel) -> Any:
    """A started-later native multiplexer over ``io``'s descriptors, or None.

    Only for the thread-based exec models (the reader is an OS thread and the queues raise the
    stdlib ``queue.Empty``) and IO objects that name real descriptors (``_mux_fds``).
    """
    core = _core
    if core is None or not NATIVE_IO or getattr(core, "Mux", None) is None:
        return None
    if execmodel.backend not in ("thread", "main_thread_only"):
        return None
    fds = getattr(io, "_mux_fds", None)
    if fds is None:
        return None
    try:
        read_fd, write_fd, is_socket = fds()
        mux = core.Mux(read_fd, write_fd, is_socket)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        io._mux = mux
    except AttributeError:
        return None
    return mux


if NATIVE_IO and getattr(_core, "Mux", None) is not None:
    import atexit

    # registered at import, before any Group's hook, so it runs after them (LIFO)
    atexit.register(_stop_native_readers)


def dumps(obj: object) -> bytes:
    """Serialize ``obj`` to bytes (versioned format)."""
    core = _core
    if core is not None and DUMPFORMAT_VERSION == b"\x02":
        return core.dumps(obj)  # type: ignore[no-any-return]
    return _Serializer().save(obj, versioned=True)  # type: ignore[return-value]


def dump(byteio: WriteIO, obj: object) -> None:
    """Serialize ``obj`` to the writable ``byteio`` (versioned format)."""
    _Serializer(write=byteio.write).save(obj, versioned=True)


def loads(bytestring: bytes, py2str_as_py3str: bool = False, py3str_as_py2str: bool = False) -> Any:
    """Load an object from bytes made by :func:`dumps`."""
    core = _core
    if core is not None and DUMPFORMAT_VERSION == b"\x02":
        return core.loads(bytestring, py2str_as_py3str, py3str_as_py2str)
    io = BytesIO(bytestring)
    return load(io, py2str_as_py3str=py2str_as_py3str, py3str_as_py2str=py3str_as_py2str)


def load(io: ReadIO, py2str_as_py3str: bool = False, py3str_as_py2str: bool = False) -> Any:
    """Load an object from a readable stream (versioned format)."""
    strconfig = (py2str_as_py3str, py3str_as_py2str)
    return Unserializer(io, strconfig=strconfig).load(versioned=True)


def loads_internal(
    data: bytes, channelfactory: Any = None, strconfig: tuple[bool, bool] | None = None
) -> Any:
    """Load wire-format (unversioned) data; ``channelfactory`` may be a channel or gateway."""
    core = _core
    if core is not None:
        factory: Any = channelfactory
        if channelfactory is not None:
            own = getattr(channelfactory, "_strconfig", None)
            if own is not None:
                strconfig = own
            if isinstance(channelfactory, Channel):
                factory = channelfactory.gateway._channelfactory
            else:
                factory = getattr(channelfactory, "_channelfactory", channelfactory)
        return core.loads_internal(data, factory, strconfig or (True, False))
    return Unserializer(BytesIO(data), channelfactory, strconfig).load()


def _loads_wire(data: bytes, factory: ChannelFactory, strconfig: tuple[bool, bool]) -> Any:
    core = _core
    if core is not None:
        return core.loads_internal(data, factory, strconfig)
    return Unserializer(BytesIO(data), factory, strconfig).load()


def dumps_internal(obj: object) -> bytes:
    """Serialize ``obj`` in the wire format (no version byte)."""
    core = _core
    if core is not None:
        return core.dumps_internal(obj)  # type: ignore[no-any-return]
    return _Serializer().save(obj)  # type: ignore[return-value]


_BASE_SEND = BaseGateway._send
