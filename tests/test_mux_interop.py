"""execnet._core.Mux as the master's transport, talking to real worker processes: our own
`gateway_base` worker and upstream execnet 2.1.2's (installed in the side folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from execnet import _core
from execnet.gateway_base import dumps_internal as dumps
from execnet.gateway_base import loads_internal as loads

WORKER = """
import sys
from execnet.gateway_base import get_execmodel, init_popen_io, serve
sys.stdout.write("1")
sys.stdout.flush()
serve(init_popen_io(get_execmodel("thread")), id="mux-worker")
"""

SOURCE = """
channel.send(42)
channel.send(b"x" * 70000)
channel.send(b"y" * (1 << 20))
for i in range(2000):
    channel.send((i, str(i), None, 1.5))
channel.send(channel.receive() * 2)
"""

END = object()


class Master:
    """The master's side of one gateway, driven through a Mux."""

    def __init__(self, env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert os.read(self.proc.stdout.fileno(), 1) == b"1"
        self.mux = _core.Mux(self.proc.stdout.fileno(), self.proc.stdin.fileno())
        self.proc.stdout.close()
        self.proc.stdin.close()
        self.queues: dict[int, Any] = {}
        self.dispatched: list[tuple[int, int]] = []
        self.exits: list[BaseException | None] = []
        self.exited = threading.Event()

    def channel(self, id: int) -> Any:
        q = self.queues[id] = self.mux.queue(id)
        return q

    def dispatch(self, code: int, channel: int, payload: bytes) -> None:
        self.dispatched.append((code, channel))
        q = self.queues.get(channel)
        if q is None:
            return
        if code == 4:
            q.put(loads(payload))
        elif code in (5, 6, 7):
            self.mux.unroute(channel)
            q.put(loads(payload) if code == 6 else END)

    def on_exit(self, exc: BaseException | None) -> None:
        self.exits.append(exc)
        self.exited.set()

    def close(self) -> None:
        self.mux.close_read()
        self.mux.close_write()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(params=["ours", "upstream"])
def master(request: pytest.FixtureRequest) -> Iterator[Master]:
    env = None
    if request.param == "upstream":
        import _upstream

        env = _upstream.upstream_env()
    m = Master(env)
    yield m
    m.close()


def test_remote_exec_status_and_terminate(master: Master) -> None:
    q = master.channel(1)
    master.mux.start(master.dispatch, master.on_exit)
    master.mux.send(3, 1, dumps((SOURCE, None, None, {})))
    assert q.get(timeout=30) == 42
    assert q.get(timeout=30) == b"x" * 70000
    assert q.get(timeout=30) == b"y" * (1 << 20)
    for i in range(2000):
        assert q.get(timeout=30) == (i, str(i), None, 1.5)
    master.mux.send(4, 1, dumps("ab"))
    assert q.get(timeout=30) == "abab"
    assert q.get(timeout=30) is END
    # Only the close needed Python's dispatch: the 1 MiB item was decoded by the reader thread,
    # everything else was queued raw.
    assert [f for f in master.dispatched if f[1] == 1] == [(5, 1)]
    stats = master.mux.stats()
    assert stats["frames_queued"] == 2 + 2000 + 1
    assert stats["frames_sent"] == 2

    status = master.channel(3)
    master.mux.send(0, 3, b"")
    info = status.get(timeout=30)
    assert info["numchannels"] >= 0 and info["execmodel"] == "thread"
    assert status.get(timeout=30) is END

    errors = master.channel(5)
    master.mux.send(3, 5, dumps(("raise ValueError('boom')", None, None, {})))
    text = errors.get(timeout=30)
    assert text.startswith("Traceback (most recent call last):") and "ValueError: boom" in text

    master.mux.send(2, 0, b"")
    assert master.exited.wait(30)
    assert master.mux.join(timeout=30)
    (exc,) = master.exits
    assert isinstance(exc, EOFError)
    assert str(exc) == "couldn't load message header, expected 9 bytes, got 0"
    assert master.proc.wait(timeout=30) == 0
