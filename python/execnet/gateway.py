"""The master side of a gateway: :class:`Gateway` and ``remote_exec`` source preparation."""

from __future__ import annotations

import os
import time
import types

from . import gateway_base
from .gateway_base import BaseGateway, Channel, Message

# typing, inspect and textwrap are imported where needed: ``import execnet`` stays cheap for
# scripts (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .gateway_base import IO
    from .xspec import XSpec

__all__ = ["CauseOfDeath", "Gateway", "RInfo", "RemoteStatus", "rinfo_source"]

#: Environment variable giving the heartbeat interval (seconds) of gateways whose spec has no
#: ``heartbeat=`` key. Unset, empty or ``0``: no heartbeats.
HEARTBEAT_ENV = "EXECNET_HEARTBEAT"

#: How long the receiver waits, once the remote's output ended, for a local process's exit status.
_EXIT_STATUS_WAIT = 0.25


class CauseOfDeath:
    """How the remote side of a gateway ended (:attr:`Gateway.cause_of_death`); immutable.

    ``kind`` is one of:

    * ``"exited"``: the process exited by itself with ``returncode``;
    * ``"killed"``: the process was ended by the signal named in ``signal`` (``"SIGKILL"``);
    * ``"connection lost"``: the connection ended and no exit status is known (socket gateways,
      a ``via=`` gateway whose forwarder died, an ssh connection that dropped, a process that
      closed its output but still ran); ``detail`` says what is known;
    * ``"unresponsive"``: heartbeats went unanswered (``heartbeat=`` spec key); this side then
      ended the process or connection;
    * ``"terminated"``: this side asked it to end (``Gateway.exit()``, ``Group.terminate()``);
      ``returncode``/``signal`` tell how the process then ended, if known.
    """

    __slots__ = ("kind", "returncode", "signal", "detail")

    kind: str
    returncode: int | None
    signal: str | None
    detail: str

    def __init__(
        self, kind: str, returncode: int | None = None, signal: str | None = None, detail: str = ""
    ) -> None:
        # a plain class rather than a dataclass: this module is imported by every worker
        for name, value in zip(self.__slots__, (kind, returncode, signal, detail), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CauseOfDeath is immutable: cannot set {name!r}")

    def _fields(self) -> tuple[str, int | None, str | None, str]:
        return (self.kind, self.returncode, self.signal, self.detail)

    def _replace(self, **changes: Any) -> CauseOfDeath:
        fields: dict[str, Any] = dict(zip(self.__slots__, self._fields(), strict=True))
        fields.update(changes)
        return CauseOfDeath(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CauseOfDeath):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"CauseOfDeath(kind={self.kind!r}, returncode={self.returncode!r}, "
            f"signal={self.signal!r}, detail={self.detail!r})"
        )

    def __str__(self) -> str:
        if self.kind == "exited":
            return f"remote exited with code {self.returncode}"
        if self.kind == "killed":
            return f"remote killed by {self.signal}"
        if self.kind == "terminated":
            if self.signal is not None:
                return f"terminated by this side, then killed by {self.signal}"
            if self.returncode is not None:
                return f"terminated by this side, exit code {self.returncode}"
            return "terminated by this side"
        text = "remote unresponsive" if self.kind == "unresponsive" else self.kind
        return f"{text}: {self.detail}" if self.detail else text


def _fd_ready(fd: int, write: bool, timeout: float) -> bool:
    """Whether ``fd`` is readable (writable with ``write``) within ``timeout`` seconds.

    ``poll`` where available: ``select`` refuses descriptors above ``FD_SETSIZE`` (1024), which
    a process holding many gateways reaches. Errors (a closed descriptor) are raised.
    """
    import select

    poll = getattr(select, "poll", None)
    if poll is None:
        lists: tuple[list[int], list[int]] = ([], [fd]) if write else ([fd], [])
        return any(select.select(lists[0], lists[1], [], timeout)[:2])
    poller = poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000 + 0.999))))


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _status_cause(returncode: int, terminated: bool) -> CauseOfDeath:
    """The cause for a process exit status as ``subprocess`` reports it (-N: signal N)."""
    sig = _signal_name(-returncode) if returncode < 0 else None
    if terminated:
        return CauseOfDeath("terminated", returncode, sig)
    if sig is not None:
        return CauseOfDeath("killed", returncode, sig)
    return CauseOfDeath("exited", returncode)


def heartbeat_interval(spec: Any) -> float | None:
    """The heartbeat interval of ``spec`` (its ``heartbeat=`` key, else ``$EXECNET_HEARTBEAT``).

    None when heartbeats are off; ``ValueError`` for a value that is not a number >= 0.
    """
    value = getattr(spec, "heartbeat", None)
    source = "heartbeat="
    if value is True:
        raise ValueError("heartbeat= needs a number of seconds")
    if value is None:
        value = os.environ.get(HEARTBEAT_ENV, "")
        source = HEARTBEAT_ENV + "="
    if value in ("", None):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{source}{value!r}: not a number of seconds") from None
    if not seconds >= 0.0 or seconds == float("inf"):
        raise ValueError(f"{source}{value!r}: not a number of seconds >= 0")
    return seconds or None


class Gateway(BaseGateway):
    """A connection to one remote interpreter (made by ``Group.makegateway``)."""

    _group: Any = None
    #: Missed heartbeat replies after which the remote is declared unresponsive.
    heartbeat_misses = 3

    def __init__(self, io: IO, spec: XSpec) -> None:
        """Private: gateways are made by ``makegateway``."""
        super().__init__(io=io, id=spec.id, _startcount=1)  # type: ignore[arg-type]  # set by Group
        self.spec = spec
        self._cause: CauseOfDeath | None = None
        self._exit_requested = False
        self._unresponsive: CauseOfDeath | None = None
        self._heartbeat_stop: Any = None
        self._initreceive()

    @property
    def cause_of_death(self) -> CauseOfDeath | None:
        """How the remote ended (a :class:`CauseOfDeath`), or None while it is connected.

        Set when the receiver sees the connection end, before any channel reports it; its text
        is appended to the ``EOFError`` that channels raise then. A local process that had not
        exited yet at that moment is looked at again here.
        """
        cause = self._cause
        if cause is None:
            # The receiver may not have seen the end yet (e.g. right after Group.terminate
            # killed the process): an exited local process answers already.
            popen = getattr(self._io, "popen", None)
            returncode = popen.poll() if popen is not None and self._process_status else None
            if returncode is not None:
                status = self._cause_from_status(returncode)
                if self._unresponsive is not None:
                    return self._unresponsive._replace(
                        returncode=status.returncode, signal=status.signal
                    )
                return status
        elif cause.returncode is None and cause.kind != "unresponsive":
            popen = getattr(self._io, "popen", None)
            returncode = popen.poll() if popen is not None and self._process_status else None
            if returncode is not None:
                cause = self._cause = self._cause_from_status(returncode)
        return cause

    @property
    def _process_status(self) -> bool:
        """Whether the local process's exit status is the remote's (popen, not ssh/socket)."""
        spec = self.spec
        return bool(spec.popen) and not spec.via

    def _cause_from_status(self, returncode: int) -> CauseOfDeath:
        return _status_cause(returncode, self._exit_requested)

    def _record_end(self) -> None:
        cause = self._find_cause()
        if self._unresponsive is not None:
            cause = self._unresponsive._replace(returncode=cause.returncode, signal=cause.signal)
        self._cause = cause
        error = self._error
        if isinstance(error, EOFError):
            # keep execnet's text first: callers match on it
            text = str(error)
            error.args = (f"{text} ({cause})" if text else str(cause),)
        elif error is None and cause.kind == "unresponsive":
            self._error = EOFError(str(cause))

    def _wait_exit_status(self, popen: Any, timeout: float) -> int | None:
        """``popen``'s exit status, waiting up to ``timeout`` seconds for it (None if still running).

        On Linux with a thread exec model the wait blocks on a pidfd, so the status is taken the
        moment the process ends; elsewhere it polls with growing sleeps.
        """
        try:
            returncode = popen.poll()
        except OSError:
            return None
        if returncode is not None:
            return returncode  # type: ignore[no-any-return]
        deadline = time.monotonic() + timeout
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None and self.execmodel.backend in ("thread", "main_thread_only"):
            try:
                fd = pidfd_open(popen.pid)
            except OSError:
                pass  # reaped meanwhile, or no pidfd support: poll below
            else:
                try:
                    _fd_ready(fd, False, timeout)
                except (OSError, ValueError):
                    pass
                finally:
                    os.close(fd)
        delay = 0.001
        while True:
            try:
                returncode = popen.poll()
            except OSError:
                return None
            remaining = deadline - time.monotonic()
            if returncode is not None or remaining <= 0:
                return returncode  # type: ignore[no-any-return]
            self.execmodel.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.02)

    def _find_cause(self) -> CauseOfDeath:
        """Work out how the remote ended, waiting briefly (bounded) for a process to exit."""
        io = self._io
        spec = self.spec
        popen = getattr(io, "popen", None)
        returncode = None
        if popen is not None:
            returncode = self._wait_exit_status(popen, _EXIT_STATUS_WAIT)
        elif spec.via and (spec.popen or spec.ssh or spec.vagrant_ssh):
            returncode = self._proxied_exit_status(_EXIT_STATUS_WAIT)
        if spec.popen:
            if returncode is not None:
                return self._cause_from_status(returncode)
            if spec.via:
                detail = "no exit status from the forwarding gateway"
            else:
                detail = "the process closed its output and still runs"
            if self._exit_requested:
                return CauseOfDeath("terminated", detail=detail)
            return CauseOfDeath("connection lost", detail=detail)
        if self._exit_requested:
            return CauseOfDeath("terminated")
        if spec.ssh or spec.vagrant_ssh:
            if returncode is None:
                return CauseOfDeath("connection lost", detail="no exit status from ssh")
            if returncode == 255 or returncode < 0:
                # 255: ssh's own failure (or a remote ended by a signal): no remote status
                how = (
                    f"killed by {_signal_name(-returncode)}"
                    if returncode < 0
                    else "exited with code 255"
                )
                return CauseOfDeath("connection lost", returncode, detail=f"ssh {how}")
            # ssh passes the remote command's exit status through
            return CauseOfDeath("exited", returncode)
        return CauseOfDeath("connection lost", detail="end of stream, no exit status")

    def _proxied_exit_status(self, timeout: float) -> int | None:
        """The exit status of a ``via=`` gateway's process, asked of its forwarder.

        The question is a round trip through the forwarding gateway, so it is asked from another
        thread and waited for at most ``timeout`` seconds.
        """
        wait = getattr(self._io, "wait", None)
        if wait is None:
            return None
        result: list[object] = []
        done = self.execmodel.Event()

        def ask() -> None:
            try:
                result.append(wait())
            except Exception:
                pass
            finally:
                done.set()

        try:
            self.execmodel.start(ask)
        except RuntimeError:  # interpreter shutdown refuses new threads
            return None
        done.wait(timeout)
        value = result[0] if result else None
        return value if isinstance(value, int) else None

    @property
    def remoteaddress(self) -> str:
        """The remote address of the transport (AttributeError for plain popen)."""
        return self._io.remoteaddress  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        """``<Gateway id='gw0' receive-live, thread model, 2 active channels>``."""
        try:
            r = "receive-live" if self.hasreceiver() else "not-receiving"
            i = str(len(self._channelfactory.channels()))
        except AttributeError:
            r = "uninitialized"
            i = "no"
        try:
            backend = self.execmodel.backend
        except AttributeError:
            backend = "unknown"
        return (
            f"<{self.__class__.__name__} id={self.id!r} {r}, {backend} model, {i} active channels>"
        )

    # -- heartbeats ------------------------------------------------------------------------

    def _start_heartbeat(self, interval: float) -> None:
        """Probe the remote with STATUS every ``interval`` seconds (see :attr:`heartbeat_misses`)."""
        if self._heartbeat_stop is not None or not self._receiving():
            return
        self._heartbeat_stop = self.execmodel.Event()
        self.execmodel.start(self._heartbeat_loop, (interval, self._heartbeat_stop))

    def _stop_heartbeat(self) -> None:
        stop = self._heartbeat_stop
        if stop is not None:
            stop.set()

    def _heartbeat_loop(self, interval: float, stop: Any) -> None:
        """Probe the remote; declare it unresponsive after ``heartbeat_misses`` silent intervals.

        At most one STATUS request is outstanding. An interval counts as silent when the request
        is still unanswered and the remote read none of what we sent it (see
        ``_outgoing_progress``), so a remote busy reading a large transfer, with
        the request queued behind it, is not declared unresponsive.
        """
        misses = max(1, int(self.heartbeat_misses))
        probe: Channel | None = None
        since = 0.0
        level: int | None = None
        try:
            while not stop.wait(interval):
                if not self._receiving():
                    return
                now = time.monotonic()
                if probe is not None:
                    if probe._receiveclosed.is_set():  # the reply (data, then close) arrived
                        probe = None
                    else:
                        current = self._outgoing_progress()
                        if current is not None and current != level:
                            since = now  # the remote is reading
                        level = current
                        if now - since >= misses * interval * 0.999:
                            self._declare_unresponsive(interval, misses)
                            return
                        self._flush_status()
                if probe is None:
                    try:
                        probe = self.newchannel()
                    except OSError:
                        return
                    since = now
                    level = self._outgoing_progress()
                    # queued, and written now only if that cannot block (see _flush_status)
                    self._deferred_sends.append(Message(Message.STATUS, probe.id))
                    self._flush_status()
        except Exception as exc:  # the interpreter may be shutting down
            self._trace("heartbeat loop ended:", repr(exc))
        finally:
            if probe is not None:
                # the remote made no channel for it: drop the id without telling it
                try:
                    self._channelfactory._local_close(probe.id)
                except Exception:
                    pass

    def _flush_status(self) -> None:
        """Write queued frames if nobody holds the send lock and the transport has room."""
        if self._deferred_sends and self._writable_now():
            try:
                self._flush_deferred()
            except (OSError, ValueError) as exc:
                self._trace("heartbeat: cannot send", exc)

    def _transport_fd(self) -> int | None:
        io = self._io
        fileobj = getattr(io, "_stdin", None) or getattr(io, "sock", None)
        try:
            return fileobj.fileno()  # type: ignore[union-attr,no-any-return]
        except (AttributeError, OSError, ValueError):
            return None

    def _writable_now(self) -> bool:
        """False when a small write to the transport would block (a remote not reading)."""
        fd = self._transport_fd()
        if fd is None:
            return True
        try:
            return _fd_ready(fd, True, 0)
        except (OSError, ValueError):
            return True

    def _unread_outgoing(self) -> int | None:
        """Bytes we sent that the remote has not taken yet (pipe content, unacknowledged socket
        data), or None where that cannot be known."""
        fd = self._transport_fd()
        if fd is None:
            return None
        try:
            import fcntl
            import struct
            import termios

            request = termios.TIOCOUTQ if getattr(self._io, "sock", None) else termios.FIONREAD
            buf = fcntl.ioctl(fd, request, b"\0\0\0\0")
            return struct.unpack("i", buf)[0]  # type: ignore[no-any-return]
        except (ImportError, AttributeError, OSError, ValueError):
            return None

    def _outgoing_progress(self) -> int | None:
        """A number that changes whenever the remote takes some of what we sent, or None.

        With the native mux: the bytes written so far minus those still unread. A level alone
        can repeat while the remote reads (a batch writer refills a full pipe to the same byte
        count); without the mux every frame is written whole, and the unread count serves.
        """
        unread = self._unread_outgoing()
        mux = self._mux
        if unread is None or mux is None:
            return unread
        try:
            return int(mux.stats()["bytes_written"]) - unread
        except (OSError, KeyError):
            return unread

    def _declare_unresponsive(self, interval: float, misses: int) -> None:
        """Record the cause, leave the group and end the remote, so channels get EOFError."""
        self._unresponsive = CauseOfDeath(
            "unresponsive",
            detail=f"no reply to {misses} heartbeats sent every {interval:g} s",
        )
        self._trace("declared unresponsive:", self._unresponsive)
        group = self._group
        if group is not None:
            try:
                if self in group:
                    group._unregister(self)
            except ValueError:
                pass
        io = self._io
        if getattr(io, "popen", None) is not None:
            # SIGKILL (also ends a stopped process); its end of output stops our receiver
            io.kill()
        elif hasattr(io, "sock"):
            # no process of ours: shutting the socket down ends the receiver
            io.close_read()
            io.close_write()
        else:
            # via=: the forwarder kills the process (a round trip, so not in this loop's way)
            self.execmodel.start(io.kill)

    def exit(self) -> None:
        """Ask the remote to shut down; does not wait (``Group.terminate`` does)."""
        self._trace("gateway.exit() called")
        self._exit_requested = True
        self._stop_heartbeat()
        group = self._group
        if group is not None:
            if self not in group:
                self._trace("gateway already unregistered with group")
                return
            group._unregister(self)
        try:
            self._trace("--> sending GATEWAY_TERMINATE")
            self._send(Message.GATEWAY_TERMINATE)
            self._trace("--> io.close_write")
            self._io.close_write()
        except (ValueError, EOFError, OSError) as exc:
            self._trace("io-error: could not send termination sequence")
            self._trace(" exception: %r" % exc)

    def reconfigure(self, py2str_as_py3str: bool = True, py3str_as_py2str: bool = False) -> None:
        """Set how strings are decoded on channels created from now on, on both sides."""
        self._strconfig = (py2str_as_py3str, py3str_as_py2str)
        data = gateway_base.dumps_internal(self._strconfig)
        self._send(Message.RECONFIGURE, data=data)

    def _rinfo(self, update: bool = False) -> RInfo:
        """Return some sys/env information from the remote (cached unless ``update``)."""
        if update or not hasattr(self, "_cache_rinfo"):
            ch = self.remote_exec(rinfo_source)
            try:
                self._cache_rinfo = RInfo(ch.receive())
            finally:
                ch.waitclose()
        return self._cache_rinfo

    def hasreceiver(self) -> bool:
        """Whether the receiver thread is still running."""
        return self._receiving()

    def remote_status(self) -> RemoteStatus:
        """The remote's ``numchannels``, ``numexecuting`` and ``execmodel``."""
        channel = self.newchannel()
        self._send(Message.STATUS, channel.id)
        statusdict = channel.receive()
        # the other side did not create a channel object: drop the local id again
        self._channelfactory._local_close(channel.id)
        return RemoteStatus(statusdict)

    def remote_exec(
        self,
        source: str | types.FunctionType | Callable[..., object] | types.ModuleType,
        **kwargs: object,
    ) -> Channel:
        """Run ``source`` remotely and return a channel connected to it.

        ``source`` is a string (dedented), a module (its source, file name kept for
        tracebacks) or a pure function whose first parameter is ``channel`` (called with
        ``kwargs``). In the remote code, ``channel`` is the other end and ``__name__`` is
        ``"__channelexec__"``.
        """
        call_name = None
        file_name = None
        if isinstance(source, types.ModuleType):
            import inspect
            import linecache

            file_name = inspect.getsourcefile(source)
            if file_name:
                # pick up edits made to the file since it was imported
                linecache.updatecache(file_name)
            source = inspect.getsource(source)
        elif source is rinfo_source:
            call_name = "rinfo_source"
            source, file_name = _rinfo_task()
        elif isinstance(source, types.FunctionType):
            import inspect

            call_name = source.__name__
            file_name = inspect.getsourcefile(source)
            source = _source_of_function(source)
        else:
            source = _dedent(str(source))

        if not call_name and kwargs:
            raise TypeError("can't pass kwargs to non-function remote_exec")

        channel = self.newchannel()
        self._send(
            Message.CHANNEL_EXEC,
            channel.id,
            gateway_base.dumps_internal((source, file_name, call_name, kwargs)),
        )
        return channel

    def remote_init_threads(self, num: int | None = None) -> None:
        """Deprecated, does nothing."""
        print("WARNING: remote_init_threads() is a no-operation in execnet-1.2")


class RInfo:
    """Attributes made from a dict (remote status or interpreter information)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        info = ", ".join(f"{k}={v}" for k, v in sorted(self.__dict__.items()))
        return f"<RInfo {info!r}>"


RemoteStatus = RInfo


def rinfo_source(channel):  # type: ignore[no-untyped-def]
    """Remote side of ``Gateway._rinfo``: send interpreter facts (shipped as source)."""
    import os
    import sys

    channel.send(
        dict(
            executable=sys.executable,
            version_info=sys.version_info[:5],
            platform=sys.platform,
            cwd=os.getcwd(),
            pid=os.getpid(),
        )
    )


def _dedent(text: str) -> str:
    """``textwrap.dedent(text)``, without importing ``textwrap`` when it would change nothing.

    Only a line starting with a space or a tab gives ``dedent`` something to remove (a margin,
    or a whitespace-only line); the import costs more than a first round trip.
    """
    if not text.startswith((" ", "\t")) and "\n " not in text and "\n\t" not in text:
        return text
    import textwrap

    return textwrap.dedent(text)


_rinfo_prepared: tuple[str, str | None] | None = None


def _rinfo_task() -> tuple[str, str | None]:
    """``rinfo_source``'s checked source and file name, made once per process.

    Preparing a function (``inspect.getsource``, dedent, the parse of the purity check) costs
    about as much as the remote round trip of ``_rinfo``, which pytest-xdist makes per worker;
    the first time, ``inspect`` also maps every loaded module to its file. This function of
    ours is known to be pure and unindented, so its lines are taken straight from its file:
    the same text ``_source_of_function`` makes (tests compare them).
    """
    global _rinfo_prepared
    if _rinfo_prepared is None:
        _rinfo_prepared = _own_function_task(rinfo_source)
    return _rinfo_prepared


def _own_function_task(
    function: types.FunctionType | Callable[..., Any],
) -> tuple[str, str | None]:
    """``(_source_of_function(function), inspect.getsourcefile(function))`` for a top-level
    function of this package, read directly (``inspect`` when the file does not look right)."""
    code = function.__code__
    file_name = code.co_filename
    try:
        # this package's sources are UTF-8 without a coding line (linecache would import
        # tokenize to find that out)
        with open(file_name, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    start = code.co_firstlineno - 1
    if (
        file_name.endswith(".py")
        and start < len(lines)
        and lines[start].startswith(f"def {function.__name__}(")
    ):
        end = start + 1
        # the block: indented or blank lines, without the blank ones after it
        while end < len(lines) and (not lines[end].strip() or lines[end][:1] in (" ", "\t")):
            end += 1
        while not lines[end - 1].strip():
            end -= 1
        return "\n" * start + "".join(lines[start:end]), file_name
    import inspect

    return _source_of_function(function), inspect.getsourcefile(function)


def _find_non_builtin_globals(source: str, codeobj: types.CodeType) -> list[str]:
    """Names used in ``source`` that are neither local to ``codeobj`` nor builtins."""
    import ast
    import builtins

    local_names = set(codeobj.co_varnames)
    return [
        node.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Name)
        and node.id not in local_names
        and node.id not in builtins.__dict__
    ]


def _source_of_function(function: types.FunctionType | Callable[..., Any]) -> str:
    """The source of a function fit for ``remote_exec``, or ValueError saying why not."""
    import inspect
    import textwrap

    if function.__name__ == "<lambda>":
        raise ValueError("can't evaluate lambda functions'")
    args = inspect.getfullargspec(function).args
    if not args or args[0] != "channel":
        raise ValueError("expected first function argument to be `channel`")

    closure = function.__closure__
    codeobj = function.__code__

    if closure is not None:
        raise ValueError("functions with closures can't be passed")

    try:
        source = inspect.getsource(function)
    except OSError as e:
        raise ValueError("can't find source file for %s" % function) from e

    source = textwrap.dedent(source)  # just for inner functions

    used_globals = _find_non_builtin_globals(source, codeobj)
    if used_globals:
        raise ValueError("the use of non-builtin globals isn't supported", used_globals)

    # keep the original line numbers in remote tracebacks
    leading_ws = "\n" * (codeobj.co_firstlineno - 1)
    return leading_ws + source
