"""Socket gateways: installvia, a socketserver subprocess, errors, the helper scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from execnet.gateway_socket import SocketIO
from execnet.multi import Group

SCRIPT_DIR = Path(execnet.__file__).resolve().parent / "script"


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


class Server:
    """``python -m execnet.script.socketserver ADDRESS`` as a subprocess."""

    def __init__(self, address: str, cwd: Path | None = None) -> None:
        self.address = address
        env = dict(os.environ)
        env["PYTHONPATH"] = str(SCRIPT_DIR.parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "execnet.script.socketserver", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "Entering Accept loop" in line, line + self.stderr_text()

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def wait_accepting(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "server ended"
            if "Entering Accept loop" in line:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(f"127.0.0.1:{free_port()}", cwd=tmp_path)
    yield srv
    srv.stop()


def test_installvia(group: Group) -> None:
    via = group.makegateway("popen//id=p1")
    gw = group.makegateway("socket//installvia=p1//id=s1")
    assert gw.id == "s1"
    assert gw.remote_status()
    assert isinstance(gw._io, SocketIO)
    host, port = gw.remoteaddress.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    # the socket worker runs inside the via gateway's process
    via_pid = via.remote_exec("import os; channel.send(os.getpid())").receive()
    assert gw.remote_exec("import os; channel.send(os.getpid())").receive() == via_pid
    ch = gw.remote_exec("channel.send(channel.receive() * 2)")
    ch.send(21)
    assert ch.receive() == 42


def test_installvia_terminate(group: Group) -> None:
    group.makegateway("popen//id=p1")
    gw = group.makegateway("socket//installvia=p1//id=s1")
    assert gw.remote_exec("channel.send(1)").receive() == 1
    start = time.monotonic()
    group.terminate(timeout=5.0)
    assert time.monotonic() - start < 3.0
    assert not group


def test_socketserver_subprocess(group: Group, server: Server, tmp_path: Path) -> None:
    gw = group.makegateway(f"socket={server.address}//id=sock1")
    assert gw.id == "sock1"
    info = gw._rinfo()
    assert info.executable == sys.executable
    assert info.pid == server.proc.pid
    assert info.cwd == str(tmp_path)
    assert gw.remoteaddress == server.address
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(1)
    assert ch.receive() == 2
    # the worker id is the whole spec string plus -worker
    ch = gw.remote_exec("channel.send(channel.gateway.id)")
    assert ch.receive() == f"socket={server.address}//id=sock1-worker"


def test_socketserver_serves_one_gateway_after_another(group: Group, server: Server) -> None:
    for i in range(2):
        gw = group.makegateway(f"socket={server.address}")
        assert gw.remote_exec(f"channel.send({i})").receive() == i
        gw.exit()
        gw.join(timeout=5.0)
        server.wait_accepting()


def test_socketserver_restores_cwd(group: Group, server: Server, tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    gw = group.makegateway(f"socket={server.address}//chdir={sub}")
    assert gw._rinfo().cwd == str(sub)
    gw.exit()
    gw.join(timeout=5.0)
    server.wait_accepting()
    gw = group.makegateway(f"socket={server.address}")
    assert gw._rinfo().cwd == str(tmp_path)


def test_quitserver_stops_the_server(server: Server) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT_DIR / "quitserver.py"), server.address],
        check=True,
        timeout=30,
    )
    assert server.proc.wait(timeout=10) == 0
    assert server.proc.stdout is not None
    assert "leaving socketserver execloop" in server.proc.stdout.read()


def test_default_address_is_loopback() -> None:
    from execnet.script import socketserver

    assert socketserver.DEFAULT_ADDRESS == "127.0.0.1:8888"
    assert socketserver.is_loopback("127.0.0.1") and socketserver.is_loopback("localhost")
    assert not socketserver.is_loopback("") and not socketserver.is_loopback("0.0.0.0")


def test_non_loopback_bind_warns(tmp_path: Path) -> None:
    srv = Server(f"0.0.0.0:{free_port()}", cwd=tmp_path)
    try:
        srv.proc.kill()
        srv.proc.wait()
        assert srv.proc.stderr is not None
        assert "WARNING" in srv.proc.stderr.read()
    finally:
        srv.stop()


def test_loopback_bind_does_not_warn(server: Server) -> None:
    server.proc.kill()
    server.proc.wait()
    assert server.proc.stderr is not None
    assert server.proc.stderr.read() == ""


def test_host_not_found(group: Group) -> None:
    with pytest.raises(execnet.HostNotFound) as excinfo:
        group.makegateway("socket=qwepoipqwe.invalid:9000")
    assert excinfo.value.args == ()
    assert not group


def test_connection_refused(group: Group) -> None:
    with pytest.raises(ConnectionRefusedError):
        group.makegateway(f"socket=127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        # execnet 2.1.2's errors for these specs (checked against it)
        ("socket", AttributeError, "'bool' object has no attribute 'split'"),
        ("socket=localhost", ValueError, "not enough values to unpack (expected 2, got 1)"),
        ("socket=a:b:c", ValueError, "too many values to unpack (expected 2)"),
        ("socket=127.0.0.1:", ValueError, "invalid literal for int() with base 10: ''"),
    ],
)
def test_malformed_socket_address(group: Group, spec: str, error: type, text: str) -> None:
    with pytest.raises(error) as excinfo:
        group.makegateway(spec)
    assert str(excinfo.value) == text
    assert not group


def test_ipv6_socket_address(group: Group) -> None:
    # parsed as [host]:port (2.1.2 raised ValueError); connecting is refused, or fails where
    # the machine has no IPv6 loopback
    with pytest.raises(OSError):
        group.makegateway(f"socket=[::1]:{free_port()}")


def test_python_with_socket_is_an_assertion(group: Group) -> None:
    with pytest.raises(AssertionError) as excinfo:
        group.makegateway("socket=127.0.0.1:1//python=python3")
    assert str(excinfo.value) == "socket: specifying python executables not yet supported"


def test_socket_worker_dies_gives_eoferror(group: Group, server: Server) -> None:
    gw = group.makegateway(f"socket={server.address}")
    ch = gw.remote_exec("channel.receive()")
    server.proc.kill()
    with pytest.raises(EOFError):
        ch.receive(timeout=10)
    gw.join(timeout=5.0)
    assert not gw.hasreceiver()


def test_socketio_reads_exact_counts() -> None:
    from execnet.gateway_base import get_execmodel

    a, b = socket.socketpair()
    io = SocketIO(a, get_execmodel("thread"))
    b.sendall(b"abc")
    b.sendall(b"defg")
    assert io.read(5) == b"abcde"
    b.close()
    assert io.read(2) == b"fg"
    with pytest.raises(EOFError):
        io.read(1)
    io.close_read()
    io.close_write()
    a.close()


# --- interoperability with upstream execnet 2.1.2 (installed into .side/, run as subprocesses) --

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_DIR = REPO / ".side" / "upstream-2.1.2"


def ensure_upstream() -> Path:
    """Install upstream execnet 2.1.2 into the side folder once (skip if PyPI is unreachable)."""
    if (UPSTREAM_DIR / "execnet" / "gateway_base.py").exists():
        return UPSTREAM_DIR
    import fcntl
    import shutil
    import tempfile

    UPSTREAM_DIR.parent.mkdir(exist_ok=True)
    with open(UPSTREAM_DIR.parent / "upstream-2.1.2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (UPSTREAM_DIR / "execnet" / "gateway_base.py").exists():
            return UPSTREAM_DIR
        tmp = Path(tempfile.mkdtemp(prefix="upstream-", dir=UPSTREAM_DIR.parent))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                 "--disable-pip-version-check", "--target", str(tmp), "execnet==2.1.2"],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                pytest.skip(f"cannot install upstream execnet: {proc.stderr[-500:]}")
            os.rename(tmp, UPSTREAM_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return UPSTREAM_DIR


@pytest.mark.upstream
def test_our_master_drives_upstream_socketserver(group: Group, tmp_path: Path) -> None:
    upstream = ensure_upstream()
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(upstream))
    proc = subprocess.Popen(
        [sys.executable, "-u", str(upstream / "execnet" / "script" / "socketserver.py"), address],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert "Accept loop" in proc.stdout.readline()
        gw = group.makegateway(f"socket={address}")
        info = gw._rinfo()
        assert info.pid == proc.pid and info.cwd == str(tmp_path)
        ch = gw.remote_exec("channel.send(channel.receive() * 2)")
        ch.send([1, "a"])
        assert ch.receive() == [1, "a", 1, "a"]
        gw.exit()
        gw.join(timeout=5.0)
        # the upstream server is ready for the next connection
        for line in proc.stdout:
            if "Accept loop" in line:
                break
        gw = group.makegateway(f"socket={address}")
        assert gw.remote_exec("channel.send(7)").receive() == 7
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.upstream
def test_upstream_master_drives_our_socketserver(server: Server) -> None:
    upstream = ensure_upstream()
    code = (
        "import execnet, os\n"
        f"assert os.path.realpath(execnet.__file__).startswith({str(upstream.resolve())!r})\n"
        f"gw = execnet.makegateway('socket={server.address}')\n"
        "ch = gw.remote_exec('import os; channel.send((os.getpid(), channel.receive() + 1))')\n"
        "ch.send(41)\n"
        "print(ch.receive())\n"
        "execnet.default_group.terminate(5)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(upstream)),
        cwd=str(upstream.parent),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"({server.proc.pid}, 42)"


def test_shell_script_runs_statements_remotely(server: Server) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT_DIR / "shell.py"), server.address],
        input="x = 6 * 7\nprint(x)\nimport os; print(os.getpid())\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout
    assert str(server.proc.pid) in proc.stdout


def test_loop_socketserver_restarts_after_quit(group: Group, tmp_path: Path) -> None:
    import signal

    address = f"127.0.0.1:{free_port()}"
    loop = subprocess.Popen(
        [sys.executable, str(SCRIPT_DIR / "loop_socketserver.py"), address],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert loop.stdout is not None

        def wait_listening() -> None:
            for line in loop.stdout:  # type: ignore[union-attr]
                if "Entering Accept loop" in line:
                    return
            raise AssertionError("loop_socketserver ended")

        wait_listening()
        pids = []
        for _ in range(2):
            gw = group.makegateway(f"socket={address}")
            pids.append(gw._rinfo().pid)
            gw.exit()
            gw.join(timeout=5.0)
            wait_listening()
            subprocess.run([sys.executable, str(SCRIPT_DIR / "quitserver.py"), address], check=True)
            wait_listening()
        # each quit ended a server process; the loop started a new one
        assert pids[0] != pids[1]
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()


@pytest.mark.parametrize("bind", ["127.0.0.1:0", ("127.0.0.1", 0)], ids=["str", "tuple"])
def test_socketserver_as_remote_exec_module(group: Group, bind: object) -> None:
    from execnet.script import socketserver

    host_gw = group.makegateway("popen//id=host")
    ch = host_gw.remote_exec(socketserver)
    ch.send(bind)
    host, port = ch.receive()
    assert host == "127.0.0.1" and port > 0
    gw = group.makegateway(f"socket={host}:{port}")
    host_pid = host_gw.remote_exec("import os; channel.send(os.getpid())").receive()
    assert gw._rinfo().pid == host_pid
    gw.exit()
    gw.join(timeout=5.0)
    # exactly one connection is served; then the remote_exec ends and the port is closed
    ch.waitclose(timeout=10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_socketserver(group: Group, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    srv = Server(f"[::1]:{port}", cwd=tmp_path)
    try:
        gw = group.makegateway(f"socket=[::1]:{port}")
        assert gw.remoteaddress == f"[::1]:{port}"
        assert gw._rinfo().pid == srv.proc.pid
    finally:
        srv.stop()
