#!/usr/bin/env python3
"""Run execnet 2.1.2's and pytest-xdist 3.8.0's own test suites against this execnet.

Steps: download the two pinned sdists (sha256-checked) into ``.side/conformance/sdist``, unpack
them, build the venv ``.side/conformance-venv`` holding this package (a release wheel), pytest
8.4.2, pytest-timeout, filelock, pexpect, psutil and gevent — never upstream execnet, which is
checked before anything runs — start a loopback sshd (``tests/_sshd.py``) and
``python -m execnet.script.socketserver`` on a free port, run both suites (concurrently by
default) with ``--junitxml``, and compare every failure with ``tests/conformance/expected.toml``.

``--against-upstream`` runs the same thing with upstream execnet 2.1.2 installed instead (venv
``.side/conformance-venv-upstream``): the baseline that the expected-failure list is judged by.

Exit status: 0 when no suite has an unexpected failure, 1 otherwise, 2 when the run itself could
not be set up or a suite did not produce results.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
SIDE = ROOT / ".side"
WORK = SIDE / "conformance"
EXPECTED = Path(__file__).resolve().parent / "expected.toml"

sys.path.insert(0, str(ROOT / "tests"))
import _sshd  # noqa: E402

UPSTREAM_VERSION = "2.1.2"


@dataclass(frozen=True)
class Sdist:
    requirement: str
    filename: str
    sha256: str

    @property
    def dirname(self) -> str:
        return self.filename.removesuffix(".tar.gz")


SDISTS = {
    "execnet": Sdist(
        "execnet==2.1.2",
        "execnet-2.1.2.tar.gz",
        "63d83bfdd9a23e35b9c6a3261412324f964c2ec8dcd8d3c6916ee9373e0befcd",
    ),
    "xdist": Sdist(
        "pytest-xdist==3.8.0",
        "pytest_xdist-3.8.0.tar.gz",
        "7e578125ec9bc6050861aa93f2d59f1d8d085595d6551c2c90b6f4fad8d3a9f1",
    ),
}

#: Everything both suites need besides execnet and pytest-xdist (pytest 8.4.2: xdist 3.8.0's
#: suite fails on pytest 9 for reasons unrelated to execnet).
DEPS = ["pytest==8.4.2", "pytest-timeout", "filelock", "pexpect", "psutil", "gevent"]

#: Per-test timeout of the execnet suite, as its tox.ini sets it.
EXECNET_TEST_TIMEOUT = 20
#: Per-test timeout of the xdist suite (it sets none); only turns a hang into a failure.
XDIST_TEST_TIMEOUT = 300
#: Wall-clock limit of one suite run.
SUITE_TIMEOUT = 1500

OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed", "errors")
SUMMARY_RE = re.compile(
    r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|warnings?|deselected|rerun)"
)


class SetupError(RuntimeError):
    """The conformance run could not be prepared."""


def log(message: str) -> None:
    print(f"[conformance] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# expected failures


@dataclass
class Expectation:
    """One entry of ``expected.toml``."""

    suite: str
    test: str
    reason: str
    #: "fails": fails with upstream too (a pass is reported as stale); "flaky": may go either way;
    #: "upstream": fails only with upstream 2.1.2 (applies to ``--against-upstream`` runs only).
    kind: str = "fails"

    def matches(self, nodeid: str) -> bool:
        pattern = "".join(
            ".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", self.test)
        )
        return re.fullmatch(pattern, nodeid) is not None


KINDS = ("fails", "flaky", "upstream")


def load_expectations(path: Path = EXPECTED, against_upstream: bool = False) -> list[Expectation]:
    """Read and validate the expected-failure list (``upstream`` entries only for the baseline)."""
    data = tomllib.loads(path.read_text())
    entries: list[Expectation] = []
    for suite, items in data.items():
        if suite not in SDISTS:
            raise SetupError(f"{path}: unknown suite {suite!r}")
        for item in items:
            test, reason = item.get("test"), item.get("reason")
            kind = item.get("kind", "fails")
            if not isinstance(test, str) or not test:
                raise SetupError(f"{path}: [[{suite}]] entry without a test: {item!r}")
            if not isinstance(reason, str) or not reason.strip():
                raise SetupError(f"{path}: {test} has no reason")
            if kind not in KINDS:
                raise SetupError(f"{path}: {test}: kind must be one of {KINDS}, not {kind!r}")
            unknown = set(item) - {"test", "reason", "kind"}
            if unknown:
                raise SetupError(f"{path}: {test}: unknown keys {sorted(unknown)}")
            if kind != "upstream" or against_upstream:
                entries.append(Expectation(suite, test, reason, kind))
    return entries


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class SuiteResult:
    """Outcome of one suite run."""

    name: str
    returncode: int
    duration: float
    log: Path
    junit: Path
    cpu: float
    #: Totals from pytest's final summary line.
    counts: dict[str, int] = field(default_factory=dict)
    #: node id -> passed / failed / error / skipped / xfailed (junit cannot tell xpassed from passed).
    outcomes: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    expected_failed: list[str] = field(default_factory=list)
    #: "fails" entries none of whose tests failed.
    stale: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.unexpected

    def summary_line(self) -> str:
        parts = [f"{self.counts.get(k, 0)} {k}" for k in OUTCOMES[:5]]
        if self.counts.get("errors"):
            parts.append(f"{self.counts['errors']} errors")
        return f"{self.name} suite: " + ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "returncode": self.returncode,
            "duration": round(self.duration, 1),
            "cpu": round(self.cpu, 1),
            "counts": self.counts,
            "unexpected": self.unexpected,
            "expected_failed": self.expected_failed,
            "stale": self.stale,
            "problem": self.problem,
            "log": str(self.log),
            "junit": str(self.junit),
        }


def parse_summary(text: str) -> dict[str, int] | None:
    """Totals from the last ``=== ... in 12.3s ===`` line of a pytest run, or None."""
    for line in reversed(text.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line) and SUMMARY_RE.search(line):
            counts = {k: 0 for k in OUTCOMES}
            for number, word in SUMMARY_RE.findall(line):
                key = "errors" if word.startswith("error") else word
                if key in counts:
                    counts[key] = int(number)
            return counts
        if re.search(r"no tests ran in [\d.]+s", line):
            return {k: 0 for k in OUTCOMES}
    return None


def _nodeid(rootdir: Path, classname: str, name: str) -> str:
    if not classname:
        # A collection error: the name is the module's dotted path.
        classname, name = name, ""
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        candidate = rootdir.joinpath(*parts[:cut]).with_suffix(".py")
        if candidate.is_file():
            return "::".join(
                ["/".join(parts[:cut]) + ".py", *parts[cut:], *([name] if name else [])]
            )
    return "::".join([*parts, *([name] if name else [])])


def parse_junit(path: Path, rootdir: Path) -> dict[str, str]:
    """Per-test outcomes from a junit XML file written by pytest."""
    outcomes: dict[str, str] = {}
    rank = {"passed": 0, "skipped": 1, "xfailed": 1, "failed": 2, "error": 2}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag == "failure":
                found = "failed"
            elif child.tag == "error":
                found = "error"
            elif child.tag == "skipped":
                if child.get("type") == "pytest.xfail":
                    found = "xfailed"
                elif child.get("message") == "xfail-marked test passes unexpectedly":
                    found = "failed"
                else:
                    found = "skipped"
            else:
                continue
            if rank[found] >= rank[outcome]:
                outcome = found
        nodeid = _nodeid(rootdir, case.get("classname", ""), case.get("name", ""))
        if rank[outcome] >= rank.get(outcomes.get(nodeid, "passed"), 0):
            outcomes[nodeid] = outcome
    return outcomes


def judge(result: SuiteResult, expectations: list[Expectation]) -> None:
    """Fill ``unexpected``, ``expected_failed`` and ``stale`` from the outcomes."""
    mine = [e for e in expectations if e.suite == result.name]
    hit: set[int] = set()
    for nodeid, outcome in sorted(result.outcomes.items()):
        if outcome not in ("failed", "error"):
            continue
        matched = [i for i, e in enumerate(mine) if e.matches(nodeid)]
        if matched:
            hit.update(matched)
            result.expected_failed.append(nodeid)
        else:
            result.unexpected.append(nodeid)
    result.stale = [e.test for i, e in enumerate(mine) if e.kind != "flaky" and i not in hit]


# ------------------------------------------------------------------------------------------------
# preparation


def run_cmd(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SetupError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout}{proc.stderr}"
        )
    return proc  # type: ignore[no-any-return]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdists() -> dict[str, Path]:
    """Download (once) and unpack (fresh each run) the pinned sdists; return their directories."""
    cache = WORK / "sdist"
    cache.mkdir(parents=True, exist_ok=True)
    missing = [s for s in SDISTS.values() if not (cache / s.filename).is_file()]
    if missing:
        log("downloading " + " ".join(s.requirement for s in missing))
        run_cmd(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(cache), *(s.requirement for s in missing)]
        )  # fmt: skip
    src = WORK / "src"
    src.mkdir(parents=True, exist_ok=True)
    dirs: dict[str, Path] = {}
    for name, sdist in SDISTS.items():
        archive = cache / sdist.filename
        actual = sha256(archive)
        if actual != sdist.sha256:
            archive.unlink()
            raise SetupError(f"{sdist.filename}: sha256 {actual} != pinned {sdist.sha256}")
        target = src / sdist.dirname
        if target.exists():
            shutil.rmtree(target)
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")
        dirs[name] = target
    return dirs


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_wheel(venv: Path) -> Path:
    """Build this package as a release wheel with the venv's maturin."""
    out = WORK / "wheel"
    if out.exists():
        shutil.rmtree(out)
    started = time.monotonic()
    run_cmd(
        [str(venv / "bin" / "maturin"), "build", "--release", "--quiet", "--out", str(out),
         "--interpreter", str(venv_python(venv))],
        cwd=ROOT,
    )  # fmt: skip
    wheels = sorted(out.glob("execnet-*.whl"))
    if len(wheels) != 1:
        raise SetupError(f"expected one wheel in {out}, found {wheels}")
    log(f"built {wheels[0].name} in {time.monotonic() - started:.1f}s")
    return wheels[0]


def prepare_venv(against_upstream: bool, xdist_dir: Path) -> Path:
    """Create or update the conformance venv and install the execnet under test into it."""
    venv = SIDE / ("conformance-venv-upstream" if against_upstream else "conformance-venv")
    python = venv_python(venv)
    if not python.exists():
        log(f"creating {venv.relative_to(ROOT)}")
        run_cmd([sys.executable, "-m", "venv", str(venv)])
        run_cmd([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    deps = [*DEPS] if against_upstream else [*DEPS, "maturin>=1.9,<2"]
    stamp = venv / "conformance-deps.json"
    wanted = json.dumps({"deps": deps, "xdist": SDISTS["xdist"].sha256, "dir": str(xdist_dir)})
    if not stamp.exists() or stamp.read_text() != wanted:
        log("installing " + " ".join(deps))
        run_cmd([*pip, *deps])
        stamp.unlink(missing_ok=True)
    if against_upstream:
        run_cmd([*pip, "--no-deps", SDISTS["execnet"].requirement])
    else:
        run_cmd([*pip, "--no-deps", "--force-reinstall", str(build_wheel(venv))])
    if not stamp.exists():
        # --no-deps: pytest-xdist requires execnet>=2.1, which must stay the one just installed.
        run_cmd([*pip, "--no-deps", "-e", f"{xdist_dir}[testing]"])
        stamp.write_text(wanted)
    return venv


def verify_execnet(venv: Path, against_upstream: bool) -> dict[str, str]:
    """Fail unless the venv imports the execnet under test (never upstream by accident)."""
    probe = (
        "import json, importlib.util, execnet; print(json.dumps({'file': execnet.__file__, "
        "'version': execnet.__version__, 'socketserver': "
        "importlib.util.find_spec('execnet.script.socketserver') is not None, "
        "'gateways': hasattr(execnet, 'makegateway')}))"
    )
    out = run_cmd([str(venv_python(venv)), "-c", probe], cwd=WORK, env=suite_env(venv)).stdout
    info: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    log(f"execnet.__file__ = {info['file']}")
    log(f"execnet.__version__ = {info['version']}")
    inside = Path(info["file"]).resolve().is_relative_to(venv.resolve())
    if not inside:
        raise SetupError(f"execnet is imported from {info['file']}, not from {venv}")
    if against_upstream and info["version"] != UPSTREAM_VERSION:
        raise SetupError(f"expected upstream execnet {UPSTREAM_VERSION}, got {info['version']}")
    if not against_upstream and info["version"] == UPSTREAM_VERSION:
        raise SetupError("upstream execnet is installed in the conformance venv, not this package")
    return info


def suite_env(venv: Path) -> dict[str, str]:
    env = dict(os.environ)
    # test_dont_write_bytecode fails by design when this is set; the others would leak options.
    for name in list(env):
        if name.startswith("PYTEST_") or name in (
            "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONHOME", "EXECNET_DEBUG",
            "PIP_REQUIRE_VIRTUALENV",
        ):  # fmt: skip
            del env[name]
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


@contextlib.contextmanager
def socket_server(venv: Path, logfile: Path) -> Iterator[str]:
    """Run ``python -m execnet.script.socketserver`` on a free loopback port; yield host:port."""
    port = _sshd.free_port()
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv_python(venv)), "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
            cwd=WORK, env=suite_env(venv), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not _sshd.is_listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"socket server did not start, see {logfile}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child started with ``start_new_session`` and everything in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------
# running


@dataclass
class Launch:
    name: str
    args: list[str]
    cwd: Path
    log: Path
    junit: Path
    started: float = 0.0
    finished: float = 0.0
    #: user + system CPU seconds of the suite and everything it waited for (load-independent).
    cpu: float = 0.0
    proc: subprocess.Popen[bytes] | None = None


def suite_commands(
    venv: Path, dirs: dict[str, Path], gx: list[str], suites: list[str]
) -> list[Launch]:
    python = str(venv_python(venv))
    results = WORK / "results"
    results.mkdir(parents=True, exist_ok=True)
    launches = []
    if "execnet" in suites:
        args = [python, "-m", "pytest", "testing", "-p", "no:cacheprovider", "-q", "-rfE",
                f"--timeout={EXECNET_TEST_TIMEOUT}", f"--junitxml={results / 'execnet.xml'}"]  # fmt: skip
        for spec in gx:
            args += ["--gx", spec]
        launches.append(
            Launch(
                "execnet", args, dirs["execnet"], results / "execnet.log", results / "execnet.xml"
            )
        )
    if "xdist" in suites:
        args = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
                f"--timeout={XDIST_TEST_TIMEOUT}", f"--junitxml={results / 'xdist.xml'}"]  # fmt: skip
        launches.append(
            Launch("xdist", args, dirs["xdist"], results / "xdist.log", results / "xdist.xml")
        )
    return launches


def _default_sigint() -> None:
    """In a suite's process before exec: SIGINT back to its default action.

    A background job of a non-interactive shell (CI) starts with SIGINT ignored, and an ignored
    signal stays ignored across exec: xdist's test_keyboard_interrupt_dist would then Ctrl-C a
    pytest that cannot be interrupted.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_launches(launches: list[Launch], env: dict[str, str], concurrent: bool) -> None:
    def start(launch: Launch) -> None:
        launch.junit.unlink(missing_ok=True)
        log(f"{launch.name}: {' '.join(launch.args[1:])}")
        with launch.log.open("wb") as out:
            launch.started = time.monotonic()
            launch.proc = subprocess.Popen(
                launch.args, cwd=launch.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_sigint,
            )  # fmt: skip

    def wait(launch: Launch) -> None:
        proc = launch.proc
        assert proc is not None
        deadline = launch.started + SUITE_TIMEOUT
        while True:
            # wait4 rather than Popen.wait: it also reports the CPU time of the suite's tree.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                launch.cpu = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                log(f"{launch.name}: no result after {SUITE_TIMEOUT}s, stopping it")
                stop_group(proc)
                break
            time.sleep(0.2)
        launch.finished = time.monotonic()
        stop_group(proc)  # leftovers of the suite in its process group
        log(
            f"{launch.name}: exit {proc.returncode} after {launch.finished - launch.started:.1f}s"
            f" ({launch.cpu:.1f}s CPU)"
        )

    try:
        if concurrent:
            for launch in launches:
                start(launch)
            for launch in launches:
                wait(launch)
        else:
            for launch in launches:
                start(launch)
                wait(launch)
    finally:
        for launch in launches:
            if launch.proc is not None and launch.proc.poll() is None:
                stop_group(launch.proc)


def collect(launch: Launch, expectations: list[Expectation]) -> SuiteResult:
    assert launch.proc is not None
    rc = launch.proc.returncode
    result = SuiteResult(
        launch.name, rc, launch.finished - launch.started, launch.log, launch.junit, launch.cpu
    )
    text = launch.log.read_text(errors="replace")
    counts = parse_summary(text)
    if counts is None:
        result.problem = f"no pytest summary line in {launch.log} (exit {rc})"
        return result
    result.counts = counts
    if rc == 5:
        result.problem = "pytest collected no tests (exit 5)"
    elif rc not in (0, 1):
        result.problem = (
            f"pytest exit {rc} (interrupted, internal or usage error), see {launch.log}"
        )
    if not launch.junit.is_file():
        result.problem = result.problem or f"no junit file {launch.junit}"
        return result
    result.outcomes = parse_junit(launch.junit, launch.cwd)
    if not result.outcomes and result.problem is None:
        result.problem = "the junit file lists no tests"
    judge(result, expectations)
    if rc == 1 and not result.expected_failed and not result.unexpected and result.problem is None:
        result.problem = "pytest reported failures that the junit file does not show"
    return result


@dataclass
class RunResult:
    suites: dict[str, SuiteResult]
    execnet: dict[str, str]
    ssh: bool
    socket: bool

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.suites.values())


def run(
    *,
    against_upstream: bool = False,
    suites: tuple[str, ...] = ("execnet", "xdist"),
    concurrent: bool = True,
    use_ssh: bool = True,
    use_socket: bool = True,
) -> RunResult:
    """Prepare everything, run the selected suites and judge their failures."""
    timings: list[tuple[str, float]] = []
    mark = time.monotonic()
    expectations = load_expectations(against_upstream=against_upstream)
    (WORK / "results").mkdir(parents=True, exist_ok=True)
    dirs = fetch_sdists()
    venv = prepare_venv(against_upstream, dirs["xdist"])
    info = verify_execnet(venv, against_upstream)
    timings.append(("prepare", time.monotonic() - mark))
    env = suite_env(venv)
    gx: list[str] = []
    with contextlib.ExitStack() as stack:
        ssh_on = socket_on = False
        if use_ssh and "execnet" in suites:
            reason = _sshd.available()
            if reason is None:
                workdir = WORK / "sshd"
                if workdir.exists():
                    shutil.rmtree(workdir)
                server = stack.enter_context(_sshd.running(workdir, str(venv_python(venv))))
                gx.append(f"ssh={server.ssh}")
                ssh_on = True
            elif os.environ.get("CI") == "true":
                raise SetupError(f"CI=true but no loopback sshd: {reason}")
            else:
                log(f"ssh tests will be skipped: {reason}")
        if use_socket and "execnet" in suites:
            if info.get("socketserver"):
                hostport = stack.enter_context(
                    socket_server(venv, WORK / "results" / "socketserver.log")
                )
                gx.append(f"socket={hostport}")
                socket_on = True
            else:
                log("socket tests will be skipped: execnet.script.socketserver does not exist")
        launches = suite_commands(venv, dirs, gx, list(suites))
        mark = time.monotonic()
        run_launches(launches, env, concurrent)
        timings.append(("suites", time.monotonic() - mark))
    results = {launch.name: collect(launch, expectations) for launch in launches}
    run_result = RunResult(results, info, ssh_on, socket_on)
    summary = {
        "against_upstream": against_upstream,
        "execnet": info,
        "ssh": ssh_on,
        "socket": socket_on,
        "timings": {name: round(t, 1) for name, t in timings},
        "suites": {name: r.to_json() for name, r in results.items()},
    }
    (WORK / "results" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, seconds in timings:
        log(f"time {name}: {seconds:.1f}s")
    return run_result


def report(result: RunResult) -> None:
    """Print the per-suite summary lines and what went wrong."""
    for suite in result.suites.values():
        print(suite.summary_line(), flush=True)
    for suite in result.suites.values():
        for nodeid in suite.expected_failed:
            print(f"  {suite.name}: expected failure {nodeid}")
        for test in suite.stale:
            print(f"  {suite.name}: expected-failure entry did not fail (stale?): {test}")
        for nodeid in suite.unexpected:
            print(f"  {suite.name}: UNEXPECTED FAILURE {nodeid}")
        if suite.problem:
            print(f"  {suite.name}: PROBLEM {suite.problem}")
        if not suite.ok:
            print(f"  {suite.name}: log {suite.log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against-upstream", action="store_true",
                        help="install upstream execnet 2.1.2 instead of this package (baseline)")  # fmt: skip
    parser.add_argument("--suite", choices=sorted(SDISTS), action="append",
                        help="run only this suite (repeatable; default: both)")  # fmt: skip
    parser.add_argument(
        "--sequential", action="store_true", help="run the suites one after another"
    )
    parser.add_argument("--no-ssh", action="store_true", help="do not start a loopback sshd")
    parser.add_argument("--no-socket", action="store_true", help="do not start a socket server")
    args = parser.parse_args(argv)
    try:
        result = run(
            against_upstream=args.against_upstream,
            suites=tuple(args.suite or ("execnet", "xdist")),
            concurrent=not args.sequential,
            use_ssh=not args.no_ssh,
            use_socket=not args.no_socket,
        )
    except (SetupError, _sshd.SshdError) as exc:
        print(f"[conformance] SETUP FAILED: {exc}", file=sys.stderr, flush=True)
        return 2
    report(result)
    if any(s.problem for s in result.suites.values()):
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
