"""What remote code finds in a worker: stdio, ``__main__``, ``sys.path``, threads, signals."""

import os
import signal
import threading
import time

from _common import attempt, execnet, show

gw = execnet.makegateway()
ch = gw.remote_exec(
    """
import os, sys, signal, threading
print("printed remotely is lost")
os.write(1, b"written to fd 1 is lost too\\n")
sys.stderr.write("remote stderr reaches the master\\n")
sys.stderr.flush()
channel.send({
    "stdin": sys.stdin.read(),
    "stdout_tty": sys.stdout.isatty(),
    "main_thread": threading.current_thread() is threading.main_thread(),
    "sigint": str(signal.getsignal(signal.SIGINT)).split(" at ")[0],
    "argv": sys.argv,
    "main_module": type(sys.modules["__main__"]).__name__,
    "execnet_importable": __import__("execnet").__name__,
    "name": __name__,
    "globals": sorted(k for k in globals() if not k.startswith("__") or k == "__name__"),
})
"""
)
show(ch.receive())
ch.waitclose()

# Concurrent executions of the thread model run in parallel threads.
chans = [
    gw.remote_exec(
        "import time, threading; channel.receive(); channel.send(threading.current_thread() is threading.main_thread())"
    )
    for _ in range(3)
]
for c in chans:
    c.send(None)
# (2.1.2 may not have marked the main thread idle yet, so all three can get new threads.)
show("parallel", sorted(c.receive() for c in chans)[:2])

# A discarded channel closes: the remote receive() ends quietly.
gw.remote_exec("channel.receive()")
time.sleep(0.3)
show("status after discard", gw.remote_status().numexecuting)

# A signal in the master interrupts a blocking receive().
ch = gw.remote_exec("channel.receive()")


def interrupt():
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=interrupt).start()
start = time.time()
show("ctrl-c in receive", attempt(ch.receive), time.time() - start < 3)
show(
    "ctrl-c in waitclose",
    attempt(lambda: (threading.Thread(target=interrupt).start(), ch.waitclose())),
    time.time() - start < 5,
)
ch.send(1)
ch.waitclose(5)

# Large items and many items in order.
big = os.urandom(3 * 1024 * 1024)
ch = gw.remote_exec(
    "data = channel.receive(); channel.send((len(data), data[:4], data[-4:]))\nfor i in range(10000): channel.send(i)"
)
ch.send(big)
show("big", ch.receive() == (len(big), big[:4], big[-4:]))
show("ordered", list(ch) == list(range(10000)))
gw.exit()
gw.join(10)
