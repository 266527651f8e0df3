"""Proxied gateways (``via=``): the process is started by, and tunnelled through, another gateway."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

import execnet
from execnet.gateway_io import ProxyIO
from execnet.multi import Group


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


def getpid(gw: execnet.Gateway) -> int:
    return gw.remote_exec("import os; channel.send(os.getpid())").receive()  # type: ignore[no-any-return]


def getppid(gw: execnet.Gateway) -> int:
    return gw.remote_exec("import os; channel.send(os.getppid())").receive()  # type: ignore[no-any-return]


def test_proxied_gateway_runs_in_a_child_of_the_forwarder(group: Group) -> None:
    forwarder = group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd//id=sub")
    assert isinstance(gw._io, ProxyIO)
    fpid = getpid(forwarder)
    assert getppid(gw) == fpid
    assert getpid(gw) not in (fpid, os.getpid())
    # the finished executions drop out of the count shortly after their channels close
    deadline = time.monotonic() + 5
    while gw.remote_status().numexecuting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.remote_status().numexecuting == 0


def test_proxied_gateway_uses_exec_bootstrap(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    ch = gw.remote_exec("import sys; channel.send(type(channel).__module__)")
    assert ch.receive() == "__main__"


def test_channels_and_large_data_through_the_proxy(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    ch = gw.remote_exec("for item in channel:\n    channel.send(item)\n")
    payloads = [b"x" * 1_000_000, "text", list(range(1000)), {"a": (1, 2.5, None)}]
    for item in payloads:
        ch.send(item)
    for item in payloads:
        assert ch.receive(timeout=30) == item
    ch.close()


def test_remote_errors_come_through(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    with pytest.raises(execnet.RemoteError) as excinfo:
        gw.remote_exec("raise ValueError('deep')").waitclose(timeout=10)
    assert "ValueError: deep" in str(excinfo.value)


def test_remoteaddress_of_proxied_popen_is_an_attribute_error(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    with pytest.raises(AttributeError):
        gw.remoteaddress  # noqa: B018
    # the control channel still works afterwards
    assert gw.remote_exec("channel.send(5)").receive() == 5
    assert not hasattr(gw, "remoteaddress")


def test_proxied_python_and_chdir(group: Group, tmp_path: object) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway(f"popen//via=fwd//python={sys.executable}//chdir={tmp_path}")
    info = gw._rinfo()
    assert info.executable == sys.executable
    assert info.cwd == str(tmp_path)


def test_chained_proxies(group: Group) -> None:
    group.makegateway("popen//id=a")
    group.makegateway("popen//via=a//id=b")
    c = group.makegateway("popen//via=b//id=c")
    ch = c.remote_exec("channel.send(channel.receive() * 3)")
    ch.send(3)
    assert ch.receive(timeout=10) == 9
    pids = [getpid(group[name]) for name in "abc"]
    assert len(set(pids)) == 3
    assert getppid(group["c"]) == pids[1]
    group.terminate(timeout=5.0)
    assert not group


def test_terminate_proxied_gateway_process_exits(group: Group) -> None:
    fwd = group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    pid = getpid(gw)
    fwd_popen = fwd._io.popen
    start = time.monotonic()
    group.terminate(timeout=5.0)
    assert time.monotonic() - start < 3.0
    assert fwd_popen.returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("proxied worker still running")


def test_proxied_gateway_exit_and_wait(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    gw.exit()
    gw.join(timeout=5.0)
    assert not gw.hasreceiver()
    assert gw._io.wait() == 0


def test_kill_a_stubborn_proxied_worker(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    ch = gw.remote_exec(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "channel.send(1)\n"
        "while True: time.sleep(0.05)\n"
    )
    assert ch.receive() == 1
    start = time.monotonic()
    group.terminate(timeout=1.0)
    assert time.monotonic() - start < 4.0
    assert not group


def test_via_unknown_gateway_is_a_key_error(group: Group) -> None:
    with pytest.raises(KeyError):
        group.makegateway("popen//via=nothere")


def test_forwarder_cannot_start_the_process(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    with pytest.raises(execnet.RemoteError) as excinfo:
        group.makegateway("popen//via=fwd//python=/nonexistent/python")
    assert "FileNotFoundError" in str(excinfo.value)
    assert [gw.id for gw in group] == ["fwd"]
    # the forwarder is still usable
    assert group.makegateway("popen//via=fwd").remote_exec("channel.send(3)").receive() == 3


def test_proxied_non_python_gives_a_dead_gateway(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd//python=false")
    gw.join(timeout=5.0)
    assert not gw.hasreceiver()
    with pytest.raises(OSError):
        gw.remote_exec("pass")


def test_proxied_bad_handshake_is_reported(group: Group) -> None:
    group.makegateway("popen//id=fwd")
    with pytest.raises(execnet.RemoteError) as excinfo:
        group.makegateway("popen//via=fwd//python=sh -c 'exec cat'")
    assert "AssertionError" in str(excinfo.value)
    assert [gw.id for gw in group] == ["fwd"]


def _other_pythons() -> list[str]:
    """Other CPython versions installed with pyenv (the shipped sources must run there)."""
    from pathlib import Path

    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for minor in ("3.8", "3.9", "3.10", "3.12", "3.13"):
        candidates = sorted(root.glob(f"{minor}.*/bin/python{minor}"))
        if candidates:
            found.append(str(candidates[-1]))
    return found or ["none"]


@pytest.mark.parametrize("python", _other_pythons())
def test_forwarder_on_another_python(group: Group, python: str) -> None:
    if python == "none":
        pytest.skip("no other Python versions installed")
    fwd = group.makegateway(f"popen//python={python}//id=fwd")
    version = fwd.remote_exec("import sys; channel.send(sys.version_info[:2])").receive()
    sub = group.makegateway("popen//via=fwd")
    check = "import sys; channel.send(sys.version_info[:2])"
    assert sub.remote_exec(check).receive() == version
    sock = group.makegateway("socket//installvia=fwd")
    assert sock.remote_exec(check).receive() == version
    group.terminate(timeout=5.0)
    assert not group
