"""Gateways on the native IO path (``execnet._core.Mux``): taken when it should be, and keeping
the channel semantics (ordering, close, callbacks, string configuration) of the pure path.

The whole suite also runs with ``EXECNET_NO_NATIVE_IO=1``; tests that need the native path
skip there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import execnet
from execnet import gateway_base as gb
from execnet.gateway import Gateway

TIMEOUT = 10.0

native = pytest.mark.skipif(
    not gb.NATIVE_IO or gb._core is None or not hasattr(gb._core, "Mux"),
    reason="native IO switched off (EXECNET_NO_NATIVE_IO=1) or unavailable",
)


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    g = execnet.Group()
    yield g
    g.terminate(timeout=5)


@pytest.fixture
def gw(group: execnet.Group) -> Gateway:
    return group.makegateway("popen")


class LocalReceiveCounter:
    """Counts the CHANNEL_DATA frames that reached Python's ``_local_receive`` (not routed)."""

    def __init__(self, gw: Gateway) -> None:
        factory = gw._channelfactory
        self.calls: list[int] = []
        original = factory._local_receive

        def counting(id: int, data: bytes) -> None:
            self.calls.append(id)
            original(id, data)

        factory._local_receive = counting  # type: ignore[method-assign]


@native
def test_popen_gateway_uses_mux_on_both_sides(gw: Gateway) -> None:
    assert isinstance(gw._mux, gb._core.Mux)
    assert gw.hasreceiver()
    ch = gw.remote_exec(
        "import execnet._core as c\n"
        "mux = channel.gateway._mux\n"
        "channel.send((type(mux).__name__, isinstance(channel._items, c.ChannelQueue)))\n"
        "channel.send(mux.stats()['frames_sent'])\n"
    )
    assert isinstance(ch._items, gb._core.ChannelQueue)
    assert ch.receive(TIMEOUT) == ("Mux", True)
    assert ch.receive(TIMEOUT) >= 1  # the worker's frames went out through its Mux
    ch.waitclose(TIMEOUT)


@native
def test_plain_data_is_routed_past_python(gw: Gateway) -> None:
    counter = LocalReceiveCounter(gw)
    before = gw._mux.stats()
    ch = gw.remote_exec(
        "for i in range(2000):\n"
        "    channel.send((i, 'item', None))\n"
        "channel.send(channel.gateway.newchannel())\n"
    )
    assert [ch.receive(TIMEOUT) for _ in range(2000)] == [(i, "item", None) for i in range(2000)]
    sub = ch.receive(TIMEOUT)
    assert isinstance(sub, gb.Channel)
    ch.waitclose(TIMEOUT)
    # only the item carrying a channel reference needed Python's receive path
    assert counter.calls == [ch.id]
    after = gw._mux.stats()
    assert after["frames_queued"] - before["frames_queued"] == 2000
    assert after["frames_sent"] > before["frames_sent"]


@native
def test_exec_bootstrapped_worker_keeps_pure_path(group: execnet.Group) -> None:
    gw = group.makegateway(f"popen//python={sys.executable}")
    assert gw._mux is not None
    ch = gw.remote_exec(
        "channel.send((__name__, channel.gateway._mux, type(channel._items).__name__))"
    )
    assert ch.receive(TIMEOUT) == ("__channelexec__", None, "Queue")
    assert gw.remote_exec("channel.send(channel.receive() * 2)").send(21) is None


@native
def test_socket_gateway_uses_mux(group: execnet.Group) -> None:
    group.makegateway("popen//id=server")
    gw = group.makegateway("socket//installvia=server")
    assert gw._mux is not None
    ch = gw.remote_exec("for i in range(500): channel.send(channel.receive() + 1)")
    for i in range(500):
        ch.send(i)
    assert [ch.receive(TIMEOUT) for _ in range(500)] == list(range(1, 501))
    ch.waitclose(TIMEOUT)


def test_switch_forces_pure_path() -> None:
    code = (
        "import execnet\n"
        "gw = execnet.makegateway('popen')\n"
        "remote = gw.remote_exec('channel.send(channel.gateway._mux is None)').receive(10)\n"
        "print(gw._mux is None, remote, type(gw.newchannel()._items).__name__)\n"
        "gw.exit(); gw.join(10)\n"
    )
    env = dict(os.environ, EXECNET_NO_NATIVE_IO="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "Queue"]


def test_mixed_routed_and_dispatched_items_keep_wire_order(gw: Gateway) -> None:
    ch = gw.remote_exec(
        "for i in range(3000):\n"
        "    if i % 97 == 0:\n"
        "        channel.send((i, channel.gateway.newchannel()))\n"
        "    else:\n"
        "        channel.send((i, None))\n"
    )
    got = [ch.receive(TIMEOUT) for _ in range(3000)]
    assert [i for i, _ in got] == list(range(3000))
    assert all(isinstance(c, gb.Channel) == (i % 97 == 0) for i, c in got)
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)


def test_setcallback_while_data_flows_keeps_order_and_endmarker(gw: Gateway) -> None:
    ch = gw.remote_exec("for i in range(20000): channel.send(i)")
    first = [ch.receive(TIMEOUT) for _ in range(100)]
    seen: list[Any] = []
    done = threading.Event()

    def callback(item: Any) -> None:
        seen.append(item)
        if item == "END":
            done.set()

    ch.setcallback(callback, endmarker="END")
    assert done.wait(TIMEOUT)
    assert first + seen == list(range(20000)) + ["END"]
    with pytest.raises(OSError, match="callback"):
        ch.receive(TIMEOUT)


def test_close_while_data_flows_queues_nothing_behind_the_end(gw: Gateway) -> None:
    ch = gw.remote_exec(
        "import time\n"
        "try:\n"
        "    for i in range(100000):\n"
        "        channel.send(i)\n"
        "        if i % 1000 == 0: time.sleep(0.001)\n"
        "except OSError:\n"
        "    pass\n"
    )
    assert ch.receive(TIMEOUT) == 0
    ch.close()
    items = []
    with pytest.raises(EOFError):
        while True:
            items.append(ch.receive(TIMEOUT))
    assert items == list(range(1, len(items) + 1))
    # the end marker stays, whatever arrives later for this id
    with pytest.raises(EOFError):
        ch.receive(0.2)
    assert gw.remote_exec("channel.send(1)").receive(TIMEOUT) == 1


def test_remote_close_ends_receive_after_all_items(gw: Gateway) -> None:
    ch = gw.remote_exec("for i in range(5000): channel.send(i)\nraise ValueError('bye')")
    got = []
    with pytest.raises(execnet.RemoteError, match="bye"):
        while True:
            got.append(ch.receive(TIMEOUT))
    assert got == list(range(5000))


def test_reconfigure_applies_to_items_queued_afterwards(gw: Gateway) -> None:
    ch = gw.remote_exec("channel.send('a')\nchannel.receive()\nchannel.send('b')\n")
    assert ch.receive(TIMEOUT) == "a"
    ch.reconfigure(py2str_as_py3str=False, py3str_as_py2str=True)
    ch.send("go")
    expected = gb.loads_internal(gb.dumps_internal("b"), None, (False, True))
    assert ch.receive(TIMEOUT) == expected
    ch.waitclose(TIMEOUT)


def test_exit_signals_eof_to_the_worker(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    popen = gw._io.popen  # type: ignore[attr-defined]
    gw.remote_exec("channel.send(1)").receive(TIMEOUT)
    gw.exit()
    assert popen.wait(TIMEOUT) == 0
    gw.join(TIMEOUT)
    assert not gw.hasreceiver()


def test_send_after_peer_died_raises_oserror(gw: Gateway) -> None:
    ch = gw.remote_exec("import os; os._exit(0)")
    with pytest.raises(EOFError):
        ch.receive(TIMEOUT)
    gw.join(TIMEOUT)
    with pytest.raises(OSError, match="cannot send"):
        gw._send(gb.Message.CHANNEL_DATA, 99, gb.dumps_internal(1))


def test_interleaved_senders_do_not_corrupt_frames(gw: Gateway) -> None:
    ch = gw.remote_exec(
        "total = 0\n"
        "while True:\n"
        "    item = channel.receive()\n"
        "    if item is None:\n"
        "        break\n"
        "    total += len(item)\n"
        "channel.send(total)\n"
    )
    big = b"x" * (256 * 1024)

    def sender() -> None:
        for _ in range(20):
            ch.send(big)
            ch.send(b"y")

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ch.send(None)
    assert ch.receive(TIMEOUT) == 4 * 20 * (len(big) + 1)
    ch.waitclose(TIMEOUT)


def test_interpreter_exit_while_the_reader_runs_a_callback() -> None:
    # the reader is still in Python code when the main thread ends: the exit must stay clean
    code = (
        "import threading, time\n"
        "import execnet\n"
        "gw = execnet.makegateway()\n"
        "started = threading.Event()\n"
        "def callback(item):\n"
        "    started.set()\n"
        "    t = time.monotonic()\n"
        "    while time.monotonic() - t < 0.5:\n"
        "        pass\n"
        "ch = gw.remote_exec('channel.send(1)')\n"
        "ch.setcallback(callback)\n"
        "assert started.wait(10)\n"
        "gw.exit()\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "done\n", "")


@native
def test_callback_data_goes_from_the_reader_to_the_callback(gw: Gateway) -> None:
    counter = LocalReceiveCounter(gw)
    before = gw._mux.stats()["frames_called_back"]
    got: list[Any] = []
    done = threading.Event()

    def callback(item: Any) -> None:
        got.append(item)
        if item == "end":
            done.set()

    ch = gw.remote_exec(
        "channel.receive()\n"
        "for i in range(3000):\n"
        "    channel.send((i, 'x' * (i % 7)))\n"
        "channel.send(channel.gateway.newchannel())\n"
        "channel.send('end')\n"
    )
    ch.setcallback(callback)
    ch.send("go")
    assert done.wait(TIMEOUT)
    ch.waitclose(TIMEOUT)
    assert got[:3000] == [(i, "x" * (i % 7)) for i in range(3000)]
    assert isinstance(got[3000], gb.Channel) and got[3001] == "end"
    # only the item carrying a channel reference took Python's receive path
    assert counter.calls == [ch.id]
    assert gw._mux.stats()["frames_called_back"] - before == 3001


@native
@pytest.mark.parametrize("when", ["before", "after"])
def test_reconfigure_applies_to_a_callback_route(gw: Gateway, when: str) -> None:
    got: list[Any] = []
    done = threading.Event()

    def callback(item: Any) -> None:
        got.append(item)
        done.set()

    ch = gw.remote_exec("channel.receive()\nchannel.send('b')\n")
    if when == "before":
        ch.reconfigure(py2str_as_py3str=False, py3str_as_py2str=True)
    ch.setcallback(callback)
    if when == "after":
        ch.reconfigure(py2str_as_py3str=False, py3str_as_py2str=True)
    ch.send("go")
    assert done.wait(TIMEOUT)
    assert got == [gb.loads_internal(gb.dumps_internal("b"), None, (False, True))]
    assert got != ["b"]
    ch.waitclose(TIMEOUT)


@native
def test_raising_routed_callback_closes_with_error_and_keeps_the_gateway(gw: Gateway) -> None:
    calls: list[Any] = []

    def callback(item: Any) -> None:
        calls.append(item)
        raise ValueError(f"bad item {item}")

    ch = gw.remote_exec(
        "channel.receive()\n"
        "channel.send(1)\n"
        "try:\n"
        "    channel.waitclose(30)\n"
        "except channel.RemoteError as e:\n"
        "    channel.gateway._channelfactory.new(99).send(str(e))\n"
    )
    ch.setcallback(callback)
    report = gw._channelfactory.new(99)
    ch.send("go")
    with pytest.raises(ch.RemoteError, match="bad item 1"):
        ch.waitclose(TIMEOUT)
    assert "ValueError: bad item 1" in report.receive(TIMEOUT)
    assert calls == [1]
    assert gw._mux.stats()["frames_called_back"] >= 1
    # the gateway still works
    assert gw.remote_exec("channel.send(42)").receive(TIMEOUT) == 42


def test_join_inside_a_callback_returns_at_once(gw: Gateway) -> None:
    # the callback runs in the reader thread, possibly before any frame went through dispatch
    results: list[Any] = []
    done = threading.Event()

    def callback(item: Any) -> None:
        try:
            gw.join(timeout=5)
            results.append(("joined", item))
        except BaseException as exc:
            results.append(("error", repr(exc)))
        done.set()

    ch = gw.newchannel()
    ch.setcallback(callback)
    gw.remote_exec(f"channel.gateway._channelfactory.new({ch.id}).send(7)")
    assert done.wait(TIMEOUT)
    assert results == [("joined", 7)]
