"""Termination: a busy worker, a remote KeyboardInterrupt, GC warnings, exit at interpreter end."""

import gc
import subprocess
import sys
import time

from _common import attempt, execnet, show

group = execnet.Group()
gw = group.makegateway()
ch = gw.remote_exec("import time; channel.send('busy'); time.sleep(30)")
show(ch.receive())
start = time.time()
group.terminate(timeout=1.0)
show("terminate with a busy worker", round(time.time() - start) <= 3, repr(group))
show("busy channel", attempt(ch.receive, timeout=5).split(":")[0])
show("popen exit", gw._io.popen.poll() is not None)

gw = execnet.makegateway()
ch = gw.remote_exec("raise KeyboardInterrupt")
show("remote KeyboardInterrupt", attempt(ch.receive))
gw.join(0.5)
show("worker after KeyboardInterrupt", gw.hasreceiver())

gw = execnet.makegateway()
ch = gw.remote_exec("raise ValueError('nobody reads this')")
time.sleep(0.5)
del ch
gc.collect()
time.sleep(0.2)
gw.remote_exec("channel.send(1)").receive()
show("init_threads", gw.remote_init_threads(3))
gw.exit()

code = """
import execnet, sys
gw = execnet.makegateway()
ch = gw.remote_exec("import time; channel.send(1); time.sleep(30)")
ch.receive()
print("leaving with a busy gateway", flush=True)
"""
start = time.time()
proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
show("atexit", proc.returncode, proc.stdout.strip(), round(time.time() - start) < 10)
show("atexit stderr", proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else [])

code = """
import execnet
gw = execnet.makegateway()
print(gw.remote_exec("channel.send(channel.receive() * 2)").send(21))
"""
proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
show("exit while the remote waits", proc.returncode, proc.stdout.strip(), proc.stderr.strip())
execnet.default_group.terminate(10)
