"""Start the worker side of a gateway over a freshly opened IO object.

The master writes exactly one line, ``repr(source) + "\\n"``, which the child's stdin
one-liner evaluates and executes, and then writes nothing until it has read the worker's
one-byte acknowledgement ``b"1"``. Three flavours exist:

* import bootstrap (plain ``popen``): the worker imports ``execnet.gateway_base`` from this
  installation;
* exec bootstrap (``python=``, ``via=``, ssh, vagrant): the full source of ``gateway_base`` is
  shipped and executed in the worker's ``__main__``;
* socket bootstrap: like exec, for a socket server that executes what it receives.
"""

from __future__ import annotations

import os

import execnet

from . import gateway_base
from .gateway import Gateway

# typing is for type checkers only (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

#: The directory containing this ``execnet`` package; import-bootstrapped workers import from it.
importdir = os.path.dirname(os.path.dirname(execnet.__file__))


class HostNotFound(Exception):
    """The remote host could not be reached.

    For ssh/vagrant gateways ``args[0]`` is the address string and :attr:`detail` holds the
    tail of ssh's stderr (for instance ``Permission denied (publickey)``); socket gateways
    raise it without arguments when the host name does not resolve.
    """

    detail: str = ""

    def __str__(self) -> str:
        text = super().__str__()
        detail = self.detail.strip()
        if detail:
            return f"{text}: {detail}" if text else detail
        return text


def sendexec(io: Any, *sources: str) -> None:
    """Write the bootstrap line: the repr of the fragments joined by newlines."""
    source = "\n".join(sources)
    io.write((repr(source) + "\n").encode("utf-8"))


def _expect_ack(io: Any) -> None:
    s = io.read(1)
    assert s == b"1"


def bootstrap_import(io: Any, spec: Any) -> None:
    """Make a local worker import ``execnet.gateway_base`` from this installation.

    If that import fails in the worker (a shadowing ``execnet`` directory in its working
    directory, an extension module it cannot load), the worker answers ``b"0"`` instead of
    ``b"1"`` and reads one more line: the exec bootstrap, so it runs on shipped source.
    """
    sendexec(
        io,
        "import sys",
        f"if {importdir!r} not in sys.path:",
        f"    sys.path.insert(0, {importdir!r})",
        "try:",
        "    from execnet.gateway_base import serve, init_popen_io, get_execmodel",
        "except Exception:",
        "    sys.stdout.write('0')",
        "    sys.stdout.flush()",
        "    exec(eval(sys.stdin.readline()))",
        "else:",
        "    sys.stdout.write('1')",
        "    sys.stdout.flush()",
        f"    execmodel = get_execmodel({spec.execmodel!r})",
        f"    serve(init_popen_io(execmodel), id={spec.id + '-worker'!r})",
    )
    s = io.read(1)
    if s == b"0":
        bootstrap_exec(io, spec)
        return
    assert s == b"1"


def _host_not_found(io: Any) -> HostNotFound:
    exc = HostNotFound(io.remoteaddress)
    exc.detail = getattr(io, "stderr_tail", "") or ""
    return exc


def bootstrap_exec(io: Any, spec: Any) -> None:
    """Ship the source of ``gateway_base`` and start serving from the worker's ``__main__``."""
    import inspect

    try:
        sendexec(
            io,
            inspect.getsource(gateway_base),
            f"execmodel = get_execmodel({spec.execmodel!r})",
            "io = init_popen_io(execmodel)",
            "io.write('1'.encode('ascii'))",
            f"serve(io, id={spec.id + '-worker'!r})",
        )
        _expect_ack(io)
    except (EOFError, BrokenPipeError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The child ended without reading all of the source (larger than a pipe buffer):
            # what it printed still decides, as when the whole line fits in the pipe.
            try:
                _expect_ack(io)
            except EOFError:
                pass
            else:
                return
        ret = io.wait()
        if ret == 255 and hasattr(io, "remoteaddress"):
            raise _host_not_found(io) from None
        # The process ended without a handshake (not a Python, or one too old to run the
        # shipped source): the gateway is returned dead, as execnet does, and its first
        # remote_exec raises "connection already closed".


def bootstrap_socket(io: Any, spec: Any) -> None:
    """Ship ``gateway_base`` plus ``SocketIO`` to a socket server that executes it."""
    import inspect

    from .gateway_socket import SocketIO

    sendexec(
        io,
        inspect.getsource(gateway_base),
        "import socket",
        inspect.getsource(SocketIO),
        "try:",
        "    execmodel",
        "except NameError:",
        "    execmodel = get_execmodel('thread')",
        "io = SocketIO(clientsock, execmodel)",
        "io.write('1'.encode('ascii'))",
        f"serve(io, id={str(spec) + '-worker'!r})",
    )
    _expect_ack(io)


def bootstrap(io: Any, spec: Any) -> Gateway:
    """Run the bootstrap that fits ``spec`` over ``io`` and return the new :class:`Gateway`."""
    if spec.popen:
        if spec.via or spec.python:
            bootstrap_exec(io, spec)
        else:
            bootstrap_import(io, spec)
    elif spec.ssh or spec.vagrant_ssh:
        bootstrap_exec(io, spec)
    elif spec.socket:
        bootstrap_socket(io, spec)
    else:
        raise ValueError("unknown gateway type, can't bootstrap")
    return Gateway(io, spec)
