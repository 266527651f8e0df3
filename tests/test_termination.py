"""Termination: bounded terminate, kill escalation, no orphans, dead or missing interpreters."""

from __future__ import annotations

import os
import shutil
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
from execnet.multi import Group

PACKAGE_PARENT = str(Path(execnet.__file__).resolve().parent.parent)


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


STUBBORN = """
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
channel.send(os.getpid())
while True:
    time.sleep(0.05)
"""


def test_terminate_kills_a_stubborn_worker_after_the_timeout(group: Group) -> None:
    gw = group.makegateway("popen")
    pid = gw.remote_exec(STUBBORN).receive()
    popen = gw._io.popen
    start = time.monotonic()
    group.terminate(timeout=1.0)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 3.0, elapsed
    assert popen.returncode == -signal.SIGKILL
    assert process_gone(pid)
    assert not group


def test_terminate_kills_stubborn_workers_in_parallel(group: Group) -> None:
    pids = []
    for _ in range(3):
        gw = group.makegateway("popen")
        pids.append(gw.remote_exec(STUBBORN).receive())
    start = time.monotonic()
    group.terminate(timeout=1.0)
    assert time.monotonic() - start < 3.0
    assert wait_gone(pids, 1.0) == []


def test_terminate_of_idle_gateways_is_fast(group: Group) -> None:
    for _ in range(4):
        group.makegateway("popen")
    start = time.monotonic()
    group.terminate(timeout=10.0)
    assert time.monotonic() - start < 2.0


def test_exit_with_blocked_remote_returns_quickly(group: Group) -> None:
    gw = group.makegateway(f"popen//python={sys.executable}")
    gw.remote_exec("import time; time.sleep(10)")
    start = time.monotonic()
    gw.exit()
    assert time.monotonic() - start < 1.0


def test_terminate_ends_remote_blocked_in_receive(group: Group) -> None:
    gw = group.makegateway("popen")
    pid = gw.remote_exec("import os; channel.send(os.getpid())").receive()
    ch = gw.remote_exec("channel.receive()")
    group.terminate(timeout=10.0)
    assert process_gone(pid)
    del ch


def test_endmarker_on_remote_sigterm(group: Group) -> None:
    import queue

    gw = group.makegateway("popen")
    channel = gw.remote_exec("import os, time\nchannel.send(os.getpid())\ntime.sleep(100)")
    pid = channel.receive()
    os.kill(pid, signal.SIGTERM)
    q: queue.Queue[object] = queue.Queue()
    channel.setcallback(q.put, endmarker=999)
    assert q.get(timeout=10) == 999
    assert isinstance(channel._getremoteerror(), EOFError)


def test_no_orphans_when_the_master_is_sigkilled(tmp_path: Path) -> None:
    script = tmp_path / "master.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {PACKAGE_PARENT!r})
            import execnet
            group = execnet.Group()
            pids = []
            for spec in ["popen", "popen", "popen//python={sys.executable}", "popen"]:
                gw = group.makegateway(spec)
                pids.append(gw.remote_exec("import os; channel.send(os.getpid())").receive())
            # one worker is busy in a remote_exec, the others are idle
            group[0].remote_exec("channel.receive()")
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(60)
            """
        )
    )
    master = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        pids = [int(x) for x in line.split()]
        assert len(pids) == 4
        assert not any(process_gone(pid) for pid in pids)
        master.kill()
        master.wait()
        assert wait_gone(pids, 2.0) == []
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


def test_clean_shutdown_without_stderr_noise(tmp_path: Path) -> None:
    script = tmp_path / "clean.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {PACKAGE_PARENT!r})
            import execnet
            gw = execnet.makegateway("popen")
            ch1 = gw.remote_exec("channel.receive()")
            ch2 = gw.remote_exec("channel.receive()")
            execnet.default_group.terminate()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0
    assert out.stderr == ""


ATEXIT_SCRIPT = """
import sys, time
sys.path.insert(0, {parent!r})
import execnet
group = execnet.Group()
gw = group.makegateway("popen")
ch = gw.remote_exec(
    "import os, signal, time\\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
    "channel.send(os.getpid())\\n"
    "while True: time.sleep(0.05)"
)
print(ch.receive(), flush=True)
# falls off the end: the atexit hook must terminate (and here: kill) the worker
"""


def _interpreters() -> list[str]:
    """This interpreter, plus CPython >= 3.12 when installed (atexit refuses new threads)."""
    found = [sys.executable]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in ("3.12", "3.13"):
        candidates = sorted(pyenv.glob(f"{minor}*/bin/python{minor}"))
        path = str(candidates[-1]) if candidates else shutil.which(f"python{minor}")
        if path and "shims" not in path:
            found.append(path)
    return found


@pytest.mark.parametrize("python", _interpreters())
def test_atexit_terminates_and_kills(python: str, tmp_path: Path) -> None:
    probe = subprocess.run(
        [python, "-c", f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); import execnet"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import this execnet build")
    script = tmp_path / "atexit_kill.py"
    script.write_text(ATEXIT_SCRIPT.format(parent=PACKAGE_PARENT))
    start = time.monotonic()
    out = subprocess.run(
        [python, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    elapsed = time.monotonic() - start
    pid = int(out.stdout.split()[0])
    assert out.returncode == 0, out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr
    assert process_gone(pid)
    assert elapsed < 5.0


def test_missing_python_raises_file_not_found(group: Group) -> None:
    with pytest.raises(FileNotFoundError):
        group.makegateway("popen//python=/nonexistent/python-xyz")
    assert not group


def test_non_python_program_gives_a_dead_gateway(group: Group) -> None:
    gw = group.makegateway("popen//python=false")
    gw.join(timeout=5.0)
    assert not gw.hasreceiver()
    with pytest.raises(OSError) as excinfo:
        gw.remote_exec("channel.send(1)")
    assert "connection already closed" in str(excinfo.value)


@pytest.mark.parametrize("program", ["echo", "printf 0"])
def test_program_answering_something_else_is_an_assertion(group: Group, program: str) -> None:
    # The program exits without reading the bootstrap (larger than a pipe buffer here), but
    # what it printed decides, as with 2.1.2, whose smaller bootstrap fits in the pipe.
    with pytest.raises(AssertionError) as excinfo:
        group.makegateway(f"popen//python={program}")
    assert excinfo.value.args == ()
    group.terminate(5)


def test_remote_killed_gives_eoferror(group: Group) -> None:
    gw = group.makegateway("popen")
    pid = gw.remote_exec("import os; channel.send(os.getpid())").receive()
    ch = gw.remote_exec("channel.receive()")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EOFError):
        ch.receive(timeout=10)
    gw.join(timeout=5.0)
    assert not gw.hasreceiver()
    with pytest.raises(OSError):
        gw.remote_exec("pass")


def test_bad_handshake_is_an_assertion_and_the_process_is_reaped(
    group: Group, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    # a shell that records its pid, then becomes cat: it echoes the bootstrap line back
    spec = f"popen//python=sh -c 'echo $$ > {pidfile}; exec cat'"
    with pytest.raises(AssertionError):
        group.makegateway(spec)
    pid = int(pidfile.read_text())
    assert process_gone(pid)
    assert not group


def test_terminate_with_zero_timeout_leaves_no_process_running(group: Group) -> None:
    gws = [group.makegateway("popen") for _ in range(2)]
    pids = [gw.remote_exec(STUBBORN).receive() for gw in gws]
    start = time.monotonic()
    group.terminate(timeout=0)
    assert time.monotonic() - start < 3.0
    assert all(gw._io.popen.returncode is not None for gw in gws)
    assert all(process_gone(pid) for pid in pids)


@pytest.mark.parametrize("threads", [True, False], ids=["threads", "no-threads"])
def test_terminate_is_bounded_when_the_worker_stops_reading(
    group: Group, threads: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    # without threads: the path taken at interpreter shutdown on Python >= 3.12
    monkeypatch.setattr("execnet.multi._threads_available", lambda execmodel: threads)

    gw = group.makegateway("popen")
    ch = gw.remote_exec(
        """
        import os, time
        # the callback runs in the worker's receiver thread: the first item stalls it for good
        channel.setcallback(lambda item: time.sleep(3600))
        channel.send(os.getpid())
        time.sleep(3600)
        """
    )
    ch.setcallback(lambda item: None)
    ch.send("stall")

    def fill() -> None:
        try:
            while True:
                ch.send(b"x" * 65536)
        except OSError:
            pass

    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    time.sleep(1.0)
    assert filler.is_alive()  # blocked writing into the full pipe
    popen = gw._io.popen
    start = time.monotonic()
    group.terminate(timeout=1.0)
    assert time.monotonic() - start < 4.0
    assert popen.returncode == -signal.SIGKILL
    filler.join(timeout=5.0)
    assert not filler.is_alive()
