"""Start-up: what a popen worker and ``import execnet`` load, and the deferred threading import."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator

import pytest

import execnet
from execnet import gateway_base

TIMEOUT = 10.0


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    group = execnet.Group()
    yield group
    group.terminate(TIMEOUT)


def test_import_execnet_loads_no_submodule() -> None:
    out = _run(
        "import sys, execnet\n"
        "print(sorted(m for m in sys.modules if m.startswith('execnet')))\n"
        "print('typing' in sys.modules)\n"
    )
    assert out.splitlines() == ["['execnet']", "False"]


def test_import_gateway_base_loads_no_master_side_or_heavy_stdlib() -> None:
    out = _run(
        "import sys, execnet.gateway_base\n"
        "mods = set(sys.modules)\n"
        "print(sorted(m for m in mods if m.startswith('execnet')))\n"
        "print(sorted(mods & {'typing', 'traceback', 'inspect', 'threading', 'queue',"
        " 'subprocess', 'socket', 'tempfile', 'hashlib', 'shutil', 'collections'}))\n"
    )
    modules, heavy = out.splitlines()
    assert modules == "['execnet', 'execnet._core', 'execnet.gateway_base']" or modules == (
        "['execnet', 'execnet.gateway_base']"
    )
    assert heavy == "[]"


def test_lazy_names_resolve_to_the_submodule_objects() -> None:
    out = _run(
        "import execnet\n"
        "from execnet.multi import Group\n"
        "assert execnet.Group is Group\n"
        "assert execnet.makegateway == execnet.default_group.makegateway\n"
        "assert execnet.gateway_base.RemoteError is execnet.RemoteError\n"
        "assert 'Group' in dir(execnet) and 'gateway_io' in dir(execnet)\n"
        "ns = {}\n"
        "exec('from execnet import *', ns)\n"
        "assert set(execnet.__all__) <= set(ns)\n"
        "print('ok')\n"
    )
    assert out == "ok"


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        execnet.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_name"):
        gateway_base.no_such_name  # noqa: B018
    assert not hasattr(execnet, "gateway_socket_typo")


def test_gateway_base_protocols_are_typing_protocols() -> None:
    for name in ("IO", "ReadIO", "WriteIO", "Event"):
        cls = getattr(gateway_base, name)
        assert typing.Protocol in cls.__mro__, name
        assert cls.__name__ == cls.__qualname__ == name
        assert cls.__module__ == "execnet.gateway_base"
        with pytest.raises(TypeError):
            cls()
    assert gateway_base.IO is gateway_base.IO


def test_geterrortext_formats_without_traceback_imported_by_caller() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        text = gateway_base.geterrortext(exc)
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: boom")


def test_worker_starts_lean(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec(
        "import sys\n"
        "channel.send(sorted(m for m in sys.modules if m.startswith('execnet')))\n"
        "channel.send(sorted(set(sys.modules) & {'typing', 'traceback', 'inspect', 'threading',"
        " 'subprocess', 'shutil', 'hashlib', 'tempfile'}))\n"
    )
    modules = ch.receive(TIMEOUT)
    assert "execnet.multi" not in modules and "execnet.gateway" not in modules
    assert "execnet.gateway_base" in modules
    assert ch.receive(TIMEOUT) == []
    ch.waitclose(TIMEOUT)


@pytest.mark.parametrize("model", ["thread", "main_thread_only"])
def test_idle_worker_imports_threading_in_its_main_thread(model: str) -> None:
    group = execnet.Group(execmodel=model)
    try:
        gw = group.makegateway("popen")
        gw.remote_exec("pass").waitclose(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            ch = gw.remote_exec(
                "import sys\n"
                "t = sys.modules.get('threading')\n"
                "channel.send(t is not None and t.current_thread() is t.main_thread())\n"
            )
            if ch.receive(TIMEOUT):
                break
            assert time.monotonic() < deadline, "threading never imported by the idle worker"
            time.sleep(0.05)
        ch = gw.remote_exec(
            "import threading\n"
            "channel.send((threading.current_thread().name, threading.main_thread().name))\n"
        )
        assert ch.receive(TIMEOUT) == ("MainThread", "MainThread")
    finally:
        group.terminate(TIMEOUT)


def test_concurrent_first_execs_see_the_real_main_thread(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    # the first task blocks without importing threading; the second imports it meanwhile
    ch1 = gw.remote_exec("channel.send(channel.receive())")
    ch2 = gw.remote_exec(
        "import threading\n"
        "channel.send(threading.current_thread() is threading.main_thread())\n"
        "channel.send(threading.main_thread().name)\n"
    )
    assert ch2.receive(TIMEOUT) is False
    assert ch2.receive(TIMEOUT) == "MainThread"
    ch1.send(1)
    assert ch1.receive(TIMEOUT) == 1
    ch3 = gw.remote_exec(
        "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
    )
    assert ch3.receive(TIMEOUT) is True


class TestLockEvent:
    """The ``_thread``-based event the thread models use before threading is imported."""

    def test_set_clear_is_set(self) -> None:
        ev = gateway_base._LockEvent()
        assert not ev.is_set()
        assert ev.wait(0) is False
        assert ev.wait(-1) is False
        ev.set()
        assert ev.is_set() and ev.wait() is True and ev.wait(0) is True
        ev.clear()
        assert not ev.is_set()

    def test_wait_times_out(self) -> None:
        ev = gateway_base._LockEvent()
        t0 = time.monotonic()
        assert ev.wait(0.1) is False
        assert 0.09 <= time.monotonic() - t0 < 5
        assert ev._waiters == []

    def test_set_wakes_every_waiter(self) -> None:
        ev = gateway_base._LockEvent()
        results: list[bool] = []
        waiters = [
            threading.Thread(target=lambda: results.append(ev.wait(TIMEOUT))) for _ in range(5)
        ]
        for t in waiters:
            t.start()
        time.sleep(0.1)
        ev.set()
        for t in waiters:
            t.join(TIMEOUT)
        assert results == [True] * 5

    def test_thread_model_hands_out_lock_events_only_without_threading(self) -> None:
        out = _run(
            "import sys, execnet.gateway_base as gb\n"
            "em = gb.get_execmodel('thread')\n"
            "a, l = em.Event(), em.RLock()\n"
            "import threading\n"
            "b = em.Event()\n"
            "print(type(a).__name__, type(b) is threading.Event, type(l) is type(threading.RLock()))\n"
        )
        assert out == "_LockEvent True True"
