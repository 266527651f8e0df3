"""ssh gateways (the spec comes from ``PROGRAMS_SSH``: ``ssh=...//python=...``)."""

import os
import sys
import tempfile

from _common import execnet, show, tree

spec = os.environ["PROGRAMS_SSH"]
bad_spec = os.environ["PROGRAMS_SSH_BAD"]
group = execnet.Group()
gw = group.makegateway(spec + "//id=remote")
show("remoteaddress", gw.remoteaddress == spec.split("//")[0][4:])
ch = gw.remote_exec("import sys; channel.send((sys.executable, __name__, channel.receive()))")
ch.send("hi")
executable, name, echo = ch.receive()
show("exec", executable == sys.executable, name, echo)
ch = gw.remote_exec("def f():\n    raise KeyError('k')\nf()")
try:
    ch.receive()
except execnet.RemoteError as exc:
    lines = str(exc).rstrip().splitlines()
    show("error", lines[0], lines[-1], [ln.strip() for ln in lines if "<remote exec>" in ln])
st = gw.remote_status()
# (numexecuting right after an error is timing: the execution may still be winding down)
show("status", st.execmodel, sorted(vars(st)))
r = gw._rinfo()
show("rinfo", r.executable == sys.executable, r.cwd == os.path.expanduser("~") or r.cwd)

src = tempfile.mkdtemp()
with open(os.path.join(src, "f.txt"), "w") as f:
    f.write("over ssh")
dst = tempfile.mkdtemp()
rs = execnet.RSync(src, verbose=False)
rs.add_target(gw, dst)
rs.send()
show("rsync", tree(dst))

gw2 = group.makegateway(spec + "//chdir=" + dst + "//env:FROM_SPEC=yes")
ch = gw2.remote_exec(
    "import os; channel.send((os.getcwd() == channel.receive(), os.environ.get('FROM_SPEC')))"
)
ch.send(dst)
show("options", ch.receive())

try:
    group.makegateway(bad_spec)
except execnet.HostNotFound as exc:
    show("bad key", type(exc).__name__, exc.args == (bad_spec.split("//")[0][4:],))
show("group", repr(group))
group.terminate(10)
show("terminated", repr(group), gw.hasreceiver())
