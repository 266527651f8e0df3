"""The upstream suites (execnet 2.1.2's and pytest-xdist 3.8.0's) run against this execnet.

The runner is ``tests/conformance/run.py``; these tests check its plumbing on real pytest runs and
then run both suites, failing on any failure not listed in ``tests/conformance/expected.toml``.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import execnet
from conformance import run as conformance

#: execnet 2.1.2's ``__all__``: the suites import all of it at collection time.
UPSTREAM_ALL = [
    "Channel", "DataFormatError", "DumpError", "Gateway", "Group", "HostNotFound", "LoadError",
    "MultiChannel", "RSync", "RemoteError", "TimeoutError", "XSpec", "__version__",
    "default_group", "dump", "dumps", "load", "loads", "makegateway", "set_execmodel",
]  # fmt: skip
EXECNET_ITEMS = 1095
XDIST_ITEMS = 212
#: Skips of the execnet suite with ssh, socket and gevent available (eventlet, pypy3, vagrant and
#: exec-model combinations that do not apply); upstream 2.1.2 gives exactly this many.
EXECNET_SKIPS_WITH_SSH_AND_SOCKET = 266

SAMPLE = """
import pytest

def test_pass(): pass
def test_fail(): assert 0
@pytest.mark.skip(reason="no")
def test_skip(): pass
@pytest.mark.xfail(reason="known")
def test_xfail(): assert 0
@pytest.mark.xfail(reason="flaky")
def test_xpass(): pass
@pytest.fixture
def broken(): raise RuntimeError("setup")
def test_error(broken): pass
class TestGroup:
    @pytest.mark.parametrize("x", ["a-b", "c"])
    def test_param(self, x): assert x == "c"
"""


def _pytest_run(tmp_path: Path, source: str | None) -> conformance.Launch:
    root = tmp_path / "suite"
    (root / "testing").mkdir(parents=True)
    if source is not None:
        (root / "testing" / "test_sample.py").write_text(textwrap.dedent(source))
    junit = tmp_path / "out.xml"
    logfile = tmp_path / "out.log"
    args = [sys.executable, "-m", "pytest", "testing", "-p", "no:cacheprovider", "-q",
            f"--junitxml={junit}"]  # fmt: skip
    launch = conformance.Launch("sample", args, root, logfile, junit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    conformance.run_launches([launch], env, concurrent=False)
    assert launch.finished > launch.started
    assert launch.cpu > 0
    return launch


def test_runner_reads_real_pytest_results(tmp_path: Path) -> None:
    launch = _pytest_run(tmp_path, SAMPLE)
    expectations = [
        conformance.Expectation("sample", "testing/test_sample.py::test_fail", "demo"),
        conformance.Expectation("sample", "testing/test_sample.py::test_gone", "demo"),
    ]
    result = conformance.collect(launch, expectations)
    assert result.returncode == 1
    assert result.counts == {
        "passed": 2, "failed": 2, "skipped": 1, "xfailed": 1, "xpassed": 1, "errors": 1
    }  # fmt: skip
    assert result.outcomes == {
        "testing/test_sample.py::test_pass": "passed",
        "testing/test_sample.py::test_fail": "failed",
        "testing/test_sample.py::test_skip": "skipped",
        "testing/test_sample.py::test_xfail": "xfailed",
        "testing/test_sample.py::test_xpass": "passed",
        "testing/test_sample.py::test_error": "error",
        "testing/test_sample.py::TestGroup::test_param[a-b]": "failed",
        "testing/test_sample.py::TestGroup::test_param[c]": "passed",
    }
    assert result.expected_failed == ["testing/test_sample.py::test_fail"]
    assert result.unexpected == [
        "testing/test_sample.py::TestGroup::test_param[a-b]",
        "testing/test_sample.py::test_error",
    ]
    assert result.stale == ["testing/test_sample.py::test_gone"]
    assert not result.ok
    assert result.summary_line() == (
        "sample suite: 2 passed, 2 failed, 1 skipped, 1 xfailed, 1 xpassed, 1 errors"
    )


def test_runner_treats_no_tests_as_a_problem(tmp_path: Path) -> None:
    launch = _pytest_run(tmp_path, None)
    result = conformance.collect(launch, [])
    assert result.returncode == 5
    assert result.problem == "pytest collected no tests (exit 5)"
    assert not result.ok


def test_expectation_patterns() -> None:
    entry = conformance.Expectation("execnet", "testing/t.py::test_x[*]", "why")
    assert entry.matches("testing/t.py::test_x[a-b]")
    assert not entry.matches("testing/t.py::test_x")
    assert not entry.matches("testing/t.py::test_xy[a]")


def test_expected_list_is_valid() -> None:
    entries = conformance.load_expectations(against_upstream=True)
    assert entries, "the list names at least the known upstream failures"
    for entry in entries:
        assert entry.suite in conformance.SDISTS
        assert entry.test.startswith("testing/")
        assert len(entry.reason) > 20
    ours = conformance.load_expectations(against_upstream=False)
    assert {e.test for e in ours} < {e.test for e in entries}
    assert all(e.kind != "upstream" for e in ours)


@pytest.mark.conformance
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_upstream_suites(record_property: Callable[[str, object], None]) -> None:
    missing = [name for name in UPSTREAM_ALL if not hasattr(execnet, name)]
    if missing:
        pytest.skip(f"execnet lacks {', '.join(missing)} (the suites import all of the API)")
    result = conformance.run()
    conformance.report(result)
    for suite in result.suites.values():
        record_property("conformance", suite.summary_line())
    execnet_suite, xdist_suite = result.suites["execnet"], result.suites["xdist"]
    for suite in (execnet_suite, xdist_suite):
        assert suite.problem is None, suite.problem
        assert suite.unexpected == [], f"{suite.name}: unexpected failures, log {suite.log}"
    assert sum(execnet_suite.counts.values()) == EXECNET_ITEMS
    assert sum(xdist_suite.counts.values()) == XDIST_ITEMS
    assert xdist_suite.counts["passed"] >= 195
    if result.ssh and result.socket:
        assert execnet_suite.counts["skipped"] <= EXECNET_SKIPS_WITH_SSH_AND_SOCKET
