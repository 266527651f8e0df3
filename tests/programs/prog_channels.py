"""Channels sent over channels, in both directions, and channel identity."""

from _common import attempt, execnet, show

gw = execnet.makegateway()
ch = gw.remote_exec(
    """
sub = channel.receive()
sub.send("via sub")
mine = channel.gateway.newchannel()
channel.send(mine)
mine.send(("from the worker's channel", sub.receive()))
channel.send([sub, {"nested": (mine,)}])
"""
)
sub = gw.newchannel()
show(repr(ch), repr(sub))
ch.send(sub)
show(sub.receive())
mine = ch.receive()
show(type(mine).__name__, mine.id % 2, repr(mine))
sub.send(42)
show(mine.receive())
back = ch.receive()
show(back[0] is sub, back[1]["nested"][0] is mine)
show("waitclose", ch.waitclose(), ch.isclosed(), repr(ch))
show("send on closed", attempt(ch.send, 1))
show("receive on closed", attempt(ch.receive))
show("close twice", attempt(ch.close), attempt(ch.close))
sub.close()
show("sub", repr(sub), sub.isclosed())
show("mine end", attempt(mine.receive, timeout=10))
gw.exit()
gw.join()
show("mine after exit", attempt(mine.receive, timeout=10), attempt(mine.send, 1))
