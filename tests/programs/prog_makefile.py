"""``makefile`` to redirect remote stdout, and reading a channel as a file."""

from _common import attempt, execnet, show

gw = execnet.makegateway()
out = gw.newchannel()
lines = []
out.setcallback(lines.append, endmarker="<end>")
inp = gw.newchannel()
ch = gw.remote_exec(
    """
import sys
out, inp = channel.receive()
f = out.makefile("w")
channel.send((repr(f).split()[0], f.isatty()))
old, sys.stdout = sys.stdout, f
print("hello from remote")
print(1, 2, 3, sep="-")
sys.stdout = old
reader = inp.makefile("r")
channel.send(reader.readline())
channel.send(reader.read(3))
channel.send(reader.read(100))
channel.send(reader.read(5))
"""
)
ch.send((out, inp))
show(ch.receive())
for piece in ("first line\nsec", "ond", " part\n", "tail"):
    inp.send(piece)
inp.close()
for _ in range(4):
    show(repr(ch.receive()))
show("waitclose", ch.waitclose())
out.waitclose(10)
show("stdout lines", lines)
show("rw", attempt(gw.newchannel().makefile, "rw"))
show("local repr", repr(out.makefile()).replace(str(out.id), "N"))
plain, proxied = gw.newchannel(), gw.newchannel()
plain.makefile("w").close()
proxied.makefile("w", proxyclose=True).close()
show("close", plain.isclosed(), proxied.isclosed())
gw.exit()
