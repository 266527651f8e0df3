"""Gateway throughput and latency on the native IO path against ``EXECNET_NO_NATIVE_IO=1``.

Usage::

    python benchmarks/bench_native_io.py [--rounds 3] [--fast]

Every measurement runs in a fresh interpreter (the switch is read at import); the two paths
take turns, and the best wall time of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASE = r"""
import json, sys, time
import execnet

case, n = sys.argv[1], int(sys.argv[2])
gw = execnet.makegateway("popen")
t0 = time.perf_counter()
if case == "w2m_receive":
    ch = gw.remote_exec(
        "n = channel.receive()\n"
        "for i in range(n): channel.send((i, 'item', None))\n"
    )
    t0 = time.perf_counter()
    ch.send(n)
    for _ in range(n):
        ch.receive()
elif case == "w2m_callback":
    import threading
    done = threading.Event()
    count = [0]
    def cb(item):
        count[0] += 1
        if count[0] == n:
            done.set()
    ch = gw.remote_exec(
        "n = channel.receive()\n"
        "for i in range(n): channel.send((i, 'item', None))\n"
    )
    ch.setcallback(cb)
    t0 = time.perf_counter()
    ch.send(n)
    done.wait()
elif case == "m2w":
    ch = gw.remote_exec("n = channel.receive()\nfor _ in range(n): channel.receive()\nchannel.send(1)")
    t0 = time.perf_counter()
    ch.send(n)
    for i in range(n):
        ch.send((i, "item", None))
    ch.receive()
elif case == "echo":
    ch = gw.remote_exec("for item in channel: channel.send(item)")
    ch.send(0); ch.receive()
    t0 = time.perf_counter()
    for i in range(n):
        ch.send(i)
        ch.receive()
elif case == "big_w2m":
    ch = gw.remote_exec(
        "n = channel.receive()\ndata = b'x' * (4 << 20)\n"
        "for _ in range(n): channel.send(data)\n"
    )
    t0 = time.perf_counter()
    ch.send(n)
    for _ in range(n):
        ch.receive()
elif case == "big_m2w":
    ch = gw.remote_exec("n = channel.receive()\nfor _ in range(n): channel.receive()\nchannel.send(1)")
    data = b"x" * (4 << 20)
    t0 = time.perf_counter()
    ch.send(n)
    for _ in range(n):
        ch.send(data)
    ch.receive()
elapsed = time.perf_counter() - t0
gw.exit(); gw.join(10)
print(json.dumps({"wall": elapsed, "native": gw._mux is not None}))
"""

CASES = {
    "w2m_receive": ("200,000 tuples worker->master, receive()", 200_000),
    "w2m_callback": ("200,000 tuples worker->master, callback", 200_000),
    "m2w": ("200,000 tuples master->worker", 200_000),
    "echo": ("1,000 echo round trips", 1_000),
    "big_w2m": ("200 x 4 MiB worker->master", 200),
    "big_m2w": ("200 x 4 MiB master->worker", 200),
}


def run(case: str, n: int, native: bool) -> float:
    env = dict(os.environ)
    env.pop("EXECNET_NO_NATIVE_IO", None)
    if not native:
        env["EXECNET_NO_NATIVE_IO"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", CASE, case, str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["native"] == native, result
    return float(result["wall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="a tenth of the work, one round")
    args = parser.parse_args()
    rounds = 1 if args.fast else args.rounds
    print("| case | native (s) | pure Python (s) | pure/native |\n|---|---|---|---|")
    for case, (title, n) in CASES.items():
        if args.fast:
            n = max(1, n // 10)
        native: list[float] = []
        pure: list[float] = []
        for _ in range(rounds):
            native.append(run(case, n, True))
            pure.append(run(case, n, False))
        a, b = min(native), min(pure)
        print(f"| {title} | {a:.3f} | {b:.3f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
