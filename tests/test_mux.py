"""execnet._core.Mux and ChannelQueue over real pipes and sockets, with a Python thread as peer."""

from __future__ import annotations

import gc
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execnet import _core
from execnet.gateway_base import dumps_internal as dumps
from execnet.gateway_base import loads_internal as loads

HEADER = struct.Struct("!bii")
CHANNEL_DATA = 4
CHANNEL_CLOSE = 5


def frame(code: int, channel: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(code, channel, len(payload)) + payload


def read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError(len(buf))
        buf += chunk
    return buf


def read_frames(fd: int) -> Iterator[tuple[int, int, bytes]]:
    while True:
        try:
            head = read_exact(fd, HEADER.size)
        except EOFError:
            return
        code, channel, length = HEADER.unpack(head)
        yield code, channel, read_exact(fd, length)


class Pipes:
    """Two pipes: the peer writes into `peer_w` (Mux reads) and reads from `peer_r`."""

    def __init__(self) -> None:
        self.mux_r, self.peer_w = os.pipe()
        self.peer_r, self.mux_w = os.pipe()
        self.mux = _core.Mux(self.mux_r, self.mux_w)
        # The Mux holds duplicates; our copies of its ends are not needed any more.
        os.close(self.mux_r)
        os.close(self.mux_w)

    def close(self) -> None:
        self.mux.close_read()
        self.mux.close_write()
        for fd in (self.peer_w, self.peer_r):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    p.close()
    assert p.mux.join(timeout=10)


class Recorder:
    """dispatch/on_exit pair that records calls."""

    def __init__(self, handler: Callable[[int, int, bytes], None] | None = None) -> None:
        self.frames: list[tuple[int, int, bytes]] = []
        self.exits: list[BaseException | None] = []
        self.exited = threading.Event()
        self.handler = handler

    def dispatch(self, code: int, channel: int, payload: bytes) -> None:
        self.frames.append((code, channel, payload))
        if self.handler is not None:
            self.handler(code, channel, payload)

    def on_exit(self, exc: BaseException | None) -> None:
        self.exits.append(exc)
        self.exited.set()


# --- sending ---------------------------------------------------------------------------------


def test_send_writes_exact_frames(pipes: Pipes) -> None:
    pipes.mux.send(3, 1, b"abc")
    pipes.mux.send(2, 0, b"")
    assert read_exact(pipes.peer_r, 12) == b"\x03\x00\x00\x00\x01\x00\x00\x00\x03abc"
    assert read_exact(pipes.peer_r, 9) == b"\x02" + bytes(8)
    # Larger than the pipe buffer: completes only because the peer reads concurrently.
    big = os.urandom(1 << 20)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(read_exact(pipes.peer_r, 9 + len(big))))
    t.start()
    pipes.mux.send(4, -7, big)
    t.join(timeout=30)
    assert got == [HEADER.pack(4, -7, len(big)) + big]
    stats = pipes.mux.stats()
    assert (stats["frames_sent"], stats["bytes_sent"]) == (3, 12 + 9 + 9 + len(big))


def test_send_rejects_bad_arguments(pipes: Pipes) -> None:
    with pytest.raises(ValueError, match="message code 8"):
        pipes.mux.send(8, 1, b"")
    with pytest.raises(ValueError, match="message code -1"):
        pipes.mux.send(-1, 1, b"")
    with pytest.raises(OverflowError):
        pipes.mux.send(4, 2**31, b"")
    with pytest.raises(TypeError):
        pipes.mux.send(4, 1, "text")  # type: ignore[arg-type]


def test_send_after_close_write_and_to_dead_peer(pipes: Pipes) -> None:
    pipes.mux.close_write()
    pipes.mux.close_write()
    with pytest.raises(OSError, match="write side is closed"):
        pipes.mux.send(4, 1, b"x")

    other = Pipes()
    try:
        os.close(other.peer_r)
        with pytest.raises(BrokenPipeError):
            other.mux.send(4, 1, b"x")
    finally:
        other.close()


@pytest.mark.parametrize("transport", ["pipe", "socket"])
def test_concurrent_senders_never_interleave(transport: str) -> None:
    if transport == "pipe":
        read_side, write_side = os.pipe()
        mux = _core.Mux(read_side, write_side)
        os.close(write_side)
        peer_fd = read_side
        closers: list[Callable[[], None]] = [lambda: os.close(read_side)]
    else:
        a, b = socket.socketpair()
        mux = _core.Mux(a.fileno(), a.fileno(), is_socket=True)
        a.close()
        peer_fd = b.fileno()
        closers = [b.close]

    nthreads, per_thread = 50, 40
    sizes = [0, 1, 100, 4000, 4096, 5000, 70000]
    received: list[tuple[int, int, bytes]] = []

    def peer() -> None:
        received.extend(read_frames(peer_fd))

    reader = threading.Thread(target=peer)
    reader.start()
    barrier = threading.Barrier(nthreads)

    def sender(tid: int) -> None:
        barrier.wait()
        for seq in range(per_thread):
            size = sizes[(tid + seq) % len(sizes)]
            body = struct.pack("!ii", tid, seq) * (size // 8 + 1)
            mux.send(CHANNEL_DATA, tid, body[:size])

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mux.close_write()
    reader.join(timeout=60)
    assert not reader.is_alive()
    for close in closers:
        close()
    mux.close_read()

    assert len(received) == nthreads * per_thread
    next_seq = [0] * nthreads
    for code, tid, payload in received:
        assert code == CHANNEL_DATA
        seq = next_seq[tid]
        size = sizes[(tid + seq) % len(sizes)]
        assert payload == (struct.pack("!ii", tid, seq) * (size // 8 + 1))[:size]
        next_seq[tid] += 1
    assert next_seq == [per_thread] * nthreads


def test_socket_close_write_shuts_down_while_caller_keeps_socket() -> None:
    a, b = socket.socketpair()
    try:
        mux = _core.Mux(a.fileno(), a.fileno())  # detected as a socket
        mux.send(4, 1, b"hi")
        mux.close_write()
        b.settimeout(10)
        data = b""
        while chunk := b.recv(100):
            data += chunk
        assert data == frame(4, 1, b"hi")
        # `a` itself is still open and usable for reading.
        b.sendall(b"x")
        assert a.recv(1) == b"x"
        mux.close_read()
    finally:
        a.close()
        b.close()


# --- reading, routing, dispatch --------------------------------------------------------------


def test_routed_and_dispatched_frames_keep_wire_order(pipes: Pipes) -> None:
    end = object()
    q = pipes.mux.queue(1, (True, False))

    def handler(code: int, channel: int, payload: bytes) -> None:
        assert channel == 1
        if code == CHANNEL_DATA:
            q.put(("dispatched", payload))
        elif code == CHANNEL_CLOSE:
            q.put(end)

    rec = Recorder(handler)
    pipes.mux.start(rec.dispatch, rec.on_exit)
    stream = b"".join(
        [
            frame(4, 1, dumps(1)),
            frame(4, 1, dumps("two")),
            frame(4, 1, b"B\x00\x00\x00\x03Q"),  # a channel reference: needs Python
            frame(4, 1, dumps((3, b"\xff", None, 1.5))),
            frame(5, 1),
        ]
    )
    os.write(pipes.peer_w, stream)
    got = [q.get(timeout=10) for _ in range(5)]
    assert got == [1, "two", ("dispatched", b"B\x00\x00\x00\x03Q"), (3, b"\xff", None, 1.5), end]
    assert [c for c, _, _ in rec.frames] == [4, 5]
    assert q.empty() and q.qsize() == 0
    assert pipes.mux.stats() == {
        "frames_received": 5,
        "bytes_received": len(stream),
        "frames_queued": 3,
        "frames_dispatched": 2,
        "frames_sent": 0,
        "bytes_sent": 0,
        "frames_buffered": 0,
        "batches_written": 0,
        "bytes_written": 0,
        "frames_called_back": 0,
    }


def test_unrouted_and_unknown_channels_go_to_dispatch(pipes: Pipes) -> None:
    rec = Recorder()
    q = pipes.mux.queue(3)
    pipes.mux.unroute(3)
    pipes.mux.unroute(99)  # never routed: no error
    pipes.mux.start(rec.dispatch, rec.on_exit)
    os.write(pipes.peer_w, frame(4, 3, dumps(1)) + frame(4, 5, dumps(2)) + frame(0, 7))
    os.close(pipes.peer_w)
    assert rec.exited.wait(10)
    assert rec.frames == [(4, 3, dumps(1)), (4, 5, dumps(2)), (0, 7, b"")]
    assert q.empty()


def test_unroute_while_data_flows_keeps_order(pipes: Pipes) -> None:
    n = 20000
    q = pipes.mux.queue(1)
    rec = Recorder(lambda code, ch, payload: q.put(loads(payload)))
    pipes.mux.start(rec.dispatch, rec.on_exit)

    def peer() -> None:
        for i in range(0, n, 100):
            os.write(pipes.peer_w, b"".join(frame(4, 1, dumps(j)) for j in range(i, i + 100)))

    t = threading.Thread(target=peer)
    t.start()
    first = [q.get(timeout=10) for _ in range(50)]
    pipes.mux.unroute(1)
    rest = [q.get(timeout=10) for _ in range(n - 50)]
    t.join()
    assert first + rest == list(range(n))
    # Some frames took each path.
    assert 0 < len(rec.frames) < n


def test_strconfig_applies_to_items_arriving_after_the_change(pipes: Pipes) -> None:
    q = pipes.mux.queue(1, (True, False))
    assert q.strconfig == (True, False)
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    os.write(pipes.peer_w, frame(4, 1, dumps("a")))
    assert q.get(timeout=10) == "a"
    q.strconfig = (False, True)
    assert q.strconfig == (False, True)
    os.write(pipes.peer_w, frame(4, 1, dumps("b")))
    assert q.get(timeout=10) == b"b"


def test_large_payloads_are_decoded_by_the_reader(pipes: Pipes) -> None:
    # 256 KiB and more: decoded in the reader thread, as upstream's receiver does, and queued
    # without a call to dispatch; smaller ones are queued raw and decoded by get(). Large data
    # for an unrouted channel still goes to dispatch.
    q = pipes.mux.queue(1)
    rec = Recorder(lambda code, ch, payload: q.put(("dispatched", ch, len(payload))))
    pipes.mux.start(rec.dispatch, rec.on_exit)
    limit = 256 * 1024
    overhead = len(dumps(b""))
    blobs: list[object] = [bytes([i]) * (4 << 20) for i in range(3)]
    blobs += [b"s" * (limit - overhead - 1), b"t" * (limit - overhead), "\u20ac" * limit]
    unrouted = b"u" * limit

    def peer() -> None:
        for blob in blobs[:3]:
            os.write(pipes.peer_w, frame(4, 1, dumps(blob)))
        os.write(pipes.peer_w, frame(4, 2, dumps(unrouted)))
        for blob in blobs[3:]:
            os.write(pipes.peer_w, frame(4, 1, dumps(blob)))

    t = threading.Thread(target=peer)
    t.start()
    got = [q.get(timeout=30) for _ in range(len(blobs) + 1)]
    t.join()
    assert got == blobs[:3] + [("dispatched", 2, len(dumps(unrouted)))] + blobs[3:]
    assert [(ch, len(payload)) for _, ch, payload in rec.frames] == [(2, len(dumps(unrouted)))]
    assert pipes.mux.stats()["frames_queued"] == 1  # only the one below 256 KiB went raw


@pytest.mark.parametrize(
    "tail, message",
    [
        (b"", "couldn't load message header, expected 9 bytes, got 0"),
        (b"\x04\x00\x00\x00", "couldn't load message header, expected 9 bytes, got 4"),
        (HEADER.pack(4, 1, 10) + b"abc", "expected 10 bytes, got 3"),
    ],
)
def test_eof_calls_on_exit_once(pipes: Pipes, tail: bytes, message: str) -> None:
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    assert pipes.mux.is_alive()
    os.write(pipes.peer_w, frame(0, 1) + tail)
    os.close(pipes.peer_w)
    assert pipes.mux.join(timeout=10)
    assert not pipes.mux.is_alive()
    assert rec.frames == [(0, 1, b"")]
    assert len(rec.exits) == 1
    exc = rec.exits[0]
    assert type(exc) is EOFError
    assert str(exc) == message


@pytest.mark.parametrize(
    "header, text",
    [
        (HEADER.pack(9, 3, 5), "message code 9 is not in 0..7 (channel id 3, payload length 5)"),
        (HEADER.pack(-128, 0, 0), "message code -128"),
        (HEADER.pack(4, 2, -1), "negative payload length -1 (message code 4, channel id 2)"),
    ],
)
def test_garbage_header_is_a_clear_error(pipes: Pipes, header: bytes, text: str) -> None:
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    os.write(pipes.peer_w, header + b"more garbage")
    assert rec.exited.wait(10)
    assert pipes.mux.join(timeout=10)
    (exc,) = rec.exits
    assert isinstance(exc, ValueError)
    assert text in str(exc)
    assert rec.frames == []


def test_dispatch_exception_ends_reader(pipes: Pipes) -> None:
    boom = RuntimeError("boom")

    def handler(code: int, channel: int, payload: bytes) -> None:
        raise boom

    rec = Recorder(handler)
    pipes.mux.start(rec.dispatch, rec.on_exit)
    os.write(pipes.peer_w, frame(1, 0, b"x") + frame(2, 0))
    assert pipes.mux.join(timeout=10)
    assert rec.exits == [boom]
    assert rec.frames == [(1, 0, b"x")]


def test_close_read_stops_reader_with_none(pipes: Pipes) -> None:
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    assert not pipes.mux.join(timeout=0.2)
    pipes.mux.close_read()
    pipes.mux.close_read()
    assert pipes.mux.join(timeout=10)
    assert rec.exits == [None]


def test_close_read_from_dispatch(pipes: Pipes) -> None:
    rec = Recorder(lambda code, ch, payload: pipes.mux.close_read() if code == 2 else None)
    pipes.mux.start(rec.dispatch, rec.on_exit)
    os.write(pipes.peer_w, frame(0, 1) + frame(2, 0) + frame(0, 3))
    assert pipes.mux.join(timeout=10)
    assert rec.exits == [None]
    assert [c for c, _, _ in rec.frames] == [0, 2]


def test_join_from_reader_thread_is_an_error(pipes: Pipes) -> None:
    errors: list[BaseException] = []

    def on_exit(exc: BaseException | None) -> None:
        try:
            pipes.mux.join()
        except RuntimeError as e:
            errors.append(e)

    pipes.mux.start(lambda *a: None, on_exit)
    os.close(pipes.peer_w)
    assert pipes.mux.join(timeout=10)
    assert len(errors) == 1 and "own thread" in str(errors[0])


def test_start_twice_and_after_close(pipes: Pipes) -> None:
    pipes.mux.start(lambda *a: None, lambda e: None)
    with pytest.raises(RuntimeError, match="already started"):
        pipes.mux.start(lambda *a: None, lambda e: None)
    other = Pipes()
    try:
        other.mux.close_read()
        with pytest.raises(OSError, match="read side is closed"):
            other.mux.start(lambda *a: None, lambda e: None)
        assert other.mux.join(timeout=1)
        assert not other.mux.is_alive()
    finally:
        other.close()


def test_bad_descriptor() -> None:
    with pytest.raises(OSError):
        _core.Mux(-1, 1)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        _core.Mux(r, w)


def test_callback_exception_in_on_exit_is_unraisable(pipes: Pipes) -> None:
    seen: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:

        def on_exit(exc: BaseException | None) -> None:
            raise ValueError("in on_exit")

        pipes.mux.start(lambda *a: None, on_exit)
        os.close(pipes.peer_w)
        assert pipes.mux.join(timeout=10)
    finally:
        sys.unraisablehook = old_hook
    assert len(seen) == 1
    assert str(seen[0].exc_value) == "in on_exit"


# --- ChannelQueue ----------------------------------------------------------------------------


def test_queue_get_semantics() -> None:
    q = _core.ChannelQueue()
    assert q.empty() and q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 5
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    marker = object()
    q.put(1)
    q.put(marker)
    assert q.qsize() == 2 and not q.empty()
    assert q.get() == 1
    assert q.get(block=False) is marker
    threading.Timer(0.1, q.put, args=("late",)).start()
    assert q.get(timeout=10) == "late"


def test_queue_many_producers_and_consumers() -> None:
    q = _core.ChannelQueue()
    got: list[int] = []
    lock = threading.Lock()

    def consume() -> None:
        while True:
            item = q.get(timeout=10)
            if item is None:
                return
            with lock:
                got.append(item)

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in consumers:
        t.start()
    producers = [
        threading.Thread(target=lambda b=b: [q.put(b * 1000 + i) for i in range(1000)])
        for b in range(8)
    ]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    for _ in consumers:
        q.put(None)
    for t in consumers:
        t.join()
    assert sorted(got) == list(range(8000))


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_interrupts_get() -> None:
    q = _core.ChannelQueue()
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        q.get()
    assert time.monotonic() - t0 < 5
    timer.join()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_interrupts_join_and_blocked_send(pipes: Pipes) -> None:
    pipes.mux.start(lambda *a: None, lambda e: None)
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pipes.mux.join()
    timer.join()
    # Nobody reads peer_r: a large send blocks on the full pipe until interrupted.
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pipes.mux.send(4, 1, bytes(8 << 20))
    timer.join()
    # Part of that frame went out: further sends fail instead of corrupting the stream.
    with pytest.raises(OSError, match="interrupted in the middle"):
        pipes.mux.send(4, 1, b"")


# --- lifecycle -------------------------------------------------------------------------------


def test_gc_collects_cycle_through_callbacks() -> None:
    class Owner:
        def __init__(self) -> None:
            self.pipes = Pipes()
            self.pipes.mux.start(self.dispatch, self.on_exit)

        def dispatch(self, *args: object) -> None:
            pass

        def on_exit(self, exc: object) -> None:
            pass

    owner = Owner()
    peer_fds = (owner.pipes.peer_r, owner.pipes.peer_w)
    ref = weakref.ref(owner)
    mux_ref = weakref.ref(owner.pipes.mux) if hasattr(owner.pipes.mux, "__weakref__") else None
    del owner
    for _ in range(3):
        gc.collect()
    assert ref() is None
    assert mux_ref is None or mux_ref() is None
    # The Mux went away with its descriptors: the peer sees the write side closed.
    assert os.read(peer_fds[0], 1) == b""
    for fd in peer_fds:
        os.close(fd)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_create_close_cycles_leak_nothing() -> None:
    def cycle(start: bool) -> None:
        p = Pipes()
        if start:
            p.mux.start(lambda *a: None, lambda e: None)
        p.mux.send(0, 1, b"")
        p.close()
        assert p.mux.join(timeout=10)

    for _ in range(20):
        cycle(True)
    fds, threads = _fd_count(), _thread_count()
    for i in range(1000):
        cycle(i % 2 == 0)
    assert _fd_count() == fds
    # A finished reader thread may take a moment to be reaped by the OS.
    deadline = time.monotonic() + 5
    while _thread_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _thread_count() <= threads


def _run(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_interpreter_exit_with_blocked_reader() -> None:
    res = _run(
        """
        import os, threading
        from execnet import _core
        r, w = os.pipe()
        r2, w2 = os.pipe()
        mux = _core.Mux(r, w2)
        got = []
        mux.start(lambda *a: got.append(a), lambda e: got.append(e))
        q = mux.queue(1)
        threading.Thread(target=q.get, daemon=True).start()
        os.write(w, b"\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00")
        while not got:
            pass
        print("up", flush=True)
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "up\n"
    assert res.stderr == ""


def test_interpreter_exit_with_daemon_threads_inside_the_mux() -> None:
    # Daemon threads blocked in get(), join() and a send() on a busy pipe (the Mux reads its
    # own frames back) while the interpreter finalizes.
    for _ in range(3):
        res = _run(
            """
            import os, threading, time
            from execnet import _core
            r, w = os.pipe()
            mux = _core.Mux(r, w)
            got = []
            mux.start(lambda *a: got.append(a), lambda e: got.append(e))
            queues = [mux.queue(i) for i in range(4)]
            for q in queues:
                threading.Thread(target=q.get, daemon=True).start()
            threading.Thread(target=mux.join, daemon=True).start()
            def sender():
                while True:
                    mux.send(4, 1, b"x" * 100000)
            threading.Thread(target=sender, daemon=True).start()
            time.sleep(0.05)
            print("up", flush=True)
            """
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout == "up\n"
        assert res.stderr == ""


def test_interpreter_exit_while_frames_arrive() -> None:
    # A peer process keeps writing while the interpreter finalizes: the reader must give up
    # quietly when it can no longer call into Python.
    res = _run(
        """
        import os, subprocess, sys
        from execnet import _core
        writer = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys\\n"
             "f = b'\\\\x00\\\\x00\\\\x00\\\\x00\\\\x01\\\\x00\\\\x00\\\\x00\\\\x00' * 1000\\n"
             "try:\\n"
             "    while True: os.write(1, f)\\n"
             "except OSError: pass\\n"],
            stdout=subprocess.PIPE)
        r2, w2 = os.pipe()
        mux = _core.Mux(writer.stdout.fileno(), w2)
        seen = []
        mux.start(lambda *a: seen.append(1), lambda e: None)
        while len(seen) < 1000:
            pass
        print("done", flush=True)
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "done\n"
    assert res.stderr == ""


def test_close_write_ends_a_send_blocked_on_a_full_pipe(pipes: Pipes) -> None:
    errors: list[BaseException] = []

    def send() -> None:
        try:
            pipes.mux.send(4, 1, bytes(8 << 20))
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    pipes.mux.close_write()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1 and "closed" in str(errors[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# Forking while threads run is exactly the situation under test (Python 3.12+ warns about it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_gets_a_dead_object(pipes: Pipes) -> None:
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    q = pipes.mux.queue(1)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code, never return into pytest
        code = 0
        try:
            try:
                pipes.mux.send(4, 1, b"")
                code |= 1
            except OSError as e:
                code |= 0 if "fork" in str(e) else 2
            if pipes.mux.is_alive():
                code |= 4
            if not pipes.mux.join(timeout=1):
                code |= 8
            try:
                pipes.mux.queue(3)
                code |= 16
            except OSError:
                pass
            pipes.mux.close_read()
            pipes.mux.close_write()
            del q
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, "forked child hangs"
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's Mux is unaffected.
    assert pipes.mux.is_alive()
    os.write(pipes.peer_w, frame(4, 1, dumps(5)))
    assert q.get(timeout=10) == 5


class Dispatched(NamedTuple):
    code: int
    value: object


simple_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=300),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.sampled_from([0, 1, 3, 4, 4, 4, 5, 6, 7]), st.integers(1, 4), simple_values),
        max_size=40,
    ),
    routed=st.sets(st.integers(1, 4)),
)
def test_every_frame_arrives_once_in_wire_order(
    frames: list[tuple[int, int, object]], routed: set[int]
) -> None:
    """Random streams: each channel's items come out of its queue (routed) or dispatch in
    exactly the order they were written."""
    p = Pipes()
    try:
        queues = {ch: p.mux.queue(ch) for ch in routed}
        dispatched: dict[int, list[Dispatched]] = {ch: [] for ch in range(1, 5)}

        def handler(code: int, channel: int, payload: bytes) -> None:
            item = Dispatched(code, loads(payload) if code == CHANNEL_DATA else payload)
            if channel in queues:
                queues[channel].put(item)
            else:
                dispatched[channel].append(item)

        rec = Recorder(handler)
        p.mux.start(rec.dispatch, rec.on_exit)
        expected: dict[int, list[object]] = {ch: [] for ch in range(1, 5)}
        stream = b""
        for code, channel, value in frames:
            payload = dumps(value) if code == CHANNEL_DATA else b""
            stream += frame(code, channel, payload)
            expected[channel].append((code, value if code == CHANNEL_DATA else b""))
        writer = threading.Thread(target=os.write, args=(p.peer_w, stream))
        writer.start()
        for ch in range(1, 5):
            if ch in queues:
                got = []
                for _ in expected[ch]:
                    item = queues[ch].get(timeout=10)
                    # Routed plain data arrives decoded, without the dispatch wrapper.
                    if isinstance(item, Dispatched):
                        got.append((item.code, item.value))
                    else:
                        got.append((CHANNEL_DATA, item))
                assert got == expected[ch]
                assert queues[ch].empty()
        writer.join()
        os.close(p.peer_w)
        assert rec.exited.wait(10)
        for ch in range(1, 5):
            if ch not in queues:
                assert [(d.code, d.value) for d in dispatched[ch]] == expected[ch]
        assert len(rec.exits) == 1 and isinstance(rec.exits[0], EOFError)
    finally:
        p.close()
        assert p.mux.join(timeout=10)


def test_socket_with_python_timeout_is_non_blocking_underneath() -> None:
    # settimeout() puts the descriptor in O_NONBLOCK mode; the Mux shares that file description
    # and must cope with EAGAIN on both reads and writes.
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(30)
    try:
        mux = _core.Mux(a.fileno(), a.fileno())
        q = mux.queue(1)
        rec = Recorder()
        mux.start(rec.dispatch, rec.on_exit)
        time.sleep(0.1)  # the reader is now waiting on an empty non-blocking socket
        b.sendall(frame(4, 1, dumps("slow")))
        assert q.get(timeout=10) == "slow"

        big = os.urandom(8 << 20)  # far more than the socket buffer: EAGAIN while writing
        got = bytearray()

        def peer() -> None:
            need = HEADER.size + len(big)
            while len(got) < need:
                got.extend(b.recv(min(need - len(got), 1 << 20)))

        t = threading.Thread(target=peer)
        t.start()
        time.sleep(0.1)
        mux.send(4, 1, big)
        t.join(timeout=30)
        assert bytes(got) == HEADER.pack(4, 1, len(big)) + big
        mux.close_read()
        mux.close_write()
        assert mux.join(timeout=10)
        assert rec.exits == [None]
    finally:
        a.close()
        b.close()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_memory_stays_flat_over_many_frames(pipes: Pipes) -> None:
    q = pipes.mux.queue(1)
    rec = Recorder()
    pipes.mux.start(rec.dispatch, rec.on_exit)
    routed = frame(4, 1, dumps((1, "two", b"three" * 20, None)))
    dispatched = frame(4, 1, b"B\x00\x00\x00\x01Q")  # a channel reference: not routed

    def rounds(n: int) -> None:
        for _ in range(n):
            os.write(pipes.peer_w, routed * 50 + dispatched)
            for _ in range(50):
                q.get(timeout=10)
            deadline = time.monotonic() + 10
            while not rec.frames:  # the dispatched frame follows the routed ones
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            assert rec.frames.pop() == (4, 1, b"B\x00\x00\x00\x01Q")
            pipes.mux.send(4, 2, b"x" * 100)
            os.read(pipes.peer_r, 1000)

    rounds(50)
    before = _rss_kib()
    rounds(400)  # 20,000 routed frames, 400 dispatched, 400 sent
    assert _rss_kib() - before < 4096


def _read_frames_until(fd: int, count: int, timeout: float = 30) -> list[tuple[int, int, bytes]]:
    """Read `count` frames from `fd`, failing instead of hanging if they do not come."""
    import select

    deadline = time.monotonic() + timeout
    buf = b""
    frames: list[tuple[int, int, bytes]] = []
    while len(frames) < count:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise AssertionError(f"only {len(frames)} of {count} frames arrived")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError(len(frames))
        buf += chunk
        while len(buf) >= HEADER.size:
            code, channel, length = HEADER.unpack_from(buf)
            if len(buf) < HEADER.size + length:
                break
            frames.append((code, channel, buf[HEADER.size : HEADER.size + length]))
            buf = buf[HEADER.size + length :]
    return frames


def test_bursts_are_written_in_batches_in_order(pipes: Pipes) -> None:
    n = 20_000
    got: list[list[tuple[int, int, bytes]]] = []
    reader = threading.Thread(target=lambda: got.append(_read_frames_until(pipes.peer_r, n)))
    reader.start()
    for i in range(n):
        # every 1000th frame is too large to buffer and is written directly, after the
        # buffered ones before it
        pipes.mux.send(4, i, b"x" * (20_000 if i % 1000 == 999 else i % 50))
    reader.join(timeout=60)
    assert got and got[0] == [
        (4, i, b"x" * (20_000 if i % 1000 == 999 else i % 50)) for i in range(n)
    ]
    stats = pipes.mux.stats()
    assert stats["frames_sent"] == n
    assert stats["frames_buffered"] > n // 2
    assert 0 < stats["batches_written"] < stats["frames_buffered"] // 4


def test_isolated_sends_are_written_by_the_sender(pipes: Pipes) -> None:
    for i in range(5):
        time.sleep(0.002)
        pipes.mux.send(4, i, b"abc")
        # written before send() returned: no thread involved
        assert select_readable(pipes.peer_r)
        assert read_exact(pipes.peer_r, 12) == frame(4, i, b"abc")
    assert pipes.mux.stats()["frames_buffered"] == 0


def select_readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_last_frame_of_a_burst_goes_out_without_flush(pipes: Pipes) -> None:
    for i in range(1000):
        pipes.mux.send(4, i, b"abc")
    frames = _read_frames_until(pipes.peer_r, 1000, timeout=5)
    assert [c for _, c, _ in frames] == list(range(1000))


def test_deferred_send_does_not_wait_for_a_blocked_writer(pipes: Pipes) -> None:
    big = bytes(4 << 20)
    t = threading.Thread(target=pipes.mux.send, args=(4, 1, big))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # blocked on the full pipe, holding the write lock
    start = time.monotonic()
    pipes.mux.send(5, 3, b"", True)
    assert time.monotonic() - start < 0.5
    frames = _read_frames_until(pipes.peer_r, 2)
    t.join(timeout=10)
    assert frames == [(4, 1, big), (5, 3, b"")]


def test_failed_buffered_write_fails_later_sends(pipes: Pipes) -> None:
    os.close(pipes.peer_r)
    deadline = time.monotonic() + 10
    with pytest.raises(BrokenPipeError):
        while time.monotonic() < deadline:
            pipes.mux.send(4, 1, b"x", True)
            time.sleep(0.0001)


def test_close_write_delivers_buffered_frames(pipes: Pipes) -> None:
    for i in range(100):
        pipes.mux.send(4, i, b"y", True)
    pipes.mux.close_write()
    assert [c for _, c, _ in read_frames(pipes.peer_r)] == list(range(100))
    with pytest.raises(OSError, match="write side is closed"):
        pipes.mux.send(4, 1, b"x", True)


def test_flush_writes_what_is_buffered(pipes: Pipes) -> None:
    for i in range(50):
        pipes.mux.send(4, i, b"z", True)
    pipes.mux.flush()
    assert pipes.mux.stats()["batches_written"] >= 1
    assert len(_read_frames_until(pipes.peer_r, 50, timeout=5)) == 50
