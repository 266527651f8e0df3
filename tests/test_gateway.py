"""The master-side Gateway: remote_exec forms and checks, status, rinfo, reconfigure, exit,
exec models on the worker."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from execnet import gateway, gateway_base
from execnet.gateway import Gateway

TIMEOUT = 10.0


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    g = execnet.Group()
    yield g
    g.terminate(timeout=2)


@pytest.fixture
def gw(group: execnet.Group) -> Gateway:
    return group.makegateway("popen//id=g")


class TestBasics:
    def test_repr_and_receiver(self, gw: Gateway) -> None:
        assert repr(gw) == "<Gateway id='g' receive-live, thread model, 0 active channels>"
        ch = gw.newchannel()
        assert repr(gw) == "<Gateway id='g' receive-live, thread model, 1 active channels>"
        assert ch.id == 1 and gw.newchannel().id == 3
        assert gw.hasreceiver()
        gw.exit()
        gw.join(TIMEOUT)
        assert not gw.hasreceiver()
        assert "not-receiving" in repr(gw)

    def test_remoteaddress_missing_for_popen(self, gw: Gateway) -> None:
        with pytest.raises(AttributeError):
            gw.remoteaddress  # noqa: B018

    def test_arbitrary_attributes(self, gw: Gateway) -> None:
        gw.node = "x"  # type: ignore[attr-defined]
        assert gw.node == "x"  # type: ignore[attr-defined]

    def test_remote_status(self, gw: Gateway) -> None:
        status = gw.remote_status()
        assert (status.numexecuting, status.numchannels, status.execmodel) == (0, 0, "thread")
        before = len(gw._channelfactory.channels())
        ch1 = gw.remote_exec("channel.send(1); channel.receive()")
        ch2 = gw.remote_exec("channel.send(2); channel.receive()")
        ch1.receive(TIMEOUT), ch2.receive(TIMEOUT)
        status = gw.remote_status()
        assert status.numexecuting == 2
        assert status.numchannels == 2
        assert len(gw._channelfactory.channels()) == before + 2
        ch1.send(None), ch2.send(None)
        ch1.waitclose(TIMEOUT), ch2.waitclose(TIMEOUT)
        for _ in range(100):
            if gw.remote_status().numexecuting == 0:
                break
            time.sleep(0.01)
        else:
            pytest.fail("numexecuting did not drop to 0")
        assert repr(status).startswith("<RInfo 'execmodel=thread, numchannels=2, numexecuting=2")

    def test_rinfo_cached_and_updated(self, gw: Gateway) -> None:
        info = gw._rinfo()
        assert info.executable == sys.executable
        assert info.cwd == os.getcwd()
        assert info.version_info == sys.version_info
        assert info.platform == sys.platform
        assert isinstance(info.pid, int) and info.pid != os.getpid()
        assert gw._rinfo() is info
        gw.remote_exec("import os; os.chdir('/')").waitclose(TIMEOUT)
        assert gw._rinfo().cwd == info.cwd
        assert gw._rinfo(update=True).cwd == "/"

    def test_remote_init_threads_prints(
        self, gw: Gateway, capsys: pytest.CaptureFixture[str]
    ) -> None:
        gw.remote_init_threads(3)
        assert (
            capsys.readouterr().out
            == "WARNING: remote_init_threads() is a no-operation in execnet-1.2\n"
        )

    def test_gateway_reconfigure(self, gw: Gateway) -> None:
        gw.reconfigure(py3str_as_py2str=True)
        assert gw.remote_exec("channel.send('s')").receive(TIMEOUT) == b"s"
        ch = gw.remote_exec("channel.send(type(channel.receive()).__name__)")
        ch.send("x")
        assert ch.receive(TIMEOUT) == b"bytes"
        gw.reconfigure()
        assert gw.remote_exec("channel.send('s')").receive(TIMEOUT) == "s"

    def test_exit_then_connection_closed(self, gw: Gateway, group: execnet.Group) -> None:
        gw.exit()
        assert gw not in group
        gw.exit()  # second call is a no-op
        gw.join(TIMEOUT)
        with pytest.raises(
            OSError, match="connection already closed: <Gateway id='g' not-receiving"
        ):
            gw.remote_exec("pass")
        with pytest.raises(OSError, match="connection already closed"):
            gw.newchannel()

    def test_worker_refuses_exec_requests_to_master(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            """
            from execnet.gateway_base import Message, dumps_internal
            c = channel.gateway.newchannel()
            channel.gateway._send(Message.CHANNEL_EXEC, c.id, dumps_internal(("pass", None, None, {})))
            try:
                c.waitclose(5)
            except channel.RemoteError as e:
                channel.send(e.formatted)
            """
        )
        assert ch.receive(TIMEOUT) == "execution disallowed"


class TestRemoteExecForms:
    def test_string_is_dedented_and_named(self, gw: Gateway) -> None:
        ch = gw.remote_exec(
            """
                import sys
                channel.send((__name__, sorted(k for k in globals() if not k.startswith('__')) ))
            """
        )
        assert ch.receive(TIMEOUT) == ("__channelexec__", ["channel", "sys"])

    def test_each_exec_gets_fresh_globals(self, gw: Gateway) -> None:
        gw.remote_exec("x = 1").waitclose(TIMEOUT)
        assert gw.remote_exec("channel.send('x' in globals())").receive(TIMEOUT) is False

    def test_kwargs_need_a_function(self, gw: Gateway) -> None:
        with pytest.raises(TypeError, match="can't pass kwargs to non-function remote_exec"):
            gw.remote_exec("pass", x=1)
        with pytest.raises(TypeError):
            gw.remote_exec(gateway_base, x=1)

    def test_function_with_kwargs(self, gw: Gateway) -> None:
        ch = gw.remote_exec(_remote_adder, a=1, b=[2])
        assert ch.receive(TIMEOUT) == 3

    def test_function_traceback_keeps_line_numbers(self, gw: Gateway) -> None:
        ch = gw.remote_exec(_remote_failer)
        with pytest.raises(execnet.RemoteError) as excinfo:
            ch.receive(TIMEOUT)
        lineno = _remote_failer.__code__.co_firstlineno + 1
        assert f'test_gateway.py", line {lineno}, in _remote_failer' in str(excinfo.value)

    def test_module_with_updated_file(
        self, gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        p = tmp_path / "remotemod_updated.py"
        p.write_text("if __name__ == '__channelexec__':\n    channel.send(1)\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        mod = importlib.import_module("remotemod_updated")
        try:
            assert gw.remote_exec(mod).receive(TIMEOUT) == 1
            p.write_text(
                "if __name__ == '__channelexec__':\n    channel.send(2)\n\n\nraise ValueError('x')\n"
            )
            ch = gw.remote_exec(mod)
            assert ch.receive(TIMEOUT) == 2
            with pytest.raises(execnet.RemoteError) as excinfo:
                ch.receive(TIMEOUT)
            assert 'remotemod_updated.py", line 5, in <module>' in str(excinfo.value)
        finally:
            sys.modules.pop("remotemod_updated", None)

    def test_non_source_objects_are_stringified(self, gw: Gateway) -> None:
        ch = gw.remote_exec(print)  # str(print) is not valid source
        with pytest.raises(execnet.RemoteError, match="SyntaxError"):
            ch.receive(TIMEOUT)

    def test_kwargs_must_serialize(self, gw: Gateway) -> None:
        with pytest.raises(execnet.DumpError):
            gw.remote_exec(_remote_adder, a=object(), b=[])
        assert gw.remote_exec("channel.send(1)").receive(TIMEOUT) == 1


def _remote_adder(channel, a, b):  # type: ignore[no-untyped-def]
    channel.send(a + b[0])


def _remote_failer(channel):  # type: ignore[no-untyped-def]
    raise ValueError("from function")


class TestPurityChecks:
    def test_lambda(self) -> None:
        with pytest.raises(ValueError) as excinfo:
            gateway._source_of_function(lambda channel: None)
        assert excinfo.value.args == ("can't evaluate lambda functions'",)

    def test_first_argument(self) -> None:
        def noargs():  # type: ignore[no-untyped-def]
            pass

        def wrong(chan):  # type: ignore[no-untyped-def]
            pass

        for f in (noargs, wrong):
            with pytest.raises(ValueError) as excinfo:
                gateway._source_of_function(f)
            assert excinfo.value.args == ("expected first function argument to be `channel`",)

    def test_closure(self) -> None:
        x = 1

        def f(channel):  # type: ignore[no-untyped-def]
            return x

        with pytest.raises(ValueError) as excinfo:
            gateway._source_of_function(f)
        assert excinfo.value.args == ("functions with closures can't be passed",)

    def test_order_lambda_before_signature(self) -> None:
        with pytest.raises(ValueError, match="lambda"):
            gateway._source_of_function(lambda: None)

    def test_no_source(self) -> None:
        ns: dict[str, object] = {}
        exec("def fail(channel): pass", ns)
        with pytest.raises(ValueError, match="can't find source file for <function fail"):
            gateway._source_of_function(ns["fail"])  # type: ignore[arg-type]

    def test_globals(self) -> None:
        def f(channel):  # type: ignore[no-untyped-def]
            channel.send(os.getpid() + len(sys.argv))

        with pytest.raises(ValueError) as excinfo:
            gateway._source_of_function(f)
        assert excinfo.value.args == (
            "the use of non-builtin globals isn't supported",
            ["os", "sys"],
        )

    def test_find_non_builtin_globals(self) -> None:
        src = textwrap.dedent(
            """
            def f(channel, a):
                b = a + len(channel)
                return [i for i in range(b)], helper
            """
        )
        code = compile(src, "x", "exec").co_consts[0]
        found = gateway._find_non_builtin_globals(src, code)
        assert "helper" in found
        assert "len" not in found and "a" not in found and "b" not in found

    def test_source_keeps_line_numbers(self) -> None:
        src = gateway._source_of_function(_remote_adder)
        assert src.startswith(
            "\n" * (_remote_adder.__code__.co_firstlineno - 1) + "def _remote_adder"
        )

    def test_rinfo_source_is_pure(self) -> None:
        assert "def rinfo_source(channel)" in gateway._source_of_function(gateway.rinfo_source)


class TestMainThreadOnly:
    @pytest.fixture
    def mgw(self, group: execnet.Group) -> Gateway:
        return group.makegateway("popen//execmodel=main_thread_only")

    def test_runs_in_main_thread(self, mgw: Gateway) -> None:
        for _ in range(5):
            ch = mgw.remote_exec(
                "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
            )
            assert ch.receive(TIMEOUT) is True
            ch.waitclose(TIMEOUT)
        assert mgw.remote_status().execmodel == "main_thread_only"

    def test_concurrent_exec_is_refused(self, mgw: Gateway) -> None:
        ch1 = mgw.remote_exec("channel.send(1); channel.receive()")
        assert ch1.receive(TIMEOUT) == 1
        start = time.monotonic()
        ch2 = mgw.remote_exec("channel.send(2)")
        with pytest.raises(execnet.RemoteError) as excinfo:
            ch2.receive(TIMEOUT)
        assert excinfo.value.formatted == gateway_base.MAIN_THREAD_ONLY_DEADLOCK_TEXT
        assert 0.9 < time.monotonic() - start < 5
        # status is answered by the receiver even while the main thread is busy
        assert mgw.remote_status().numexecuting == 1
        ch1.send(None)
        ch1.waitclose(TIMEOUT)

    def test_accepts_work_again_after_an_exception(self, mgw: Gateway) -> None:
        # upstream never re-armed after a failing execution; every later exec was refused
        with pytest.raises(execnet.RemoteError, match="ValueError"):
            mgw.remote_exec("raise ValueError").waitclose(TIMEOUT)
        assert mgw.remote_exec("channel.send(3)").receive(TIMEOUT) == 3

    def test_queued_exec_waits_for_a_short_previous_one(self, mgw: Gateway) -> None:
        ch1 = mgw.remote_exec("import time; time.sleep(0.3); channel.send(1)")
        ch2 = mgw.remote_exec("channel.send(2)")
        assert ch2.receive(TIMEOUT) == 2
        assert ch1.receive(TIMEOUT) == 1


def test_thread_model_runs_concurrent_execs_in_parallel(gw: Gateway) -> None:
    ch1 = gw.remote_exec(
        "import threading\nchannel.send(threading.current_thread() is threading.main_thread()); channel.receive()"
    )
    ch2 = gw.remote_exec(
        "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
    )
    assert ch1.receive(TIMEOUT) is True
    assert ch2.receive(TIMEOUT) is False
    ch1.send(None)
    ch1.waitclose(TIMEOUT)


def _green_path(name: str) -> str | None:
    """PYTHONPATH entry that makes ``name`` importable here ("" if installed), else None."""
    import subprocess

    side = Path(__file__).resolve().parent.parent / ".side" / name
    for extra in ("", str(side)):
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [extra, os.environ.get("PYTHONPATH")])),
        )
        probe = subprocess.run(
            [sys.executable, "-c", f"import {name}"], env=env, capture_output=True, timeout=60
        )
        if probe.returncode == 0:
            return extra
    return None


@pytest.mark.parametrize("model", ["gevent", "eventlet"])
def test_green_worker_serves_and_exits_cleanly(model: str) -> None:
    import subprocess

    extra = _green_path(model)
    if extra is None:
        pytest.skip(f"{model} not available (pip install --target .side/{model} {model})")
    script = textwrap.dedent(
        f"""
        import execnet
        gw = execnet.makegateway("popen//execmodel={model}")
        assert gw.remote_status().execmodel == "{model}"
        ch = gw.remote_exec("channel.send(channel.receive() + 1)")
        ch.send(41)
        assert ch.receive(10) == 42
        ch = gw.remote_exec("raise ValueError('g')")
        try:
            ch.receive(10)
        except execnet.RemoteError as e:
            assert "ValueError: g" in str(e)
        gw.exit()
        gw.join(10)
        print("rc", gw._io.wait())
        """
    )
    env = dict(os.environ)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # upstream 2.1.2's gevent workers exited with status 120 (FileObjectThread at shutdown)
    assert out.stdout == "rc 0\n"


def test_thread_model_sequential_execs_all_get_the_main_thread(gw: Gateway) -> None:
    # the channel close is sent only after the main thread is free again, so an exec issued
    # after waitclose() never races into an extra thread
    for _ in range(30):
        ch = gw.remote_exec(
            "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
        )
        assert ch.receive(TIMEOUT) is True
        ch.waitclose(TIMEOUT)
