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

# Any other value traces into <tempdir>/execnet-debug-<pid> files, named in gateway_base.fn.
code = (
    "import execnet, execnet.gateway_base as gb, tempfile\n"
    "gw = execnet.makegateway()\n"
    "ch = gw.remote_exec('import execnet.gateway_base as gb; channel.send(getattr(gb, \"fn\", None))')\n"
    "print(gb.fn)\n"
    "print(ch.receive())\n"
    "print(hasattr(gb, 'notrace'), gb.fn.startswith(tempfile.gettempdir()))\n"
    "gw.exit(); gw.join()\n"
)
env = dict(os.environ, EXECNET_DEBUG="1")
proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
lines = proc.stdout.splitlines()
show("file mode", proc.returncode, lines[2:], repr(proc.stderr))
if len(lines) >= 2:
    master_file, worker_file = lines[0], lines[1]
    show("names", os.path.basename(master_file).rsplit("-", 1)[0], worker_file != master_file)
    with open(master_file) as f:
        master_text = f.read()
    with open(worker_file) as f:
        worker_text = f.read()
    show("master traced", "sending GATEWAY_TERMINATE" in master_text, master_text.startswith("["))
    show("worker traced", "creating workergateway" in worker_text)
    os.unlink(master_file)
    os.unlink(worker_file)
