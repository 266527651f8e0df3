"""RSync side by side: execnet-rs, upstream execnet 2.1.2 and ``rsync -a --delete``.

Scenarios on tmpfs (``/dev/shm``):

* ``full``: copy a 2,020-file / 50 MB tree into an empty directory;
* ``noop``: sync it again, nothing changed;
* ``changed``: 10 files changed (5 with a new size, 5 with the same size, so the MD5 path runs);
* ``noop100k``: no-op sync of a 100,000-file tree (``--big`` to include it).

Besides wall time it reports the CPU time (user + system) of every process taking part: the
master and its worker for execnet (read with ``getrusage`` before and after, untimed), the
``rsync`` processes for rsync. On a shared machine CPU time is disturbed less than wall time.

Each implementation runs in its own long-lived process with one popen gateway (gateway start is
not timed; ``rsync`` is a command, so its process start is). Rounds alternate the order of the
implementations; the median of the rounds is reported with ratios against upstream and rsync.
Upstream execnet 2.1.2 is installed on first use into ``.side/upstream-2.1.2`` of the repository.
Needs the ``rsync`` command (Debian package ``rsync``).

    python benchmarks/bench_rsync.py [--rounds 5] [--big] [--json out.json] [--fast]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = REPO / ".side" / "upstream-2.1.2"

# The runner executes inside each implementation's process: it reads one command per line
# ("sync <src> <dst>") and answers with the elapsed seconds, or "exit".
RUNNER = r"""
import resource, sys, time, execnet
gw = execnet.makegateway("popen")
print("ready", execnet.__file__, flush=True)
CPU = "import resource; r = resource.getrusage(resource.RUSAGE_SELF); channel.send(r.ru_utime + r.ru_stime)"

def cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + gw.remote_exec(CPU).receive()

for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "exit":
        break
    _, src, dst = cmd
    cpu0 = cpu()
    t0 = time.perf_counter()
    rsync = execnet.RSync(src, verbose=False)
    rsync.add_target(gw, dst, delete=True)
    rsync.send()
    elapsed = time.perf_counter() - t0
    print(elapsed, cpu() - cpu0, flush=True)
gw.exit()
"""


class Impl:
    """One implementation under test, driven over a pipe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[str] | None = None
        if name == "rsync":
            return
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if name == "upstream":
            env["PYTHONPATH"] = str(UPSTREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        self.module = ready[1]

    def sync(self, src: Path, dst: Path) -> tuple[float, float]:
        """Wall seconds and CPU seconds (every process taking part) of one sync."""
        if self.proc is None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(["rsync", "-a", "--delete", f"{src}/", f"{dst}/"], check=True)
            elapsed = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            return elapsed, cpu
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"sync {src} {dst}\n")
        self.proc.stdin.flush()
        elapsed, cpu = self.proc.stdout.readline().split()
        return float(elapsed), float(cpu)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write("exit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def make_tree(root: Path, dirs: int, per_dir: int, small: int, big: int, big_size: int) -> int:
    """Create ``dirs * per_dir`` small files plus ``big`` large ones; returns the byte count."""
    total = 0
    for d in range(dirs):
        sub = root / f"pkg{d:03}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            data = (f"{d}:{i}:" * (small // 6 + 1)).encode()[:small]
            (sub / f"mod{i:04}.py").write_bytes(data)
            total += len(data)
    if big:
        (root / "data").mkdir(parents=True)
        for i in range(big):
            data = os.urandom(big_size)
            (root / "data" / f"blob{i:02}.bin").write_bytes(data)
            total += len(data)
    return total


def change_files(root: Path, round_no: int) -> None:
    """Change 10 files: 5 grow by a byte, 5 keep their size (new bytes, new mtime)."""
    for i in range(10):
        path = root / f"pkg{i:03}" / "mod0001.py"
        data = path.read_bytes()
        if i < 5:
            data += b"#"
        else:
            data = bytes([48 + round_no % 10]) + data[1:]
        path.write_bytes(data)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def same_tree(a: Path, b: Path) -> bool:
    result = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True)
    return result.returncode == 0


def ensure_upstream() -> None:
    if not (UPSTREAM / "execnet" / "__init__.py").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(UPSTREAM),
                "execnet==2.1.2",
            ],
            check=True,
        )


def run(rounds: int, big: bool, base: Path, fast: bool = False) -> dict[str, Any]:
    ensure_upstream()
    if shutil.which("rsync") is None:
        sys.exit("the rsync command is needed: apt-get install rsync")
    impls = [Impl("ours"), Impl("upstream"), Impl("rsync")]
    results: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    correct: dict[str, bool] = {}
    try:
        src = base / "src"
        if fast:  # smoke run: the same code paths on a small tree
            size = make_tree(src, dirs=10, per_dir=10, small=500, big=2, big_size=100_000)
        else:
            size = make_tree(src, dirs=20, per_dir=100, small=5_000, big=20, big_size=2_000_000)
        nfiles = sum(len(f) for _, _, f in os.walk(src))
        for r in range(rounds):
            order = impls if r % 2 == 0 else impls[::-1]
            for scenario in ("full", "noop", "changed"):
                if scenario == "changed":
                    change_files(src, r)
                for impl in order:
                    dst = base / f"dst-{impl.name}"
                    if scenario == "full":
                        shutil.rmtree(dst, ignore_errors=True)
                    seconds, cpu_s = impl.sync(src, dst)
                    results.setdefault(scenario, {}).setdefault(impl.name, []).append(seconds)
                    cpu.setdefault(scenario, {}).setdefault(impl.name, []).append(cpu_s)
                    correct[impl.name] = correct.get(impl.name, True) and same_tree(src, dst)
        if big:
            src100k = base / "src100k"
            make_tree(src100k, dirs=100, per_dir=1000, small=10, big=0, big_size=0)
            for impl in impls:
                impl.sync(src100k, base / f"big-{impl.name}")
            for r in range(max(1, rounds // 2)):
                for impl in impls if r % 2 == 0 else impls[::-1]:
                    seconds, cpu_s = impl.sync(src100k, base / f"big-{impl.name}")
                    results.setdefault("noop100k", {}).setdefault(impl.name, []).append(seconds)
                    cpu.setdefault("noop100k", {}).setdefault(impl.name, []).append(cpu_s)
    finally:
        for impl in impls:
            impl.close()
    medians = {
        scenario: {name: statistics.median(times) for name, times in per.items()}
        for scenario, per in results.items()
    }
    return {
        "machine": {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg()},
        "tree": {"files": nfiles, "bytes": size},
        "rounds": rounds,
        "modules": {i.name: getattr(i, "module", "rsync") for i in impls},
        "median_seconds": medians,
        "all_seconds": results,
        "median_cpu_seconds": {
            scenario: {name: statistics.median(times) for name, times in per.items()}
            for scenario, per in cpu.items()
        },
        "all_cpu_seconds": cpu,
        "correct": correct,
    }


def report(data: dict[str, Any]) -> str:
    lines = [
        f"tree: {data['tree']['files']} files, {data['tree']['bytes'] / 1e6:.1f} MB; "
        f"median of {data['rounds']} rounds; correct: {data['correct']}; "
        f"{data['machine']['cpus']} CPUs, load average after the run "
        f"{data['machine']['loadavg_after'][0]:.1f}",
        "",
        "| scenario | execnet-rs | upstream 2.1.2 | rsync -a | rs / upstream | rs / rsync "
        "| CPU: execnet-rs | upstream | rsync -a | rs / upstream | rs / rsync |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, med in data["median_seconds"].items():
        ours, up, rs = med["ours"], med["upstream"], med["rsync"]
        c = data["median_cpu_seconds"][scenario]
        c_ours, c_up, c_rs = c["ours"], c["upstream"], c["rsync"]
        lines.append(
            f"| {scenario} | {ours * 1e3:.0f} ms | {up * 1e3:.0f} ms | {rs * 1e3:.0f} ms "
            f"| {ours / up:.2f}x | {ours / rs:.2f}x "
            f"| {c_ours * 1e3:.0f} ms | {c_up * 1e3:.0f} ms | {c_rs * 1e3:.0f} ms "
            f"| {c_ours / c_up:.2f}x | {c_ours / c_rs:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="also the 100,000-file no-op")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"), help="tmpfs to work in")
    parser.add_argument(
        "--fast", action="store_true", help="smoke run: one round on a 102-file tree"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rsync-", dir=args.dir) as tmp:
        data = run(1 if args.fast else args.rounds, args.big, Path(tmp), fast=args.fast)
    print(report(data))
    if not all(data["correct"].values()):
        sys.exit(f"a target differs from the source: {data['correct']}")
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
