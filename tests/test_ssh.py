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


# --- connection reuse (ssh_reuse / EXECNET_SSH_REUSE) ---------------------------------------------


def _accepted(sshd: _sshd.Sshd) -> int:
    """How many ssh connections the server has authenticated so far."""
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


def _master_pid(path: str, sshd: _sshd.Sshd) -> int | None:
    """The pid of the master listening on control socket ``path`` (``ssh -O check``)."""
    result = subprocess.run(
        ["ssh", "-o", f"ControlPath={path}", "-O", "check", *sshd.ssh_args()],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return None
    text = result.stderr.decode()
    assert text.startswith("Master running (pid="), text
    return int(text.split("pid=")[1].split(")")[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _upstream_ssh_argv(sshd: _sshd.Sshd) -> list[str]:
    return [
        "ssh",
        "-C",
        *sshd.ssh_args(),
        f'{sshd.python} -c "{gateway_io.popen_bootstrapline}"',
    ]


def test_ssh_reuse_off_keeps_the_argv(
    group: Group, sshd: _sshd.Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(gateway_io.SSH_REUSE_ENV, raising=False)
    gw = group.makegateway(sshd.spec)
    assert gw._io.popen.args == _upstream_ssh_argv(sshd)
    assert gw._io._control is None
    for value in ("0", "no", "off", "false"):
        monkeypatch.setenv(gateway_io.SSH_REUSE_ENV, value)
        assert not gateway_io.ssh_reuse(execnet.XSpec(sshd.spec))
    monkeypatch.setenv(gateway_io.SSH_REUSE_ENV, "1")
    # the spec key wins over the environment
    gw = group.makegateway(f"{sshd.spec}//ssh_reuse=no")
    assert gw._io.popen.args == _upstream_ssh_argv(sshd)
    assert gw.remote_exec("channel.send(1)").receive(timeout=30) == 1


def test_ssh_reuse_bad_value(group: Group, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="ssh_reuse='maybe'"):
        group.makegateway("ssh=nowhere.invalid//ssh_reuse=maybe")
    monkeypatch.setenv(gateway_io.SSH_REUSE_ENV, "sometimes")
    with pytest.raises(ValueError, match="EXECNET_SSH_REUSE='sometimes'"):
        group.makegateway("ssh=nowhere.invalid")
    assert not group


def test_ssh_reuse_shares_one_connection(group: Group, sshd: _sshd.Sshd) -> None:
    before = _accepted(sshd)
    gw1 = group.makegateway(f"{sshd.spec}//ssh_reuse//id=r1")
    control = gw1._io._control
    assert control is not None
    path = control.path
    args = gw1._io.popen.args
    assert args[:8] == [
        "ssh",
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={path}",
        "-o",
        f"ControlPersist={gateway_io.SSH_CONTROL_PERSIST}",
    ]
    assert args[8:] == _upstream_ssh_argv(sshd)[2:]
    directory = os.path.dirname(path)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(directory).st_uid == os.getuid()
    assert len(os.fsencode(path)) + 17 < 108
    master = _master_pid(path, sshd)
    assert master is not None
    assert master != gw1._io.popen.pid  # the master runs in the background

    gw2 = group.makegateway(f"{sshd.spec}//ssh_reuse//id=r2")
    assert gw2._io._control is control
    assert _master_pid(path, sshd) == master
    pids = [gw.remote_exec("import os; channel.send(os.getpid())") for gw in (gw1, gw2)]
    worker_pids = [ch.receive(timeout=30) for ch in pids]
    assert len(set(worker_pids)) == 2
    ch = gw2.remote_exec("channel.send(channel.receive() * 2)")
    ch.send(b"xy" * 100_000)
    assert ch.receive(timeout=30) == b"xy" * 200_000
    # two gateways, one authenticated connection
    assert _accepted(sshd) - before == 1

    group.terminate(timeout=10.0)
    assert not group
    assert _wait_gone(master), "ssh master outlived the group"
    assert _master_pid(path, sshd) is None
    assert not os.path.exists(path)
    for pid in worker_pids:
        assert _wait_gone(pid)


def test_ssh_reuse_from_environment(
    group: Group, sshd: _sshd.Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gateway_io.SSH_REUSE_ENV, "1")
    before = _accepted(sshd)
    gws = [group.makegateway(sshd.spec) for _ in range(3)]
    assert len({gw._io._control for gw in gws}) == 1
    assert [gw.remote_exec("channel.send(7)").receive(timeout=30) for gw in gws] == [7, 7, 7]
    assert _accepted(sshd) - before == 1


def test_ssh_reuse_master_stops_with_its_last_gateway(group: Group, sshd: _sshd.Sshd) -> None:
    gw1 = group.makegateway(f"{sshd.spec}//ssh_reuse")
    gw2 = group.makegateway(f"{sshd.spec}//ssh_reuse")
    path = gw1._io._control.path
    master = _master_pid(path, sshd)
    assert master is not None
    gw1.exit()
    gw1.join()
    gw1._io.wait()
    # gw2 still uses the master
    assert _master_pid(path, sshd) == master
    assert gw2.remote_exec("channel.send(2)").receive(timeout=30) == 2
    gw2.exit()
    gw2.join()
    gw2._io.wait()
    assert _wait_gone(master)


def test_ssh_reuse_different_keys_do_not_share(group: Group, sshd: _sshd.Sshd) -> None:
    gw = group.makegateway(f"{sshd.spec}//ssh_reuse")
    assert gw.remote_exec("channel.send(1)").receive(timeout=30) == 1
    # a rejected key must not ride on the authenticated master
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway(f"ssh={sshd.bad_ssh}//ssh_reuse")
    assert "Permission denied" in excinfo.value.detail
    assert len(group) == 1


def test_ssh_reuse_survives_a_killed_master(group: Group, sshd: _sshd.Sshd) -> None:
    gw1 = group.makegateway(f"{sshd.spec}//ssh_reuse")
    path = gw1._io._control.path
    master = _master_pid(path, sshd)
    assert master is not None
    ch = gw1.remote_exec("channel.send('ready'); channel.receive()")
    assert ch.receive(timeout=30) == "ready"
    os.kill(master, signal.SIGKILL)
    # the sessions that travelled through it are lost, as with a dropped connection
    with pytest.raises(EOFError):
        ch.receive(timeout=30)
    # the next gateway removes the stale socket and becomes the new master
    gw2 = group.makegateway(f"{sshd.spec}//ssh_reuse")
    assert gw2.remote_exec("channel.send(3)").receive(timeout=30) == 3
    new_master = _master_pid(path, sshd)
    assert new_master is not None and new_master != master
    group.terminate(timeout=10.0)
    assert _wait_gone(new_master)


def test_ssh_reuse_master_stopped_at_exit(sshd: _sshd.Sshd, tmp_path: Path) -> None:
    script = tmp_path / "leave.py"
    script.write_text(
        "import execnet, sys\n"
        f"gw = execnet.makegateway({sshd.spec + '//ssh_reuse'!r})\n"
        "assert gw.remote_exec('channel.send(5)').receive() == 5\n"
        "print(gw._io._control.path, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    # the gateway is left to execnet's exit hooks
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    path = proc.stdout.readline().decode().strip()
    assert path, proc.communicate(timeout=30)
    master = _master_pid(path, sshd)
    assert master is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.communicate()[1]
    assert _wait_gone(master)
    assert not os.path.exists(os.path.dirname(path))
