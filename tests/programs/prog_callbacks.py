"""Order of callbacks across channels, the thread they run in, and callbacks that send."""

import threading

from _common import execnet, show

gw = execnet.makegateway()
a, b, c = gw.newchannel(), gw.newchannel(), gw.newchannel()
log = []
done = threading.Event()
threads = set()


def make(name):
    def callback(item):
        thread = threading.current_thread()
        threads.add((type(thread).__name__, thread is threading.main_thread(), thread.daemon))
        log.append((name, item))
        if name == "c" and item == "END":
            done.set()

    return callback


a.setcallback(make("a"), endmarker="END")
b.setcallback(make("b"), endmarker="END")
c.setcallback(make("c"), endmarker="END")
ch = gw.remote_exec(
    """
a, b, c = channel.receive()
for i in range(50):
    (a, b)[i % 2].send(i)
a.close()
b.send("last of b")
b.close()
c.send("c")
"""
)
ch.send((a, b, c))
show("done", done.wait(10))
show("log", log)
show("threads", sorted(threads))

# A callback that sends: replies are processed in order.
replies = []
finished = threading.Event()
ch = gw.remote_exec(
    """
for i in range(20):
    channel.send(i)
    assert channel.receive() == i * 10
channel.send("bye")
"""
)


def answer(item):
    replies.append(item)
    if item == "bye":
        finished.set()
    elif item != "END":
        ch.send(item * 10)


ch.setcallback(answer, endmarker="END")
show("finished", finished.wait(10))
ch.waitclose(10)
show("replies", replies)

# MultiChannel receive queue: per-channel order, endmarker last.
group = execnet.Group(["popen", "popen"])
mch = group.remote_exec("for i in range(5): channel.send(i)")
queue = mch.make_receive_queue(endmarker=-1)
per = {}
for _ in range(12):
    chan, item = queue.get(timeout=10)
    per.setdefault(chan.gateway.id, []).append(item)
show("queue", sorted(per.items()))
group.terminate(10)
gw.exit()
