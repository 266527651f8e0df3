"""The worker runtime module on its own: codec, framing, IO, exec models, pool, tracing, and
its source text running standalone as a worker on every available interpreter."""

from __future__ import annotations

import enum
import inspect
import os
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

import execnet
from execnet import gateway_base as gb

PKGDIR = Path(gb.__file__).parent
SOURCE = inspect.getsource(gb)


# ---------------------------------------------------------------------------------------------
# codec
# ---------------------------------------------------------------------------------------------


def pure_dumps_internal(obj: object) -> bytes:
    data = gb._Serializer().save(obj)
    assert data is not None
    return data


def pure_loads_internal(data: bytes, strconfig: tuple[bool, bool] | None = None) -> Any:
    return gb.Unserializer(BytesIO(data), strconfig=strconfig).load()


GOLDEN = [
    # (value, internal bytes) from the wire specification
    ([1, "a"], bytes.fromhex("4b00000002 4600000000 4600000001 50 4600000001 4e00000001 61 50 51")),
    ((1, 2), bytes.fromhex("4600000001 4600000002 4000000002 51")),
    ({"a": 1}, bytes.fromhex("4a 4e00000001 61 4600000001 50 51")),
    (2**31, b"H\x00\x00\x00\x0a2147483648Q"),
    (1.5, bytes.fromhex("44 3ff8000000000000 51")),
    (None, b"LQ"),
    (True, b"RQ"),
    (False, b"CQ"),
    (b"xy", b"A\x00\x00\x00\x02xyQ"),
    (1 + 2j, b"T" + struct.pack("!dd", 1.0, 2.0) + b"Q"),
    (frozenset([7]), b"F\x00\x00\x00\x07E\x00\x00\x00\x01Q"),
    ({7}, b"F\x00\x00\x00\x07O\x00\x00\x00\x01Q"),
    ((), b"@\x00\x00\x00\x00Q"),
    ("channel.send(42)", b"N\x00\x00\x00\x10channel.send(42)Q"),
]


@pytest.mark.parametrize(("value", "expected"), GOLDEN, ids=[repr(g[0]) for g in GOLDEN])
def test_golden_bytes(value: object, expected: bytes) -> None:
    assert pure_dumps_internal(value) == expected
    assert gb.dumps_internal(value) == expected
    assert pure_loads_internal(expected) == value
    assert gb.loads_internal(expected) == value
    assert gb.dumps(value) == b"\x02" + expected
    assert gb.loads(b"\x02" + expected) == value


def test_versioned_int() -> None:
    assert execnet.dumps(1) == bytes.fromhex("02 4600000001 51")


def test_remote_exec_payload_matches_the_wire_example() -> None:
    payload = gb.dumps_internal(("channel.send(42)", None, None, {}))
    assert payload == bytes.fromhex("4e00000010") + b"channel.send(42)" + bytes.fromhex(
        "4c4c4a4000000004 51"
    )


ROUNDTRIP = [
    0,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    10**40,
    -(10**40),
    0.0,
    float("inf"),
    -2.5,
    "",
    "ünïcødé ✓",
    b"",
    bytes(range(256)),
    [],
    [None, [1, [2, (3,)]]],
    {(1, 2): {"k": [b"v"]}},
    {1, 2, 3},
    frozenset({"a", "b"}),
    (1, (), 3),
    complex(-1.5, 2.25),
]


@pytest.mark.parametrize("value", ROUNDTRIP, ids=repr)
def test_roundtrip(value: object) -> None:
    assert pure_loads_internal(pure_dumps_internal(value)) == value
    assert gb.loads(gb.dumps(value)) == value
    assert type(gb.loads(gb.dumps(value))) is type(value)


def test_nan_roundtrip() -> None:
    out = gb.loads(gb.dumps(float("nan")))
    assert out != out


def test_int_below_int4_uses_decimal_form() -> None:
    # upstream raises struct.error here; the decimal form decodes everywhere
    assert pure_dumps_internal(-(2**31) - 1) == b"H\x00\x00\x00\x0b-2147483649Q"
    assert gb.dumps_internal(-(2**31) - 1) == b"H\x00\x00\x00\x0b-2147483649Q"


class MyStr(str):
    pass


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        object(),
        MyStr("x"),
        Color.RED,
        OrderedDict(),
        bytearray(b"x"),
        ValueError("x"),
        sys.version_info,
    ],
    ids=[
        "object",
        "str-subclass",
        "intenum",
        "ordereddict",
        "bytearray",
        "exception",
        "version_info",
    ],
)
def test_unsupported_types_raise_dumperror(value: object) -> None:
    with pytest.raises(gb.DumpError, match="can't serialize"):
        pure_dumps_internal(value)
    with pytest.raises(gb.DumpError, match="can't serialize"):
        gb.dumps(value)


def test_dumperror_text_names_the_type() -> None:
    with pytest.raises(gb.DumpError) as excinfo:
        gb.dumps(object())
    assert str(excinfo.value) == "can't serialize <class 'object'>"


def test_surrogates_are_not_encodable() -> None:
    with pytest.raises(gb.DumpError, match="strings must be utf-8 encodable"):
        pure_dumps_internal("\ud800")
    with pytest.raises(gb.DumpError, match="strings must be utf-8 encodable"):
        gb.dumps("\ud800")


def test_any_class_named_channel_is_a_channel_reference() -> None:
    class Channel:
        id = 9

    assert pure_dumps_internal(Channel()) == b"B\x00\x00\x00\x09Q"


def test_channel_opcode_needs_a_factory() -> None:
    with pytest.raises(AssertionError):
        pure_loads_internal(b"B\x00\x00\x00\x01Q")


@pytest.mark.parametrize(
    ("data", "exc", "text"),
    [
        (b"\x01F\x00\x00\x00\x01Q", gb.LoadError, "wrong dumpformat version b'\\x01'"),
        (b"", gb.LoadError, "wrong dumpformat version b''"),
        (b"\x02Z", gb.LoadError, "unknown opcode b'Z' - wire protocol corruption?"),
        (b"\x02LLQ", gb.LoadError, "internal unserialization error"),
        (b"\x02Q", gb.LoadError, "internal unserialization error"),
        (b"\x02LLP", gb.LoadError, "not enough items for setitem"),
        (b"\x02L", EOFError, ""),
        (b"\x02F\x00\x00", struct.error, ""),
    ],
)
def test_load_errors(data: bytes, exc: type[BaseException], text: str) -> None:
    with pytest.raises(exc) as excinfo:
        gb.load(BytesIO(data))
    if text:
        assert str(excinfo.value) == text
    with pytest.raises(exc):
        gb.loads(data)


def test_string_coercion() -> None:
    py2 = b"\x02M\x00\x00\x00\x01aQ"
    assert gb.loads(py2) == b"a"
    assert gb.loads(py2, py2str_as_py3str=True) == "a"
    py3 = b"\x02N\x00\x00\x00\x01aQ"
    assert gb.loads(py3) == "a"
    assert gb.loads(py3, py3str_as_py2str=True) == b"a"
    assert gb.loads(b"\x02S\x00\x00\x00\x01aQ", py3str_as_py2str=True) == "a"
    # internal default (channels): py2 strings become str
    assert pure_loads_internal(b"M\x00\x00\x00\x01\xe9Q") == "é"


def test_legacy_opcodes_decode() -> None:
    assert gb.loads(b"\x02G\x00\x00\x00\x05Q") == 5
    assert gb.loads(b"\x02I\x00\x00\x00\x0212Q") == 12


def test_collections_take_at_most_the_stack() -> None:
    assert gb.loads(b"\x02F\x00\x00\x00\x01@\x00\x00\x00\x05Q") == (1,)


def test_dump_writes_fragments_and_load_stops_at_stop() -> None:
    f = BytesIO()
    gb.dump(f, [1, 2])
    gb.dump(f, "second")
    f.seek(0)
    assert gb.load(f) == [1, 2]
    assert gb.load(f) == "second"


def test_dumpformat_version_is_looked_up_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gb, "DUMPFORMAT_VERSION", gb.bchr(1))
    data = gb.dumps(42)
    assert data[:1] == b"\x01"
    monkeypatch.setattr(gb, "DUMPFORMAT_VERSION", gb.bchr(2))
    with pytest.raises(gb.DataFormatError):
        gb.loads(data)


def test_opcode_table_is_frozen() -> None:
    ops = {k: v for k, v in vars(gb.opcode).items() if "__" not in k}
    assert len(ops) == 21
    assert sorted(ops.values()) == [bytes([c]) for c in range(ord("@"), ord("T") + 1)]


def test_module_functions_fall_back_to_pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gb, "_core", None)
    for value, expected in GOLDEN:
        assert gb.dumps_internal(value) == expected
        assert gb.loads_internal(expected) == value


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
)
_hashable = st.recursive(
    _scalars, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=8
)
_values = st.recursive(
    _scalars,
    lambda c: (
        st.lists(c, max_size=4)
        | st.tuples(c, c)
        | st.dictionaries(_hashable, c, max_size=4)
        | st.sets(_hashable, max_size=4)
    ),
    max_leaves=20,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(_values)
def test_property_roundtrip_and_codecs_agree(value: object) -> None:
    pure = pure_dumps_internal(value)
    assert gb.dumps_internal(value) == pure
    assert pure_loads_internal(pure) == value
    assert gb.loads_internal(pure) == value


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.binary(max_size=40))
def test_property_garbage_never_hangs_or_crashes(data: bytes) -> None:
    # NEWLIST preallocates its declared length; keep garbage from asking for gigabytes
    hypothesis.assume(b"K" not in data)
    allowed = (
        gb.DataFormatError,
        EOFError,
        struct.error,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        IndexError,
        AssertionError,
        MemoryError,
        OverflowError,
    )
    try:
        pure_loads_internal(data)
    except allowed:
        pass


# ---------------------------------------------------------------------------------------------
# framing and IO
# ---------------------------------------------------------------------------------------------


def test_message_roundtrip_every_code() -> None:
    assert list(gb.Message._types) == list(range(8))
    for code in gb.Message._types:
        buf = BytesIO()
        gb.Message(code, 42, b"23").to_io(buf)  # type: ignore[arg-type]
        assert buf.getvalue() == struct.pack("!bii", code, 42, 2) + b"23"
        msg = gb.Message.from_io(BytesIO(buf.getvalue()))
        assert (msg.msgcode, msg.channelid, msg.data) == (code, 42, b"23")


def test_message_repr() -> None:
    msg = gb.Message(gb.Message.CHANNEL_EXEC, 1, b"x" * 16)
    assert repr(msg) == "<Message CHANNEL_EXEC channel=1 lendata=16>"


def make_io(data: bytes) -> gb.Popen2IO:
    return gb.Popen2IO(BytesIO(), BytesIO(data), gb.get_execmodel("thread"))


def test_message_eof_at_header() -> None:
    with pytest.raises(EOFError) as excinfo:
        gb.Message.from_io(make_io(b""))
    assert str(excinfo.value) == "couldn't load message header, expected 9 bytes, got 0"


def test_message_eof_in_payload() -> None:
    with pytest.raises(EOFError, match="expected 5 bytes, got 2"):
        gb.Message.from_io(make_io(struct.pack("!bii", 4, 1, 5) + b"ab"))


@pytest.mark.parametrize("header", [b"garbage!!", struct.pack("!bii", 4, 1, -1)])
def test_message_refuses_corrupt_header_without_reading_payload(header: bytes) -> None:
    with pytest.raises(EOFError, match="wire protocol corruption"):
        gb.Message.from_io(make_io(header))


def test_popen2io_short_reads() -> None:
    io = make_io(b"test")
    real_read = io._read
    io._read = lambda n: real_read(min(n, 1))
    assert io.read(3) == b"tes"


def test_popen2io_uses_binary_layer_and_flushes(tmp_path: Path) -> None:
    p = tmp_path / "out"
    with open(p, "w", encoding="utf-8") as out, open(os.devnull) as inp:
        io = gb.Popen2IO(out, inp, gb.get_execmodel("thread"))
        io.write(b"\x00\xff")
        assert p.read_bytes() == b"\x00\xff"


# ---------------------------------------------------------------------------------------------
# exec models and the worker pool
# ---------------------------------------------------------------------------------------------


def test_get_execmodel() -> None:
    m = gb.get_execmodel("thread")
    assert m.backend == "thread"
    assert repr(m) == "<ExecModel 'thread'>"
    assert gb.get_execmodel(m) is m
    assert gb.get_execmodel("thread") is not m
    assert isinstance(gb.get_execmodel("main_thread_only"), gb.ThreadExecModel)
    with pytest.raises(ValueError, match="unknown execmodel 'foo'"):
        gb.get_execmodel("foo")


def test_thread_lock_is_reentrant() -> None:
    lock = gb.get_execmodel("thread").Lock()
    with lock, lock:
        pass


@pytest.fixture(params=["thread", "main_thread_only"])
def execmodel(request: pytest.FixtureRequest) -> gb.ExecModel:
    return gb.get_execmodel(request.param)


def test_pool_results_and_errors(execmodel: gb.ExecModel) -> None:
    pool = gb.WorkerPool(execmodel)
    assert pool.spawn(lambda x: x * 2, 21).get(timeout=5) == 42
    reply = pool.spawn(lambda: 1 / 0)
    reply.waitfinish(5)
    with pytest.raises(ZeroDivisionError) as e1:
        reply.get()
    with pytest.raises(ZeroDivisionError) as e2:
        reply.get()
    assert e1.value is e2.value
    assert pool.waitall(5)
    assert pool.active_count() == 0


def test_pool_timeouts(execmodel: gb.ExecModel) -> None:
    pool = gb.WorkerPool(execmodel)
    ev = execmodel.Event()
    reply = pool.spawn(ev.wait)
    assert reply.running
    with pytest.raises(OSError, match="timeout waiting for"):
        reply.get(timeout=0.01)
    assert not pool.waitall(0.01)
    assert pool.active_count() == 1
    ev.set()
    assert pool.waitall(5)
    assert not reply.running


def test_pool_shutdown(execmodel: gb.ExecModel) -> None:
    pool = gb.WorkerPool(execmodel)
    pool.trigger_shutdown()
    with pytest.raises(ValueError, match="pool is shutting down"):
        pool.spawn(lambda: None)
    assert pool.terminate(1)


def test_hasprimary_requires_threads() -> None:
    class Green(gb.ThreadExecModel):
        backend = "gevent"

    with pytest.raises(ValueError, match="hasprimary=True requires thread model"):
        gb.WorkerPool(Green(), hasprimary=True)


def test_primary_thread_gets_tasks_when_idle() -> None:
    m = gb.get_execmodel("thread")
    pool = gb.WorkerPool(m, hasprimary=True)
    primary: list[int] = []
    t = threading.Thread(
        target=lambda: (primary.append(m.get_ident()), pool.integrate_as_primary_thread())
    )
    t.start()
    release = m.Event()
    first = pool.spawn(lambda: (m.get_ident(), release.wait(5)))
    time.sleep(0.1)
    second = pool.spawn(m.get_ident)  # primary busy: runs in another thread
    assert second.get(5) != primary[0]
    release.set()
    assert first.get(5)[0] == primary[0]
    pool.trigger_shutdown()
    t.join(5)
    assert not t.is_alive()


def test_main_thread_only_runs_every_task_in_the_primary_thread_in_order() -> None:
    m = gb.get_execmodel("main_thread_only")
    pool = gb.WorkerPool(m, hasprimary=True)
    t = threading.Thread(target=pool.integrate_as_primary_thread)
    t.start()
    log: list[tuple[str, int]] = []

    def task(name: str) -> None:
        log.append((name + "-start", m.get_ident()))
        time.sleep(0.05)
        log.append((name + "-end", m.get_ident()))

    def fail() -> None:
        raise ValueError("x")

    replies = [pool.spawn(task, "a"), pool.spawn(fail), pool.spawn(task, "b")]
    for r in replies:
        r.waitfinish(5)
    assert [n for n, _ in log] == ["a-start", "a-end", "b-start", "b-end"]
    assert {ident for _, ident in log} == {t.ident}
    # the primary is idle again after a failing task
    assert pool._wait_primary_idle(1.0)
    pool.trigger_shutdown()
    t.join(5)
    assert not t.is_alive()


# ---------------------------------------------------------------------------------------------
# exceptions, error text
# ---------------------------------------------------------------------------------------------


def test_remote_error() -> None:
    e = gb.RemoteError("boom\n")
    assert e.args == ()
    assert str(e) == "boom\n"
    assert repr(e) == "RemoteError: boom\n"
    assert e.formatted == "boom\n"


def test_timeout_error_is_an_oserror() -> None:
    assert issubclass(gb.TimeoutError, OSError)
    assert gb.TimeoutError is not TimeoutError
    assert gb.Channel.TimeoutError is gb.TimeoutError
    assert gb.Channel.RemoteError is gb.RemoteError


def test_remote_error_warn(capfd: pytest.CaptureFixture[str]) -> None:
    gb.RemoteError("oops").warn()
    gb.RemoteError(gb.INTERRUPT_TEXT).warn()
    _, err = capfd.readouterr()
    assert err == f"[{os.getpid()}] Warning: unhandled RemoteError: oops\n"


def test_geterrortext() -> None:
    try:
        raise ValueError("17")
    except ValueError as exc:
        text = gb.geterrortext(exc)
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("ValueError: 17\n")

    def broken_format(*args: object) -> list[str]:
        raise RuntimeError("cannot format")

    assert gb.geterrortext(ValueError("x"), format_exception=broken_format) == "ValueError: x"


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------


def run_python(
    code: str, env_extra: dict[str, str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("EXECNET_DEBUG", None)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
        **kwargs,
    )


def test_tracing_off_by_default() -> None:
    out = run_python(
        "from execnet import gateway_base as g; print(g.trace is g.notrace, hasattr(g, 'fn'))", {}
    )
    assert out.stdout.split() == ["True", "False"]


def test_tracing_to_stderr() -> None:
    out = run_python(
        "import os; from execnet import gateway_base as g; g.trace('hello', 1); print(os.getpid())",
        {"EXECNET_DEBUG": "2"},
    )
    assert f"[{out.stdout.strip()}] hello 1\n" in out.stderr


@pytest.mark.parametrize("value", ["1", "0"])
def test_tracing_to_file(tmp_path: Path, value: str) -> None:
    out = run_python(
        "from execnet import gateway_base as g; g.trace('to', 'file'); print(g.fn); "
        "print(hasattr(g, 'notrace'))",
        {"EXECNET_DEBUG": value, "TMPDIR": str(tmp_path)},
    )
    fn, has_notrace = out.stdout.split()
    assert Path(fn).parent == tmp_path
    assert Path(fn).name.startswith("execnet-debug-")
    assert Path(fn).read_text().startswith("to file\n")
    assert has_notrace == "False"


def test_worker_trace_lines(tmp_path: Path) -> None:
    code = (
        "import execnet; gw = execnet.makegateway('popen');"
        "print(gw.remote_exec('import os; channel.send(os.getpid())').receive()); gw.exit(); gw.join()"
    )
    out = run_python(code, {"EXECNET_DEBUG": "2"})
    pid = out.stdout.strip()
    assert f"[{pid}] creating workergateway on" in out.stderr
    assert f"[{pid}] gw0-worker [serve] spawning receiver thread" in out.stderr
    assert "gw0 sent <Message CHANNEL_EXEC channel=1 lendata=" in out.stderr


# ---------------------------------------------------------------------------------------------
# the source text standalone
# ---------------------------------------------------------------------------------------------


def available_pythons() -> list[str]:
    found = [sys.executable]
    for version in ("3.8", "3.9", "3.10", "3.12", "3.13"):
        for candidate in (
            *sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}")),
            Path(f"/usr/bin/python{version}"),
        ):
            if candidate.exists():
                found.append(str(candidate))
                break
    return found


@pytest.fixture(params=available_pythons())
def anypython(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_source_runs_as_top_level_module(anypython: str) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(PKGDIR)!r}); import gateway_base as g;"
        "sys.stdout.buffer.write(g.dumps_internal([1, 'a', {2: (3.5, b'x')}]))"
    )
    out = subprocess.run([anypython, "-c", code], capture_output=True, check=True, timeout=60)
    assert out.stdout == pure_dumps_internal([1, "a", {2: (3.5, b"x")}])


def test_source_has_no_package_imports() -> None:
    code = f"import sys; sys.path.insert(0, {str(PKGDIR)!r}); import gateway_base as g; print(g._core, 'execnet' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["None", "False"]


class PipeIO:
    """A minimal master-side IO over a child's pipes, independent of gateway_io."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.execmodel = gb.get_execmodel("thread")

    def read(self, n: int) -> bytes:
        assert self.popen.stdout is not None
        data = self.popen.stdout.read(n)
        if len(data) < n:
            raise EOFError("expected %d bytes, got %d" % (n, len(data)))
        return data

    def write(self, data: bytes) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

    def close_read(self) -> None:
        assert self.popen.stdout is not None
        self.popen.stdout.close()

    def close_write(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def wait(self) -> int:
        return self.popen.wait()

    def kill(self) -> None:
        self.popen.kill()


class MiniMaster(gb.BaseGateway):
    def remote_exec(self, source: str) -> gb.Channel:
        channel = self.newchannel()
        self._send(gb.Message.CHANNEL_EXEC, channel.id, gb.dumps_internal((source, None, None, {})))
        return channel


def start_standalone_worker(
    python: str, execmodel: str = "thread"
) -> tuple[MiniMaster, subprocess.Popen[bytes]]:
    boot = SOURCE + (
        f"\nio = init_popen_io(get_execmodel({execmodel!r}))\nio.write(b'1')\nserve(io, id='w-worker')\n"
    )
    popen = subprocess.Popen(
        [python, "-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert popen.stdin is not None and popen.stdout is not None
    popen.stdin.write((repr(boot) + "\n").encode("utf-8"))
    popen.stdin.flush()
    assert popen.stdout.read(1) == b"1"
    gw = MiniMaster(PipeIO(popen), "w", _startcount=1)
    gw._initreceive()
    return gw, popen


def test_standalone_worker_serves(anypython: str) -> None:
    gw, popen = start_standalone_worker(anypython)
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(41)
    assert ch.receive(timeout=10) == 42
    ch = gw.remote_exec(
        "import sys; channel.send((__name__, type(channel).__module__, sys.version_info[:2]))"
    )
    name, module, _version = ch.receive(timeout=10)
    assert (name, module) == ("__channelexec__", "__main__")
    ch = gw.remote_exec("raise ValueError('boom')")
    with pytest.raises(gb.RemoteError) as excinfo:
        ch.receive(timeout=10)
    assert 'File "<string>"' in str(excinfo.value)
    assert str(excinfo.value).endswith("ValueError: boom\n")
    gw._send(gb.Message.GATEWAY_TERMINATE)
    gw._io.close_write()
    gw.join(10)
    assert popen.wait(10) == 0


def test_standalone_worker_exits_on_stdin_eof_while_busy() -> None:
    gw, popen = start_standalone_worker(sys.executable)
    ch = gw.remote_exec("import time; channel.send(1); time.sleep(60)")
    assert ch.receive(timeout=10) == 1
    start = time.monotonic()
    gw._io.close_write()  # no terminate message: the master vanished
    popen.wait(10)
    assert time.monotonic() - start < 5
    gw.join(10)
    assert not gw._receivepool.active_count()


# ---------------------------------------------------------------------------------------------
# interoperability with upstream execnet 2.1.2 (a test peer in .side/, used from subprocesses)
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_DIR = REPO / ".side" / "upstream-2.1.2"
OURS_DIR = Path(execnet.__file__).resolve().parent.parent


def ensure_upstream() -> Path:
    """Install upstream execnet 2.1.2 into the side folder once (skip if that fails)."""
    if (UPSTREAM_DIR / "execnet" / "gateway_base.py").exists():
        return UPSTREAM_DIR
    import fcntl
    import shutil
    import tempfile

    UPSTREAM_DIR.parent.mkdir(exist_ok=True)
    with open(UPSTREAM_DIR.parent / "upstream-2.1.2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (UPSTREAM_DIR / "execnet" / "gateway_base.py").exists():
            return UPSTREAM_DIR
        tmp = Path(tempfile.mkdtemp(prefix="upstream-", dir=UPSTREAM_DIR.parent))
        try:
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
            cmd += ["--disable-pip-version-check", "--target", str(tmp), "execnet==2.1.2"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if proc.returncode != 0:
                pytest.skip(f"cannot install upstream execnet: {proc.stderr[-500:]}")
            os.rename(tmp, UPSTREAM_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return UPSTREAM_DIR


CORPUS = (
    "[None, True, False, 0, -1, 2**31 - 1, -(2**31), 2**31, 10**30, 1.5, float('inf'), 2 - 3j,"
    " '', 'text', 'ünï ✓', b'', b'\\x00\\xff', [], [1, [2]], (), (1, (), 3), {}, {'a': {1: (2,)}},"
    " {(1, 2): frozenset([3])}, set(), frozenset()]"
)


@pytest.mark.upstream
def test_codec_bytes_match_upstream() -> None:
    upstream = ensure_upstream()
    code = (
        f"import sys; sys.path.insert(0, {str(upstream)!r}); import execnet\n"
        "from execnet import gateway_base as g\n"
        f"corpus = {CORPUS}\n"
        "out = [g.dumps_internal(x) for x in corpus] + [execnet.dumps(x) for x in corpus]\n"
        "sys.stdout.write(repr(out))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    theirs = eval(out.stdout)
    corpus = eval(CORPUS)
    ours = [gb.dumps_internal(x) for x in corpus] + [gb.dumps(x) for x in corpus]
    assert ours == theirs
    assert [pure_dumps_internal(x) for x in corpus] == theirs[: len(corpus)]
    assert [gb.loads(b) for b in theirs[len(corpus) :]] == corpus


SESSION = """
import sys
master_dir, worker_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, master_dir)
import execnet
from execnet import gateway, gateway_io
from execnet.gateway_base import get_execmodel
from execnet.xspec import XSpec

boot = (
    "import sys; sys.path.insert(0, %r)\\n"
    "from execnet.gateway_base import serve, init_popen_io, get_execmodel\\n"
    "sys.stdout.write('1'); sys.stdout.flush()\\n"
    "serve(init_popen_io(get_execmodel('thread')), id='peer-worker')\\n" % worker_dir
)
io = gateway_io.Popen2IOMaster([sys.executable, "-u", "-c", boot], get_execmodel("thread"))
assert io.read(1) == b"1"
gw = gateway.Gateway(io, XSpec("popen//id=peer"))
group = execnet.Group()
group._register(gw)

ch = gw.remote_exec("import execnet; channel.send(execnet.gateway_base.__file__)")
worker_file = ch.receive(10)
assert worker_file.startswith(worker_dir), worker_file

ch = gw.remote_exec("while 1:\\n    x = channel.receive()\\n    channel.send(x)")
for value in [1, "s", b"b", [1, (2, {3: None})], 2**70, 1.5j, {frozenset([1])}]:
    ch.send(value)
    assert ch.receive(10) == value, value
sub = gw.newchannel()
ch.send(sub)
assert ch.receive(10) is sub

def f(channel, n):
    channel.send(n * 2)

results = []
c = gw.remote_exec("for i in range(3): channel.send(i)")
c.setcallback(results.append, endmarker="END")
c.waitclose(10)

err = gw.remote_exec("raise ValueError('peer')")
try:
    err.receive(10)
except execnet.RemoteError as e:
    assert "ValueError: peer" in str(e)
else:
    raise AssertionError("no RemoteError")

status = gw.remote_status()
assert status.execmodel == "thread", status
info = gw._rinfo()
assert info.executable == sys.executable
gw.reconfigure(py3str_as_py2str=True)
assert gw.remote_exec("channel.send('x')").receive(10) == b"x"
gw.exit()
gw.join(10)
import time
deadline = time.time() + 10
while results[-1:] != ["END"] and time.time() < deadline:
    time.sleep(0.01)
assert results == [0, 1, 2, "END"], results
print("session ok", io.wait())
"""


@pytest.mark.upstream
@pytest.mark.parametrize("direction", ["upstream-master/our-worker", "our-master/upstream-worker"])
def test_session_with_upstream_peer(direction: str) -> None:
    upstream = ensure_upstream()
    if direction.startswith("upstream-master"):
        master_dir, worker_dir = upstream, OURS_DIR
    else:
        master_dir, worker_dir = OURS_DIR, upstream
    out = subprocess.run(
        [sys.executable, "-c", SESSION, str(master_dir), str(worker_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "session ok 0\n"
    assert out.stderr == ""


class TrapIO:
    """Drops the last reference to a live channel in the middle of writing a frame."""

    execmodel = gb.get_execmodel("thread")

    def __init__(self) -> None:
        self.out = BytesIO()
        self.victim: object = None

    def write(self, data: bytes) -> None:
        half = len(data) // 2
        self.out.write(data[:half])
        self.victim = None  # Channel.__del__ runs here, on this thread
        self.out.write(data[half:])


def test_channel_gc_during_a_write_does_not_interleave_frames() -> None:
    io = TrapIO()
    gw = gb.BaseGateway(io, "trap", _startcount=1)  # type: ignore[arg-type]
    io.victim = gw.newchannel()
    gw._send(gb.Message.CHANNEL_DATA, 7, gb.dumps_internal("payload"))
    stream = BytesIO(io.out.getvalue())
    first = gb.Message.from_io(stream)
    second = gb.Message.from_io(stream)
    assert (first.msgcode, first.channelid, gb.loads_internal(first.data)) == (4, 7, "payload")
    assert (second.msgcode, second.channelid, second.data) == (gb.Message.CHANNEL_CLOSE, 1, b"")
    assert stream.read() == b""


class RecordingIO:
    execmodel = gb.get_execmodel("thread")

    def __init__(self) -> None:
        self.out = BytesIO()

    def write(self, data: bytes) -> None:
        self.out.write(data)


def test_channel_gc_never_blocks_on_a_busy_send_lock() -> None:
    io = RecordingIO()
    gw = gb.BaseGateway(io, "busy", _startcount=1)  # type: ignore[arg-type]
    victim = [gw.newchannel()]
    holding = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with gw._sendlock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(10)
    start = time.monotonic()
    victim.clear()  # Channel.__del__ while another thread holds the send lock
    assert time.monotonic() - start < 1
    assert io.out.getvalue() == b""
    release.set()
    holder.join(10)
    gw._send(gb.Message.CHANNEL_DATA, 5, gb.dumps_internal(1))
    stream = BytesIO(io.out.getvalue())
    frames = [gb.Message.from_io(stream) for _ in range(2)]
    assert [(m.msgcode, m.channelid) for m in frames] == [
        (gb.Message.CHANNEL_DATA, 5),
        (gb.Message.CHANNEL_CLOSE, 1),
    ]


def test_flush_deferred_writes_a_queued_close() -> None:
    io = RecordingIO()
    gw = gb.BaseGateway(io, "later", _startcount=1)  # type: ignore[arg-type]
    victim = [gw.newchannel()]
    with gw._sendlock:
        gw._send_depth += 1  # as if this thread were in the middle of a write
        victim.clear()
        gw._send_depth -= 1
        assert io.out.getvalue() == b""
    gw._flush_deferred()
    msg = gb.Message.from_io(BytesIO(io.out.getvalue()))
    assert (msg.msgcode, msg.channelid) == (gb.Message.CHANNEL_CLOSE, 1)


def test_channel_map_holds_channels_weakly() -> None:
    class Obj:
        pass

    m = gb._ChannelMap()
    a, b = Obj(), Obj()
    m[1] = a  # type: ignore[assignment]
    m[3] = b  # type: ignore[assignment]
    assert m[1] is a and m.get(3) is b and 1 in m and len(m) == 2
    assert sorted(m) == [1, 3] and m.keys() == [1, 3]
    assert set(map(id, m.values())) == {id(a), id(b)}
    assert m.get(5) is None and m.get(5, "x") == "x" and 5 not in m
    with pytest.raises(KeyError):
        m[5]
    del b  # the last reference: the entry goes with it
    assert 3 not in m and list(m) == [1] and 3 not in m.data
    with pytest.raises(KeyError):
        m[3]
    del m[1]
    assert len(m) == 0 and a is not None
    m[7] = a  # type: ignore[assignment]
    m.clear()
    assert m.items() == [] and not m.data


def test_channel_map_outlived_by_its_channels() -> None:
    class Obj:
        pass

    keep = Obj()
    m = gb._ChannelMap()
    m[1] = keep  # type: ignore[assignment]
    del m  # the channel's reference callback must not fail once the map is gone
    del keep


def test_pure_codec_and_framing_load_struct_on_first_use() -> None:
    code = (
        "import sys, execnet.gateway_base as gb\n"
        "print('struct' in sys.modules)\n"
        "gb.Unserializer(gb.BytesIO(gb._Serializer().save(1.5, versioned=True))).load(versioned=True)\n"
        "print('struct' in sys.modules, gb._pack_float(2.5) == gb.struct_check())\n"
    )
    code = code.replace("gb.struct_check()", "__import__('struct').pack('!d', 2.5)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]
