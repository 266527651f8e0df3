"""What happens at interpreter exit and when another thread terminates the gateways."""

import re
import subprocess
import sys
import threading
import time

from _common import attempt, execnet, show

group = execnet.Group()
gw = group.makegateway()
ch = gw.remote_exec("channel.receive()")


def terminate_soon():
    time.sleep(0.3)
    group.terminate(5)


threading.Thread(target=terminate_soon).start()
show("receive while terminated", attempt(ch.receive, timeout=10))
show("waitclose", attempt(ch.waitclose, 1))
gw.join(5)  # (the receiver may still be winding down when receive() raises)
show("isclosed", ch.isclosed(), repr(gw))

programs = {
    "unread remote error": """
import execnet, time
gw = execnet.makegateway()
ch = gw.remote_exec("raise ValueError('never read')")
time.sleep(0.5)
print("exiting", flush=True)
""",
    # (2.1.2 may never run an execution that arrives right before the terminate message, so
    # the program waits until its code runs.)
    "callback pending": """
import execnet, threading
gw = execnet.makegateway()
ch = gw.remote_exec("import time; channel.send('ready'); time.sleep(0.3); channel.send('late')")
running = threading.Event()
def callback(item):
    print("callback got", item, flush=True)
    running.set()
ch.setcallback(callback, endmarker="end")
running.wait(10)
print("exiting", flush=True)
""",
    "error read then dropped": """
import execnet
gw = execnet.makegateway()
ch = gw.remote_exec("raise ValueError('read')")
try:
    ch.receive()
except execnet.RemoteError:
    print("caught", flush=True)
del ch
print("exiting", flush=True)
""",
    "worker thread at exit": """
import execnet, threading
gw = execnet.makegateway()
def work():
    print("thread result", gw.remote_exec("import time; time.sleep(0.3); channel.send(5)").receive(), flush=True)
threading.Thread(target=work).start()
print("main done", flush=True)
""",
    "sys.exit in the middle": """
import execnet, sys
gw = execnet.makegateway()
gw.remote_exec("channel.receive()")
sys.exit(4)
""",
}
for label, code in programs.items():
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    err = [
        re.sub(r"^\[\d+\]", "[PID]", line)
        for line in proc.stderr.splitlines()
        if "File " not in line and not line.startswith("    ")
    ]
    show(label, proc.returncode, proc.stdout.split("\n"), err, time.time() - start < 8)
