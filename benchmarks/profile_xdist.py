"""Where the wall time of a pytest-xdist run goes, upstream execnet against this package.

Runs ``python -m pytest -q -p no:cacheprovider -n N SUITE`` with each side's interpreter
(``.side/bench-upstream`` and ``.side/bench-ours``, made by ``benchmarks/run.py``), the sides
taking turns, with a tiny plugin that stamps xdist's hooks in the controller and the workers
on the shared monotonic clock. It prints, per side, the median time of each phase::

    python benchmarks/profile_xdist.py [--suite single] [-n 2] [--runs 5]

Phases: ``start`` (process start to the plugin's import), ``configure`` (to setupnodes),
``gateways`` (to the last ``configure_node``: makegateway, _rinfo and remote_exec of every
worker), ``workers_up`` (to the last ``testnodeready``: worker start-up, pytest import and
collection), ``tests`` (to the last ``testnodedown``), ``teardown`` (to the controller's
``sessionfinish``: group.terminate), ``finish`` (to the controller's last atexit hook) and
``exit`` (to the process's end); ``cpu`` is the user + system time of the whole process tree.

Below them, the workers' own marks (each the median over runs of the slowest worker):
``w_pytest_up`` (from the controller's last ``configure_node`` to a worker's plugin import:
the worker imports pytest and parses its arguments), ``w_session`` (plugin import to the
worker's ``unconfigure``: configure, collection, the test, the session's end) and
``w_cleanup`` (``unconfigure`` to the worker's exit hooks: pytest's cleanup, whose five full
``gc.collect()`` passes in pytest 8.4 dominate, then execnet's end of the task and
GATEWAY_TERMINATE); ``ctl_cleanup`` is the controller's own ``unconfigure`` to ``atexit``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLUGIN = r"""
import atexit, os, sys, time
T0 = float(os.environ["XDTL_T0"])
OUT = os.environ["XDTL_OUT"]
def mark(what):
    wid = os.environ.get("PYTEST_XDIST_WORKER", "ctl")
    with open(OUT, "a") as f:
        f.write("%f %s %s\n" % (time.monotonic() - T0, wid, what))
mark("plugin")
def pytest_xdist_setupnodes(config, specs): mark("setupnodes")
def pytest_configure_node(node): mark("configure_node")
def pytest_testnodeready(node): mark("testnodeready")
def pytest_testnodedown(node, error): mark("testnodedown")
def pytest_sessionfinish(session): mark("sessionfinish")
def pytest_unconfigure(config): mark("unconfigure")
atexit.register(lambda: mark("atexit"))
"""

PHASES = [
    ("start", "plugin", "first"),
    ("configure", "setupnodes", "first"),
    ("gateways", "configure_node", "last"),
    ("workers_up", "testnodeready", "last"),
    ("tests", "testnodedown", "last"),
    ("teardown", "sessionfinish", "last"),
    ("finish", "atexit", "last"),
]


def one_run(python: str, suite: Path, workers: int, plugin_dir: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".tl") as out:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPATH"] = plugin_dir
        env["XDTL_OUT"] = out.name
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        env["XDTL_T0"] = repr(t0)
        subprocess.run(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdtimeline"]
            + ["-n", str(workers), str(suite)],
            env=env,
            cwd=suite,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        total = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        marks: dict[str, list[float]] = {}
        workers: dict[str, dict[str, float]] = {}
        for line in out.read().splitlines():
            stamp, who, what = line.split()
            if who == "ctl":
                marks.setdefault(what, []).append(float(stamp))
            else:
                workers.setdefault(who, {})[what] = float(stamp)
    points: dict[str, float] = {}
    previous = 0.0
    for phase, mark, which in PHASES:
        values = marks.get(mark)
        if not values:
            continue
        value = values[0] if which == "first" else values[-1]
        points[phase] = value - previous
        previous = value
    points["exit"] = total - previous
    points["total"] = total
    points["cpu"] = cpu
    ready = marks.get("configure_node")
    spans = {
        "w_pytest_up": ("plugin", "unconfigure"),
        "w_session": ("plugin", "unconfigure"),
        "w_cleanup": ("unconfigure", "atexit"),
    }
    for name, (first, last) in spans.items():
        values = []
        for stamps in workers.values():
            if name == "w_pytest_up" and ready and first in stamps:
                values.append(stamps[first] - ready[-1])
            elif first in stamps and last in stamps:
                values.append(stamps[last] - stamps[first])
        if values:
            points[name] = max(values)
    if marks.get("unconfigure") and marks.get("atexit"):
        points["ctl_cleanup"] = marks["atexit"][-1] - marks["unconfigure"][-1]
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="single")
    p.add_argument("-n", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    suite = REPO / ".side" / "bench-suites" / args.suite
    if not suite.is_dir():
        sys.exit(f"{suite} missing: run benchmarks/run.py --only 'xdist_{args.suite}_*' once")
    sides = {s: str(REPO / ".side" / f"bench-{s}" / "bin" / "python") for s in ("upstream", "ours")}
    results: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as plugin_dir:
        Path(plugin_dir, "xdtimeline.py").write_text(PLUGIN)
        for _ in range(args.runs):
            for side, python in sides.items():
                results[side].append(one_run(python, suite, args.n, plugin_dir))
    names = [phase for phase, _, _ in PHASES] + ["exit", "total", "cpu"]
    names += ["w_pytest_up", "w_session", "w_cleanup", "ctl_cleanup"]
    print(f"suite {args.suite}, -n {args.n}, {args.runs} runs per side, medians in ms")
    print(f"{'phase':12}" + "".join(f"{side:>12}" for side in sides) + f"{'ratio':>8}")
    for name in names:
        meds = []
        for side in sides:
            values = [r[name] for r in results[side] if name in r]
            meds.append(statistics.median(values) * 1000 if values else float("nan"))
        ratio = meds[1] / meds[0] if meds[0] else float("nan")
        print(f"{name:12}" + "".join(f"{m:12.1f}" for m in meds) + f"{ratio:8.2f}")


if __name__ == "__main__":
    main()
