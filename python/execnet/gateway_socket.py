"""Socket gateways: protocol IO over a TCP connection to an execnet socket server.

The source of :class:`SocketIO` is shipped to the server together with ``gateway_base``
(see ``gateway_bootstrap.bootstrap_socket``), so the class must only use names that exist
there: the ``socket`` module and builtins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .gateway_bootstrap import HostNotFound

if TYPE_CHECKING:
    import socket

    from .gateway_base import ExecModel


class SocketIO:
    """Protocol IO over a connected stream socket."""

    remoteaddress: str

    def __init__(self, sock: socket.socket, execmodel: ExecModel) -> None:
        self.sock = sock
        self.execmodel = execmodel
        socket = execmodel.socket
        try:
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.SOL_IP, socket.IP_TOS, 0x10)  # IPTOS_LOWDELAY
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            import sys

            sys.stderr.write("WARNING: cannot set socketoption")

    def read(self, numbytes: int) -> bytes:
        """Read exactly ``numbytes`` bytes (EOFError when the peer closes first)."""
        parts = []
        got = 0
        while got < numbytes:
            data = self.sock.recv(numbytes - got)
            if not data:
                raise EOFError("expected %d bytes, got %d" % (numbytes, got))
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_read(self) -> None:
        try:
            self.sock.shutdown(0)
        except OSError:
            pass
        mux = getattr(self, "_mux", None)
        if mux is not None:
            mux.close_read()

    def close_write(self) -> None:
        try:
            self.sock.shutdown(1)
        except OSError:
            pass
        mux = getattr(self, "_mux", None)
        if mux is not None:
            mux.close_write()

    def _mux_fds(self) -> tuple[int, int, bool | None]:
        """``(read_fd, write_fd, is_socket)`` for a native multiplexer."""
        fd = self.sock.fileno()
        return fd, fd, True

    def wait(self) -> None:
        pass

    def kill(self) -> None:
        pass


def start_via(gateway: Any, hostport: tuple[str, int] | None = None) -> tuple[str, int]:
    """Start a one-connection socket server inside ``gateway``; return where it listens."""
    from execnet.script import socketserver

    if hostport is None:
        host, port = ("localhost", 0)
    else:
        host, port = hostport
    channel = gateway.remote_exec(socketserver)
    channel.send((host, port))
    realhost, realport = channel.receive()
    if not realhost or realhost == "0.0.0.0":
        realhost = "localhost"
    return realhost, realport


def create_io(spec: Any, group: Any, execmodel: Any) -> SocketIO:
    """Connect to the socket server named by ``spec`` (``socket=host:port`` or ``installvia=``)."""
    assert not spec.python, "socket: specifying python executables not yet supported"
    gateway_id = spec.installvia
    if gateway_id:
        host, port = start_via(group[gateway_id])
    else:
        address = spec.socket
        if isinstance(address, str) and address.startswith("["):  # socket=[::1]:8888
            host, _, portstr = address.rpartition(":")
        else:
            host, portstr = address.split(":")  # execnet's errors for other forms
        port = int(portstr)
    socket = execmodel.socket
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):  # socket=[::1]:8888
        host = host[1:-1]
        family = socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.connect((host, port))
    except socket.gaierror:
        sock.close()
        raise HostNotFound() from None
    except BaseException:
        sock.close()
        raise
    io = SocketIO(sock, execmodel)
    peer = sock.getpeername()
    if family == socket.AF_INET6:
        io.remoteaddress = "[%s]:%d" % (peer[0], peer[1])
    else:
        io.remoteaddress = "%s:%d" % (peer[0], peer[1])
    return io
