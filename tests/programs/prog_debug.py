"""``EXECNET_DEBUG=2`` traces to stderr (of the master and the worker)."""

import os
import subprocess
import sys

from _common import show

code = "import execnet; gw = execnet.makegateway(); print(gw.remote_exec('channel.send(1)').receive()); gw.exit(); gw.join()"
env = dict(os.environ, EXECNET_DEBUG="2")
proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
err = proc.stderr.splitlines()
show("exit", proc.returncode, "stdout", proc.stdout.strip())
show("traced", len(err) > 5, all(line.startswith("[") for line in err))
pids = {line.split("]")[0] for line in err}
show("processes", len(pids) >= 2)
show("worker created", any("creating workergateway" in line for line in err))
env = dict(os.environ, EXECNET_DEBUG="")
proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
show("off", proc.returncode, proc.stdout.strip(), repr(proc.stderr))
