"""Proxied (``via=``) gateways, ``installvia`` socket gateways and the socket server script."""

import os
import socket
import subprocess
import sys

from _common import execnet, show


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


group = execnet.Group()
master = group.makegateway("popen//id=master")
proxied = group.makegateway("popen//via=master//id=proxied")
ch = proxied.remote_exec("import os; channel.send((os.getppid(), channel.receive()))")
ch.send("through the proxy")
ppid, echo = ch.receive()
show("via", echo, ppid == master.remote_exec("import os; channel.send(os.getpid())").receive())
show("ids", [gw.id for gw in group])

sgw = group.makegateway("socket//installvia=master//id=sock")
show("installvia", sgw.remote_exec("channel.send(channel.receive() + 1)").send(1))
show("socket execmodel", sgw.remote_status().execmodel, sgw.remoteaddress.split(":")[0])
group.terminate(10)
show("terminated", repr(group))

port = free_port()
server = subprocess.Popen(
    [sys.executable, "-u", "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
)
first = server.stdout.readline()
group = execnet.Group()
for round_ in range(2):
    gw = group.makegateway(f"socket=127.0.0.1:{port}")
    show("round", round_, gw.remoteaddress == f"127.0.0.1:{port}", gw.remote_status().execmodel)
    ch = gw.remote_exec("import os; channel.send(os.getcwd() == channel.receive())")
    ch.send(os.getcwd())
    show("cwd", ch.receive())
    gw.exit()
    gw.join(10)
group.terminate(10)
# Wait for the server to finish the second connection and enter its accept loop again.
lines = [first]
while sum("Entering Accept loop" in line for line in lines) < 3:
    line = server.stdout.readline()
    if not line:
        break
    lines.append(line)
server.kill()
server.communicate(timeout=10)
lines = [line.split(" ", 1)[-1].strip() for line in lines if line.strip()]
kept = []
for line in lines:
    line = line.replace(str(port), "PORT")
    if "got new connection" in line:
        line = "got new connection from ..."
    kept.append(line)
show("server output", kept)
