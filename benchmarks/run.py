"""Side-by-side benchmarks: this package against upstream execnet 2.1.2.

Usage::

    python benchmarks/run.py                 # full run (~10 minutes on 2 cores)
    python benchmarks/run.py --quick         # smoke run (~1 minute); CI never asserts a timing
    python benchmarks/run.py --only 'echo_*' --only xdist_single_*
    python benchmarks/run.py --json out.json --markdown out.md --plot out.png
    python benchmarks/run.py --write-docs    # refresh docs/benchmarks.md and the ratio plot

The exit status is 1 when a measurement failed or gave an incorrect result on either side (or
the run was interrupted), 0 otherwise; timings never change it.

Every measurement runs in a fresh subprocess of one side's interpreter, and the two sides take
turns (upstream, ours, upstream, ours, ...), so that load changes on a shared machine hit both.
Each side's median, min and max are reported with the ratio ours/upstream of the medians; times
(lower is better) and rates (higher is better) keep their natural ratio, and the targets say which
way they point. Targets are reported, never asserted. See ``_side.py`` for the two environments.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report  # noqa: E402
import _side  # noqa: E402
from workloads import xdist_suites  # noqa: E402

HERE = Path(__file__).resolve().parent
GATEWAY_SCRIPT = HERE / "workloads" / "gateway_workloads.py"
SSH_SCRIPT = HERE / "workloads" / "ssh_workloads.py"
BASELINE_SCRIPT = HERE / "workloads" / "baselines.py"
SIDES = ("upstream", "ours")


@dataclass
class Workload:
    """One benchmark: how to run a measurement and how to read its value."""

    name: str
    section: str
    description: str
    unit: str
    better: str  # "lower" or "higher"
    reps: int
    argv: Callable[[str], list[str]]
    quick_reps: int = 1
    # xdist workloads are timed from outside; script workloads print their own value.
    wall_clock: bool = False
    expect_returncode: int = 0
    expect_summary: str | None = None
    baseline: bool = False
    cwd: Path | None = None


@dataclass
class Sample:
    """One measurement: its value (None when it failed or was incorrect) and what was seen."""

    value: float | None
    correct: bool
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _script(script: Path, name: str, **params: Any) -> Callable[[str], list[str]]:
    def argv(python: str) -> list[str]:
        return [python, str(script), name, *(f"{k}={json.dumps(v)}" for k, v in params.items())]

    return argv


def gateway_workloads(quick: bool) -> list[Workload]:
    """The execnet workloads and their baselines, in run order; ``quick`` shrinks the sizes."""
    g, b = GATEWAY_SCRIPT, BASELINE_SCRIPT
    iterations = 2 if quick else 5
    round_trips = 300 if quick else 5000
    tuples = 10_000 if quick else 200_000
    blobs = 10 if quick else 200
    w = [
        Workload(
            "bare_start",
            "start",
            "`python -c pass` with the side's interpreter (baseline)",
            "s",
            "lower",
            5,
            _script(b, "bare_start", iterations=iterations),
            baseline=True,
        ),
        Workload(
            "popen_start",
            "start",
            '`makegateway("popen")` + first round trip',
            "s",
            "lower",
            5,
            _script(g, "popen_start", iterations=iterations),
        ),
        Workload(
            "pipe_pingpong",
            "messages",
            "16-byte ping-pong over raw pipes between two Python processes (baseline)",
            "µs",
            "lower",
            5,
            _script(b, "pipe_pingpong", n=round_trips),
            baseline=True,
        ),
    ]
    for model in ("thread", "main_thread_only"):
        w.append(
            Workload(
                f"echo_{model}",
                "messages",
                f"small-message echo round trip, `{model}` model",
                "µs",
                "lower",
                5,
                _script(g, "echo", model=model, n=round_trips),
            )
        )
    for direction, text in (
        ("w2m_receive", "worker→master, `receive()` loop"),
        ("w2m_callback", "worker→master, callback"),
        ("m2w", "master→worker"),
    ):
        w.append(
            Workload(
                f"oneway_{direction}",
                "messages",
                f"{tuples:,} small tuples one way, {text}",
                "msg/s",
                "higher",
                3,
                _script(g, "oneway", direction=direction, n=tuples),
            )
        )
    w.append(
        Workload(
            "pipe_throughput",
            "bulk",
            f"{blobs} x 4 MiB through one raw pipe between two Python processes (baseline)",
            "MB/s",
            "higher",
            3,
            _script(b, "pipe_throughput", count=blobs),
            baseline=True,
        )
    )
    for direction, text in (("w2m", "worker→master"), ("m2w", "master→worker")):
        w.append(
            Workload(
                f"bulk_{direction}",
                "bulk",
                f"{blobs} x 4 MiB bytes, {text}",
                "MB/s",
                "higher",
                3,
                _script(g, "bulk", direction=direction, count=blobs),
            )
        )
    w += [
        Workload(
            "gateways16_seq",
            "gateways",
            "16 popen gateways started one after another, a round trip each",
            "s",
            "lower",
            5,
            _script(g, "gateways", n=16),
        ),
        Workload(
            "gateways16_threads",
            "gateways",
            "16 popen gateways started from 16 threads, a round trip each",
            "s",
            "lower",
            5,
            _script(g, "gateways", n=16, threads=True),
        ),
        Workload(
            "terminate16",
            "gateways",
            "`group.terminate(10)` of 16 idle popen gateways",
            "ms",
            "lower",
            5,
            _script(g, "terminate", n=16),
        ),
    ]
    return w


#: The loopback sshd of the ssh workloads: ``main`` sets "ssh" (the ``ssh=`` value) when one runs.
SSH_SERVER: dict[str, str] = {}


def _ssh_script(name: str, reuse: bool, **params: Any) -> Callable[[str], list[str]]:
    def argv(python: str) -> list[str]:
        # Each side runs its own interpreter remotely; upstream ignores the ssh_reuse key.
        spec = f"ssh={SSH_SERVER['ssh']}//python={python}" + ("//ssh_reuse" if reuse else "")
        return _script(SSH_SCRIPT, name, spec=spec, **params)(python)

    return argv


def ssh_workloads(quick: bool) -> list[Workload]:
    """ssh gateways to a loopback sshd, without and with connection reuse (``ssh_reuse``).

    Upstream has no reuse: its side runs the same spec with plain connections, so the
    ``*_reuse`` ratios compare our reuse against upstream's one connection per gateway.
    """
    iterations = 1 if quick else 3
    w = []
    for reuse in (False, True):
        suffix, how = ("_reuse", ", ours with `ssh_reuse`") if reuse else ("", "")
        w += [
            Workload(
                f"ssh_start{suffix}",
                "ssh",
                f"`makegateway(ssh)` + first round trip, alone{how}",
                "s",
                "lower",
                5,
                _ssh_script("start", reuse, iterations=iterations),
            ),
            Workload(
                f"ssh_second{suffix}",
                "ssh",
                f"another ssh gateway to the same host while one is open{how}",
                "s",
                "lower",
                5,
                _ssh_script("second", reuse, iterations=iterations),
            ),
            Workload(
                f"ssh_gateways4{suffix}",
                "ssh",
                f"4 ssh gateways to one host in a row, a round trip each{how}",
                "s",
                "lower",
                3,
                _ssh_script("gateways", reuse, n=4),
            ),
        ]
    return w


@contextlib.contextmanager
def ssh_server(needed: bool, log: Callable[[str], None]) -> Iterator[str | None]:
    """Run the tests' loopback sshd while the ssh workloads need it; None if it cannot run."""
    if not needed:
        yield None
        return
    sys.path.insert(0, str(_side.REPO / "tests"))
    import _sshd

    reason = _sshd.available()
    if reason is not None:
        yield reason
        return
    with tempfile.TemporaryDirectory(prefix="execnet-bench-sshd-") as tmp:
        try:
            server = _sshd.start(Path(tmp), python=sys.executable)
        except _sshd.SshdError as exc:
            yield str(exc)
            return
        log(f"loopback sshd on port {server.port} (pid {server.process.pid})")
        SSH_SERVER["ssh"] = server.ssh
        try:
            yield None
        finally:
            SSH_SERVER.clear()
            server.stop()


def xdist_workloads(suite_root: Path, quick: bool) -> list[Workload]:
    """One workload per generated suite and mode (serial, ``-n 2``, ``-n 4``)."""
    result = []
    for suite in xdist_suites.suites(quick):
        for mode, flags in xdist_suites.MODES.items():

            def argv(python: str, suite: Any = suite, flags: list[str] = flags) -> list[str]:
                folder = suite_root / suite.name
                return [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *flags, str(folder)]

            label = {"serial": "`-p no:xdist`", "n2": "`-n 2`", "n4": "`-n 4`"}[mode]
            result.append(
                Workload(
                    f"xdist_{suite.name}_{mode}",
                    "xdist",
                    f"{suite.description}, {label}",
                    "s",
                    "lower",
                    # The one-test suite is cheap and its fixed cost is a target: more samples.
                    5 if suite.name == "single" else 3,
                    argv,
                    wall_clock=True,
                    cwd=suite_root / suite.name,
                    # Without xdist no execnet is loaded: a measure of the noise between sides.
                    baseline=mode == "serial",
                    expect_returncode=1 if suite.failing else 0,
                    expect_summary=suite.expected_summary(),
                )
            )
    return result


EXTERNAL = {
    "ext_serializer": "bench_serializer.py",
    "ext_rsync": "bench_rsync.py",
    "ext_mux": "bench_mux.py",
}
# How each script spells a smoke run, tried in order against its --help text.
QUICK_FLAGS = (["--quick"], ["--fast"], ["--rounds", "1"])


@dataclass
class Finished:
    """A finished subprocess: exit code (-9 after a timeout), output, wall time."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    # Processes of its session still running after it exited (a gateway outliving its master).
    leftovers: bool = False
    # User + system CPU time of the process and every descendant it waited for.
    cpu_seconds: float = 0.0


def _kill_group(pid: int) -> bool:
    """SIGKILL the process group ``pid``; True if any process was still in it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        return False
    return True


def run_process(argv: list[str], timeout: float, cwd: Path) -> Finished:
    """Run ``argv`` in its own session and kill whatever of that session remains afterwards.

    Output goes to files, not pipes, so a leftover process that inherited them cannot keep the
    runner waiting. On timeout (or Ctrl-C) the whole process group, gateways included, is killed.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd),
            env=_side.clean_env(),
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = -9
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        elapsed = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        leftovers = _kill_group(proc.pid)
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()[-3000:]
    if code == -9:
        stderr = f"timed out after {timeout:.0f} s\n{stderr}"
        leftovers = False
    return Finished(code, stdout, stderr, elapsed, leftovers, cpu)


def measure(workload: Workload, python: str, cwd: Path, timeout: float) -> Sample:
    """One measurement of ``workload`` in a fresh process of ``python``."""
    argv = workload.argv(python)
    cwd = workload.cwd or cwd
    if workload.wall_clock:
        done = run_process(argv, timeout, cwd)
        lines = done.stdout.strip().splitlines()
        last = lines[-1] if lines else ""
        correct = done.returncode == workload.expect_returncode and (
            workload.expect_summary is None or workload.expect_summary in last
        )
        detail: dict[str, Any] = {
            "summary": last,
            "leftovers": done.leftovers,
            "cpu_s": done.cpu_seconds,
        }
        error = None
        if not correct:
            error = (
                f"exit {done.returncode}; last line: {last!r}; stderr: {done.stderr.strip()[-500:]}"
            )
        # A run that did not produce the expected outcome measured something else.
        return Sample(done.seconds if correct else None, correct, done.seconds, detail, error)
    done = run_process(argv, timeout, cwd)
    if done.returncode != 0:
        error = f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"
        return Sample(None, False, done.seconds, {}, error)
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        value = float(data["value"])
        detail = dict(data.get("detail", {}))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        error = f"unreadable output ({exc}): {done.stdout[-500:]!r}"
        return Sample(None, False, done.seconds, {}, error)
    detail["leftovers"] = done.leftovers
    detail["cpu_s"] = done.cpu_seconds
    if not data.get("correct"):
        detail["value_when_incorrect"] = value
        return Sample(None, False, done.seconds, detail, "incorrect result")
    return Sample(value, True, done.seconds, detail)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    values = [s.value for s in samples if s.value is not None]
    summary: dict[str, Any] = {
        "samples": values,
        "correct": bool(samples) and all(s.correct for s in samples),
        "errors": [s.error for s in samples if s.error],
        "details": [s.detail for s in samples],
        "wall_s": round(sum(s.seconds for s in samples), 2),
        "leftovers": sum(bool(s.detail.get("leftovers")) for s in samples),
    }
    if values:
        summary.update(median=statistics.median(values), min=min(values), max=max(values))
        cpu = [s.detail["cpu_s"] for s in samples if s.value is not None and "cpu_s" in s.detail]
        if cpu:
            summary["cpu_median_s"] = statistics.median(cpu)
    return summary


def select(workloads: list[Workload], patterns: list[str]) -> list[Workload]:
    if not patterns:
        return workloads
    chosen = [
        w
        for w in workloads
        if any(fnmatch.fnmatchcase(w.name, p) or p == w.section for p in patterns)
    ]
    return chosen


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


class Runner:
    """Runs the selected workloads on both sides and collects their summaries in ``results``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.timeout: float = args.timeout or (120.0 if self.quick else 300.0)
        self.results: dict[str, Any] = {}
        self.count = 0
        self.total = 0
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def reps(self, workload: Workload) -> int:
        if self.args.repeat:
            return int(self.args.repeat)
        return workload.quick_reps if self.quick else workload.reps

    def warm_up(self, pythons: dict[str, str], cwd: Path) -> None:
        """Run each side once so that bytecode caches exist before anything is timed."""
        warm = Workload(
            "warm_up",
            "",
            "",
            "s",
            "lower",
            1,
            _script(GATEWAY_SCRIPT, "popen_start", iterations=1),
        )
        for side in SIDES:
            sample = measure(warm, pythons[side], cwd, self.timeout)
            if sample.error:
                self.log(f"warm-up failed on {side}: {sample.error}")

    def run_workloads(self, workloads: list[Workload], pythons: dict[str, str], cwd: Path) -> None:
        for workload in workloads:
            samples: dict[str, list[Sample]] = {side: [] for side in SIDES}
            try:
                self._repeat(workload, pythons, cwd, samples)
            finally:
                self._store(workload, samples)

    def _repeat(
        self,
        workload: Workload,
        pythons: dict[str, str],
        cwd: Path,
        samples: dict[str, list[Sample]],
    ) -> None:
        """The sides take turns: upstream, ours, upstream, ours, ..."""
        failed: set[str] = set()
        n = self.reps(workload)
        for rep in range(n):
            for side in SIDES:
                self.count += 1
                if side in failed:
                    continue
                sample = measure(workload, pythons[side], cwd, self.timeout)
                samples[side].append(sample)
                shown = "-" if sample.value is None else _report.fmt(sample.value)
                error = f"  ERROR {sample.error.splitlines()[0]}" if sample.error else ""
                self.log(
                    f"[{self.count}/{self.total} +{time.monotonic() - self.started:.0f}s] "
                    f"{workload.name} {side} {rep + 1}/{n}: "
                    f"{shown} {workload.unit} ({sample.seconds:.1f} s){error}"
                )
                if sample.error:
                    # A broken side would fail (or time out) on every repetition.
                    failed.add(side)

    def _store(self, workload: Workload, samples: dict[str, list[Sample]]) -> None:
        if not any(samples.values()):
            return
        entry: dict[str, Any] = {
            "section": workload.section,
            "description": workload.description,
            "unit": workload.unit,
            "better": workload.better,
            "baseline": workload.baseline,
            "reps": max(len(v) for v in samples.values()),
        }
        for side in SIDES:
            entry[side] = summarize(samples[side])
        up, ours = entry["upstream"].get("median"), entry["ours"].get("median")
        entry["ratio"] = ours / up if up and ours is not None else None
        up_cpu, ours_cpu = (entry[side].get("cpu_median_s") for side in SIDES)
        entry["cpu_ratio"] = ours_cpu / up_cpu if up_cpu and ours_cpu is not None else None
        self.results[workload.name] = entry

    def run_xdist(self, workloads: list[Workload], pythons: dict[str, str], root: Path) -> None:
        serial = {w.name: w for w in xdist_workloads(root, self.quick)}
        for suite in xdist_suites.suites(self.quick):
            if not any(w.name.startswith(f"xdist_{suite.name}_") for w in workloads):
                continue
            suite.write(root)
            # The first run writes the assertion-rewritten bytecode that later runs share (the
            # cache tag names only the Python and pytest versions, which both sides have).
            for side in SIDES[:1] if self.quick else SIDES:
                warm = measure(
                    serial[f"xdist_{suite.name}_serial"],
                    pythons[side],
                    root,
                    self.timeout,
                )
                self.log(
                    f"warm-up xdist_{suite.name} {side}: {warm.seconds:.1f} s"
                    + (f" ERROR {warm.error}" if warm.error else "")
                )
        self.run_workloads(workloads, pythons, root)

    def run_external(self, names: list[str], ours: str) -> dict[str, Any]:
        """Run the other ``bench_*.py`` scripts (they compare both sides themselves)."""
        external: dict[str, Any] = {}
        for name in names:
            script = HERE / EXTERNAL[name]
            quick_flag: list[str] = []
            if self.quick:
                usage = run_process([ours, str(script), "--help"], 60.0, _side.REPO).stdout
                found = [flags for flags in QUICK_FLAGS if flags[0] in usage]
                if not found:
                    external[name] = {"script": script.name, "skipped": "no smoke-run option"}
                    self.log(f"{name}: skipped under --quick (the script has no smoke-run option)")
                    continue
                quick_flag = found[0]
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                argv = [ours, str(script), "--json", str(out), *quick_flag]
                self.log(f"{name}: {' '.join(argv)}")
                # They build their own side folders, so they get more time than one measurement.
                done = run_process(argv, max(self.timeout, 1800.0), _side.REPO)
                entry: dict[str, Any] = {
                    "script": script.name,
                    "argv": argv[1:],
                    "seconds": round(done.seconds, 1),
                }
                if done.returncode == 0 and out.exists():
                    try:
                        entry["result"] = json.loads(out.read_text())
                    except ValueError as exc:
                        entry["error"] = f"unreadable JSON: {exc}"
                else:
                    entry["error"] = f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"
                entry["stdout"] = done.stdout[-20000:]
            state = "ok" if "result" in entry else entry["error"][:200]
            self.log(f"{name}: {state} ({done.seconds:.1f} s)")
            external[name] = entry
        return external


def _interpreter(given: str | None) -> str | None:
    """An absolute path for a given interpreter (a venv's symlink is kept, not resolved)."""
    if not given:
        return None
    found = shutil.which(given) if os.sep not in given else given
    if not found or not os.access(found, os.X_OK):
        raise SystemExit(f"no interpreter at {given!r}")
    return os.path.abspath(found)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, one repetition")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="workload name, glob or section (start, messages, bulk, gateways, ssh, xdist, external); "
        "repeatable, comma-separated",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--repeat", type=int, help="repetitions per side (default: per workload)")
    p.add_argument("--timeout", type=float, help="seconds per measurement (default 300, quick 120)")
    p.add_argument("--ours-python", help="interpreter with this package (default .side/bench-ours)")
    p.add_argument(
        "--upstream-python", help="interpreter with execnet 2.1.2 (default .side/bench-upstream)"
    )
    p.add_argument("--no-external", action="store_true", help="skip the other bench_*.py scripts")
    p.add_argument("--json", type=Path, help="write the full results as JSON")
    p.add_argument("--markdown", type=Path, help="write the report as markdown")
    p.add_argument("--plot", type=Path, help="write a PNG plot of the ratios (needs matplotlib)")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="update the runner's part of docs/benchmarks.md and docs/benchmarks-ratios.png",
    )
    args = p.parse_args(argv)
    args.only = [part for item in args.only for part in item.split(",") if part]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    runner = Runner(args)
    suite_root = _side.SIDE / ("bench-suites-quick" if args.quick else "bench-suites")
    all_workloads = (
        gateway_workloads(args.quick)
        + ssh_workloads(args.quick)
        + xdist_workloads(suite_root, args.quick)
    )
    externals = [n for n, f in EXTERNAL.items() if (HERE / f).exists()]
    if args.list:
        for w in all_workloads:
            print(f"{w.name:28} {w.section:9} {w.description}")
        for name in EXTERNAL:
            state = "present" if name in externals else "missing"
            print(f"{name:28} {'external':9} benchmarks/{EXTERNAL[name]} ({state})")
        return 0
    selected = select(all_workloads, args.only)
    if args.no_external:
        externals = []
    elif args.only:
        externals = [
            n
            for n in externals
            if any(fnmatch.fnmatchcase(n, p) or p == "external" for p in args.only)
        ]
    if not selected and not externals:
        print(f"no workload matches {args.only}; see --list", file=sys.stderr)
        return 2

    _side.SIDE.mkdir(exist_ok=True)
    try:
        pythons = {
            "upstream": _interpreter(args.upstream_python) or _side.ensure_upstream(runner.log),
            "ours": _interpreter(args.ours_python) or _side.ensure_ours(runner.log),
        }
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"could not set up a side environment: {exc}")
    sides = {side: _side.describe(python) for side, python in pythons.items()}
    warnings = []
    if not _side.is_ours(sides["ours"]):
        warnings.append(
            f"the 'ours' side imports execnet {sides['ours'].get('execnet_version')} from "
            f"{sides['ours'].get('execnet_file')}: not this package (plumbing check only)"
        )
    if _side.is_ours(sides["upstream"]) or sides["upstream"].get("execnet_version") != "2.1.2":
        warnings.append("the 'upstream' side does not import execnet 2.1.2")
    if not args.ours_python and (stale := _side.stale_native_module()):
        warnings.append(stale)
    missing = [side for side, info in sides.items() if not info.get("xdist_version")]
    if missing and any(w.wall_clock for w in selected):
        selected = [w for w in selected if not w.wall_clock]
        warnings.append(f"pytest-xdist is not importable on {' and '.join(missing)}: no xdist runs")
    for text in warnings:
        runner.log("WARNING: " + text)

    gateway_sel = [w for w in selected if not w.wall_clock]
    xdist_sel = [w for w in selected if w.wall_clock]
    runner.total = sum(runner.reps(w) * len(SIDES) for w in selected)
    started = time.time()
    load_before = os.getloadavg()
    external: dict[str, Any] = {}
    interrupted = False
    try:
        with (
            tempfile.TemporaryDirectory(prefix="execnet-bench-") as tmp,
            ssh_server(any(w.section == "ssh" for w in gateway_sel), runner.log) as no_sshd,
        ):
            cwd = Path(tmp)
            if no_sshd:
                gateway_sel = [w for w in gateway_sel if w.section != "ssh"]
                warnings.append(f"no ssh workloads: {no_sshd}")
                runner.log("WARNING: " + warnings[-1])
            if gateway_sel:
                runner.warm_up(pythons, cwd)
                runner.run_workloads(gateway_sel, pythons, cwd)
            if xdist_sel:
                runner.run_xdist(xdist_sel, pythons, suite_root)
            external = runner.run_external(externals, pythons["ours"])
    except KeyboardInterrupt:
        # What was measured so far is still worth a report.
        interrupted = True
        warnings.append("interrupted: the results are incomplete")
        runner.log("interrupted")

    report: dict[str, Any] = {
        "command": "python benchmarks/run.py" + "".join(" " + shlex.quote(a) for a in argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "quick": args.quick,
        "interrupted": interrupted,
        "sides": sides,
        "warnings": warnings,
        "results": runner.results,
        "targets": _report.evaluate_targets(runner.results),
        "external": external,
    }
    markdown = _report.markdown(report)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown)
    plot_path = args.plot or (
        _side.REPO / "docs" / "benchmarks-ratios.png" if args.write_docs else None
    )
    if plot_path and _side.ensure_matplotlib(runner.log):
        _report.plot(report, plot_path)
        runner.log(f"plot written to {plot_path}")
    if args.write_docs and not interrupted:
        docs = _side.REPO / "docs" / "benchmarks.md"
        _report.write_docs(report, docs, plot_path)
        runner.log(f"{docs} updated")
    # Timings never decide the exit status; a failed or incorrect measurement does.
    broken = [
        f"{name} ({side})"
        for name, entry in runner.results.items()
        for side in SIDES
        if entry[side]["errors"]
    ] + [name for name, entry in external.items() if "error" in entry]
    if broken:
        runner.log(f"{len(broken)} measurement(s) failed or were incorrect: {', '.join(broken)}")
    return 1 if broken or interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
