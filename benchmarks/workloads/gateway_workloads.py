"""execnet workloads, one measurement per process.

Run by ``benchmarks/run.py`` with the interpreter of one side::

    python gateway_workloads.py NAME [key=value ...]

It prints one JSON line: ``{"value": float, "correct": bool, "detail": {...}}``. Only the
standard library and ``execnet`` are imported, so the same file runs against upstream execnet
2.1.2 and against this package.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import execnet

# Remote sources are plain strings so both implementations ship exactly the same text.
ECHO = """
for item in channel:
    channel.send(item)
"""

SEND_TUPLES = """
n = channel.receive()
for i in range(n):
    channel.send((i, "abc"))
"""

COUNT_UNTIL_NONE = """
count = 0
last = None
while True:
    item = channel.receive()
    if item is None:
        break
    count += 1
    last = item
channel.send((count, last))
"""

SEND_BLOBS = """
count, size = channel.receive()
blob = b"\\xab" * size
for _ in range(count):
    channel.send(blob)
"""

SUM_BLOBS_UNTIL_NONE = """
total = 0
while True:
    item = channel.receive()
    if item is None:
        break
    total += len(item)
channel.send(total)
"""

PID = "import os; channel.send(os.getpid())"

Result = tuple[float, bool, dict[str, Any]]


def _roundtrip(gw: Any) -> int:
    """The first round trip on a fresh gateway: returns the worker's pid."""
    channel = gw.remote_exec(PID)
    pid: int = channel.receive()
    channel.waitclose()
    return pid


def popen_start(iterations: int = 5) -> Result:
    """Seconds for ``makegateway("popen")`` plus the first round trip (median of iterations)."""
    times = []
    ok = True
    for _ in range(iterations):
        group = execnet.Group()
        t0 = time.perf_counter()
        gw = group.makegateway("popen")
        pid = _roundtrip(gw)
        times.append(time.perf_counter() - t0)
        ok = ok and pid != os.getpid()
        group.terminate(10)
    return statistics.median(times), ok, {"samples": times}


def echo(model: str = "thread", n: int = 5000, warmup: int = 300) -> Result:
    """Microseconds per small-message round trip on one channel."""
    group = execnet.Group(execmodel=model)
    try:
        gw = group.makegateway("popen")
        channel = gw.remote_exec(ECHO)
        msg = (1, "ping", 2.5)
        for _ in range(warmup):
            channel.send(msg)
            channel.receive()
        t0 = time.perf_counter()
        ok = True
        for _ in range(n):
            channel.send(msg)
            ok = channel.receive() == msg and ok
        elapsed = time.perf_counter() - t0
        channel.close()
        channel.waitclose(30)
    finally:
        group.terminate(10)
    return elapsed / n * 1e6, ok, {"n": n, "model": model}


def _tuples_w2m(gw: Any, n: int) -> tuple[float, bool]:
    channel = gw.remote_exec(SEND_TUPLES)
    t0 = time.perf_counter()
    channel.send(n)
    last = None
    for _ in range(n):
        last = channel.receive()
    elapsed = time.perf_counter() - t0
    channel.waitclose(60)
    return elapsed, last == (n - 1, "abc")


def _tuples_w2m_callback(gw: Any, n: int) -> tuple[float, bool]:
    done = threading.Event()
    state: dict[str, Any] = {"count": 0, "last": None}

    def callback(item: Any) -> None:
        state["count"] += 1
        state["last"] = item
        if state["count"] == n:
            done.set()

    channel = gw.remote_exec(SEND_TUPLES)
    channel.setcallback(callback)
    t0 = time.perf_counter()
    channel.send(n)
    finished = done.wait(600)
    elapsed = time.perf_counter() - t0
    channel.waitclose(60)
    return elapsed, finished and state["last"] == (n - 1, "abc")


def _tuples_m2w(gw: Any, n: int) -> tuple[float, bool]:
    channel = gw.remote_exec(COUNT_UNTIL_NONE)
    t0 = time.perf_counter()
    for i in range(n):
        channel.send((i, "abc"))
    channel.send(None)
    result = channel.receive()
    elapsed = time.perf_counter() - t0
    channel.waitclose(60)
    return elapsed, result == (n, (n - 1, "abc"))


ONE_WAY: dict[str, Callable[[Any, int], tuple[float, bool]]] = {
    "w2m_receive": _tuples_w2m,
    "w2m_callback": _tuples_w2m_callback,
    "m2w": _tuples_m2w,
}


def oneway(direction: str = "w2m_receive", n: int = 200_000, warmup: int = 2000) -> Result:
    """Messages per second for ``n`` small tuples sent one way."""
    run = ONE_WAY[direction]
    group = execnet.Group()
    try:
        gw = group.makegateway("popen")
        _, warm_ok = run(gw, warmup)
        elapsed, ok = run(gw, n)
    finally:
        group.terminate(10)
    return n / elapsed, ok and warm_ok, {"n": n, "seconds": elapsed}


def _blobs_w2m(gw: Any, count: int, size: int) -> tuple[float, bool]:
    channel = gw.remote_exec(SEND_BLOBS)
    t0 = time.perf_counter()
    channel.send((count, size))
    ok = True
    for _ in range(count):
        blob = channel.receive()
        ok = ok and len(blob) == size and blob[-1:] == b"\xab"
    elapsed = time.perf_counter() - t0
    channel.waitclose(60)
    return elapsed, ok


def _blobs_m2w(gw: Any, count: int, size: int) -> tuple[float, bool]:
    blob = b"\xab" * size
    channel = gw.remote_exec(SUM_BLOBS_UNTIL_NONE)
    t0 = time.perf_counter()
    for _ in range(count):
        channel.send(blob)
    channel.send(None)
    total = channel.receive()
    elapsed = time.perf_counter() - t0
    channel.waitclose(60)
    return elapsed, total == count * size


def bulk(direction: str = "w2m", count: int = 200, size: int = 4 << 20) -> Result:
    """MB/s (10^6 bytes) for ``count`` bytes objects of ``size`` sent one way."""
    run = _blobs_w2m if direction == "w2m" else _blobs_m2w
    group = execnet.Group()
    try:
        gw = group.makegateway("popen")
        _, warm_ok = run(gw, 4, size)
        elapsed, ok = run(gw, count, size)
    finally:
        group.terminate(10)
    return count * size / 1e6 / elapsed, ok and warm_ok, {"bytes": count * size, "seconds": elapsed}


def gateways(n: int = 16, threads: bool = False) -> Result:
    """Seconds to start ``n`` popen gateways with a round trip each, in a row or from threads."""
    group = execnet.Group()
    pids: list[int] = []
    errors: list[str] = []

    def start_one() -> None:
        try:
            pids.append(_roundtrip(group.makegateway("popen")))
        except Exception as exc:
            errors.append(repr(exc))

    try:
        t0 = time.perf_counter()
        if threads:
            workers = [threading.Thread(target=start_one) for _ in range(n)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        else:
            for _ in range(n):
                start_one()
        elapsed = time.perf_counter() - t0
    finally:
        group.terminate(10)
    ok = not errors and len(set(pids)) == n
    return elapsed, ok, {"n": n, "threads": threads, "errors": errors[:3]}


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(n: int = 16) -> Result:
    """Milliseconds for ``group.terminate()`` of ``n`` idle popen gateways."""
    group = execnet.Group()
    pids = [_roundtrip(group.makegateway("popen")) for _ in range(n)]
    t0 = time.perf_counter()
    group.terminate(10)
    elapsed = time.perf_counter() - t0
    survivors = [pid for pid in pids if _alive(pid)]
    ok = len(set(pids)) == n and not survivors and len(group) == 0
    return elapsed * 1e3, ok, {"n": n, "survivors": survivors}


WORKLOADS: dict[str, Callable[..., Result]] = {
    "popen_start": popen_start,
    "echo": echo,
    "oneway": oneway,
    "bulk": bulk,
    "gateways": gateways,
    "terminate": terminate,
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
