#! /usr/bin/env python
"""A socket server that executes the one line of Python source sent by each connection.

Start it as a program::

    python -m execnet.script.socketserver [host:port]

The default address is ``127.0.0.1:8888`` (loopback only). execnet masters then connect
with the spec ``socket=host:port``; each connection sends one ``repr``'d source line (the
execnet bootstrap), which the server executes with the globals ``clientsock`` and
``address``. Connections are served one at a time, in a loop.

Security: there is no authentication and no encryption. Anyone who can connect runs
arbitrary code as the server's user. Bind to a loopback address (the default) or a
trusted network only; binding any other address prints a warning to stderr.

Shipped as source, the same file also runs as a ``remote_exec``'d module (``installvia=``):
it receives a bind address (``"host:port"`` or ``(host, port)``), sends back the address it
listens on, serves exactly one connection with the gateway's exec model and stops. It must
stay self-contained and stdlib-only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

progname = "socket_readline_exec_server-1.2"

#: Address used when none is given on the command line.
DEFAULT_ADDRESS = "127.0.0.1:8888"

_verbose = __name__ == "__main__"


def print_(*args: Any) -> None:
    """Progress output (program mode only; a remote_exec'd server stays quiet)."""
    if _verbose:
        print(" ".join(str(arg) for arg in args))
        sys.stdout.flush()


def parse_address(hostport: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` (host may be empty, or ``[v6addr]``) or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(hostport, str):
        host, _, portstr = hostport.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, int(portstr)
    host, port = hostport
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def exec_from_one_connection(serversock: Any, execmodel: Any = None) -> None:
    """Accept one connection, read its source line and execute it (synchronously)."""
    print_(progname, "Entering Accept loop", serversock.getsockname())
    clientsock, address = serversock.accept()
    print_(progname, "got new connection from {} {}".format(*address[:2]))
    try:
        clientfile = clientsock.makefile("rb")
        print_("reading line")
        # rstrip: a telnet client ends lines with \r\n
        line = clientfile.readline().rstrip()
        clientfile.close()
        g: dict[str, Any] = {"clientsock": clientsock, "address": address}
        if execmodel is not None:
            g["execmodel"] = execmodel
        source = eval(line)
        if source:
            co = compile(source + "\n", "<socket server>", "exec")
            print_(progname, "compiled source, executing")
            try:
                exec(co, g)
            finally:
                print_(progname, "finished executing code")
    finally:
        try:
            clientsock.close()
        except OSError:
            pass


def bind_and_listen(hostport: str | tuple[str, int], execmodel: Any = None) -> Any:
    """A listening TCP socket on ``hostport`` (with the exec model's socket module if given)."""
    if execmodel is not None:
        socket = execmodel.socket
    else:
        import socket
    address = parse_address(hostport)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    serversock = socket.socket(family, socket.SOCK_STREAM)
    # Allow a restarted server to bind the address again right away.
    if os.name == "posix" and sys.platform != "cygwin":
        serversock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Children started by executed code must not inherit the listening socket.
    serversock.set_inheritable(False)
    serversock.bind(address)
    serversock.listen(5)
    return serversock


def startserver(serversock: Any, loop: bool = False, execmodel: Any = None) -> None:
    """Serve connections one at a time; once, or until KeyboardInterrupt/SystemExit."""
    execute_path = os.getcwd()
    try:
        while True:
            try:
                exec_from_one_connection(serversock, execmodel)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                if _verbose:
                    import traceback

                    traceback.print_exc()
                print_("got exception", exc)
            os.chdir(execute_path)
            if not loop:
                break
    finally:
        print_("leaving socketserver execloop")
        try:
            serversock.shutdown(2)
        except OSError:
            pass
        serversock.close()


def main(argv: list[str]) -> None:
    hostport = argv[1] if len(argv) > 1 else DEFAULT_ADDRESS
    host, port = parse_address(hostport)
    if not is_loopback(host):
        sys.stderr.write(
            f"WARNING: {progname} listening on {host or '*'}:{port}: anyone who can "
            "connect can execute code as this user (no authentication)\n"
        )
        sys.stderr.flush()
    serversock = bind_and_listen((host, port))
    try:
        startserver(serversock, loop=True)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv)
elif __name__ == "__channelexec__":
    _channel = globals()["channel"]
    _execmodel = _channel.gateway.execmodel
    _bindname = _channel.receive()
    _sock = bind_and_listen(_bindname, _execmodel)
    _channel.send(_sock.getsockname())
    startserver(_sock, loop=False, execmodel=_execmodel)
