#! /usr/bin/env python
"""An interactive Python prompt on a remote socket server (a demo).

Usage: ``python shell.py host:port`` with ``socketserver.py`` listening there. The client
sends this file's own source to the server, which executes it: the server side then reads
statements from the connection, executes them in one namespace and sends back what they print.
"""

from __future__ import annotations

import sys
from typing import Any


def _serve_prompt(sock: Any) -> None:
    """Server side: execute each received line, send its output (and the prompt) back."""
    import contextlib
    import io
    import traceback

    namespace: dict[str, Any] = {"__name__": "__remoteshell__"}
    reader = sock.makefile("rb")
    sock.sendall(b">>> ")
    for raw in reader:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = compile(line, "<remote shell>", "single")
                exec(code, namespace)
            except SystemExit:
                break
            except BaseException:
                traceback.print_exc()
        sock.sendall(out.getvalue().encode("utf-8") + b">>> ")
    reader.close()


def _client(hostport: str) -> None:
    import socket
    import threading

    host, _, port = hostport.rpartition(":")
    sock = socket.create_connection((host or "localhost", int(port)))
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    sock.sendall(repr(source).encode("utf-8") + b"\n")

    def show_output() -> None:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()

    printer = threading.Thread(target=show_output, daemon=True)
    printer.start()
    try:
        for line in sys.stdin:
            sock.sendall(line.encode("utf-8"))
    except KeyboardInterrupt:
        pass
    sock.shutdown(socket.SHUT_WR)
    # the server closes once it has answered every statement sent; wait for that output
    printer.join(60.0)
    sock.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: shell.py host:port\n")
        raise SystemExit(2)
    _client(sys.argv[1])
elif "clientsock" in globals():
    _serve_prompt(globals()["clientsock"])
