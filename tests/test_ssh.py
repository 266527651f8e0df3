"""ssh gateways against a loopback sshd started for these tests (skipped without sshd/ssh)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from execnet import gateway_io
from execnet.multi import Group

pytestmark = pytest.mark.ssh

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SSH = shutil.which("ssh")
KEYGEN = shutil.which("ssh-keygen")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = _free_port()
        for name in ("hostkey", "userkey", "otherkey"):
            subprocess.run(
                [str(KEYGEN), "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                check=True,
            )
        (directory / "authorized_keys").write_text((directory / "userkey.pub").read_text())
        config = directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {directory}/hostkey\n"
            f"AuthorizedKeysFile {directory}/authorized_keys\nPidFile {directory}/sshd.pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(config), "-E", str(directory / "sshd.log")]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def sshopts(self, key: str = "userkey") -> str:
        return (
            f"-p {self.port} -i {self.dir}/{key} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR "
            f"{os.environ.get('USER', 'root')}@127.0.0.1"
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not (SSHD and SSH and KEYGEN) or os.geteuid() != 0:
        pytest.skip("needs sshd, ssh, ssh-keygen and root")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    probe = subprocess.run(
        [SSH, *server.sshopts().split(), "true"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        server.stop()
        pytest.skip(f"loopback sshd not usable: {probe.stderr!r}")
    yield server
    server.stop()


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


def test_ssh_gateway(group: Group, sshd: Sshd) -> None:
    spec = f"ssh={sshd.sshopts()}//python={sys.executable}//id=ssh1"
    gw = group.makegateway(spec)
    assert gw.id == "ssh1"
    assert gw.remoteaddress == sshd.sshopts()
    info = gw._rinfo()
    assert info.executable == sys.executable
    assert info.pid != os.getpid()
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(1)
    assert ch.receive() == 2
    # the shipped source runs in __main__ on the remote
    assert gw.remote_exec("channel.send(type(channel).__module__)").receive() == "__main__"


def test_ssh_gateway_terminates(group: Group, sshd: Sshd) -> None:
    gw = group.makegateway(f"ssh={sshd.sshopts()}//python={sys.executable}")
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


def test_remote_stderr_reaches_our_stderr(
    group: Group, sshd: Sshd, capfd: pytest.CaptureFixture[str]
) -> None:
    gw = group.makegateway(f"ssh={sshd.sshopts()}//python={sys.executable}")
    gw.remote_exec("import sys; sys.stderr.write('hello-from-remote\\n'); sys.stderr.flush()")
    deadline = time.monotonic() + 10
    seen = ""
    while time.monotonic() < deadline and "hello-from-remote" not in seen:
        time.sleep(0.05)
        seen += capfd.readouterr().err
    assert "hello-from-remote" in seen


def test_unknown_host(group: Group) -> None:
    if not SSH:
        pytest.skip("needs ssh")
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway("ssh=-o BatchMode=yes nowhere.invalid")
    exc = excinfo.value
    assert exc.args == ("-o BatchMode=yes nowhere.invalid",)
    assert "nowhere.invalid" in exc.detail
    assert not group


def test_permission_denied_is_explained(group: Group, sshd: Sshd) -> None:
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway(f"ssh={sshd.sshopts('otherkey')}")
    assert excinfo.value.args == (sshd.sshopts("otherkey"),)
    assert "Permission denied" in excinfo.value.detail
    assert "Permission denied" in str(excinfo.value)


def test_proxied_through_ssh(group: Group, sshd: Sshd) -> None:
    group.makegateway(f"ssh={sshd.sshopts()}//python={sys.executable}//id=remote")
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
