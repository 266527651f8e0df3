"""ssh gateway workloads against a loopback sshd, one measurement per process.

Run by ``benchmarks/run.py`` with the interpreter of one side, which also starts the sshd
(``tests/_sshd.py``) and passes the gateway spec::

    python ssh_workloads.py NAME spec='"ssh=-p PORT ... root@127.0.0.1//python=..."' [key=value ...]

It prints one JSON line: ``{"value": float, "correct": bool, "detail": {...}}``. Only the
standard library and ``execnet`` are imported, so the same file runs against upstream execnet
2.1.2 (which ignores the ``ssh_reuse`` key) and against this package.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import execnet

PID = "import os; channel.send(os.getpid())"

Result = tuple[float, bool, dict[str, Any]]


def _roundtrip(gw: Any) -> int:
    """The first round trip on a fresh gateway: returns the worker's pid."""
    channel = gw.remote_exec(PID)
    pid: int = channel.receive()
    channel.waitclose()
    return pid


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _ssh_processes(spec: str, masters: set[str]) -> list[int]:
    """Pids of the ssh clients that connect with the spec's arguments, and of the masters
    listening on the control sockets ``masters`` (ssh renames those ``ssh: PATH [mux]``)."""
    wanted = spec.split("//")[0].partition("=")[2].split()
    titles = {f"ssh: {path} [mux]" for path in masters}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not argv:
            continue
        if argv[0] in titles or (
            os.path.basename(argv[0]) == "ssh" and argv[-1 - len(wanted) : -1] == wanted
        ):
            found.append(int(entry))
    return found


def _control_path(gw: Any) -> str | None:
    """The control socket of a gateway that shares an ssh master (this package only)."""
    return getattr(getattr(gw._io, "_control", None), "path", None)


def _leftovers(
    spec: str, pids: list[int], masters: set[str | None], timeout: float = 3.0
) -> list[int]:
    """Workers and ssh processes still running ``timeout`` seconds after a terminate."""
    paths = {path for path in masters if path}
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)] + [
            pid for pid in _ssh_processes(spec, paths) if _alive(pid)
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def start(spec: str, iterations: int = 3) -> Result:
    """Seconds for ``makegateway(spec)`` plus the first round trip, each in a new group."""
    times = []
    pids = []
    masters = set()
    for _ in range(iterations):
        group = execnet.Group()
        t0 = time.perf_counter()
        gw = group.makegateway(spec)
        pids.append(_roundtrip(gw))
        times.append(time.perf_counter() - t0)
        masters.add(_control_path(gw))
        group.terminate(10)
    left = _leftovers(spec, pids, masters)
    ok = len(set(pids)) == iterations and os.getpid() not in pids and not left
    return statistics.median(times), ok, {"samples": times, "leftovers": left}


def second(spec: str, iterations: int = 3) -> Result:
    """Seconds for another gateway to the same host while one is open (median)."""
    holder = execnet.Group()
    first = holder.makegateway(spec)
    pids = [_roundtrip(first)]
    masters = {_control_path(first)}
    times = []
    try:
        for _ in range(iterations):
            group = execnet.Group()
            t0 = time.perf_counter()
            gw = group.makegateway(spec)
            pids.append(_roundtrip(gw))
            times.append(time.perf_counter() - t0)
            masters.add(_control_path(gw))
            group.terminate(10)
    finally:
        holder.terminate(10)
    left = _leftovers(spec, pids, masters)
    ok = len(set(pids)) == iterations + 1 and not left
    return statistics.median(times), ok, {"samples": times, "leftovers": left}


def gateways(spec: str, n: int = 4) -> Result:
    """Seconds to start ``n`` gateways to one host in a row, a round trip each."""
    group = execnet.Group()
    pids: list[int] = []
    masters = set()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            gw = group.makegateway(spec)
            pids.append(_roundtrip(gw))
            masters.add(_control_path(gw))
        elapsed = time.perf_counter() - t0
    finally:
        group.terminate(10)
    left = _leftovers(spec, pids, masters)
    ok = len(set(pids)) == n and not left
    return elapsed, ok, {"n": n, "leftovers": left}


WORKLOADS: dict[str, Callable[..., Result]] = {
    "start": start,
    "second": second,
    "gateways": gateways,
}


def _parse(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def main(argv: list[str]) -> int:
    name, params = argv[0], dict[str, Any]()
    for arg in argv[1:]:
        key, _, text = arg.partition("=")
        params[key] = _parse(text)
    value, correct, detail = WORKLOADS[name](**params)
    detail["execnet_version"] = getattr(execnet, "__version__", "?")
    detail["execnet_file"] = execnet.__file__
    print(json.dumps({"value": value, "correct": bool(correct), "detail": detail}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
