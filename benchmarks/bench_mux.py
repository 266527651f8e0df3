"""Throughput of the Rust gateway I/O core against a pure-Python framed reader.

Each case streams frames from a child process through a pipe into this process and takes
every item out of a queue in the main thread:

* `mux`: `execnet._core.Mux` reader thread routing CHANNEL_DATA into a `ChannelQueue`
  (no GIL on the reader side; decoding happens in `get()`); payloads of 256 KiB and more go
  through `dispatch`, which decodes in the reader thread and queues the object, as
  `gateway_base` does;
* `python`: a reader thread doing `read(9)`, `struct.unpack`, `read(n)`, decode, and
  `queue.Queue.put` — the shape of a pure-Python gateway receiver.

Both decode with the same `loads_internal`, so the ratio isolates framing, routing and queue
hand-off. A send case compares `Mux.send` with a lock plus `os.write` of a packed frame, alone
and with a CPU-bound Python thread competing for the GIL.

Usage: python benchmarks/bench_mux.py [--fast] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import struct
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable

from execnet import _core

HEADER = struct.Struct("!bii")

WRITER = r"""
import os, struct, sys
kind, count = sys.argv[1], int(sys.argv[2])
def frame(payload):
    return struct.pack("!bii", 4, 1, len(payload)) + payload
if kind == "small":
    # (i, "item", None) in the internal format, i fixed: same size for every frame
    payload = b"F\x00\x00\x00\x07N\x00\x00\x00\x04itemL@\x00\x00\x00\x03Q"
    chunk = frame(payload) * 1000
    for _ in range(count // 1000):
        os.write(1, chunk)
else:
    blob = os.urandom(1 << 20) * 4
    data = frame(b"A" + struct.pack("!i", len(blob)) + blob + b"Q")
    view = memoryview(data)
    for _ in range(count):
        off = 0
        while off < len(data):
            off += os.write(1, view[off:])
"""


def _mini_loads(data: bytes, channelfactory: object = None, strconfig: object = None) -> object:
    """Decoder for the two payload shapes above (used only when execnet.gateway_base is not
    available in this tree)."""
    if data[:1] == b"A":
        (n,) = struct.unpack_from("!i", data, 1)
        return data[5 : 5 + n]
    (i,) = struct.unpack_from("!i", data, 1)
    (n,) = struct.unpack_from("!i", data, 6)
    return (i, data[10 : 10 + n].decode(), None)


def loads_internal() -> Callable[..., object]:
    try:
        from execnet.gateway_base import loads_internal as loads

        return loads
    except ImportError:
        stub = types.ModuleType("execnet.gateway_base")
        stub.loads_internal = _mini_loads  # type: ignore[attr-defined]
        sys.modules["execnet.gateway_base"] = stub
        return _mini_loads


def start_writer(kind: str, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, str(count)], stdout=subprocess.PIPE
    )


class Timer:
    """Wall and CPU time (all threads of this process; the child writer is not counted)."""

    def __enter__(self) -> Timer:
        self.wall = time.perf_counter()
        self.cpu = _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu() - self.cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_mux(kind: str, count: int) -> Timer:
    proc = start_writer(kind, count)
    assert proc.stdout is not None
    r, w = os.pipe()
    mux = _core.Mux(proc.stdout.fileno(), w)
    proc.stdout.close()
    os.close(r)
    os.close(w)
    q = mux.queue(1)
    loads = loads_internal()

    def dispatch(code: int, channel: int, payload: bytes) -> None:
        # What gateway_base does with data that is not queued directly (large payloads).
        q.put(loads(payload, None, (True, False)))

    mux.start(dispatch, lambda exc: None)
    q.get()  # the writer is up
    with Timer() as timer:
        for _ in range(count - 1):
            q.get()
    mux.join(timeout=30)
    proc.wait()
    return timer


def run_mux_callback(count: int, loads: Callable[..., object]) -> Timer:
    """Every frame through `dispatch` (a channel with a callback, as pytest-xdist uses)."""
    proc = start_writer("small", count)
    assert proc.stdout is not None
    r, w = os.pipe()
    mux = _core.Mux(proc.stdout.fileno(), w)
    proc.stdout.close()
    os.close(r)
    os.close(w)
    items: list[object] = []
    first = threading.Event()
    done = threading.Event()

    def dispatch(code: int, channel: int, payload: bytes) -> None:
        items.append(loads(payload, None, (True, False)))
        first.set()

    mux.start(dispatch, lambda exc: done.set())
    first.wait()
    with Timer() as timer:
        done.wait()
    assert len(items) == count
    proc.wait()
    return timer


def run_python_callback(count: int, loads: Callable[..., object]) -> Timer:
    proc = start_writer("small", count)
    assert proc.stdout is not None
    stream = proc.stdout
    items: list[object] = []
    first = threading.Event()

    def reader() -> None:
        read = stream.read
        while True:
            header = read(9)
            if len(header) < 9:
                return
            _code, _channel, n = HEADER.unpack(header)
            items.append(loads(read(n), None, (True, False)))
            first.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    first.wait()
    with Timer() as timer:
        t.join()
    assert len(items) == count
    proc.wait()
    stream.close()
    return timer


def run_python(kind: str, count: int, loads: Callable[..., object]) -> Timer:
    proc = start_writer(kind, count)
    assert proc.stdout is not None
    stream = proc.stdout
    q: queue.Queue[object] = queue.Queue()

    def reader() -> None:
        read = stream.read
        while True:
            header = read(9)
            if len(header) < 9:
                return
            _code, _channel, n = HEADER.unpack(header)
            q.put(loads(read(n), None, (True, False)))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    q.get()  # the writer is up
    with Timer() as timer:
        for _ in range(count - 1):
            q.get()
    t.join()
    proc.wait()
    stream.close()
    return timer


def run_send(count: int, use_mux: bool, contention: bool) -> Timer:
    r, w = os.pipe()
    # The peer is another process, as for a real gateway.
    drain = subprocess.Popen(
        [sys.executable, "-c", "import os\nwhile os.read(0, 1 << 16): pass"], stdin=r
    )
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    if contention:
        threading.Thread(target=spin, daemon=True).start()
    payload = b"F\x00\x00\x00\x07N\x00\x00\x00\x04itemL@\x00\x00\x00\x03Q"
    if use_mux:
        mux = _core.Mux(r, w)
        send = mux.send
        with Timer() as timer:
            for _ in range(count):
                send(4, 1, payload)
        mux.close_write()
        mux.close_read()
    else:
        lock = threading.Lock()
        pack = HEADER.pack
        write = os.write
        with Timer() as timer:
            for _ in range(count):
                with lock:
                    write(w, pack(4, 1, len(payload)) + payload)
    stop.set()
    os.close(w)
    os.close(r)
    drain.wait(10)
    return timer


def best(fn: Callable[[], Timer], repeat: int) -> Timer:
    return min((fn() for _ in range(repeat)), key=lambda t: t.wall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true", help="smoke run with small counts")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    small = 20_000 if args.fast else 200_000
    big = 20 if args.fast else 200
    repeat = 1 if args.fast else 3
    loads = loads_internal()

    results = []

    def record(name: str, unit_count: int, unit: str, mux: Timer, py: Timer) -> None:
        results.append(
            {
                "case": name,
                "count": unit_count,
                "unit": unit,
                "mux_wall_s": round(mux.wall, 4),
                "python_wall_s": round(py.wall, 4),
                "speedup_wall": round(py.wall / mux.wall, 2),
                "mux_cpu_s": round(mux.cpu, 4),
                "python_cpu_s": round(py.cpu, 4),
                "speedup_cpu": round(py.cpu / max(mux.cpu, 1e-9), 2),
            }
        )

    record(
        "receive small tuples",
        small,
        "frames",
        best(lambda: run_mux("small", small), repeat),
        best(lambda: run_python("small", small, loads), repeat),
    )
    record(
        "small tuples to a callback",
        small,
        "frames",
        best(lambda: run_mux_callback(small, loads), repeat),
        best(lambda: run_python_callback(small, loads), repeat),
    )
    record(
        "receive 4 MiB bytes",
        big,
        "frames",
        best(lambda: run_mux("big", big), repeat),
        best(lambda: run_python("big", big, loads), repeat),
    )
    for contention in (False, True):
        # Contended, every os.write gives the GIL away and waits a switch interval (5 ms) to get
        # it back: fewer frames keep that case to seconds; the report is per frame.
        count = max(small // 50, 1000) if contention else small
        record(
            "send small frames" + (" (GIL contended)" if contention else ""),
            count,
            "frames",
            best(lambda c=contention, n=count: run_send(n, True, c), repeat),
            best(lambda c=contention, n=count: run_send(n, False, c), repeat),
        )

    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "decoder": getattr(loads, "__module__", "?"),
    }
    print(f"environment: {env}")
    print("| case | count | Mux wall / CPU (s) | pure Python wall / CPU (s) | speedup wall / CPU |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {r['count']} | {r['mux_wall_s']} / {r['mux_cpu_s']} "
            f"| {r['python_wall_s']} / {r['python_cpu_s']} "
            f"| {r['speedup_wall']}x / {r['speedup_cpu']}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
