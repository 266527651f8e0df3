"""Where the time of a popen gateway start goes, phase by phase.

Run with each side's interpreter (bytecode writing on, like an installed package)::

    env -u PYTHONDONTWRITEBYTECODE .side/bench-ours/bin/python benchmarks/profile_start.py
    env -u PYTHONDONTWRITEBYTECODE .side/bench-upstream/bin/python benchmarks/profile_start.py

Each phase is measured ``--n`` times (medians printed, in ms):

* ``bare``: ``python -c pass`` started and waited for;
* ``oneliner``: the popen argv with the stdin one-liner, fed ``pass`` on stdin;
* ``worker_import``: the same, fed the worker's import of ``execnet.gateway_base``;
* ``spawn``: the master's ``create_io`` (``Popen`` of the child) alone;
* ``makegateway``: ``Group().makegateway("popen")`` up to the handshake;
* ``first_exec``: the first ``remote_exec`` + ``receive`` + ``waitclose`` on that gateway;
* ``total``: ``makegateway`` + first round trip (what ``run.py``'s ``popen_start`` measures);
* ``terminate``: ``group.terminate`` of that one gateway (not part of ``total``).

It also prints the master's ``import execnet`` time in a fresh process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

ONELINER = "import sys;exec(eval(sys.stdin.readline()))"


def _child(line: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", ONELINER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    proc.communicate(repr(line).encode() + b"\n")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=7)
    args = p.parse_args()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "import execnet"], check=True)
    t_import = time.perf_counter() - t0
    import execnet
    from execnet import gateway_io

    importdir = execnet.gateway_bootstrap.importdir
    worker_import = (
        f"import sys\nsys.path.insert(0, {importdir!r})\n"
        "from execnet.gateway_base import serve, init_popen_io, get_execmodel"
    )
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value * 1000)

    for _ in range(args.n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        add("bare", time.perf_counter() - t0)
        add("oneliner", _child("pass"))
        add("worker_import", _child(worker_import))
        group = execnet.Group()
        spec = execnet.XSpec("popen")
        spec.execmodel = "thread"
        t0 = time.perf_counter()
        io = gateway_io.create_io(spec, group.execmodel)
        add("spawn", time.perf_counter() - t0)
        io.kill()
        io.wait()
        t0 = time.perf_counter()
        gw = group.makegateway("popen")
        t1 = time.perf_counter()
        ch = gw.remote_exec("import os; channel.send(os.getpid())")
        ch.receive()
        ch.waitclose()
        t2 = time.perf_counter()
        group.terminate(10)
        t3 = time.perf_counter()
        add("makegateway", t1 - t0)
        add("first_exec", t2 - t1)
        add("total", t2 - t0)
        add("terminate", t3 - t2)
    del out
    print(f"{execnet.__file__}  (python -c 'import execnet': {t_import * 1000:.1f} ms)")
    for name, values in rows.items():
        print(f"{name:14} median {statistics.median(values):7.1f} ms   min {min(values):7.1f} ms")


if __name__ == "__main__":
    main()
