"""Gateways whose interpreter is missing, transports that are not installed, bad addresses.

(``python=false``/``echo`` and an ssh client that fails at once, programs that exit without
reading the bootstrap, are left out: with 2.1.2 the outcome depends on whether the child has
exited before the bootstrap is written, BrokenPipeError if it has.)
"""

from _common import attempt, execnet, show

group = execnet.Group()
for spec in (
    "popen//python=/nonexistent/python",
    "vagrant_ssh=machine//python=python3",
    "socket//installvia=missing",
    "socket",
    "socket=localhost",
    "socket=a:b:c",
    "socket=127.0.0.1:notaport",
):
    try:
        group.makegateway(spec)
    except BaseException as exc:  # noqa: B036
        # (str(HostNotFound) also shows ssh's message here: docs/compatibility.md)
        text = repr(exc.args) if isinstance(exc, execnet.HostNotFound) else str(exc)
        show(repr(spec), type(exc).__name__, text)
for gw in list(group):
    show("member", gw.id, repr(gw), attempt(gw.remote_exec, "pass").split(":")[0])
group.terminate(5)
show("group", repr(group))
