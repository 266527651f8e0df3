"""A remote ``os.listdir`` as a function with keyword arguments, and the function checks."""

import os
import sys
import tempfile

from _common import attempt, execnet, show


def remote_listdir(channel, path, hidden=False):
    import os

    names = []
    for name in sorted(os.listdir(path)):
        if hidden or not name.startswith("."):
            names.append(name)
    channel.send(names)


def uses_global(channel):
    channel.send(sys.platform)


def not_a_channel(chan):
    pass


root = tempfile.mkdtemp()
for name in ("b.txt", "a.py", ".hidden"):
    open(os.path.join(root, name), "w").close()
os.mkdir(os.path.join(root, "sub"))

gw = execnet.makegateway()
show(gw.remote_exec(remote_listdir, path=root).receive())
show(gw.remote_exec(remote_listdir, path=root, hidden=True).receive())
ch = gw.remote_exec(remote_listdir, path=os.path.join(root, "missing"))
try:
    ch.receive()
except execnet.RemoteError as exc:
    text = exc.formatted.replace(root, "<ROOT>")
    show("RemoteError", text.startswith("Traceback (most recent call last):"))
    show("last line", text.rstrip().splitlines()[-1])
    show("user frames", [ln.strip() for ln in text.splitlines() if "prog_listdir.py" in ln])
    show(
        "args", exc.args, str(exc) == exc.formatted, repr(exc).startswith("RemoteError: Traceback")
    )
show("second receive", attempt(ch.receive))
show("waitclose", attempt(ch.waitclose))
show("lambda", attempt(gw.remote_exec, lambda channel: None))
show("global", attempt(gw.remote_exec, uses_global))
show("first arg", attempt(gw.remote_exec, not_a_channel))
show("kwargs with source", attempt(gw.remote_exec, "pass", x=1))
show("bad kwargs", attempt(gw.remote_exec, remote_listdir, path=object()))
show("syntax", attempt(gw.remote_exec("def (:").receive))
ch = gw.remote_exec("import sys; sys.exit(3)")
show("exit", attempt(ch.receive).splitlines()[-1])
gw.exit()
