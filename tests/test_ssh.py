"""ssh: the loopback sshd fixture and ssh gateways through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import _sshd

pytestmark = pytest.mark.ssh


def test_sshd_runs_this_interpreter_remotely(sshd: _sshd.Sshd) -> None:
    result = sshd.run('python -c "import sys; print(sys.executable)"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == sys.executable
    assert sshd.python == sys.executable


def test_sshd_session_imports_this_execnet(sshd: _sshd.Sshd) -> None:
    import execnet

    result = sshd.run('python -c "import execnet; print(execnet.__file__)"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == execnet.__file__


def test_sshd_rejects_other_keys(sshd: _sshd.Sshd) -> None:
    result = subprocess.run(
        ["ssh", *sshd.ssh_args(sshd.bad_key), "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_sshd_spec_strings(sshd: _sshd.Sshd) -> None:
    assert sshd.ssh.split() == sshd.ssh_args()
    assert sshd.ssh.startswith(f"-p {sshd.port} -i {sshd.key} ")
    assert sshd.ssh.endswith("-o BatchMode=yes " + f"{sshd.user}@127.0.0.1")
    assert sshd.spec == f"ssh={sshd.ssh}//python={sys.executable}"


def test_sshd_stops_by_pid(sshd: _sshd.Sshd, tmp_path: Path) -> None:
    server = _sshd.start(tmp_path / "sshd", python=sys.executable)
    assert _sshd.is_listening(server.port)
    server.stop()
    assert server.process.returncode is not None
    assert not _sshd.is_listening(server.port)
