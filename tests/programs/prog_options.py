"""Spec options: ``chdir``, ``env:``, ``nice``, ``python``, ``dont_write_bytecode``, ``id``."""

import os
import sys
import tempfile

from _common import attempt, execnet, show

base = tempfile.mkdtemp()
os.chdir(base)
specs = [
    "popen//chdir=work",
    "popen//chdir=work//id=again",
    f"popen//chdir={base}/abs/nested",
    "popen//env:EXAMPLE_A=1//env:EXAMPLE_B=two=2//env:EXAMPLE_C",
    "popen//nice=5",
    f"popen//python={sys.executable} -u",
    "popen//dont_write_bytecode",
]
probe = """
import os, sys
channel.send((
    os.getcwd().replace(channel.receive(), "<BASE>"),
    {k: v for k, v in os.environ.items() if k.startswith("EXAMPLE_")},
    # 2.1.2 applies nice= in whichever thread runs the set-up; later executions may run in
    # another thread (docs/compatibility.md: this package always uses the main thread).
    os.nice(0) in (0, 5),
    sys.dont_write_bytecode,
    "-u" in sys.orig_argv,
))
"""
for spec in specs:
    try:
        gw = execnet.makegateway(spec)
    except BaseException as exc:  # noqa: B036
        last = str(exc).rstrip().splitlines()[-1].replace(base, "<BASE>")
        show(spec.replace(base, "<BASE>"), "raised", type(exc).__name__, last)
        continue
    ch = gw.remote_exec(probe)
    ch.send(base)
    show(gw.id, spec.replace(base, "<BASE>"), ch.receive())
show("dirs", sorted(os.listdir(base)))
show("spec env", execnet.XSpec("popen//env:A=1//env:A=2").env)
show("group", repr(execnet.default_group))
gw = execnet.default_group["again"]
show(
    "remote_exec module-ish",
    attempt(
        lambda: gw.remote_exec("import inspect; channel.send(len(inspect.stack()) > 0)").receive()
    ),
)
execnet.default_group.terminate(10)
