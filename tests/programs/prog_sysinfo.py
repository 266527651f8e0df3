"""Remote system information: a source string, ``_rinfo()``, the gateway's repr and spec."""

import os
import sys

from _common import attempt, execnet, show

gw = execnet.makegateway()
show(gw.id, repr(gw.spec), str(gw.spec))
ch = gw.remote_exec(
    """
import os, sys
master_pid = channel.receive()
channel.send({
    "platform": sys.platform,
    "version": tuple(sys.version_info[:3]),
    "same_executable": sys.executable == channel.receive(),
    "name": __name__,
    "other_process": os.getpid() != master_pid,
    "cwd": os.getcwd(),
})
"""
)
ch.send(os.getpid())
ch.send(sys.executable)
info = ch.receive()
info["cwd"] = info["cwd"] == os.getcwd()
show(sorted(info.items()))
show("waitclose", ch.waitclose(), ch.isclosed(), repr(ch))
r = gw._rinfo()
show(
    r.executable == sys.executable,
    r.version_info == sys.version_info,
    r.platform == sys.platform,
    r.cwd == os.getcwd(),
    r.pid != os.getpid(),
    sorted(vars(r)),
)
show("cached", gw._rinfo() is r, gw._rinfo(update=True) is r)
show("remoteaddress", attempt(lambda: gw.remoteaddress))
show("hasreceiver", gw.hasreceiver())
gw.exit()
gw.join()
show("after exit", repr(gw), gw.hasreceiver(), gw in execnet.default_group)
show("remote_exec after exit", attempt(gw.remote_exec, "pass"))
