"""Stress: many lifecycles without growth, many gateways, many senders, fork and shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from _procs import process_gone
from execnet.gateway import Gateway
from execnet.multi import Group

TIMEOUT = 20.0
PACKAGE_PARENT = str(Path(execnet.__file__).resolve().parent.parent)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settle(expected_tasks: int, timeout: float = 5.0) -> int:
    """The thread count once finished threads are gone (they end just after terminate)."""
    deadline = time.monotonic() + timeout
    count = task_count()
    while count > expected_tasks and time.monotonic() < deadline:
        time.sleep(0.005)
        count = task_count()
    return count


# A process serving many socket gateways from threads, with the imported worker runtime: the
# master side of every cycle is complete (socket IO, native reader, channels, terminate), while
# a cycle costs milliseconds instead of an interpreter start.
WORKER_FARM = """
import socket, sys, threading
sys.path.insert(0, {parent!r})
from execnet.gateway_base import get_execmodel, serve
from execnet.gateway_socket import SocketIO

def handle(conn):
    line = b""
    while not line.endswith(b"\\n"):  # the bootstrap line: this worker runs imported code
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        line += data
    io = SocketIO(conn, get_execmodel("thread"))
    io.write(b"1")
    try:
        serve(io, id="farm")
    finally:
        conn.close()

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


@pytest.fixture
def farm() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_FARM.format(parent=PACKAGE_PARENT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"socket=127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def cycle(group: Group, spec: str, i: int) -> None:
    gw = group.makegateway(spec)
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(i)
    assert ch.receive(TIMEOUT) == i + 1
    ch.waitclose(TIMEOUT)
    group.terminate(timeout=5.0)
    assert not group


@pytest.mark.slow
def test_1000_gateway_lifecycles_do_not_grow(group: Group, farm: str) -> None:
    samples = {}
    for i in range(1000):
        cycle(group, farm, i)
        if i in (99, 999):
            samples[i] = (settle(samples[99][0] if i == 999 else 1), fd_count(), rss_bytes())
    tasks100, fds100, rss100 = samples[99]
    tasks1000, fds1000, rss1000 = samples[999]
    assert tasks1000 <= tasks100, (tasks100, tasks1000)
    assert fds1000 <= fds100, (fds100, fds1000)
    # 900 cycles: a leak of 2 KB per cycle would show; allocator noise stays well below
    assert rss1000 - rss100 < 2 * 1024 * 1024, (rss100, rss1000)


@pytest.mark.slow
def test_popen_lifecycles_do_not_grow(group: Group) -> None:
    samples = []
    for i in range(60):
        cycle(group, "popen", i)
        if i in (19, 59):
            samples.append((settle(samples[0][0] if samples else 1), fd_count()))
    assert samples[1][0] <= samples[0][0], samples
    assert samples[1][1] <= samples[0][1], samples


@pytest.mark.slow
def test_64_gateways_at_once(group: Group) -> None:
    fds_before = fd_count()
    gateways: list[Gateway] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def make(n: int) -> None:
        try:
            for _ in range(n):
                gw = group.makegateway("popen")
                with lock:
                    gateways.append(gw)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(8,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(group) == 64
    mch = group.remote_exec("import os; channel.send(os.getpid())")
    pids = mch.receive_each()
    assert len(set(pids)) == 64
    group.terminate(timeout=10.0)
    assert all(process_gone(pid) for pid in pids)
    assert all(gw._io.popen.returncode == 0 for gw in gateways)  # type: ignore[attr-defined]
    assert fd_count() <= fds_before


CHECK_ORDER = """
import hashlib
expected = {}
count = 0
for item in channel:
    if item is None:
        break
    tid, seq, payload = item
    assert seq == expected.get(tid, 0), ("out of order", tid, seq, expected.get(tid))
    expected[tid] = seq + 1
    size = (tid * 7919 + seq * 104729) % 70000 + (300000 if seq % 10 == 9 else 0)
    want = hashlib.sha256(b"%d-%d" % (tid, seq)).digest() * (size // 32 + 1)
    assert payload == want[:size], ("corrupt", tid, seq)
    count += 1
channel.send((count, sorted(expected.items())))
"""


@pytest.mark.parametrize("native", [True, False], ids=["native-io", "pure-io"])
def test_100_threads_sending_on_one_gateway(
    group: Group, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    if not native:
        monkeypatch.setattr("execnet.gateway_base.NATIVE_IO", False)
    gw = group.makegateway("popen")
    ch = gw.remote_exec(CHECK_ORDER)
    per_thread = 20
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def sender(tid: int) -> None:
        try:
            barrier.wait()
            for seq in range(per_thread):
                # sizes vary from a few bytes to above the native reader's 256 KiB threshold
                size = (tid * 7919 + seq * 104729) % 70000 + (300000 if seq % 10 == 9 else 0)
                payload = hashlib.sha256(b"%d-%d" % (tid, seq)).digest() * (size // 32 + 1)
                ch.send((tid, seq, payload[:size]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(tid,)) for tid in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ch.send(None)
    count, seen = ch.receive(60)
    assert count == 100 * per_thread
    assert seen == [(tid, per_thread) for tid in range(100)]
    ch.waitclose(TIMEOUT)


def test_callback_that_raises_closes_its_channel_only(group: Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec(
        "channel.send(1)\n"
        "try:\n"
        "    channel.receive()\n"
        "except Exception as e:\n"
        "    import execnet\n"
        "    channel.gateway._trace('remote saw', e)\n"
    )
    other = gw.remote_exec("channel.send(channel.receive())")

    def callback(item: object) -> None:
        raise ValueError("callback failed on purpose")

    ch.setcallback(callback)
    with pytest.raises(execnet.RemoteError, match="callback failed on purpose"):
        ch.waitclose(TIMEOUT)
    # the gateway and its other channels go on
    other.send(5)
    assert other.receive(TIMEOUT) == 5
    assert gw.remote_exec("channel.send(6)").receive(TIMEOUT) == 6
    assert gw.cause_of_death is None


def test_callback_that_blocks_delays_but_terminate_stays_bounded(group: Group) -> None:
    gw = group.makegateway("popen")
    release = threading.Event()
    entered = threading.Event()

    def callback(item: object) -> None:
        entered.set()
        release.wait(30)

    ch = gw.remote_exec("import os\nchannel.send(os.getpid())\nchannel.receive()")
    ch.setcallback(callback)
    assert entered.wait(TIMEOUT)
    pid = gw._io.popen.pid  # type: ignore[attr-defined]
    start = time.monotonic()
    group.terminate(timeout=1.0)
    elapsed = time.monotonic() - start
    try:
        assert elapsed < 4.0, elapsed
        assert process_gone(pid)
    finally:
        release.set()
    gw.join(TIMEOUT)
    assert not gw.hasreceiver()


FORK_SCRIPT = """
import os, sys, threading, time
sys.path.insert(0, {parent!r})
import execnet
tasks = len(os.listdir("/proc/self/task"))
threads = [t.name for t in threading.enumerate()]
print("before", tasks, threads, flush=True)
gw = execnet.makegateway("popen")
ch = gw.remote_exec("while 1:\\n    channel.send(channel.receive())")
ch.send(1)
assert ch.receive(10) == 1
pid = os.fork()
if pid == 0:
    # the child: a dead copy of the gateway; falling off the end runs the atexit hooks
    try:
        ch.send(2)
    except OSError:
        print("child-send-refused", flush=True)
    sys.exit(0)
start = time.monotonic()
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), round(time.monotonic() - start, 2), flush=True)
ch.send(3)
print("parent", ch.receive(10), flush=True)
"""


def test_fork_with_live_gateways(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT.format(parent=PACKAGE_PARENT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    # importing execnet starts no thread: nothing to be caught in a fork
    assert lines[0] == "before 1 ['MainThread']"
    assert lines[1] == "child-send-refused"
    child, code, seconds = lines[2].split()
    assert (child, code) == ("child", "0")
    assert float(seconds) < 5.0
    assert lines[3] == "parent 3"


SHUTDOWN_SCRIPT = """
import sys, threading
sys.path.insert(0, {parent!r})
import execnet
received = []
gws = [execnet.makegateway("popen//heartbeat=0.5") for _ in range(3)]
gws.append(execnet.makegateway("popen"))
for gw in gws:
    ch = gw.remote_exec("import time\\nwhile 1:\\n    channel.send(1)\\n    time.sleep(0.001)")
    ch.setcallback(received.append, endmarker=None)
blocked = gws[0].remote_exec("channel.receive()")
# a daemon thread waits in receive() while the interpreter shuts down
def wait_for_end():
    try:
        blocked.receive()
    except EOFError:
        pass
threading.Thread(target=wait_for_end, daemon=True).start()
slow = gws[1].remote_exec("import time\\ntime.sleep(600)")
while len(received) < 50:
    pass
print("exiting", flush=True)
"""


@pytest.mark.parametrize("native", ["1", "0"], ids=["native-io", "pure-io"])
def test_interpreter_shutdown_with_live_gateways(native: str) -> None:
    env = dict(os.environ, EXECNET_NO_NATIVE_IO="0" if native == "1" else "1")
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT.format(parent=PACKAGE_PARENT)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "exiting\n"
    assert out.stderr == ""
    # the atexit hook waits at most 1 s, then kills the sleeping worker
    assert time.monotonic() - start < 10


def test_no_thread_before_the_first_gateway() -> None:
    code = (
        f"import sys, os, threading; sys.path.insert(0, {PACKAGE_PARENT!r})\n"
        "import execnet, execnet.gateway_base, execnet.multi\n"
        "g = execnet.Group()\n"
        "print(len(os.listdir('/proc/self/task')), len(threading.enumerate()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_socket_farm_sanity(farm: str, group: Group) -> None:
    # the farm's workers are real gateways in another process, one thread each
    gw1 = group.makegateway(farm)
    gw2 = group.makegateway(farm)
    pid1, t1 = gw1.remote_exec(GET_PID_THREAD).receive(TIMEOUT)
    pid2, t2 = gw2.remote_exec(GET_PID_THREAD).receive(TIMEOUT)
    assert pid1 == pid2 != os.getpid()
    assert t1 != t2


GET_PID_THREAD = "import os, threading\nchannel.send((os.getpid(), threading.get_ident()))"
