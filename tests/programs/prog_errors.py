"""Remote errors, timeouts and callbacks with an endmarker."""

import threading

from _common import attempt, execnet, show

gw = execnet.makegateway()
ch = gw.remote_exec("raise ValueError('boom')")
try:
    ch.receive()
except execnet.RemoteError as exc:
    lines = exc.formatted.rstrip().splitlines()
    show("RemoteError", lines[0], lines[-1], "gateway_base" in exc.formatted)
    show("remote exec frame", [ln.strip() for ln in lines if "<remote exec>" in ln])
show("then", attempt(ch.receive))
show("waitclose", attempt(ch.waitclose))
show("iteration", list(gw.remote_exec("for i in range(3): channel.send(i)")))

ch = gw.remote_exec("channel.receive()")
show("timeout", attempt(ch.receive, timeout=0.2))
show("waitclose timeout", attempt(ch.waitclose, timeout=0.2))
show("is OSError", issubclass(execnet.TimeoutError, OSError), execnet.TimeoutError is TimeoutError)
ch.send(None)
show("done", ch.waitclose(timeout=10))

ch = gw.remote_exec("for i in range(5): channel.send(i)\nchannel.send(channel.receive())")
items = []
ended = threading.Event()


def collect(item):
    items.append(item)
    if item == "END":
        ended.set()


ch.setcallback(collect, endmarker="END")
show("second callback", attempt(ch.setcallback, print))
show("receive with callback", attempt(ch.receive))
ch.send("last")
show("ended", ended.wait(10), items)

ch = gw.remote_exec("channel.send(1); channel.send(2)")
ch.waitclose(10)
queued = []
ch.setcallback(queued.append, endmarker=None)
show("callback after close", queued)

# The callback runs in the receiver thread: the item is sent only after it is installed.
ch = gw.remote_exec("channel.receive(); channel.send('x'); channel.receive()")
ch.setcallback(lambda item: 1 / 0)
ch.send("go")
try:
    ch.waitclose(10)
except BaseException as exc:  # noqa: B036
    show("callback raised ->", type(exc).__name__)
show("closed", ch.isclosed())

ch = gw.remote_exec("channel.receive()")
ch.close("closed with text")
show("close(error)", ch.isclosed())
ch = gw.remote_exec("import time; time.sleep(0.2); channel.send(channel.receive())")
ch.send(5)
gw2 = execnet.makegateway()
ch2 = gw2.remote_exec("channel.receive()")
ch2.close("stop please")
show("remote saw", ch.receive())
ch3 = gw.remote_exec(
    "c = channel.receive()\ntry:\n    c.receive()\nexcept Exception as e:\n"
    "    channel.send((type(e).__name__, str(e)))"
)
sub = gw.newchannel()
ch3.send(sub)
sub.close("master says no")
show("remote got", ch3.receive())
gw.exit()
gw2.exit()

gw = execnet.makegateway()
ch = gw.remote_exec("import os; channel.send('up'); os._exit(7)")
show(ch.receive())
show("after crash", attempt(ch.receive))
show("waitclose after crash", attempt(ch.waitclose, 10))
gw.join(10)
show("remote_exec after crash", attempt(gw.remote_exec, "pass").split(":")[0])
execnet.default_group.terminate(10)
