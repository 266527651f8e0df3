"""pytest-xdist with common plugins, run side by side under upstream execnet 2.1.2 and this package.

Generates a small project (passing, failing, erroring, skipped, xfail, printing, crashing, slow,
hanging and flaky tests, classes, groups, a module measured by coverage) and runs the same
pytest command lines in two interpreters that differ only in the ``execnet`` they import. For
each scenario it compares, after normalising timings, paths, pids and seeds:

* the exit code;
* the final summary line (the outcome counts);
* the set of ``-rA`` short-summary lines (test id and outcome);
* key lines (crashed/replaced workers, timeouts, reruns, coverage totals, errors);
* the files the run leaves behind (coverage data files, junit xml);
* every other line as a set (progress characters stripped), minus a scenario's ``ignore``.

The ``tx-ssh`` scenario starts a loopback sshd per interpreter (``tests/_sshd.py``) and is
skipped without ``/usr/sbin/sshd``. Scenarios whose outcome depends on scheduling (``-x``/``--maxfail`` with several workers) compare
only what is deterministic. Not part of the test run: it needs pytest-cov, pytest-timeout,
pytest-rerunfailures, pytest-randomly, pytest-repeat and pytest-forked. Usage::

    python benchmarks/compare_plugins.py                     # builds .side/plugins-{upstream,ours}
    python benchmarks/compare_plugins.py --upstream-python U --ours-python O [-k NAME] [-v]

Exit status 0 when every scenario matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import venv
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDE = REPO / ".side"
PLUGINS = [
    "pytest==8.4.2",
    "pytest-xdist==3.8.0",
    "pytest-cov",
    "pytest-timeout",
    "pytest-rerunfailures",
    "pytest-randomly",
    "pytest-repeat",
    "pytest-forked",
]

PROJECT = {
    "mypkg/__init__.py": "",
    "mypkg/calc.py": """
        def add(a, b):
            return a + b

        def div(a, b):
            if b == 0:
                raise ZeroDivisionError("b is zero")
            return a / b

        def unused():
            return "never called"
    """,
    "conftest.py": """
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture is broken")
    """,
    "test_basic.py": """
        import sys, time
        import pytest
        from mypkg import calc

        def test_pass():
            assert calc.add(1, 2) == 3

        def test_fail():
            assert calc.add(1, 2) == 4, "wrong sum"

        def test_error(broken):
            pass

        def test_skip():
            pytest.skip("not today")

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert calc.div(1, 0)

        @pytest.mark.xfail(reason="fixed meanwhile", strict=False)
        def test_xpass():
            assert calc.div(4, 2) == 2

        def test_output():
            print("to stdout from test_output")
            print("to stderr from test_output", file=sys.stderr)
            assert False, "show the captured output"

        def test_slow():
            time.sleep(1.0)

        @pytest.mark.parametrize("n", range(6))
        def test_param(n):
            assert n < 5
    """,
    "test_classes.py": """
        import pytest

        class TestAlpha:
            def test_a1(self):
                pass
            def test_a2(self):
                pass
            def test_a3(self):
                pass

        class TestBeta:
            def test_b1(self):
                pass
            def test_b2(self):
                assert 0

        @pytest.mark.xdist_group("g1")
        def test_group_1():
            pass

        @pytest.mark.xdist_group("g1")
        def test_group_2():
            pass

        @pytest.mark.xdist_group(name="g2")
        def test_group_3():
            pass
    """,
    "extra/test_crash.py": """
        import os

        def test_before():
            pass

        def test_crash():
            os._exit(1)

        def test_after():
            pass
    """,
    "extra/test_hang.py": """
        import time

        def test_quick():
            pass

        def test_hang():
            time.sleep(60)
    """,
    "extra/test_odd.py": """
        import os, signal, sys, threading, time, warnings

        def test_big_output():
            print("x" * 2_000_000)
            sys.stderr.write("e" * 500_000)
            assert False

        def test_warns():
            warnings.warn(UserWarning("careful"))

        def test_leaves_a_thread():
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()

        def test_sigkill():
            os.kill(os.getpid(), signal.SIGKILL)

        def test_last():
            pass
    """,
    "extra/test_property.py": """
        def test_fine_property(record_property):
            record_property("fine", [1, "two"])

        def test_unserializable_property(record_property):
            record_property("obj", object())
    """,
    "extra/test_many.py": """
        import pytest

        @pytest.mark.parametrize("i", range(1500))
        def test_many(i):
            assert i % 500 != 499
    """,
    "extra/test_flaky.py": """
        import os
        from pathlib import Path

        def test_flaky():
            marker = Path(os.environ["FLAKY_DIR"]) / "flaky-ran"
            if not marker.exists():
                marker.write_text("1")
                assert False, "first attempt fails"
    """,
}

# Common options: pytest-randomly is auto-enabled when installed, so it is switched off except
# where a scenario tests it. -rA gives one short-summary line per test.
BASE = ["-p", "no:randomly", "-rA", "-o", "console_output_style=classic"]
MAIN = ["test_basic.py", "test_classes.py"]


@dataclass
class Scenario:
    """One pytest invocation run in both environments."""

    name: str
    args: list[str]
    # Compare the -rA lines as a set (False where scheduling decides which tests ran).
    exact_tests: bool = True
    compare_summary: bool = True
    pre: list[list[str]] = field(default_factory=list)  # commands run first (e.g. to seed --lf)
    files: bool = False  # compare the files left in the project (coverage data)
    # Lines matching this are left out of the "other lines" comparison (a known difference).
    ignore: str = ""


_SERIALIZER_FRAMES = r"INTERNALERROR> E {15,}"

SCENARIOS = [
    Scenario("n0", ["-n", "0", *MAIN]),
    Scenario("n1", ["-n", "1", *MAIN]),
    Scenario("n2", ["-n", "2", *MAIN]),
    Scenario("nauto", ["-n", "auto", *MAIN]),
    Scenario("dist-load", ["-n", "2", "--dist", "load", *MAIN]),
    Scenario("dist-loadscope", ["-n", "2", "--dist", "loadscope", *MAIN]),
    Scenario("dist-loadfile", ["-n", "2", "--dist", "loadfile", *MAIN]),
    Scenario("dist-loadgroup", ["-n", "2", "--dist", "loadgroup", *MAIN]),
    Scenario("dist-worksteal", ["-n", "2", "--dist", "worksteal", *MAIN]),
    Scenario("dist-each", ["-n", "2", "--dist", "each", *MAIN]),
    Scenario("tx-popen", ["--tx", "2*popen", "--dist", "load", *MAIN]),
    # python= makes execnet ship its gateway_base source (the exec bootstrap).
    Scenario("tx-python", ["--tx", "2*popen//python={python}", "--dist", "load", *MAIN]),
    # ssh gateways to a loopback sshd (tests/_sshd.py; skipped without /usr/sbin/sshd), with
    # the project rsynced to the remote side.
    Scenario(
        "tx-ssh",
        ["--tx", "2*{ssh}", "--dist", "load", "--rsyncdir", "{project}", "{project}/test_basic.py"],
    ),
    Scenario(
        "tx-python-crash",
        ["--tx", "popen//python={python}", "--dist", "load", "extra/test_crash.py"],
    ),
    Scenario(
        "rsyncdir",
        ["--tx", "popen//chdir=../remote", "--rsyncdir", "mypkg", "--rsyncdir", ".", *MAIN],
    ),
    Scenario("verbose", ["-n", "2", "-v", *MAIN]),
    Scenario("quiet", ["-n", "2", "-q", *MAIN]),
    Scenario("capture-no", ["-n", "2", "-s", "test_basic.py::test_output"]),
    Scenario("maxfail1", ["-n", "2", "--maxfail=1", *MAIN], exact_tests=False),
    Scenario("exitfirst", ["-n", "2", "-x", *MAIN], exact_tests=False),
    Scenario("maxfail1-n1", ["-n", "1", "--maxfail=1", *MAIN]),
    Scenario("exitfirst-n0", ["-n", "0", "-x", *MAIN]),
    Scenario("crash", ["-n", "2", "extra/test_crash.py"]),
    Scenario("crash-n1", ["-n", "1", "extra/test_crash.py"]),
    Scenario("crash-maxrestart0", ["-n", "1", "--max-worker-restart=0", "extra/test_crash.py"]),
    Scenario("crash-maxrestart1", ["-n", "2", "--max-worker-restart=1", "extra/test_crash.py"]),
    # An unserializable user property ends the session in both; the worker's traceback then
    # shows 2.1.2's Python serializer frames, where this package's serializer is native.
    Scenario("property", ["-n", "2", "extra/test_property.py"], ignore=_SERIALIZER_FRAMES),
    Scenario("odd", ["-n", "2", "extra/test_odd.py"]),
    Scenario("odd-n1", ["-n", "1", "extra/test_odd.py", "--junitxml=report.xml"], files=True),
    Scenario("many", ["-n", "2", "extra/test_many.py"]),
    Scenario("many-worksteal", ["-n", "2", "--dist", "worksteal", "extra/test_many.py"]),
    Scenario("many-maxfail", ["-n", "2", "--maxfail=2", "extra/test_many.py"], exact_tests=False),
    Scenario("no-cacheprovider", ["-n", "2", "-p", "no:cacheprovider", *MAIN]),
    Scenario(
        "lf",
        ["-n", "2", "--lf", *MAIN],
        pre=[["-n", "2", *MAIN]],
    ),
    Scenario(
        "cov",
        ["-n", "2", "--cov=mypkg", "--cov-report=term-missing", *MAIN],
        files=True,
    ),
    Scenario(
        "cov-n0",
        ["-n", "0", "--cov=mypkg", "--cov-report=term-missing", *MAIN],
        files=True,
    ),
    Scenario(
        "cov-append",
        [
            "-n",
            "2",
            "--cov=mypkg",
            "--cov-append",
            "--cov-report=term",
            "test_basic.py::test_xfail",
        ],
        pre=[["-n", "2", "--cov=mypkg", "--cov-report=", "test_basic.py::test_pass"]],
        files=True,
    ),
    Scenario(
        "timeout-signal",
        ["-n", "2", "--timeout=3", "--timeout-method=signal", "extra/test_hang.py"],
        # pytest-timeout prints the stacks of the worker's other threads: 2.1.2's Python
        # receiver thread; this package reads frames in a native thread with no Python stack.
        ignore=r"Captured stdout call|Stack of <unknown>|execnet/gateway_base.py|^    \S",
    ),
    Scenario(
        "timeout-thread",
        ["-n", "2", "--timeout=3", "--timeout-method=thread", "extra/test_hang.py"],
    ),
    Scenario("reruns", ["-n", "2", "--reruns", "2", "extra/test_flaky.py", "test_basic.py"]),
    Scenario("randomly", ["-n", "2", "-p", "randomly", "--randomly-seed=4242", *MAIN]),
    Scenario("repeat", ["-n", "2", "--count=3", "test_classes.py"]),
    Scenario("forked", ["-n", "2", "--forked", "test_basic.py", "extra/test_crash.py"]),
]


def make_project(root: Path) -> None:
    """Writes the generated project into ``root``."""
    for rel, text in PROJECT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


_NORMALISE = [
    (re.compile(r"\bin \d+(\.\d+)?s( \(\d+:\d+:\d+\))?"), "in Xs"),
    (re.compile(r"\d+\.\d+s (call|setup|teardown)"), r"Xs \1"),
    (re.compile(r"\bpid[= ]?\d+"), "pid=N"),
    (re.compile(r"--randomly-seed=\d+"), "--randomly-seed=N"),
    (re.compile(r"0x[0-9a-f]+"), "0xADDR"),
    (re.compile(r"Thread \d+|Thread 0x\w+"), "Thread N"),
    (re.compile(r"line \d+"), "line N"),
    (re.compile(r"\bgw\d+\b"), "gwN"),
]


def normalise(text: str, project: Path, python: str) -> str:
    """Removes what legitimately differs between two runs (paths, timings, pids, seeds)."""
    text = text.replace(str(project), "<PROJECT>")
    text = re.sub(r"ssh=[^/]*//python=\S+", "<SSH>", text)
    text = re.sub(r"Warning: Permanently added .*\n", "", text)
    text = text.replace(str(Path(python).parent.parent), "<VENV>")
    text = re.sub(r"/[\w./+-]*/site-packages", "<SITE>", text)
    text = re.sub(r"/[\w./+-]*/wt/\w+/python", "<SITE>", text)
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    # Section rules are padded to the terminal width around texts whose length varies (timings).
    return re.sub(r"^([=_-])\1+ (.*?) \1+$", r"\1\1 \2 \1\1", text, flags=re.M)


_KEY = re.compile(
    r"crashed|replacing|maximum crashed|Timeout|RERUN|TOTAL|mypkg|Error|rror:|"
    r"stdout from|stderr from|workers|Interrupted|stopping after|randomly-seed|Coverage|"
    r"INTERNALERROR|Traceback|restarting|\+\+\+\+"
)


@dataclass
class Result:
    """What one run of a scenario in one environment produced (normalised)."""

    code: int
    summary: str
    tests: list[str]
    keys: list[str]
    files: list[str]
    lines: list[str]
    output: str


def run_scenario(python: str, scenario: Scenario, work: Path, ssh: str = "") -> Result:
    """Runs ``scenario`` with ``python`` in a fresh copy of the project.

    ``{python}``, ``{project}`` and ``{ssh}`` (an ssh gateway spec running ``python``) in the
    arguments are replaced.
    """
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    project = work / "proj"
    project.mkdir()
    make_project(project)
    env = dict(os.environ)
    env["FLAKY_DIR"] = str(work)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    env["COLUMNS"] = "120"
    cmd = [python, "-m", "pytest", *BASE]
    for pre in scenario.pre:
        subprocess.run([*cmd, *pre], cwd=project, env=env, capture_output=True, timeout=300)
        (work / "flaky-ran").unlink(missing_ok=True)
    args = [
        arg.replace("{python}", python).replace("{project}", str(project)).replace("{ssh}", ssh)
        for arg in scenario.args
    ]
    proc = subprocess.run(
        [*cmd, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    out = normalise(proc.stdout + "\n--- stderr ---\n" + proc.stderr, project, python)
    lines = out.splitlines()
    summary = next((ln for ln in reversed(lines) if ln.startswith("=") or " in Xs" in ln), "")
    tests = sorted(
        {ln for ln in lines if re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS|RERUN)\b", ln)}
    )
    keys = sorted({ln.strip() for ln in lines if _KEY.search(ln)})
    files = sorted(
        str(p.relative_to(project))
        for p in project.rglob("*")
        if p.is_file() and (p.name.startswith(".coverage") or p.suffix == ".xml")
    )
    # Every other line as a set, progress characters (whose order is scheduling) stripped.
    rest = sorted({re.sub(r"^[.FEsxXR]+", "", ln).rstrip() for ln in lines} - {""})
    return Result(proc.returncode, summary, tests, keys, files, rest, out)


def compare(name: str, up: Result, ours: Result, scenario: Scenario) -> list[str]:
    """Returns the differences between the two results (empty when they match)."""
    diffs = []
    if up.code != ours.code:
        diffs.append(f"exit code: upstream {up.code}, ours {ours.code}")
    if scenario.compare_summary and scenario.exact_tests and up.summary != ours.summary:
        diffs.append(f"summary:\n  upstream: {up.summary}\n  ours:     {ours.summary}")
    if scenario.exact_tests and up.tests != ours.tests:
        only_up = sorted(set(up.tests) - set(ours.tests))
        only_ours = sorted(set(ours.tests) - set(up.tests))
        diffs.append(f"tests: only upstream {only_up}; only ours {only_ours}")
    ignore = re.compile(scenario.ignore) if scenario.ignore else None
    up_keys = {ln for ln in up.keys if not (ignore and ignore.search(ln))}
    ours_keys = {ln for ln in ours.keys if not (ignore and ignore.search(ln))}
    if scenario.exact_tests and up_keys != ours_keys:
        only_up = sorted(up_keys - ours_keys)
        only_ours = sorted(ours_keys - up_keys)
        diffs.append(f"key lines: only upstream {only_up}; only ours {only_ours}")
    up_lines = {ln for ln in up.lines if not (ignore and ignore.search(ln))}
    ours_lines = {ln for ln in ours.lines if not (ignore and ignore.search(ln))}
    if scenario.exact_tests and up_lines != ours_lines:
        only_up = sorted(up_lines - ours_lines)
        only_ours = sorted(ours_lines - up_lines)
        diffs.append(f"other lines: only upstream {only_up}; only ours {only_ours}")
    if scenario.files and up.files != ours.files:
        diffs.append(f"files: upstream {up.files}, ours {ours.files}")
    return diffs


def ensure_env(path: Path, ours: bool) -> str:
    """Creates (once) a venv at ``path`` with the plugins and one of the two execnets."""
    python = path / "bin" / "python"
    if not python.exists():
        venv.create(path, with_pip=True)
        pins = PLUGINS if ours else ["execnet==2.1.2", *PLUGINS]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
        if ours:
            subprocess.run(
                [str(python), "-m", "pip", "uninstall", "-y", "-q", "execnet"], check=True
            )
            site = next((path / "lib").glob("python3*/site-packages"))
            (site / "execnet.pth").write_text(str(REPO / "python") + "\n")
    return str(python)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-python")
    parser.add_argument("--ours-python")
    parser.add_argument("-k", help="run only scenarios whose name contains this")
    parser.add_argument("-v", action="store_true", help="print both normalised outputs")
    ns = parser.parse_args()
    up_py = ns.upstream_python or ensure_env(SIDE / "plugins-upstream", ours=False)
    ours_py = ns.ours_python or ensure_env(SIDE / "plugins-ours", ours=True)
    for py, want_ours in ((up_py, False), (ours_py, True)):
        info = subprocess.run(
            [py, "-c", "import execnet; print(execnet.__version__, execnet.__file__)"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        print(f"{'ours' if want_ours else 'upstream'}: execnet {info}")
        if ("+rs" in info) != want_ours:
            print("  wrong execnet in this environment", file=sys.stderr)
            return 2
    failed = 0
    selected = [sc for sc in SCENARIOS if not ns.k or ns.k in sc.name]
    with tempfile.TemporaryDirectory(prefix="compare-plugins-") as tmp, ExitStack() as stack:
        ssh = {up_py: "", ours_py: ""}
        if any("{ssh}" in arg for sc in selected for arg in sc.args):
            sys.path.insert(0, str(REPO / "tests"))
            import _sshd

            reason = _sshd.available()
            if reason is None:
                for py in ssh:
                    server = stack.enter_context(_sshd.running(Path(tempfile.mkdtemp()), py))
                    ssh[py] = f"ssh={server.ssh}//python={server.python}"
            else:
                print(f"ssh scenarios skipped: {reason}")
                selected = [sc for sc in selected if not any("{ssh}" in a for a in sc.args)]
        for scenario in selected:
            up = run_scenario(up_py, scenario, Path(tmp) / "upst", ssh[up_py])
            ours = run_scenario(ours_py, scenario, Path(tmp) / "ours", ssh[ours_py])
            diffs = compare(scenario.name, up, ours, scenario)
            verdict = "same" if not diffs else "DIFFERENT"
            print(f"{scenario.name:20} exit {up.code}/{ours.code}  {verdict}  | {up.summary}")
            for d in diffs:
                print("    " + d.replace("\n", "\n    "))
            if diffs:
                failed += 1
            if ns.v or diffs:
                for label, res in (("upstream", up), ("ours", ours)):
                    print(f"    ----- {label} output -----")
                    print(textwrap.indent(res.output.rstrip(), "    | "))
    print(f"{failed} scenario(s) differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
