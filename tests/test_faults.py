"""Faults: dying remotes, dying masters, corrupt wire data, bad values, interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from _procs import process_gone
from execnet.gateway import Gateway

TIMEOUT = 10.0
PKGPARENT = str(Path(execnet.__file__).parent.parent)


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    g = execnet.Group()
    yield g
    g.terminate(timeout=2)


@pytest.fixture
def gw(group: execnet.Group) -> Gateway:
    return group.makegateway("popen")


def wait_gone(pid: int, timeout: float) -> float:
    start = time.monotonic()
    while not process_gone(pid):
        if time.monotonic() - start > timeout:
            pytest.fail(f"process {pid} still alive after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_sigkill_mid_stream(gw: Gateway, group: execnet.Group) -> None:
    q = gw.execmodel.queue.Queue()
    ch = gw.remote_exec(
        "import os\nchannel.send(os.getpid())\ni = 0\nwhile 1:\n    channel.send(i); i += 1"
    )
    pid = ch.receive(TIMEOUT)
    assert ch.receive(TIMEOUT) == 0
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    ch.setcallback(q.put, endmarker="END")
    item = None
    while item != "END":
        item = q.get(timeout=TIMEOUT)
    assert time.monotonic() - killed < 1.0
    err = ch._getremoteerror()
    assert isinstance(err, EOFError)
    assert "couldn't load message" in str(err) or "expected" in str(err)
    gw.join(TIMEOUT)
    assert not gw.hasreceiver()
    with pytest.raises(OSError, match="connection already closed"):
        gw.remote_exec("pass")


def test_receive_after_remote_killed_raises_eof(gw: Gateway) -> None:
    ch = gw.remote_exec("import os, time\nchannel.send(os.getpid())\ntime.sleep(100)")
    pid = ch.receive(TIMEOUT)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)
    with pytest.raises(EOFError):
        ch.waitclose(TIMEOUT)
    assert not ch.isclosed()  # "sendonly", as upstream
    with pytest.raises(OSError, match=r"cannot send \(already closed\?\)"):
        ch.send(1)


def test_remote_os_exit(gw: Gateway) -> None:
    ch = gw.remote_exec("import os; os._exit(3)")
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)
    gw.join(TIMEOUT)
    assert gw._io.wait() == 3  # type: ignore[attr-defined]


def test_remote_systemexit_keeps_gateway_usable(gw: Gateway) -> None:
    ch = gw.remote_exec("import sys; sys.exit('bye')")
    with pytest.raises(execnet.RemoteError, match="SystemExit: bye"):
        ch.receive(TIMEOUT)
    assert gw.remote_exec("channel.send(5)").receive(TIMEOUT) == 5


def test_garbage_from_worker_ends_gateway_clearly(gw: Gateway) -> None:
    ch = gw.remote_exec(
        "channel.send(1); channel.gateway._io.write(b'this is not a frame\\n'); channel.receive()"
    )
    assert ch.receive(TIMEOUT) == 1
    with pytest.raises(EOFError, match="wire protocol corruption"):
        ch.receive(TIMEOUT)
    gw.join(TIMEOUT)
    assert not gw.hasreceiver()


def test_garbage_payload_from_worker_ends_gateway_clearly(gw: Gateway) -> None:
    # a well-formed frame whose payload is not serializer data
    ch = gw.remote_exec(
        "from execnet.gateway_base import Message\n"
        "channel.gateway._send(Message.CHANNEL_DATA, channel.id, b'Zgarbage')\n"
        "channel.receive()"
    )
    with pytest.raises(EOFError, match="receiver failed: LoadError: unknown opcode"):
        ch.receive(TIMEOUT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_garbage_to_worker_ends_it(gw: Gateway) -> None:
    ch = gw.remote_exec("import os; channel.send(os.getpid()); channel.receive()")
    pid = ch.receive(TIMEOUT)
    gw._io.write(b"\x7fgarbage garbage garbage")  # type: ignore[attr-defined]
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)
    assert wait_gone(pid, TIMEOUT) < 5


def test_non_serializable_item_is_dumperror_and_channel_stays_usable(gw: Gateway) -> None:
    ch = gw.remote_exec("channel.send(channel.receive() * 2)")
    with pytest.raises(execnet.DumpError, match="can't serialize <class 'object'>"):
        ch.send([1, object()])
    ch.send(21)
    assert ch.receive(TIMEOUT) == 42


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_worker_exits_promptly_when_master_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, os, signal
        sys.path.insert(0, {PKGPARENT!r})
        import execnet
        gw = execnet.makegateway("popen")
        ch = gw.remote_exec("import os, time\\nchannel.send(os.getpid())\\ntime.sleep(100)")
        print(ch.receive(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    worker_pid = int(p.stdout.readline())
    p.wait(TIMEOUT)
    assert wait_gone(worker_pid, TIMEOUT) < 4


def test_interpreter_exit_with_live_gateways_and_callbacks() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {PKGPARENT!r})
        import execnet
        received = []
        gws = [execnet.makegateway("popen") for _ in range(3)]
        channels = []
        for gw in gws:
            ch = gw.remote_exec("import time\\nwhile 1:\\n    channel.send(1)\\n    time.sleep(0.001)")
            ch.setcallback(received.append, endmarker=None)
            channels.append(ch)
        blocked = gws[0].remote_exec("channel.receive()")
        while len(received) < 30:
            pass
        print("exiting", flush=True)
        """
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "exiting\n"
    assert out.stderr == ""
    assert time.monotonic() - start < 15


def test_exit_while_remote_blocks_returns_quickly(gw: Gateway) -> None:
    gw.remote_exec("import time; time.sleep(30)")
    start = time.monotonic()
    gw.exit()
    assert time.monotonic() - start < 1


def test_terminate_kills_unresponsive_worker(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec(
        "import signal, os\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nchannel.send(os.getpid())\nwhile 1: pass"
    )
    ch.receive(TIMEOUT)
    start = time.monotonic()
    group.terminate(timeout=0.5)
    assert time.monotonic() - start < 3
    assert gw._io.wait() == -signal.SIGKILL  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_sees_a_dead_gateway_and_parent_is_unaffected(gw: Gateway) -> None:
    ch = gw.remote_exec("while 1:\n    channel.send(channel.receive())")
    ch.send(1)
    assert ch.receive(TIMEOUT) == 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            try:
                ch.receive(5)
            except EOFError as e:
                ok1 = "forked process" in str(e)
            else:
                ok1 = False
            try:
                ch.send(2)
            except OSError:
                ok2 = True
            else:
                ok2 = False
            try:
                gw.remote_exec("pass")
            except OSError as e:
                ok3 = "connection already closed" in str(e)
            else:
                ok3 = False
            os.write(w, repr((ok1, ok2, ok3, gw.hasreceiver())).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert report == "(True, True, True, False)"
    ch.send(3)
    assert ch.receive(TIMEOUT) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_inside_remote_code_does_not_leave_a_hanging_child(gw: Gateway) -> None:
    ch = gw.remote_exec(
        """
        import os, time
        pid = os.fork()
        if pid:
            deadline = time.time() + 10
            while time.time() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.02)
            else:
                os.kill(pid, 9)
                status = -1
            channel.send(status)
        """
    )
    # the child's copy of the execution ends, its worker loop leaves and it exits 0
    assert ch.receive(TIMEOUT) == 0
    ch.waitclose(TIMEOUT)
    assert gw.remote_exec("channel.send(7)").receive(TIMEOUT) == 7


@pytest.mark.slow
def test_terminate_interrupts_busy_worker_after_grace_period(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec("import time\nchannel.send(1)\ntime.sleep(100)")
    assert ch.receive(TIMEOUT) == 1
    start = time.monotonic()
    group.terminate(timeout=None)  # never kills: the worker interrupts itself after 5 s
    elapsed = time.monotonic() - start
    assert 4.5 < elapsed < 9
    assert gw._io.wait() == 0  # type: ignore[attr-defined]
    # the worker's channels went "sendonly" at the terminate message: no close reaches us
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)
