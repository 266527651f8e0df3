"""Lifecycle: no orphans, the cause of death, heartbeats (on our workers and upstream's)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from _procs import process_gone, wait_gone
from execnet.gateway import CauseOfDeath, Gateway, heartbeat_interval
from execnet.multi import Group
from execnet.xspec import XSpec

TIMEOUT = 10.0
PACKAGE_PARENT = str(Path(execnet.__file__).resolve().parent.parent)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


def remote_pid(gw: Gateway) -> int:
    return gw.remote_exec("import os; channel.send(os.getpid())").receive(TIMEOUT)  # type: ignore[no-any-return]


# -- no orphans ------------------------------------------------------------------------------


def test_no_orphans_when_a_master_with_8_gateways_is_sigkilled(tmp_path: Path) -> None:
    script = tmp_path / "master.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {PACKAGE_PARENT!r})
            import execnet
            group = execnet.Group()
            specs = ["popen"] * 6 + ["popen//python={sys.executable}", "popen//execmodel=main_thread_only"]
            pids = []
            for spec in specs:
                gw = group.makegateway(spec)
                pids.append(gw.remote_exec("import os; channel.send(os.getpid())").receive())
            # busy workers: in a receive, sleeping in C, in a loop, waiting on a lock
            group[0].remote_exec("channel.receive()")
            group[1].remote_exec("import time; time.sleep(600)")
            group[7].remote_exec("while True: pass")
            group[6].remote_exec("import threading; l = threading.Lock(); l.acquire(); l.acquire()")
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(600)
            """
        )
    )
    master = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout is not None
        pids = [int(x) for x in master.stdout.readline().split()]
        assert len(set(pids)) == 8
        assert not any(process_gone(pid) for pid in pids)
        master.kill()
        master.wait()
        start = time.monotonic()
        # idle workers go at once; busy ones are interrupted after 1 s, os._exit()ed 2 s later
        assert wait_gone(pids, 5.0) == []
        assert time.monotonic() - start < 4.0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


# -- cause of death --------------------------------------------------------------------------


def test_cause_is_none_while_alive(group: Group) -> None:
    gw = group.makegateway("popen")
    assert gw.cause_of_death is None
    assert gw.remote_exec("channel.send(1)").receive(TIMEOUT) == 1
    assert gw.cause_of_death is None


@pytest.mark.parametrize("native", [True, False], ids=["native-io", "pure-io"])
def test_cause_killed_by_signal_is_in_every_error(
    group: Group, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not native:
        monkeypatch.setattr("execnet.gateway_base.NATIVE_IO", False)
    gw = group.makegateway("popen")
    assert (gw._mux is not None) is native
    pid = remote_pid(gw)
    waiting = gw.remote_exec("channel.receive()")
    with_callback = gw.remote_exec("channel.receive()")
    ends: queue.Queue[object] = queue.Queue()
    with_callback.setcallback(ends.put, endmarker="END")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EOFError) as excinfo:
        waiting.receive(TIMEOUT)
    text = str(excinfo.value)
    # execnet's own text comes first (callers match on it), the cause is appended
    assert text.startswith("couldn't load message header, expected 9 bytes, got 0"), text
    assert text.endswith("(remote killed by SIGKILL)"), text
    assert ends.get(timeout=TIMEOUT) == "END"
    err = with_callback._getremoteerror()
    assert isinstance(err, EOFError) and "killed by SIGKILL" in str(err)
    assert gw.cause_of_death == CauseOfDeath("killed", -9, "SIGKILL")
    assert str(gw.cause_of_death) == "remote killed by SIGKILL"


def test_cause_exit_code(group: Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec("import os; os._exit(3)")
    with pytest.raises(EOFError, match=r"\(remote exited with code 3\)$"):
        ch.receive(TIMEOUT)
    with pytest.raises(EOFError, match="exited with code 3"):
        ch.waitclose(TIMEOUT)
    assert gw.cause_of_death == CauseOfDeath("exited", 3)


def test_cause_sigterm(group: Group) -> None:
    gw = group.makegateway("popen")
    pid = remote_pid(gw)
    ch = gw.remote_exec("channel.receive()")
    os.kill(pid, signal.SIGTERM)
    with pytest.raises(EOFError, match=r"remote killed by SIGTERM"):
        ch.receive(TIMEOUT)
    cause = gw.cause_of_death
    assert cause is not None and (cause.kind, cause.signal) == ("killed", "SIGTERM")


def test_cause_terminated_by_us(group: Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec("channel.receive()")
    group.terminate(timeout=5.0)
    assert gw.cause_of_death == CauseOfDeath("terminated", 0)
    assert str(gw.cause_of_death) == "terminated by this side, exit code 0"
    with pytest.raises(EOFError, match="terminated by this side"):
        ch.receive(TIMEOUT)


def test_cause_terminated_then_killed(group: Group) -> None:
    gw = group.makegateway("popen")
    gw.remote_exec(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "channel.send(1)\n"
        "while True: time.sleep(0.05)"
    ).receive(TIMEOUT)
    group.terminate(timeout=0.5)
    cause = gw.cause_of_death
    assert cause is not None
    assert (cause.kind, cause.returncode, cause.signal) == ("terminated", -9, "SIGKILL")
    assert str(cause) == "terminated by this side, then killed by SIGKILL"


def test_cause_socket_connection_lost(group: Group, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        assert "Entering Accept loop" in server.stdout.readline()
        gw = group.makegateway(f"socket=127.0.0.1:{port}")
        ch = gw.remote_exec("channel.receive()")
        assert gw.cause_of_death is None
        server.kill()
        with pytest.raises(EOFError, match=r"\(connection lost: end of stream, no exit status\)$"):
            ch.receive(TIMEOUT)
        cause = gw.cause_of_death
        assert cause is not None and cause.kind == "connection lost"
        assert cause.returncode is None
    finally:
        server.kill()
        server.wait()


def test_cause_via_gateway(group: Group) -> None:
    forwarder = group.makegateway("popen//id=fwd")
    gw = group.makegateway("popen//via=fwd")
    pid = remote_pid(gw)
    ch = gw.remote_exec("channel.receive()")
    os.kill(pid, signal.SIGKILL)
    # the forwarder is asked for the exit status of the process it started
    with pytest.raises(EOFError, match=r"\(remote killed by SIGKILL\)$"):
        ch.receive(TIMEOUT)
    assert gw.cause_of_death == CauseOfDeath("killed", -9, "SIGKILL")
    # a proxied gateway whose forwarder dies: no one can tell the status
    gw2 = group.makegateway("popen//via=fwd")
    ch2 = gw2.remote_exec("channel.receive()")
    os.kill(remote_pid(forwarder), signal.SIGKILL)
    with pytest.raises(EOFError, match="connection lost: no exit status from the forwarding"):
        ch2.receive(TIMEOUT)


def test_cause_ssh(group: Group, sshd) -> None:  # type: ignore[no-untyped-def]
    gw = group.makegateway(sshd.spec)
    ch = gw.remote_exec("import os; os._exit(7)")
    # ssh hands the remote command's exit status through
    with pytest.raises(EOFError, match=r"remote exited with code 7"):
        ch.receive(TIMEOUT)
    gw2 = group.makegateway(sshd.spec)
    pid = remote_pid(gw2)
    ch2 = gw2.remote_exec("channel.receive()")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EOFError, match=r"connection lost: ssh exited with code 255"):
        ch2.receive(TIMEOUT)


def test_ssh_worker_exits_when_its_connection_drops(group: Group, sshd) -> None:  # type: ignore[no-untyped-def]
    gw = group.makegateway(sshd.spec)
    pid = remote_pid(gw)  # the loopback sshd runs the worker on this machine
    ch = gw.remote_exec("import time; channel.send(1); time.sleep(600)")
    assert ch.receive(TIMEOUT) == 1
    os.kill(gw._io.popen.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    with pytest.raises(EOFError, match=r"connection lost: ssh killed by SIGKILL"):
        ch.receive(TIMEOUT)
    # the worker sees the end of its input, interrupts the sleeping code and exits
    assert wait_gone([pid], 5.0) == []


def test_cause_text_forms() -> None:
    assert str(CauseOfDeath("exited", 0)) == "remote exited with code 0"
    assert str(CauseOfDeath("killed", -11, "SIGSEGV")) == "remote killed by SIGSEGV"
    assert str(CauseOfDeath("connection lost")) == "connection lost"
    assert str(CauseOfDeath("terminated")) == "terminated by this side"
    cause = CauseOfDeath("unresponsive", detail="no reply")
    assert str(cause) == "remote unresponsive: no reply"
    with pytest.raises(AttributeError):
        cause.kind = "x"  # type: ignore[misc]


# -- heartbeats ------------------------------------------------------------------------------


def test_heartbeat_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECNET_HEARTBEAT", raising=False)
    assert heartbeat_interval(XSpec("popen")) is None
    assert heartbeat_interval(XSpec("popen//heartbeat=2.5")) == 2.5
    assert heartbeat_interval(XSpec("popen//heartbeat=0")) is None
    monkeypatch.setenv("EXECNET_HEARTBEAT", "4")
    assert heartbeat_interval(XSpec("popen")) == 4.0
    assert heartbeat_interval(XSpec("popen//heartbeat=1")) == 1.0
    for bad in (
        "popen//heartbeat=x",
        "popen//heartbeat=-1",
        "popen//heartbeat=nan",
        "popen//heartbeat",
    ):
        with pytest.raises(ValueError):
            heartbeat_interval(XSpec(bad))


def test_bad_heartbeat_value_starts_no_process(group: Group) -> None:
    before = _children()
    with pytest.raises(ValueError, match="heartbeat"):
        group.makegateway("popen//heartbeat=soon")
    assert not group
    assert _children() == before


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


COUNT_STATUS = """
import time
from execnet.gateway_base import Message
seen = []
name, handler = Message._types[Message.STATUS]
def counting(message, gateway):
    seen.append(1)
    handler(message, gateway)
Message._types[Message.STATUS] = (name, counting)
time.sleep(channel.receive())
channel.send(len(seen))
"""


@pytest.mark.parametrize(
    "spec, expected", [("popen", 0), ("popen//heartbeat=0.1", (2, 11))], ids=["off", "on"]
)
def test_heartbeats_are_off_by_default(
    group: Group, spec: str, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXECNET_HEARTBEAT", raising=False)
    gw = group.makegateway(spec)
    ch = gw.remote_exec(COUNT_STATUS)
    ch.send(1.0)
    count = ch.receive(TIMEOUT)
    if expected == 0:
        assert count == 0
    else:
        low, high = expected  # type: ignore[misc]
        assert low <= count <= high
    assert gw.cause_of_death is None


def test_heartbeat_from_environment(group: Group, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECNET_HEARTBEAT", "0.1")
    gw = group.makegateway("popen")
    ch = gw.remote_exec(COUNT_STATUS)
    ch.send(1.0)
    assert ch.receive(TIMEOUT) >= 4


def test_busy_but_alive_worker_is_not_unresponsive(group: Group) -> None:
    gw = group.makegateway("popen//heartbeat=0.1")
    # the main thread is busy; the receiver thread still answers
    ch = gw.remote_exec(
        "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\nchannel.send(1)"
    )
    assert ch.receive(TIMEOUT) == 1
    assert gw.cause_of_death is None
    assert gw in group


def stop_and_check_unresponsive(group: Group, gw: Gateway, pid: int, interval: float) -> None:
    waiting = gw.remote_exec("channel.receive()")
    with_callback = gw.remote_exec("channel.receive()")
    ends: queue.Queue[object] = queue.Queue()
    with_callback.setcallback(ends.put, endmarker="END")
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(EOFError) as excinfo:
            waiting.receive(TIMEOUT)
        elapsed = time.monotonic() - start
        # a request sent just before the stop may already be on its way: 2 to 4 intervals
        assert 2 * interval <= elapsed < 4 * interval + 1.5, elapsed
        assert "remote unresponsive: no reply to 3 heartbeats sent every" in str(excinfo.value)
        assert ends.get(timeout=TIMEOUT) == "END"
        assert "unresponsive" in str(with_callback._getremoteerror())
        cause = gw.cause_of_death
        assert cause is not None and cause.kind == "unresponsive"
        assert gw not in group
        with pytest.raises(OSError):
            gw.remote_exec("pass")
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("execmodel", ["thread", "gevent"])
def test_stopped_worker_is_declared_unresponsive_and_killed(execmodel: str) -> None:
    if execmodel == "gevent":
        pytest.importorskip("gevent")
    group = Group(execmodel=execmodel)
    try:
        gw = group.makegateway("popen//heartbeat=0.3")
        pid = remote_pid(gw)
        stop_and_check_unresponsive(group, gw, pid, 0.3)
        popen = gw._io.popen  # type: ignore[attr-defined]
        group.terminate(timeout=2.0)
        assert popen.returncode == -signal.SIGKILL
        assert process_gone(pid)
    finally:
        group.terminate(timeout=2.0)


UPSTREAM_WORKER = """
import sys
sys.path.insert(0, {upstream!r})
sys.stdin.buffer.readline()  # the shipped bootstrap line: this worker is upstream's instead
import execnet
assert execnet.__file__.startswith({upstream!r}), execnet.__file__
from execnet.gateway_base import get_execmodel, init_popen_io, serve
io = init_popen_io(get_execmodel("thread"))
io.write(b"1")
serve(io, id="upstream-worker")
"""


@pytest.fixture
def upstream_worker(tmp_path: Path) -> str:
    """A ``popen//python=`` spec whose worker is upstream execnet 2.1.2's ``gateway_base``."""
    import _upstream

    upstream = str(_upstream.ensure_upstream().resolve())
    script = tmp_path / "upstream_worker.py"
    script.write_text(UPSTREAM_WORKER.format(upstream=upstream))
    return f"popen//python={sys.executable} {script}"


def test_heartbeats_with_upstreams_worker(group: Group, upstream_worker: str) -> None:
    gw = group.makegateway(upstream_worker + "//heartbeat=0.2")
    ch = gw.remote_exec(
        "import execnet, os\nchannel.send((execnet.__file__, os.getpid()))\nchannel.receive()"
    )
    path, pid = ch.receive(TIMEOUT)
    assert ".side" in path  # really upstream's code
    time.sleep(1.5)  # several heartbeats, all answered
    assert gw.cause_of_death is None
    assert gw in group
    ch.send(None)
    ch.waitclose(TIMEOUT)
    stop_and_check_unresponsive(group, gw, pid, 0.2)
    group.terminate(timeout=2.0)
    assert process_gone(pid)


def test_unresponsive_socket_gateway(group: Group, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        assert "Entering Accept loop" in server.stdout.readline()
        gw = group.makegateway(f"socket=127.0.0.1:{port}//heartbeat=0.2")
        stop_and_check_unresponsive(group, gw, server.pid, 0.2)
        cause = gw.cause_of_death
        assert cause is not None and cause.returncode is None
    finally:
        server.kill()
        server.wait()


# -- worker exit -----------------------------------------------------------------------------

WORKER_EXIT_EFFECTS = """
import atexit, sys, threading, time
path = channel.receive()
def late():
    time.sleep(0.3)
    with open(path + ".thread", "w") as f:
        f.write("thread")
threading.Thread(target=late).start()  # not a daemon: the exit waits for it
atexit.register(lambda: open(path + ".atexit", "w").write("atexit"))
sys.stderr.write("unflushed-stderr-text")
"""


@pytest.mark.parametrize("full_exit", ["", "1"], ids=["fast-exit", "full-exit"])
def test_worker_exit_keeps_what_user_code_sees(
    group: Group, tmp_path: Path, full_exit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECNET_FULL_EXIT", full_exit)
    errfile = tmp_path / "stderr"
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {PACKAGE_PARENT!r})
            import execnet
            group = execnet.Group()
            gw = group.makegateway("popen")
            ch = gw.remote_exec({WORKER_EXIT_EFFECTS!r})
            ch.send({str(tmp_path / "effect")!r})
            ch.waitclose(10)
            popen = gw._io.popen
            group.terminate(timeout=10)
            print(popen.returncode, gw.cause_of_death)
            """
        )
    )
    with errfile.open("w") as err:
        out = subprocess.run(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True, timeout=60
        )
    assert out.returncode == 0
    assert out.stdout.strip() == "0 terminated by this side, exit code 0"
    assert (tmp_path / "effect.thread").read_text() == "thread"
    assert (tmp_path / "effect.atexit").read_text() == "atexit"
    assert errfile.read_text() == "unflushed-stderr-text"


SLOW_READER = """
import threading, time
done = threading.Event()
got = []
def slow(item):
    time.sleep(0.02)  # the receiver thread itself reads slowly
    got.append(len(item))
    if len(got) == 200:
        done.set()
channel.setcallback(slow)
channel.send("ready")
done.wait(60)
channel.send(len(got))
"""


def test_remote_reading_a_long_transfer_is_not_unresponsive(group: Group) -> None:
    gw = group.makegateway("popen//heartbeat=0.2")
    ch = gw.remote_exec(SLOW_READER)
    assert ch.receive(TIMEOUT) == "ready"
    # 200 items of 4 KB, 20 ms each: the pipe, the send buffer and the reader's buffer hold
    # ~48 of them (~1 s of reading), so a heartbeat request queued behind them waits longer
    # than its 3 intervals (0.6 s); the reader takes 64 KiB (~0.3 s of reading) at a time
    start = time.monotonic()
    for _ in range(200):
        ch.send(b"x" * 4096)
    assert time.monotonic() - start > 1.0  # the sends really waited for the slow reader
    assert ch.receive(TIMEOUT) == 200
    assert gw.cause_of_death is None
    assert gw in group
