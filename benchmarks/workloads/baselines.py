"""Baselines without execnet, one measurement per process (standard library only).

Run by ``benchmarks/run.py`` with the interpreter of one side::

    python baselines.py NAME [key=value ...]

It prints one JSON line like ``gateway_workloads.py`` does. The baselines bound what any
implementation can reach on this machine: starting an interpreter, a ping-pong over two pipes
between two Python processes, and the throughput of one pipe.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

Result = tuple[float, bool, dict[str, Any]]

ECHO_CHILD = """
import os
while True:
    data = os.read(0, 65536)
    if not data:
        break
    os.write(1, data)
"""

WRITER_CHILD = """
import os, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
view = memoryview(b"\\xab" * size)
for _ in range(count):
    offset = 0
    while offset < size:
        offset += os.write(1, view[offset:])
"""


def bare_start(iterations: int = 5) -> Result:
    """Seconds for ``python -c pass`` with this interpreter (median of iterations)."""
    times = []
    ok = True
    for _ in range(iterations):
        t0 = time.perf_counter()
        ok = subprocess.run([sys.executable, "-c", "pass"]).returncode == 0 and ok
        times.append(time.perf_counter() - t0)
    return statistics.median(times), ok, {"samples": times}


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def pipe_pingpong(n: int = 5000, warmup: int = 300) -> Result:
    """Microseconds per 16-byte round trip through a child Python process that echoes."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", ECHO_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
    msg = b"0123456789abcdef"
    try:
        for _ in range(warmup):
            os.write(wfd, msg)
            _read_exactly(rfd, len(msg))
        ok = True
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(wfd, msg)
            ok = _read_exactly(rfd, len(msg)) == msg and ok
        elapsed = time.perf_counter() - t0
    finally:
        proc.stdin.close()
        proc.wait(30)
    return elapsed / n * 1e6, ok, {"n": n}


def pipe_throughput(count: int = 200, size: int = 4 << 20) -> Result:
    """MB/s (10^6 bytes) a child Python process writes into one pipe and this one reads."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(count), str(size)],
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdout is not None
    buf = bytearray(1 << 20)
    with proc.stdout:
        # The clock starts at the first byte so that the child's start-up is not counted.
        fd = proc.stdout.fileno()
        first = os.readv(fd, [buf])
        total = 0
        t0 = time.perf_counter()
        while True:
            got = os.readv(fd, [buf])
            if not got:
                break
            total += got
        elapsed = time.perf_counter() - t0
    ok = proc.wait(30) == 0 and first + total == count * size
    return total / 1e6 / elapsed, ok, {"bytes": first + total, "seconds": elapsed}


WORKLOADS: dict[str, Callable[..., Result]] = {
    "bare_start": bare_start,
    "pipe_pingpong": pipe_pingpong,
    "pipe_throughput": pipe_throughput,
}


def main(argv: list[str]) -> int:
    name, params = argv[0], dict[str, Any]()
    for arg in argv[1:]:
        key, _, text = arg.partition("=")
        params[key] = json.loads(text)
    value, correct, detail = WORKLOADS[name](**params)
    print(json.dumps({"value": value, "correct": bool(correct), "detail": detail}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
