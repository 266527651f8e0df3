"""Channel semantics against real worker interpreters (popen gateways)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import execnet
from execnet.gateway import Gateway
from execnet.gateway_base import Channel, RemoteError

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def group() -> Iterator[execnet.Group]:
    g = execnet.Group()
    yield g
    g.terminate(timeout=2)


@pytest.fixture(params=["thread", "main_thread_only"])
def gw(request: pytest.FixtureRequest, group: execnet.Group) -> Gateway:
    gwid = "ch-" + request.param
    if gwid not in group:
        group.makegateway(f"popen//id={gwid}//execmodel={request.param}")
    return group[gwid]


def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


class TestSendReceive:
    def test_roundtrip(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            "while 1:\n    x = channel.receive()\n    if x is None: break\n    channel.send(x)"
        )
        for value in [1, "s", b"b", [1, (2, 3)], {"k": {1, 2}}, 2**100, -(2**40), 1.5j]:
            ch.send(value)
            assert ch.receive(TIMEOUT) == value
        ch.send(None)
        ch.waitclose(TIMEOUT)

    def test_finish_then_eof_forever(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(42)")
        assert ch.receive(TIMEOUT) == 42
        for _ in range(3):
            with pytest.raises(EOFError):
                ch.receive(TIMEOUT)
        assert ch.isclosed()
        assert repr(ch) == f"<Channel id={ch.id} closed>"

    def test_receive_timeout(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(channel.receive())")
        with pytest.raises(execnet.TimeoutError) as excinfo:
            ch.receive(timeout=0.1)
        assert str(excinfo.value) == "no item after 0.1 seconds"
        assert repr(ch) == f"<Channel id={ch.id} open>"
        ch.send(1)
        assert ch.receive(TIMEOUT) == 1

    def test_waitclose_timeout(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.receive()")
        with pytest.raises(execnet.TimeoutError) as excinfo:
            ch.waitclose(0.1)
        assert str(excinfo.value) == "Timeout after 0.1 seconds"
        ch.send(1)
        ch.waitclose(TIMEOUT)

    def test_send_on_closed_channel(self, gw: Gateway) -> None:
        ch = gw.remote_exec("pass")
        ch.waitclose(TIMEOUT)
        with pytest.raises(OSError) as excinfo:
            ch.send(1)
        assert str(excinfo.value) == f"cannot send to <Channel id={ch.id} closed>"

    def test_iteration(self, gw: Gateway) -> None:
        ch = gw.remote_exec("for i in range(5): channel.send(i)")
        assert list(ch) == [0, 1, 2, 3, 4]
        assert iter(ch) is ch

    def test_iteration_propagates_remote_error(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(1); raise KeyError('x')")
        got = []
        with pytest.raises(RemoteError):
            for item in ch:
                got.append(item)
        assert got == [1]

    def test_dumperror_keeps_channel_usable(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(channel.receive())")
        with pytest.raises(execnet.DumpError):
            ch.send(object())
        ch.send("fine")
        assert ch.receive(TIMEOUT) == "fine"


class TestRemoteErrors:
    def test_error_then_eof(self, gw: Gateway) -> None:
        ch = gw.remote_exec("def foo():\n  return foobar()\nfoo()\n")
        with pytest.raises(RemoteError) as excinfo:
            ch.receive(TIMEOUT)
        text = str(excinfo.value)
        assert text.startswith("Traceback (most recent call last):")
        assert 'File "<remote exec>", line 2, in foo' in text
        assert text.endswith("NameError: name 'foobar' is not defined\n")
        assert "gateway_base" in text
        with pytest.raises(EOFError):
            ch.receive(TIMEOUT)
        ch.waitclose(TIMEOUT)  # the error was consumed

    def test_waitclose_raises_then_consumed(self, gw: Gateway) -> None:
        ch = gw.remote_exec("raise ValueError('w')")
        with pytest.raises(RemoteError, match="ValueError: w"):
            ch.waitclose(TIMEOUT)
        ch.waitclose(TIMEOUT)
        with pytest.raises(EOFError):
            ch.receive(TIMEOUT)

    def test_syntax_error(self, gw: Gateway) -> None:
        ch = gw.remote_exec("def foo()\n return 1\n")
        with pytest.raises(RemoteError, match="SyntaxError"):
            ch.receive(TIMEOUT)

    def test_remote_serialization_error(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(ValueError(42))")
        with pytest.raises(RemoteError, match="can't serialize"):
            ch.receive(TIMEOUT)

    def test_remote_sysexit(self, gw: Gateway) -> None:
        ch = gw.remote_exec("raise SystemExit(3)")
        with pytest.raises(RemoteError, match="SystemExit: 3"):
            ch.receive(TIMEOUT)
        assert gw.remote_exec("channel.send(1)").receive(TIMEOUT) == 1

    def test_remote_keyboardinterrupt(self, gw: Gateway) -> None:
        ch = gw.remote_exec("raise KeyboardInterrupt")
        with pytest.raises(RemoteError) as excinfo:
            ch.receive(TIMEOUT)
        assert excinfo.value.formatted == "keyboard-interrupted"
        assert gw.remote_exec("channel.send(1)").receive(TIMEOUT) == 1

    def test_remote_eoferror_is_a_quiet_end(self, gw: Gateway) -> None:
        ch = gw.remote_exec("raise EOFError('quiet')")
        ch.waitclose(TIMEOUT)
        with pytest.raises(EOFError) as excinfo:
            ch.receive(TIMEOUT)
        assert excinfo.value.args == ()

    def test_explicit_close_inside_remote_exec(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.close()")
        with pytest.raises(RemoteError, match="cannot explicitly close channel within remote_exec"):
            ch.waitclose(TIMEOUT)

    def test_close_with_error_reaches_remote(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            "c = channel.receive()\n"
            "try:\n    c.receive()\nexcept channel.RemoteError as e:\n    channel.send(e.formatted)"
        )
        sub = gw.newchannel()
        ch.send(sub)
        sub.close("custom failure")
        assert ch.receive(TIMEOUT) == "custom failure"
        assert sub.isclosed()
        sub.close()  # redundant close is a no-op

    def test_local_close_with_error(self, gw: Gateway) -> None:
        ch = gw._channelfactory.new()
        gw._channelfactory._local_close(ch.id, RemoteError("error"))
        with pytest.raises(RemoteError):
            ch.waitclose(0.5)
        ch.waitclose(0.5)


class TestCallbacks:
    def test_queued_items_drain_in_caller_thread_then_receiver_thread(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(1); channel.send(2); channel.receive(); channel.send(3)")
        wait_for(lambda: ch._items.qsize() == 2)
        seen: list[tuple[Any, int]] = []
        ch.setcallback(lambda item: seen.append((item, threading.get_ident())), endmarker="END")
        assert seen == [(1, threading.get_ident()), (2, threading.get_ident())]
        ch.send(None)
        ch.waitclose(TIMEOUT)
        wait_for(lambda: len(seen) == 4)
        assert [item for item, _ in seen] == [1, 2, 3, "END"]
        assert seen[2][1] != threading.get_ident()

    def test_endmarker_exactly_once(self, gw: Gateway) -> None:
        ends: list[str] = []
        ch = gw.remote_exec("channel.send(1)")
        ch.setcallback(lambda item: ends.append(item) if item == "END" else None, endmarker="END")
        ch.waitclose(TIMEOUT)
        time.sleep(0.2)
        ch.close()
        assert ends == ["END"]

    def test_endmarker_on_already_finished_channel(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(7)")
        ch.waitclose(TIMEOUT)
        items: list[Any] = []
        ch.setcallback(items.append, endmarker=None)
        assert items == [7, None]

    def test_endmarker_with_remote_error(self, gw: Gateway) -> None:
        q: Any = gw.execmodel.queue.Queue()
        ch = gw.remote_exec("raise ValueError('e')")
        ch.setcallback(q.put, endmarker=999)
        assert q.get(timeout=TIMEOUT) == 999
        err = ch._getremoteerror()
        assert isinstance(err, RemoteError)
        assert "ValueError: e" in str(err)

    def test_receive_with_callback_fails(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.receive()")
        ch.setcallback(lambda item: None)
        with pytest.raises(OSError, match=r"cannot receive\(\), channel has receiver callback"):
            ch.receive()
        with pytest.raises(OSError, match="has callback already registered"):
            ch.setcallback(lambda item: None)
        ch.send(1)

    def test_raising_callback_closes_with_error_to_peer(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            """
            def f(item):
                raise ValueError(42)
            sub = channel.gateway.newchannel()
            sub.setcallback(f)
            channel.send(sub)
            channel.receive()
            channel.send(sub.isclosed())
            """
        )
        sub = ch.receive(TIMEOUT)
        assert isinstance(sub, Channel)
        sub.send(1)
        with pytest.raises(RemoteError) as excinfo:
            sub.waitclose(TIMEOUT)
        assert "ValueError: 42" in excinfo.value.formatted
        ch.send(None)
        assert ch.receive(TIMEOUT) is True

    def test_callback_on_collected_channel_still_fires(self, gw: Gateway) -> None:
        items: list[Any] = []
        ch = gw.remote_exec("c = channel.receive(); channel.receive(); c.send(5)")
        sub = gw.newchannel()
        sub.setcallback(items.append, endmarker="END")
        ch.send(sub)
        del sub  # sends CHANNEL_LAST_MESSAGE, the callback stays registered
        ch.send(None)
        wait_for(lambda: items[:1] == [5])


class TestChannelsInData:
    def test_channel_comes_back_as_same_object(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(channel)\nassert channel.receive() is channel")
        assert ch.receive(TIMEOUT) is ch
        ch.send(ch)
        ch.waitclose(TIMEOUT)

    def test_channels_in_structure(self, gw: Gateway) -> None:
        ch = gw.remote_exec("a, b = channel.receive()['pair']\nb.send(a.receive() + 1)")
        a, b = gw.newchannel(), gw.newchannel()
        ch.send({"pair": (a, b)})
        a.send(1)
        assert b.receive(TIMEOUT) == 2

    def test_remote_created_channel(self, gw: Gateway) -> None:
        ch = gw.remote_exec("c = channel.gateway.newchannel(); channel.send(c); c.send(c.id)")
        c = ch.receive(TIMEOUT)
        assert isinstance(c, Channel)
        assert c.id % 2 == 0
        assert c.receive(TIMEOUT) == c.id


class TestGarbageCollection:
    def test_dropped_channel_ends_remote_receive_quietly(self, gw: Gateway) -> None:
        probe = gw.remote_exec(
            "import threading\nev = threading.Event()\nchannel.send(1)\nchannel.receive()"
        )
        assert probe.receive(TIMEOUT) == 1
        ch_id = probe.id
        del probe  # __del__ sends CHANNEL_CLOSE; the remote receive() gets EOFError
        check = gw.remote_exec(
            f"import time\nfor i in range(200):\n    if {ch_id} not in channel.gateway._channelfactory._channels: break\n    time.sleep(0.02)\nchannel.send(i < 199)"
        )
        assert check.receive(TIMEOUT) is True

    def test_closed_channel_warns_unread_error_on_gc(self) -> None:
        script = textwrap.dedent(
            """
            import gc, execnet
            gw = execnet.makegateway("popen")
            ch = gw.remote_exec("raise ValueError('never read')")
            ch._receiveclosed.wait(10)
            del ch
            gc.collect()
            gw.exit(); gw.join(5)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "Warning: unhandled RemoteError: Traceback" in out.stderr
        assert "ValueError: never read" in out.stderr


class TestChannelFile:
    def test_write(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            "f = channel.makefile()\nf.write('hello\\n')\nf.flush()\nf.close()\nchannel.send(42)"
        )
        assert ch.receive(TIMEOUT) == "hello\n"
        assert ch.receive(TIMEOUT) == 42

    def test_proxyclose(self, gw: Gateway) -> None:
        ch = gw.remote_exec("f = channel.makefile(proxyclose=True)\nf.write('x')\nf.close()")
        assert ch.receive(TIMEOUT) == "x"
        with pytest.raises(RemoteError, match="cannot explicitly close"):
            ch.receive(TIMEOUT)

    def test_read_and_readline(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send('12'); channel.send('3\\n45\\n6')")
        ch.waitclose(TIMEOUT)
        f = ch.makefile("r")
        assert not f.isatty()
        assert f.read(1) == "1"
        assert f.readline() == "23\n"
        assert f.readline() == "45\n"
        assert f.readline() == "6"
        assert f.readline() == ""
        assert f.read(3) == ""
        assert repr(f) == f"<ChannelFile {ch.id} closed>"

    def test_read_bytes_items(self, gw: Gateway) -> None:
        ch = gw.remote_exec("channel.send(b'ab'); channel.send(b'cd')")
        f = ch.makefile("r")
        assert f.read(3) == b"abc"
        assert f.read(5) == b"d"

    def test_bad_mode(self, gw: Gateway) -> None:
        with pytest.raises(ValueError, match="mode 'rw' not available"):
            gw.newchannel().makefile("rw")


class TestReconfigure:
    def test_channel_reconfigure_both_sides(self, gw: Gateway) -> None:
        ch = gw.remote_exec("x = channel.receive()\nchannel.send((type(x).__name__, 'back'))")
        ch.reconfigure(py3str_as_py2str=True)
        ch.send("text")
        assert ch.receive(TIMEOUT) == (b"bytes", b"back")


class TestConcurrency:
    def test_many_threads_sending_never_interleave_frames(self, gw: Gateway) -> None:
        if gw.spec.execmodel == "main_thread_only":
            pytest.skip("needs concurrent executions")
        nthreads, nitems = 6, 150
        channels = [
            gw.remote_exec("for x in channel:\n    channel.send(x)") for _ in range(nthreads)
        ]
        errors: list[BaseException] = []

        def pump(ch: Channel, seed: int) -> None:
            try:
                for i in range(nitems):
                    # every 10th item exceeds the pipe buffer, so writes are split
                    size = 200_000 if i % 10 == 0 else (i * 37 + seed) % 3000
                    item = (seed, i, "x" * size)
                    ch.send(item)
                    assert ch.receive(TIMEOUT) == item
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=pump, args=(ch, n)) for n, ch in enumerate(channels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        for ch in channels:
            ch.close()

    def test_no_channel_leak(self, gw: Gateway) -> None:
        for i in range(50):
            assert gw.remote_exec("channel.send(channel.receive())").send(i) is None
        for _ in range(50):
            gw.remote_exec("channel.send(1)").receive(TIMEOUT)
        wait_for(lambda: len(gw._channelfactory.channels()) == 0)
        for _ in range(200):
            if gw.remote_status().numchannels == 0:
                break
            time.sleep(0.02)
        else:
            pytest.fail("worker kept channel objects")


def test_receive_inside_a_callback_fails_instead_of_hanging(gw: Gateway) -> None:
    other = gw.newchannel()
    errors: list[BaseException] = []

    def callback(item: object) -> None:
        try:
            other.receive()
        except OSError as e:
            errors.append(e)

    ch = gw.remote_exec("channel.receive()\nchannel.send(1)")
    ch.setcallback(callback, endmarker=None)
    ch.send("go")  # the item arrives after setcallback: the callback runs in the receiver
    wait_for(lambda: len(errors) >= 1)
    assert "in the receiver thread would never return" in str(errors[0])
