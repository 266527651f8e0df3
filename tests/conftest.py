"""Fixtures shared by the test suite.

``sshd``: a loopback OpenSSH server for ``ssh=`` gateways (see ``tests/_sshd.py``). It is skipped
when ``/usr/sbin/sshd`` is missing, except under ``CI=true``, where that is an error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

import _sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_sshd.Sshd]:
    """A running loopback sshd whose sessions have this interpreter first on ``PATH``.

    Use ``f"ssh={sshd.ssh}//python={sshd.python}"`` (or ``sshd.spec``) as a gateway spec.
    """
    reason = _sshd.available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs a loopback sshd: {reason}")
        pytest.skip(reason)
    with _sshd.running(tmp_path_factory.mktemp("sshd"), python=sys.executable) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the conformance suites' summary lines (``user_properties`` named "conformance")."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "conformance"
    ]
    if lines:
        terminalreporter.section("conformance")
        for line in lines:
            terminalreporter.write_line(str(line))
