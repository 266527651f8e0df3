"""ssh gateways against the loopback sshd of ``conftest.py`` (and that sshd itself).

Without ``/usr/sbin/sshd`` these tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import _sshd
import execnet
from execnet import gateway_io
from execnet.multi import Group

pytestmark = pytest.mark.ssh


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


# --- the loopback sshd itself ------------------------------------------------------------------


def test_sshd_runs_this_interpreter_remotely(sshd: _sshd.Sshd) -> None:
    result = sshd.run('python -c "import sys; print(sys.executable)"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == sys.executable
    assert sshd.python == sys.executable


def test_sshd_session_imports_this_execnet(sshd: _sshd.Sshd) -> None:
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


# --- ssh gateways -------------------------------------------------------------------------------


def test_ssh_gateway(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(f"{sshd.spec}//id=ssh1")
    assert gw.id == "ssh1"
    assert gw.remoteaddress == sshd.ssh
    info = gw._rinfo()
    assert info.executable == sys.executable
    assert info.pid != os.getpid()
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(1)
    assert ch.receive() == 2
    # the shipped source runs in __main__ on the remote
    assert gw.remote_exec("channel.send(type(channel).__module__)").receive() == "__main__"


def test_ssh_gateway_uses_python_from_remote_path(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(f"ssh={sshd.ssh}")
    assert gw._rinfo().executable == sys.executable


def test_ssh_channels_both_ways(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(sshd.spec)
    ch = gw.remote_exec(
        """
        total = 0
        for item in channel:
            total += len(item)
            channel.send((item[::-1], total))
        """
    )
    items: list[object] = ["abc", b"xy" * 1000, (1, 2.5, None), [{"k": {1, 2}}, 3j]]
    for item in items:
        ch.send(item)
    answers = [ch.receive(timeout=30) for _ in items]
    assert answers == [
        ("cba", 3),
        (b"yx" * 1000, 2003),
        ((None, 2.5, 1), 2006),
        ([3j, {"k": {1, 2}}], 2008),
    ]
    ch.close()
    ch.waitclose(timeout=30)

    received: list[object] = []
    ch = gw.remote_exec("for i in range(5): channel.send(i)")
    ch.setcallback(received.append, endmarker="end")
    ch.waitclose(timeout=30)
    deadline = time.monotonic() + 10
    while received[-1:] != ["end"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == [0, 1, 2, 3, 4, "end"]


def test_ssh_gateway_terminates(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(sshd.spec)
    pid = gw.remote_exec("import os; channel.send(os.getpid())").receive()
    popen = gw._io.popen
    group.terminate(timeout=5.0)
    assert popen.returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("remote worker still running")


def test_dropped_ssh_connection_is_eof(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(sshd.spec)
    ch = gw.remote_exec("channel.send('ready'); channel.receive()")
    assert ch.receive(timeout=30) == "ready"
    os.kill(gw._io.popen.pid, signal.SIGKILL)
    with pytest.raises(EOFError):
        ch.receive(timeout=30)


def test_remote_stderr_reaches_our_stderr(
    group: Group, sshd: _sshd.Sshd, capfd: pytest.CaptureFixture[str]
) -> None:
    gw = group.makegateway(sshd.spec)
    gw.remote_exec("import sys; sys.stderr.write('hello-from-remote\\n'); sys.stderr.flush()")
    deadline = time.monotonic() + 10
    seen = ""
    while time.monotonic() < deadline and "hello-from-remote" not in seen:
        time.sleep(0.05)
        seen += capfd.readouterr().err
    assert "hello-from-remote" in seen


def test_unknown_host(group: Group, sshd: _sshd.Sshd) -> None:
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway("ssh=-o BatchMode=yes nowhere.invalid")
    exc = excinfo.value
    assert exc.args == ("-o BatchMode=yes nowhere.invalid",)
    assert "nowhere.invalid" in exc.detail
    assert not group


def test_permission_denied_is_explained(group: Group, sshd: _sshd.Sshd) -> None:
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway(f"ssh={sshd.bad_ssh}")
    assert excinfo.value.args == (sshd.bad_ssh,)
    assert "Permission denied" in excinfo.value.detail
    assert "Permission denied" in str(excinfo.value)
    assert not group


def test_proxied_through_ssh(group: Group, sshd: _sshd.Sshd) -> None:
    group.makegateway(f"{sshd.spec}//id=remote")
    sub = group.makegateway("popen//via=remote//id=sub")
    remote_pid = group["remote"].remote_exec("import os; channel.send(os.getpid())").receive()
    assert sub.remote_exec("import os; channel.send(os.getppid())").receive() == remote_pid
    group.terminate(timeout=5.0)
    assert not group


def test_ssh_config_is_passed(group: Group, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(gateway_io, "Popen2IOMaster", lambda *args, **kw: seen.append(args[0]))
    with pytest.raises(AttributeError):
        group.makegateway("ssh=xyz//ssh_config=qwe")
    assert len(seen) == 1
    args = seen[0]
    assert args[args.index("-F") + 1] == "qwe"
