"""Edge cases of channels: explicit close inside remote_exec, sends after close, iteration."""

import time

from _common import attempt, execnet, show

gw = execnet.makegateway()
ch = gw.remote_exec("channel.close()")
show("close inside", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("channel.close('x')")
show("close(error) inside", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("f = channel.makefile('w', proxyclose=True); f.write('a'); f.close()")
show("proxyclose inside", attempt(ch.receive), attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("import time; channel.send(1); time.sleep(0.2); channel.send(2)")
show("first", ch.receive())
ch.close()
show("after local close", attempt(ch.receive), ch.isclosed())
time.sleep(0.4)
show("status", gw.remote_status().numchannels)
ch = gw.remote_exec(
    "try:\n    channel.receive()\nexcept Exception as e:\n    channel.gateway._trace(e)\n"
    "import time; time.sleep(0.1)\ntry:\n    channel.send(1)\nexcept Exception as e:\n"
    "    open(channel.receive(), 'w')\n"
)
ch.close()
show("close while remote receives", ch.isclosed())
ch = gw.remote_exec("for x in channel: channel.send(x * 2)")
for i in range(3):
    ch.send(i)
show("echo", [ch.receive() for _ in range(3)])
ch.close()
ch = gw.remote_exec("channel.send(channel.receive(timeout=0.1))")
show("remote timeout", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("import sys; sys.exit()")
show("remote sys.exit()", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("raise SystemExit('bye')")
show("remote SystemExit", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("channel.send(channel)")
show("send own channel", attempt(ch.receive) == f"returned {ch!r}", attempt(ch.receive))
ch = gw.remote_exec("channel.send(object())")
show("unserializable remote", attempt(ch.receive).splitlines()[-1])
ch = gw.remote_exec("channel.send(1)")
show("unserializable local", attempt(ch.send, object()), ch.receive())
show("reconfigure", gw.reconfigure(py2str_as_py3str=False), gw._strconfig)
ch = gw.remote_exec("channel.send(channel._strconfig)")
show("remote strconfig", ch.receive())
ch = gw.newchannel()
ch.reconfigure(py3str_as_py2str=True)
show("channel strconfig", ch._strconfig)
gw.exit()
