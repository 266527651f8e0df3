"""``Group`` with several gateways, ``Group.remote_exec`` and ``MultiChannel``."""

from _common import attempt, execnet, show

group = execnet.Group(["popen", "popen//id=second", "popen"])
show(repr(group), len(group), [gw.id for gw in group])
show("lookup", "second" in group, group[1].id, group["gw1"].id, group[group[0]] is group[0])
show("missing", attempt(lambda: group["nope"]), attempt(lambda: group[5]))
show("duplicate", attempt(group.makegateway, "popen//id=second"))
mch = group.remote_exec("channel.send(channel.gateway.id); channel.send(channel.receive() * 2)")
show(type(mch).__name__, len(mch), mch[0] in mch)
show(mch.receive_each())
mch.send_each(21)
pairs = mch.receive_each(withchannel=True)
show([(c is mch[i], item) for i, (c, item) in enumerate(pairs)])
show("waitclose", mch.waitclose())

mch = group.remote_exec("channel.send(channel.gateway.id)")
queue = mch.make_receive_queue(endmarker="END")
show("same queue", mch.make_receive_queue() is queue)
got = sorted((c.gateway.id, item) for c, item in (queue.get(timeout=10) for _ in range(6)))
show(got)
show("receive_each after queue", attempt(mch.receive_each))

mch = group.remote_exec("raise ValueError('from ' + channel.gateway.id)")
try:
    mch.waitclose()
except execnet.RemoteError as exc:
    show("first error", str(exc).rstrip().splitlines()[-1])
gw = group["second"]
gw.exit()
show("after exit", repr(group), "second" in group, gw in group)
group.terminate(timeout=10)
show("terminated", repr(group), len(group))
