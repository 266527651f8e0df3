"""``remote_exec`` of a module, ``dump``/``load`` to files, concurrent ``makegateway``."""

import io
import os
import tempfile
import threading

import remote_module
from _common import attempt, execnet, show

gw = execnet.makegateway()
ch = gw.remote_exec(remote_module)
for value in (1, "ab", [3]):
    ch.send(value)
    show("module", ch.receive())
ch.send(None)
try:
    ch.waitclose(10)
except execnet.RemoteError as exc:
    lines = str(exc).rstrip().splitlines()
    show("module error", lines[-1], [ln.strip() for ln in lines if "remote_module.py" in ln])
show("module kwargs", attempt(gw.remote_exec, remote_module, x=1))

path = os.path.join(tempfile.mkdtemp(), "data.bin")
with open(path, "wb") as f:
    execnet.dump(f, {"a": [1, 2.5, None]})
    execnet.dump(f, ("second", b"x"))
with open(path, "rb") as f:
    show("load", execnet.load(f), execnet.load(f), attempt(execnet.load, f))
buf = io.BytesIO()
execnet.dump(buf, 7)
show("dump bytes", buf.getvalue() == execnet.dumps(7))
show("load bytesio", execnet.load(io.BytesIO(execnet.dumps("s")), py2str_as_py3str=False))

group = execnet.Group()
made = []
errors = []


def make(i):
    try:
        made.append(group.makegateway(f"popen//id=t{i}"))
    except Exception as exc:
        errors.append(exc)


threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
show("concurrent makegateway", sorted(gw.id for gw in made), errors, len(group))
results = group.remote_exec("channel.send(channel.gateway.id)").receive_each()
show("ids", sorted(results))
gw.exit()
show("exit twice", gw.exit(), gw.join(5))
group.terminate(10)
show("terminate twice", group.terminate(10), repr(group))
