"""Master-side IO for subprocess gateways (popen, ssh, vagrant) and proxied (``via=``) gateways.

This module is also shipped as source: for ``via=`` gateways the master ``remote_exec``s it on
the forwarding gateway, where it runs :func:`serve_proxy_io` under ``__channelexec__``. It must
therefore stay self-contained and stdlib-only.
"""

from __future__ import annotations

import atexit
import os
import struct
import subprocess
import sys
import threading
import time

# typing is for type checkers only (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

try:
    from execnet.gateway_base import Message, Popen2IO
except ImportError:  # shipped source running in an exec-bootstrapped forwarder
    try:
        from __main__ import Message, Popen2IO  # type: ignore[no-redef]
    except ImportError:
        Message = Popen2IO = None  # type: ignore[misc,assignment]

#: The stdin one-liner every subprocess runs; the master then writes one repr'd source line.
popen_bootstrapline = "import sys;exec(eval(sys.stdin.readline()))"

#: Control requests a master sends to the forwarder of a proxied gateway.
RIO_KILL = 1
RIO_WAIT = 2
RIO_REMOTEADDRESS = 3
RIO_CLOSE_WRITE = 4

_HEADER = struct.Struct("!bii")
#: How much of ssh's stderr is kept to explain a failed connection.
_STDERR_KEEP = 4096


class Popen2IOMaster:
    """Protocol IO over the stdin/stdout pipes of a child process (``subprocess.Popen``).

    The child stays in this process's process group, so a terminal's Ctrl-C reaches workers
    as it does with execnet. No ``PR_SET_PDEATHSIG``: Linux ties it to the *thread* that
    started the child, and gateways are often made from short-lived threads (pytest-xdist),
    which would kill healthy workers. A worker whose master dies sees EOF on its stdin and
    shuts itself down instead.

    ``stderr_tee=True`` pipes the child's stderr through a thread that copies it to fd 2 and
    keeps its tail in :attr:`stderr_tail` (used to explain ssh failures). ``control`` is the
    shared ssh master the child uses (``ssh_reuse``); it is released once the child has exited.
    """

    remoteaddress: str
    #: The ssh master connection this child uses (``ssh_reuse``), released when it ends.
    _control: _SshControl | None = None

    def __init__(
        self,
        args: list[str],
        execmodel: Any,
        stderr_tee: bool = False,
        control: _SshControl | None = None,
    ) -> None:
        self.execmodel = execmodel
        if control is not None:
            self._control = control
            self._control_lock = threading.Lock()
        subprocess = execmodel.subprocess
        PIPE = subprocess.PIPE
        self._stderr_chunks: list[bytes] = []
        self.popen = subprocess.Popen(
            args, stdin=PIPE, stdout=PIPE, stderr=PIPE if stderr_tee else None
        )
        self._stdin = self.popen.stdin
        # None for file objects without a raw layer (gevent's): then write + flush
        self._stdin_raw = getattr(self._stdin, "raw", None)
        self._stdout = self.popen.stdout
        self._stderr_done = None
        if stderr_tee:
            self._stderr_done = execmodel.Event()
            execmodel.start(self._tee_stderr)

    def _tee_stderr(self) -> None:
        stream = self.popen.stderr
        # read1: whatever is available (cooperative for green exec models' file objects)
        read = getattr(stream, "read1", stream.read)
        kept = 0
        try:
            while True:
                data = read(4096)
                if not data:
                    break
                try:
                    os.write(2, data)
                except OSError:
                    pass
                self._stderr_chunks.append(data)
                kept += len(data)
                while kept > _STDERR_KEEP and len(self._stderr_chunks) > 1:
                    kept -= len(self._stderr_chunks.pop(0))
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()  # type: ignore[union-attr]
            if self._control is not None:
                # stderr ends when the ssh client exits, on every path (also when nobody
                # calls wait(): a failed bootstrap, a kill at the end of terminate).
                self.wait()

    @property
    def stderr_tail(self) -> str:
        """The last few KB the child wrote to stderr (only with ``stderr_tee``)."""
        if self._stderr_done is not None:
            self._stderr_done.wait(1.0)
        return b"".join(self._stderr_chunks)[-_STDERR_KEEP:].decode("utf-8", "replace")

    def read(self, numbytes: int) -> bytes:
        """Read exactly ``numbytes`` bytes from the child's stdout (EOFError if it ends)."""
        buf: bytes = self._stdout.read(numbytes)
        if len(buf) == numbytes:
            return buf
        parts = [buf]
        got = len(buf)
        while got < numbytes:
            data = self._stdout.read(numbytes - got)
            if not data:
                raise EOFError("expected %d bytes, got %d" % (numbytes, got))
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to the child's stdin."""
        # Unbuffered writes: nothing is left in a buffer to be flushed (and to fail again
        # with BrokenPipeError) when the pipe is closed or garbage-collected later.
        raw = self._stdin_raw
        if raw is None:
            self._stdin.write(data)
            self._stdin.flush()
            return
        view = memoryview(data)
        while view:
            written = raw.write(view)
            view = view[written:]

    def close_read(self) -> None:
        self._stdout.close()
        mux = getattr(self, "_mux", None)
        if mux is not None:
            mux.close_read()

    def close_write(self) -> None:
        self._stdin.close()
        mux = getattr(self, "_mux", None)
        if mux is not None:
            # the Mux writes through its own duplicate: close it too, so the child sees EOF
            mux.close_write()

    def _mux_fds(self) -> tuple[int, int, bool | None]:
        """``(read_fd, write_fd, is_socket)`` for a native multiplexer.

        Nothing is left in ``_stdout``'s buffer at this point: after its one-byte
        acknowledgement the worker writes only in answer to messages.
        """
        return self._stdout.fileno(), self._stdin.fileno(), False

    def wait(self) -> int | None:
        """Wait for the child to exit; its return code, or None if it cannot be waited for."""
        try:
            returncode: int | None = self.popen.wait()
        except OSError:
            returncode = None
        if self._control is not None:
            with self._control_lock:
                control, self._control = self._control, None
            if control is not None:
                control.release()
        return returncode

    def kill(self) -> None:
        """Kill the child (SIGKILL on POSIX)."""
        try:
            self.popen.kill()
        except OSError as e:
            sys.stderr.write("ERROR killing: %s\n" % (e,))
            sys.stderr.flush()


def shell_split_path(path: str) -> list[str]:
    """Split a ``python=`` value like a POSIX shell (on Windows ``\\`` first becomes ``/``)."""
    import shlex

    if sys.platform.startswith("win"):
        path = path.replace("\\", "/")
    return shlex.split(path)


def popen_args(spec: Any) -> list[str]:
    """The argv of a ``popen`` child."""
    args = shell_split_path(spec.python) if spec.python else []
    if not args:
        args = [sys.executable]
    args.append("-u")
    if spec.dont_write_bytecode:
        args.append("-B")
    args.extend(["-c", popen_bootstrapline])
    return args


def _remote_command(spec: Any) -> str:
    remotepython = spec.python or "python"
    return f'{remotepython} -c "{popen_bootstrapline}"'


def ssh_args(spec: Any, control_path: str | None = None) -> list[str]:
    """The argv of an ``ssh=`` gateway's ssh client.

    With ``control_path`` (connection reuse, see :func:`ssh_reuse`) the client shares one
    master connection per path: options given on the command line come before the spec's own
    and ``ssh_config``'s, so they take precedence. Without it the argv is execnet's.
    """
    args = ["ssh", "-C"]
    if control_path is not None:
        args.extend(_control_options(control_path))
    if spec.ssh_config is not None:
        args.extend(["-F", str(spec.ssh_config)])
    args.extend(spec.ssh.split())
    args.append(_remote_command(spec))
    return args


def vagrant_ssh_args(spec: Any) -> list[str]:
    """The argv of a ``vagrant_ssh=`` gateway."""
    args = ["vagrant", "ssh", spec.vagrant_ssh, "--", "-C"]
    if spec.ssh_config is not None:
        args.extend(["-F", str(spec.ssh_config)])
    args.append(_remote_command(spec))
    return args


# --- ssh connection reuse ----------------------------------------------------------------------

#: Environment variable that turns connection reuse on for every ``ssh=`` gateway.
SSH_REUSE_ENV = "EXECNET_SSH_REUSE"
#: Seconds an idle master outlives its last session when nobody stops it (a killed master
#: process); normally the master is stopped as soon as its last gateway has ended.
SSH_CONTROL_PERSIST = 10
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off", "")
#: sun_path holds 108 bytes; ssh binds ``<path>.<16 random chars>`` first, then renames.
_SUN_PATH_MAX = 107 - 17


def ssh_reuse(spec: Any) -> bool:
    """Whether the ``ssh=`` gateway of ``spec`` shares a master connection.

    The spec key ``ssh_reuse`` (a flag, or ``ssh_reuse=yes|no``) decides; without it the
    environment variable ``EXECNET_SSH_REUSE`` does (``1``/``yes``/``true``/``on``).
    """
    value = getattr(spec, "ssh_reuse", None)
    where = "ssh_reuse"
    if value is None:
        value = os.environ.get(SSH_REUSE_ENV)
        where = SSH_REUSE_ENV
        if value is None:
            return False
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where}={value!r}: expected one of {', '.join(_TRUE + _FALSE[:-1])}")


def _control_options(control_path: str) -> list[str]:
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_path}",
        "-o",
        f"ControlPersist={SSH_CONTROL_PERSIST}",
    ]


class _SshControl:
    """One master connection shared by the ssh gateways with identical ssh arguments.

    The gateways' own ssh clients run with ``ControlMaster=auto``: the first becomes the
    master (and backgrounds it, ``ControlPersist``), later ones multiplex over it, and a
    client that finds a dead master's socket removes it and becomes the new master. Each
    gateway holds one reference from its start until its ssh client has exited; the last
    release sends ``ssh -O exit``, so no master outlives the gateways that used it.
    """

    def __init__(self, path: str, target_args: list[str]) -> None:
        self.path = path
        self._target_args = target_args
        self._lock = threading.Lock()
        self._users = 0

    def acquire(self) -> None:
        # Held while a master is being stopped, so that no client attaches to a dying one.
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self.stop()

    def stop(self) -> None:
        """Ask the master (if one runs) to exit and wait until it has; quietly, it may be
        gone already."""
        if not os.path.exists(self.path):
            return
        pid = _socket_peer_pid(self.path)
        try:
            subprocess.run(
                ["ssh", *_control_options(self.path), "-O", "exit", *self._target_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return
        if pid is not None:
            # "Exit request sent" comes before the master has closed its connection.
            deadline = time.monotonic() + _MASTER_EXIT_WAIT
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.005)


#: Seconds ``stop`` waits for a master to exit after ``ssh -O exit``.
_MASTER_EXIT_WAIT = 5.0


def _socket_peer_pid(path: str) -> int | None:
    """The pid of the process listening on the unix socket ``path`` (Linux: SO_PEERCRED)."""
    import socket

    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(path)
            cred = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", cred)[0]
    return pid if pid > 0 else None


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True


class _SshControlRegistry:
    """The control sockets of this process: one private directory, one socket per target."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._dir: str | None = None
        self._controls: dict[str, _SshControl] = {}

    def _directory(self) -> str:
        if self._dir is None or not os.path.isdir(self._dir):
            import tempfile

            base = tempfile.gettempdir()
            if len(base) > 40 or any(c.isspace() or c == "%" for c in base):
                # ssh splits option values on whitespace and expands %-tokens in ControlPath
                base = "/tmp"
            # mkdtemp: mode 0700, so only this user reaches the sockets
            self._dir = tempfile.mkdtemp(prefix="execnet-ssh-", dir=base)
        return self._dir

    def control(self, target_args: list[str]) -> _SshControl:
        """The shared master for one set of ssh arguments (acquired for the caller)."""
        import hashlib

        key = hashlib.sha256("\0".join(target_args).encode("utf-8", "surrogateescape"))
        with self._lock:
            if os.getpid() != self._owner:
                self._forget_after_fork()
            path = os.path.join(self._directory(), key.hexdigest()[:16])
            if len(os.fsencode(path)) > _SUN_PATH_MAX:
                raise ValueError(f"ssh control socket path too long: {path!r}")
            control = self._controls.get(path)
            if control is None:
                control = self._controls[path] = _SshControl(path, target_args)
            control.acquire()
            return control

    def _forget_after_fork(self) -> None:
        # A forked child does not own its parent's masters.
        self._owner = os.getpid()
        self._dir = None
        self._controls = {}

    def shutdown(self) -> None:
        """Stop every master of this process and remove the socket directory (atexit)."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            controls = list(self._controls.values())
            self._controls = {}
            directory, self._dir = self._dir, None
        for control in controls:
            control.stop()
        if directory is not None:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


_ssh_controls = _SshControlRegistry()
if __name__ != "__channelexec__":
    # Registered at import, before any Group's hook: atexit runs hooks in reverse, so the
    # groups terminate their gateways first and the masters are stopped last. (A forwarder
    # runs this text once per proxied gateway; its masters end with their last gateway.)
    atexit.register(_ssh_controls.shutdown)


def _ssh_target_args(spec: Any) -> list[str]:
    """The ssh arguments that pick the connection (``-F`` and the spec's), no command."""
    args = ["-F", str(spec.ssh_config)] if spec.ssh_config is not None else []
    return [*args, *spec.ssh.split()]


def create_io(spec: Any, execmodel: Any) -> Any:
    """Start the child process described by ``spec`` and return its IO object."""
    if spec.popen:
        args = popen_args(spec)
        return Popen2IOMaster(args, execmodel)
    if spec.ssh:
        if not ssh_reuse(spec):
            io = Popen2IOMaster(ssh_args(spec), execmodel, stderr_tee=True)
            io.remoteaddress = spec.ssh
            return io
        control = _ssh_controls.control(_ssh_target_args(spec))
        try:
            io = Popen2IOMaster(
                ssh_args(spec, control.path), execmodel, stderr_tee=True, control=control
            )
        except BaseException:
            control.release()
            raise
        io.remoteaddress = spec.ssh
        return io
    if spec.vagrant_ssh:
        args = vagrant_ssh_args(spec)
        io = Popen2IOMaster(args, execmodel, stderr_tee=True)
        io.remoteaddress = spec.vagrant_ssh
        return io
    return None


# --- proxied gateways -------------------------------------------------------------------------


class ProxyIO:
    """Master-side IO of a gateway whose process was started by another gateway (``via=``).

    Protocol bytes travel as ``bytes`` items on ``proxy_channel``; process control (wait, kill,
    remote address, closing stdin) goes through a second channel handed to the forwarder.
    """

    def __init__(self, proxy_channel: Any, execmodel: Any) -> None:
        self.execmodel = execmodel
        self._channel = proxy_channel
        self._buffer = b""
        self._controlchan = proxy_channel.gateway.newchannel()
        self._controllock = execmodel.Lock()
        proxy_channel.send(self._controlchan)

    def read(self, numbytes: int) -> bytes:
        """Read exactly ``numbytes`` bytes of the proxied stream.

        EOFError when it ends; the forwarder's RemoteError if starting the process failed.
        """
        buf = self._buffer
        while len(buf) < numbytes:
            try:
                item = self._channel.receive()
            except EOFError:
                self._buffer = buf
                raise EOFError("expected %d bytes, got %d" % (numbytes, len(buf))) from None
            buf += item
        self._buffer = buf[numbytes:]
        return buf[:numbytes]

    def write(self, data: bytes) -> None:
        try:
            self._channel.send(bytes(data))
        except OSError:
            # The forwarder ended the proxy channel: report why, if it said so.
            error = self._channel._getremoteerror()
            if error is not None and not isinstance(error, EOFError):
                raise error from None
            raise

    def _controll(self, event: int) -> Any:
        with self._controllock:
            self._controlchan.send(event)
            return self._controlchan.receive()

    def close_read(self) -> None:
        """Nothing to release locally; the forwarder ends the stream when the process exits."""

    def close_write(self) -> None:
        try:
            self._controll(RIO_CLOSE_WRITE)
        except (EOFError, OSError):
            pass

    def kill(self) -> None:
        try:
            self._controll(RIO_KILL)
        except (EOFError, OSError):
            pass

    def wait(self) -> int | None:
        try:
            return self._controll(RIO_WAIT)  # type: ignore[no-any-return]
        except (EOFError, OSError):
            return None

    @property
    def remoteaddress(self) -> str:
        address = self._controll(RIO_REMOTEADDRESS)
        if address is None:
            raise AttributeError("remoteaddress")
        return address  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<RemoteIO via {self._channel.gateway.id}>"


class PseudoSpec:
    """A spec rebuilt from ``vars(XSpec)`` on the forwarder; missing keys read as None."""

    def __init__(self, vars: dict[str, Any]) -> None:
        self.__dict__.update(vars)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def serve_proxy_io(proxy_channelX: Any) -> None:
    """Forwarder side of a proxied gateway: start the process, then pump bytes both ways.

    The control channel is served from the start, so the master's wait/kill requests get an
    answer (None) even when the process could not be started.
    """
    log = proxy_channelX.gateway._trace
    execmodel = proxy_channelX.gateway.execmodel
    spec = PseudoSpec(proxy_channelX.receive())
    control_chan = proxy_channelX.receive()
    log("serve_proxy_io: got control channel", control_chan)
    sub_io: Any = None

    def process_control(data: int) -> None:
        if data == RIO_WAIT:
            control_chan.send(sub_io.wait() if sub_io is not None else None)
        elif data == RIO_KILL:
            if sub_io is not None:
                sub_io.kill()
            control_chan.send(None)
        elif data == RIO_REMOTEADDRESS:
            control_chan.send(getattr(sub_io, "remoteaddress", None))
        elif data == RIO_CLOSE_WRITE:
            if sub_io is not None:
                try:
                    sub_io.close_write()
                except (OSError, ValueError):
                    pass
            control_chan.send(None)
        else:
            raise ValueError(f"unknown proxy control request {data!r}")

    control_chan.setcallback(process_control)

    # The forwarder starts the process itself: popen uses its interpreter, ssh runs from here.
    sub_io = create_io(spec, execmodel)
    if sub_io is None:
        raise ValueError(f"no gateway type found for {spec._spec!r}")

    def write_to_sub(data: bytes) -> None:
        try:
            sub_io.write(data)
        except (OSError, ValueError):
            # The process is gone; its EOF on stdout ends the forwarding loop below.
            pass

    proxy_channelX.setcallback(write_to_sub)

    try:
        handshake = sub_io.read(1)
    except EOFError:
        return
    if handshake != b"1":
        raise AssertionError(repr(handshake))
    proxy_channelX.send(handshake)
    try:
        while True:
            header = sub_io.read(_HEADER.size)
            length = _HEADER.unpack(header)[2]
            payload = sub_io.read(length) if length else b""
            proxy_channelX.send(header + payload)
    except EOFError:
        log("serve_proxy_io: EOF from proxied process")
    finally:
        try:
            sub_io.close_read()
        except (OSError, ValueError):
            pass


if __name__ == "__channelexec__":
    serve_proxy_io(channel)  # type: ignore[name-defined] # noqa: F821
