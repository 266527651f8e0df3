"""Groups of gateways, channels across several gateways, and bounded termination.

Importing this module creates :data:`default_group`; :func:`makegateway` and
:func:`set_execmodel` are its bound methods. Every :class:`Group` registers an ``atexit``
hook that terminates its gateways (waiting at most one second before killing).
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from functools import partial
from threading import Lock

from . import gateway, gateway_bootstrap, gateway_io
from .gateway_base import (
    Channel,
    ExecModel,
    RemoteError,
    WorkerPool,
    get_execmodel,
    trace,
)
from .xspec import XSpec

# typing is for type checkers only (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any

#: Sentinel: "no endmarker" for :meth:`MultiChannel.make_receive_queue`.
NO_ENDMARKER_WANTED = object()

#: Remote code applying ``chdir``/``nice``/``env:`` right after a gateway came up.
_CONFIGURE_SOURCE = """
import os
chdir, nice, env = channel.receive()
if chdir is not None:
    if not os.path.exists(chdir):
        os.mkdir(chdir)
    os.chdir(chdir)
if nice and hasattr(os, "nice"):
    os.nice(nice)
for name, value in env.items():
    os.environ[name] = value
"""


class Group:
    """Gateway membership and life-cycle management for multiple gateways."""

    #: Spec used by :meth:`makegateway` when it gets no (or an empty) spec.
    defaultspec = "popen"

    def __init__(
        self, xspecs: Iterable[XSpec | str | None] = (), execmodel: str = "thread"
    ) -> None:
        self._gateways: list[Any] = []
        self._autoidcounter = 0
        self._autoidlock = Lock()
        self._gateways_to_join: list[Any] = []
        _all_groups.add(self)
        # Local execmodel: how the master runs its receivers; remote: the workers' default.
        self.set_execmodel(execmodel)
        for xspec in xspecs:
            self.makegateway(xspec)
        atexit.register(self._cleanup_atexit)

    @property
    def execmodel(self) -> ExecModel:
        """The local execution model (threads or greenlets used by this process)."""
        return self._execmodel

    @property
    def remote_execmodel(self) -> ExecModel:
        """The execution model new gateways get unless their spec says ``execmodel=``."""
        return self._remote_execmodel

    def set_execmodel(self, execmodel: str, remote_execmodel: str | None = None) -> None:
        """Set the local and remote execution models (only before any gateway exists)."""
        if self._gateways:
            raise ValueError("can not set execution models if gateways have been created already")
        if remote_execmodel is None:
            remote_execmodel = execmodel
        self._execmodel = get_execmodel(execmodel)
        self._remote_execmodel = get_execmodel(remote_execmodel)

    def __repr__(self) -> str:
        idgateways = [gw.id for gw in self]
        return f"<Group {idgateways!r}>"

    def __getitem__(self, key: int | str | Any) -> Any:
        if isinstance(key, int):
            return self._gateways[key]
        for gw in list(self._gateways):
            if gw == key or gw.id == key:
                return gw
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
            return True
        except KeyError:
            return False

    def __len__(self) -> int:
        return len(self._gateways)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._gateways))

    def makegateway(self, spec: XSpec | str | None = None) -> Any:
        """Create and configure a gateway to a Python interpreter.

        ``spec`` is an :class:`XSpec` or its string form; a passed-in XSpec gets its ``id``
        and ``execmodel`` filled in. Without a spec, :attr:`defaultspec` is used.
        """
        if not spec:
            spec = self.defaultspec
        if not isinstance(spec, XSpec):
            spec = XSpec(spec)
        heartbeat = gateway.heartbeat_interval(spec)
        self.allocate_id(spec)
        if spec.execmodel is None:
            spec.execmodel = self.remote_execmodel.backend
        io: Any
        if spec.via:
            assert not spec.socket
            master = self[spec.via]
            proxy_channel = master.remote_exec(gateway_io)
            proxy_channel.send(vars(spec))
            io = gateway_io.ProxyIO(proxy_channel, self.execmodel)
        elif spec.popen or spec.ssh or spec.vagrant_ssh:
            io = gateway_io.create_io(spec, execmodel=self.execmodel)
        elif spec.socket:
            from . import gateway_socket

            io = gateway_socket.create_io(spec, self, execmodel=self.execmodel)
        else:
            raise ValueError(f"no gateway type found for {spec._spec!r}")
        try:
            gw = gateway_bootstrap.bootstrap(io, spec)
        except BaseException:
            _discard_io(io)
            raise
        gw.spec = spec
        try:
            self._register(gw)
        except BaseException:
            # e.g. a gateway with the same id registered meanwhile: do not leak the process
            gw.exit()
            _discard_io(io)
            raise
        if spec.chdir or spec.nice or spec.env:
            channel = gw.remote_exec(_CONFIGURE_SOURCE)
            nice = int(spec.nice) if spec.nice else 0
            channel.send((spec.chdir, nice, spec.env))
            channel.waitclose()
        if heartbeat is not None:
            gw._start_heartbeat(heartbeat)
        return gw

    def allocate_id(self, spec: XSpec) -> None:
        """Give ``spec`` the next free ``gwN`` id unless it already has one."""
        if spec.id is None:
            with self._autoidlock:
                id = "gw" + str(self._autoidcounter)
                self._autoidcounter += 1
                if id in self:
                    raise ValueError(f"already have gateway with id {id!r}")
                spec.id = id

    def _register(self, gateway: Any) -> None:
        assert getattr(gateway, "_group", None) is None
        assert gateway.id
        with self._autoidlock:  # check and append atomically (concurrent makegateway)
            assert gateway.id not in self
            self._gateways.append(gateway)
        gateway._group = self

    def _unregister(self, gateway: Any) -> None:
        self._gateways.remove(gateway)
        self._gateways_to_join.append(gateway)

    def _cleanup_atexit(self) -> None:
        trace(f"=== atexit cleanup {self!r} ===")
        self.terminate(timeout=1.0)

    def terminate(self, timeout: float | None = None) -> None:
        """Exit all gateways, wait for them and kill those still running after ``timeout``.

        Proxied (``via=``) gateways go before the gateways they travel through. With
        ``timeout=None`` it waits as long as it takes and never kills.
        """
        # Gateways that left the group earlier (exit(), declared unresponsive) are waited for
        # and reaped too, even when no member is left.
        while self or self._gateways_to_join:
            threads = _threads_available(self.execmodel)
            if self:
                vias = {gw.spec.via for gw in self if getattr(gw.spec, "via", None)}
                before = len(self._gateways)
                members = [gw for gw in self if gw.id not in vias]
                _exit_all(members, self.execmodel, timeout, threads)
                if len(self._gateways) == before:
                    # No progress (an exit() that did not unregister): take them all out.
                    for gw in self:
                        gw.exit()
                        if gw in self._gateways:
                            self._unregister(gw)
            to_join = list(self._gateways_to_join)
            del self._gateways_to_join[:]
            if threads:
                # Local processes and sockets are waited for here, all against one deadline
                # (bounded waits, no thread each); proxied gateways, whose wait and kill are
                # round trips through their forwarder, each in a thread of safe_terminate.
                direct = [gw for gw in to_join if _waitable_here(gw)]
                proxied = [gw for gw in to_join if not _waitable_here(gw)]
                if proxied:
                    safe_terminate(
                        self.execmodel,
                        timeout,
                        [(partial(_join_wait, gw), partial(_kill, gw)) for gw in proxied],
                    )
                _terminate_without_threads(direct, timeout)
            else:
                _terminate_without_threads(to_join, timeout)
            if timeout is not None:
                _reap(to_join)

    def remote_exec(self, source: Any, **kwargs: Any) -> MultiChannel:
        """``remote_exec`` on every member; returns a :class:`MultiChannel` of the channels."""
        channels = []
        for gw in self:
            channel = gw.remote_exec(source, **kwargs)
            channels.append(channel)
        return MultiChannel(channels)


_all_groups: weakref.WeakSet[Group] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    # Another thread may have held a group's id lock at the moment of the fork.
    for group in list(_all_groups):
        group._autoidlock = Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)


def _discard_io(io: Any) -> None:
    """Release the process or connection of a failed bootstrap, so nothing lingers."""
    try:
        popen = getattr(io, "popen", None)
        sock = getattr(io, "sock", None)
        if popen is not None:
            if popen.poll() is None:
                io.kill()
            popen.wait()
        elif sock is not None:
            sock.close()
        elif isinstance(io, gateway_io.ProxyIO):
            io.kill()
    except (OSError, ValueError, EOFError):
        pass


def _exit_all(
    gateways: list[Any], execmodel: ExecModel, timeout: float | None, threads: bool
) -> None:
    """Call ``exit()`` on every gateway; with a timeout, kill those whose exit blocks.

    ``exit()`` writes the termination message, which blocks when the worker stopped reading
    and its pipe is full; killing the process makes that write fail, so exit() returns.
    """
    if timeout is None or not gateways:
        for gw in gateways:
            gw.exit()
        return
    if not threads:
        deadline = time.monotonic() + timeout
        for gw in gateways:
            if not _writable(gw, max(0.0, deadline - time.monotonic())):
                trace(f"{gw!r} does not read its input; killing it")
                _kill(gw)
            gw.exit()
        return
    # exit() right here where it cannot block: nobody else is writing (the send lock is free)
    # and the pipe or socket has room for the 9-byte message; a thread each for the rest.
    rest = []
    for gw in gateways:
        if not _exit_now(gw, execmodel):
            rest.append(gw)
    if not rest:
        return
    pool = WorkerPool(execmodel)
    replies = [(gw, pool.spawn(gw.exit)) for gw in rest]
    deadline = time.monotonic() + timeout
    for gw, reply in replies:
        try:
            reply.waitfinish(timeout=max(0.0, deadline - time.monotonic()))
        except OSError:
            trace(f"exit() of {gw!r} blocked; killing it")
            _kill(gw)
            continue
        reply.get()
    pool.trigger_shutdown()


def _writable(gw: Any, timeout: float) -> bool:
    """Whether a small write to a subprocess gateway's stdin pipe would not block."""
    stdin = getattr(getattr(gw, "_io", None), "_stdin", None)
    try:
        fd = stdin.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return True
    try:
        return gateway._fd_ready(fd, True, timeout)
    except (OSError, ValueError):
        return True


def _exit_now(gw: Any, execmodel: ExecModel) -> bool:
    """Call ``gw.exit()`` if that cannot block; False (nothing done) otherwise."""
    if execmodel.backend not in ("thread", "main_thread_only"):
        return False
    io = getattr(gw, "_io", None)
    stream = getattr(io, "_stdin", None) or getattr(io, "sock", None)
    lock = getattr(gw, "_sendlock", None)
    if stream is None or lock is None:
        return False
    if not lock.acquire(False):
        return False
    try:
        try:
            fd = stream.fileno()
            writable = gateway._fd_ready(fd, True, 0)
        except (OSError, ValueError):
            writable = True  # closed already: exit() fails at once and says so
        if not writable:
            return False
        gw.exit()  # the send lock is re-entrant
        return True
    finally:
        lock.release()


def _waitable_here(gw: Any) -> bool:
    """Whether joining ``gw`` and waiting for its process are local, bounded operations."""
    io = getattr(gw, "_io", None)
    return getattr(io, "popen", None) is not None or getattr(io, "sock", None) is not None


def _join_wait(gw: Any) -> None:
    gw.join()
    gw._io.wait()


def _kill(gw: Any) -> None:
    trace(f"Gateways did not come down after timeout: {gw!r}")
    gw._io.kill()


def _reap(gateways: list[Any]) -> None:
    """Make sure no local child process outlives ``terminate(timeout)``.

    safe_terminate bounds its waits, so a process killed at the very end of the timeout may
    not have been reaped yet; a SIGKILLed process is gone within moments.
    """
    for gw in gateways:
        popen = getattr(getattr(gw, "_io", None), "popen", None)
        if popen is None or popen.poll() is not None:
            continue
        _kill(gw)
        try:
            popen.wait(timeout=2.0)
        except Exception:
            trace(f"process of {gw!r} did not end after SIGKILL")


def _threads_available(execmodel: ExecModel) -> bool:
    """False at interpreter shutdown on Python >= 3.12, where new threads are refused."""
    if execmodel.backend not in ("thread", "main_thread_only"):
        return True
    try:
        execmodel.start(lambda: None)
    except RuntimeError:
        return False
    return True


def _terminate_without_threads(gateways: list[Any], timeout: float | None) -> None:
    """Wait for every gateway in the calling thread, against one deadline; then kill.

    The receivers end when the remotes close their side, and a local process's exit status is
    taken by its receiver (``Gateway._record_end``), so the waits here are mostly already over.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for gw in gateways:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        gw.join(timeout=remaining)
    for gw in gateways:
        popen = getattr(gw._io, "popen", None)
        if popen is None:
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            popen.wait(timeout=remaining)
        except Exception:
            _kill(gw)
            try:
                popen.wait(timeout=5.0)
            except Exception:
                pass


class MultiChannel:
    """A sequence of channels (typically one per gateway) handled together."""

    _queue: Any

    def __init__(self, channels: Sequence[Channel]) -> None:
        self._channels = channels

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels)

    def __getitem__(self, key: int) -> Channel:
        return self._channels[key]

    def __contains__(self, chan: object) -> bool:
        return chan in self._channels

    def send_each(self, item: object) -> None:
        """Send ``item`` on every channel, in order."""
        for ch in self._channels:
            ch.send(item)

    def receive_each(self, withchannel: bool = False) -> list[Any]:
        """Receive one item from every channel, in order (``(channel, item)`` pairs if asked)."""
        assert not hasattr(self, "_queue")
        result = []
        for ch in self._channels:
            obj = ch.receive()
            if withchannel:
                result.append((ch, obj))
            else:
                result.append(obj)
        return result

    def make_receive_queue(self, endmarker: object = NO_ENDMARKER_WANTED) -> Any:
        """A queue receiving ``(channel, item)`` from every channel (created once, cached)."""
        try:
            return self._queue
        except AttributeError:
            self._queue = None
            for ch in self._channels:
                if self._queue is None:
                    self._queue = ch.gateway.execmodel.queue.Queue()

                def putreceived(obj: object, channel: Channel = ch) -> None:
                    self._queue.put((channel, obj))

                if endmarker is NO_ENDMARKER_WANTED:
                    ch.setcallback(putreceived)
                else:
                    ch.setcallback(putreceived, endmarker=endmarker)
            return self._queue

    def waitclose(self) -> None:
        """Wait for every channel to close; re-raise the first RemoteError afterwards."""
        first = None
        for ch in self._channels:
            try:
                ch.waitclose()
            except RemoteError as exc:
                if first is None:
                    first = exc
        if first:
            raise first


def safe_terminate(
    execmodel: ExecModel,
    timeout: float | None,
    list_of_paired_functions: Sequence[tuple[Callable[[], object], Callable[[], object]]],
) -> None:
    """Run every ``(term, kill)`` pair in parallel: ``term()``, and ``kill()`` if ``term``
    does not finish within ``timeout`` seconds (or raises OSError).

    Bounded: each pair is waited for at most ``2 * timeout`` seconds; a pair stuck in its
    ``kill`` is left behind instead of hanging the caller.
    """
    workerpool = WorkerPool(execmodel)

    def termkill(termfunc: Callable[[], object], killfunc: Callable[[], object]) -> None:
        termreply = workerpool.spawn(termfunc)
        try:
            termreply.get(timeout=timeout)
        except OSError:
            killfunc()

    replylist = []
    for termfunc, killfunc in list_of_paired_functions:
        reply = workerpool.spawn(termkill, termfunc, killfunc)
        replylist.append(reply)
    bound = None if timeout is None else 2 * timeout
    deadline = None if bound is None else time.monotonic() + bound
    for reply in replylist:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            reply.waitfinish(timeout=remaining)
        except OSError:
            trace(f"safe_terminate: {reply!r} did not finish in time, skipped")
            continue
        reply.get()
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    workerpool.waitall(timeout=remaining)
    workerpool.trigger_shutdown()


default_group = Group()
makegateway = default_group.makegateway
set_execmodel = default_group.set_execmodel
