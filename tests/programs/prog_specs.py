"""``makegateway`` with bad specs, an unknown ssh host, and a closed socket port."""

import socket

from _common import attempt, execnet, show

for spec in (
    "hello",
    "popen//_x=1",
    "popen//popen",
    "popen//env",
    "//popen",
    "socket=127.0.0.1:1//python=python3",
    "popen//python=/nonexistent/python3",
    "popen//execmodel=nonsense",
    "popen//via=nothere",
):
    result = attempt(execnet.makegateway, spec)
    show(repr(spec), result.split("\n")[0][:160])
show("xspec", execnet.XSpec("popen//env:A=1//chdir=x//nice=3//hello").env)
show("xspec attrs", execnet.XSpec("ssh=h//python=py3").ssh, execnet.XSpec("popen").missing)
show("set_execmodel", attempt(execnet.Group().set_execmodel, "foo"))

group = execnet.Group()
try:
    group.makegateway("ssh=nonexistent.invalid")
except BaseException as exc:  # noqa: B036
    show("ssh", type(exc).__name__, exc.args, isinstance(exc, execnet.HostNotFound))

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
sock.close()
try:
    group.makegateway(f"socket=127.0.0.1:{port}")
except BaseException as exc:  # noqa: B036
    show("socket", type(exc).__name__, str(exc).replace(str(port), "PORT"))
show("group after failures", repr(group))
show("next id", group.makegateway().id)
group.terminate(10)
