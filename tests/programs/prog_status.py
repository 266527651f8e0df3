"""``remote_status()`` of an idle and of a busy gateway, in two execution models."""

import time

from _common import execnet, show


def wait_idle(gw):
    deadline = time.time() + 10
    while time.time() < deadline:
        if gw.remote_status().numexecuting == 0:
            return True
        time.sleep(0.02)
    return False


for spec in ("popen", "popen//execmodel=main_thread_only"):
    gw = execnet.makegateway(spec)
    st = gw.remote_status()
    show(spec, "idle", st.numexecuting, st.numchannels, st.execmodel, sorted(vars(st)))
    ch = gw.remote_exec("channel.send('started'); channel.send(channel.receive() + 1)")
    show(ch.receive())
    st = gw.remote_status()
    show(spec, "busy", st.numexecuting, st.numchannels, st.execmodel)
    show(type(st).__name__, repr(st).startswith("<RInfo 'execmodel="))
    ch.send(1)
    show(ch.receive())
    ch.waitclose()
    show(spec, "idle again", wait_idle(gw))
    if "main_thread_only" in spec:
        first = gw.remote_exec("import time; channel.send('running'); time.sleep(3)")
        show(first.receive())
        second = gw.remote_exec("channel.send('second')")
        try:
            second.receive()
        except execnet.RemoteError as exc:
            show("concurrent", str(exc))
        first.waitclose()
    gw.exit()
    gw.join()
