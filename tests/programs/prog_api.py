"""The public names: modules of classes, ``__all__``, reprs and simple attributes."""

import inspect

from _common import attempt, execnet, show

show("__all__", execnet.__all__)
for name in execnet.__all__:
    obj = getattr(execnet, name)
    if inspect.isclass(obj):
        show(name, obj.__module__, obj.__qualname__, [b.__name__ for b in obj.__mro__[1:]])
    else:
        show(name, type(obj).__name__)
show(
    "submodules",
    [
        m
        for m in (
            "gateway_base",
            "gateway",
            "gateway_bootstrap",
            "gateway_io",
            "multi",
            "rsync",
            "rsync_remote",
            "xspec",
        )
        if hasattr(execnet, m)
    ],
)
gb = execnet.gateway_base
show(
    "gateway_base",
    [
        n
        for n in (
            "Message",
            "ChannelFactory",
            "ChannelFileRead",
            "ChannelFileWrite",
            "WorkerPool",
            "Reply",
            "Unserializer",
            "_Serializer",
            "opcode",
            "INTERRUPT_TEXT",
            "MAIN_THREAD_ONLY_DEADLOCK_TEXT",
            "DUMPFORMAT_VERSION",
            "FOUR_BYTE_INT_MAX",
        )
        if not hasattr(gb, n)
    ],
)
show("texts", gb.INTERRUPT_TEXT, gb.MAIN_THREAD_ONLY_DEADLOCK_TEXT, gb.DUMPFORMAT_VERSION)
e = execnet.RemoteError("some text")
show("RemoteError", repr(e), str(e), e.args, e.formatted)
show(
    "TimeoutError",
    execnet.TimeoutError.__mro__[1].__name__,
    execnet.Channel.TimeoutError is execnet.TimeoutError,
)
show(
    "XSpec",
    repr(execnet.XSpec("popen//id=x")),
    execnet.XSpec("a=1") == execnet.XSpec("a=1"),
    hash(execnet.XSpec("a")) == hash(execnet.XSpec("a")),
)
show("XSpec bad", attempt(execnet.XSpec, "_x=1"), attempt(execnet.XSpec, ""))
show("Group", repr(execnet.Group()), execnet.Group.defaultspec)
show(
    "execmodel",
    repr(gb.get_execmodel("thread")),
    repr(gb.get_execmodel("main_thread_only")),
    attempt(gb.get_execmodel, "nope"),
)
g = execnet.Group(execmodel="main_thread_only")
show("group execmodel", g.execmodel.backend, g.remote_execmodel.backend)
gw = g.makegateway()
show("gw", repr(gw), gw.spec.execmodel, gw.remote_status().execmodel)
show("set_execmodel with gateways", attempt(g.set_execmodel, "thread"))
ch = gw.remote_exec("channel.send(1)")
show("channel", repr(ch), ch.receive(), ch.waitclose(), repr(ch))
show("rinfo", repr(execnet.gateway.RInfo({"b": 2, "a": "x"})))
g.terminate(10)
show("after", repr(gw), repr(g))
