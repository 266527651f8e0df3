"""Start-up: what a popen worker and ``import execnet`` load, and which thread is the main one."""

from __future__ import annotations

import subprocess
import sys
import typing
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        " 'subprocess', 'socket', 'tempfile', 'hashlib', 'shutil', 'collections', 'struct',"
        " 'weakref'}))\n"
    )
    modules, heavy = out.splitlines()
    assert modules == "['execnet', 'execnet._core', 'execnet.gateway_base']" or modules == (
        "['execnet', 'execnet.gateway_base']"
    )
    assert heavy == "[]"


def test_master_side_import_is_lean() -> None:
    out = _run(
        "import sys, execnet\n"
        "execnet.Group, execnet.XSpec, execnet.Gateway, execnet.MultiChannel\n"
        "print(sorted(set(sys.modules) & {'typing', 'inspect', 'textwrap', 'shlex', 'ast',"
        " 'tokenize', 'hashlib', 'shutil', 'tempfile'}))\n"
    )
    assert out == "[]"


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
        " 'subprocess', 'shutil', 'hashlib', 'tempfile', 'struct', 'weakref'}))\n"
    )
    modules = ch.receive(TIMEOUT)
    assert "execnet.multi" not in modules and "execnet.gateway" not in modules
    assert "execnet.gateway_base" in modules
    # threading is imported by the main thread before any task runs, so that it records the
    # right main thread whichever task imports it next
    assert ch.receive(TIMEOUT) == ["threading"]
    ch.waitclose(TIMEOUT)


@pytest.mark.parametrize("model", ["thread", "main_thread_only"])
def test_threading_imported_by_a_later_task_sees_the_main_thread(model: str) -> None:
    group = execnet.Group(execmodel=model)
    try:
        gw = group.makegateway("popen")
        gw.remote_exec("pass").waitclose(TIMEOUT)
        ch = gw.remote_exec(
            "import sys\n"
            "channel.send('threading' in sys.modules)\n"
            "import threading\n"
            "channel.send((threading.current_thread().name, threading.main_thread().name,"
            " threading.current_thread() is threading.main_thread()))\n"
        )
        assert ch.receive(TIMEOUT) is True
        assert ch.receive(TIMEOUT) == ("MainThread", "MainThread", True)
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


def test_task_beside_a_busy_first_task_sees_the_main_thread(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    # the first task neither imports threading nor blocks in execnet
    ch1 = gw.remote_exec("import time\ntime.sleep(0.2)\nchannel.send(1)")
    ch2 = gw.remote_exec(
        "import threading\n"
        "channel.send((threading.main_thread().name, threading.current_thread().name))\n"
    )
    main_name, own_name = ch2.receive(TIMEOUT)
    assert main_name == "MainThread" and own_name != "MainThread"
    assert ch1.receive(TIMEOUT) == 1


# -- remote_exec sources compiled natively ------------------------------------------------------

needs_native_compile = pytest.mark.skipif(
    getattr(gateway_base._core, "compile_exec", None) is None,
    reason="execnet._core with compile_exec is not built",
)

SOURCES = [
    "x = 1\n",
    "def f(x: int) -> 'str':\n    return str(x)\n",
    '"""doc"""\nimport os\nclass A:\n    y: int = 2\n',
    "async def g():\n    await h()\n",
    "print('é', '\\u1234')\n",
    "# -*- coding: latin-1 -*-\nx = 'é'\n",
    "\n" * 40 + "def f(channel):\n    channel.send(1)\n",
]


def _code_tuple(code: typing.Any) -> tuple[object, ...]:
    consts = tuple(_code_tuple(c) if hasattr(c, "co_code") else c for c in code.co_consts)
    return (
        code.co_code,
        consts,
        code.co_names,
        code.co_flags,
        code.co_filename,
        code.co_firstlineno,
        code.co_linetable,
    )


@needs_native_compile
@pytest.mark.parametrize("source", SOURCES)
def test_native_compile_matches_the_builtin(source: str) -> None:
    native = gateway_base._core.compile_exec(source, "<remote exec>", gateway_base._FUTURE_FLAGS)
    builtin = compile(
        source, "<remote exec>", "exec", flags=gateway_base._FUTURE_FLAGS, dont_inherit=True
    )
    assert native is not None
    assert _code_tuple(native) == _code_tuple(builtin)


def test_future_flags_are_the_ones_compile_inherits_in_gateway_base() -> None:
    import __future__

    # gateway_base uses postponed annotations, and compile() hands them on to remote code
    assert gateway_base._FUTURE_FLAGS == __future__.annotations.compiler_flag


@needs_native_compile
@pytest.mark.parametrize(
    "source",
    ["x = (\n", "def f():\n\treturn 1\n        return 2\n", "1 +* 2\n", "return 5\n"],
)
def test_native_compile_raises_what_the_builtin_raises(source: str) -> None:
    with pytest.raises(SyntaxError) as builtin:
        compile(source, "f.py", "exec", flags=gateway_base._FUTURE_FLAGS, dont_inherit=True)
    with pytest.raises(SyntaxError) as native:
        gateway_base._core.compile_exec(source, "f.py", gateway_base._FUTURE_FLAGS)
    assert type(native.value) is type(builtin.value)
    assert native.value.args == builtin.value.args


@needs_native_compile
@pytest.mark.parametrize(
    ("source", "filename"),
    [("a = '\0'", "f.py"), ("x = '\ud800'", "f.py"), ("x = 1", "f\0.py"), (b"x = 1", "f.py")],
)
def test_native_compile_leaves_odd_input_to_the_builtin(source: object, filename: str) -> None:
    assert gateway_base._core.compile_exec(source, filename, 0) is None
    try:
        expected: object = compile(source, filename, "exec")  # type: ignore[call-overload]
    except Exception as exc:
        expected = type(exc)
    try:
        got: object = gateway_base._compile_exec(source, filename)  # type: ignore[arg-type]
    except Exception as exc:
        got = type(exc)
    if isinstance(expected, type):
        assert got is expected
    else:
        assert _code_tuple(got) == _code_tuple(expected)


def test_remote_code_keeps_compile_semantics(group: execnet.Group) -> None:
    gw = group.makegateway("popen")
    ch = gw.remote_exec(
        "def f(x: int) -> str: pass\n"
        "import sys, inspect\n"
        "channel.send((f.__annotations__, inspect.stack()[0].filename, __name__))\n"
    )
    # postponed annotations, as compile() called from gateway_base gives them
    assert ch.receive(TIMEOUT) == (
        {"x": "int", "return": "str"},
        "<remote exec>",
        "__channelexec__",
    )
    ch = gw.remote_exec("x = (\n")
    with pytest.raises(execnet.RemoteError) as excinfo:
        ch.receive(TIMEOUT)
    text = str(excinfo.value)
    assert 'File "<remote exec>", line 1' in text
    assert "SyntaxError: '(' was never closed" in text
    ch = gw.remote_exec("channel.send(1)\nx = '\0'\n")
    with pytest.raises(execnet.RemoteError) as excinfo:
        ch.receive(TIMEOUT)
    assert "null bytes" in str(excinfo.value)


# -- _rinfo ---------------------------------------------------------------------------------------


def test_rinfo_ships_the_checked_function_source_through_remote_exec(
    group: execnet.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inspect

    from execnet import gateway

    gw = group.makegateway("popen")
    sent: list[object] = []
    real_dumps = gateway_base.dumps_internal
    monkeypatch.setattr(
        gateway_base, "dumps_internal", lambda obj: sent.append(obj) or real_dumps(obj)
    )
    calls: list[object] = []
    real_remote_exec = gw.remote_exec
    monkeypatch.setattr(
        gw,
        "remote_exec",
        lambda source, **kw: calls.append(source) or real_remote_exec(source, **kw),
    )
    for _ in range(2):
        info = gw._rinfo(update=True)
        assert info.pid != 0 and info.executable == sys.executable
    # the task is what remote_exec(rinfo_source) always sent: the function's checked source
    expected = (
        gateway._source_of_function(gateway.rinfo_source),
        inspect.getsourcefile(gateway.rinfo_source),
        "rinfo_source",
        {},
    )
    assert sent == [expected, expected]
    # and it still goes through remote_exec (plugins and tests wrap it)
    assert calls == [gateway.rinfo_source, gateway.rinfo_source]


# -- remote_exec's dedent ---------------------------------------------------------------------


@given(st.text(alphabet=st.sampled_from(" \t\n\rx#é\x0b\x0c"), max_size=40))
@settings(max_examples=400, deadline=None)
def test_dedent_is_textwraps(text: str) -> None:
    import textwrap

    from execnet import gateway

    assert gateway._dedent(text) == textwrap.dedent(text)


@pytest.mark.parametrize(
    "text",
    ["x = 1\n", "if 1:\n    x = 1\n", "    x = 1\n    y = 2\n", "x\n  \ny\n", "\tx\n\ty\n", ""],
)
def test_dedent_examples(text: str) -> None:
    import textwrap

    from execnet import gateway

    assert gateway._dedent(text) == textwrap.dedent(text)


def test_unindented_remote_exec_imports_no_textwrap() -> None:
    out = _run(
        "import sys, execnet\n"
        "gw = execnet.makegateway()\n"
        "ch = gw.remote_exec('channel.send(1)')\n"
        "assert ch.receive(10) == 1\n"
        "print('textwrap' in sys.modules)\n"
        "ch = gw.remote_exec('  channel.send(2)\\n  channel.send(3)')\n"
        "assert (ch.receive(10), ch.receive(10)) == (2, 3)\n"
        "print('textwrap' in sys.modules)\n"
        "gw.exit()\n"
    )
    assert out.splitlines() == ["False", "True"]


def test_rinfo_task_is_the_checked_function_source() -> None:
    import inspect

    from execnet import gateway

    source, file_name = gateway._own_function_task(gateway.rinfo_source)
    assert source == gateway._source_of_function(gateway.rinfo_source)
    assert file_name == inspect.getsourcefile(gateway.rinfo_source)


def test_first_rinfo_needs_no_inspect() -> None:
    out = _run(
        "import sys, execnet\n"
        "gw = execnet.makegateway()\n"
        "info = gw._rinfo()\n"
        "print(info.executable == sys.executable, 'inspect' in sys.modules,"
        " 'tokenize' in sys.modules)\n"
        "gw.exit()\n"
    )
    assert out == "True False False"
