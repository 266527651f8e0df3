"""Group and MultiChannel semantics, and bounded safe_terminate, against real subprocesses."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import execnet
from execnet import XSpec
from execnet.gateway_base import get_execmodel
from execnet.multi import NO_ENDMARKER_WANTED, Group, MultiChannel, safe_terminate


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    g.terminate(timeout=5.0)


# --- Group bookkeeping -----------------------------------------------------------------------


def test_ids_are_allocated_in_order_and_never_reused(group: Group) -> None:
    gw0 = group.makegateway("popen")
    gw1 = group.makegateway()
    assert (gw0.id, gw1.id) == ("gw0", "gw1")
    gw0.exit()
    assert group.makegateway("popen").id == "gw2"
    assert group._autoidcounter == 3


def test_allocate_id_only_when_missing() -> None:
    group = Group()
    spec = XSpec("popen//id=hello")
    group.allocate_id(spec)
    assert spec.id == "hello" and group._autoidcounter == 0
    spec2 = XSpec("popen")
    group.allocate_id(spec2)
    assert spec2.id == "gw0" and group._autoidcounter == 1


def test_allocate_id_collision(group: Group) -> None:
    group.makegateway("popen//id=gw0")
    with pytest.raises(ValueError) as excinfo:
        group.allocate_id(XSpec("popen"))
    assert str(excinfo.value) == "already have gateway with id 'gw0'"
    # the counter was consumed all the same
    assert group.makegateway("popen").id == "gw1"


def test_getitem_contains_len_iter_repr(group: Group) -> None:
    assert repr(group) == "<Group []>"
    assert not group
    a = group.makegateway("popen//id=a")
    b = group.makegateway("popen//id=b")
    assert repr(group) == "<Group ['a', 'b']>"
    assert len(group) == 2 and bool(group)
    assert group[0] is a and group[1] is b and group[-1] is b
    assert group["a"] is a and group[b] is b
    assert "a" in group and b in group and "zzz" not in group
    assert list(group) == [a, b]
    with pytest.raises(KeyError):
        group["zzz"]
    with pytest.raises(IndexError):
        group[5]
    # only KeyError is turned into False: an out-of-range int propagates IndexError
    with pytest.raises(IndexError):
        5 in group  # noqa: B015
    with pytest.raises(TypeError):
        group["a"] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        del group["a"]  # type: ignore[attr-defined]


def test_iteration_is_over_a_snapshot(group: Group) -> None:
    for _ in range(3):
        group.makegateway("popen")
    seen = []
    for gw in group:
        gw.exit()
        seen.append(gw.id)
    assert seen == ["gw0", "gw1", "gw2"]
    assert not group


def test_exit_leaves_the_group_immediately(group: Group) -> None:
    gw = group.makegateway("popen//id=hello")
    gw.exit()
    assert "hello" not in group and gw not in group
    assert group._gateways_to_join == [gw]
    with pytest.raises(KeyError):
        group["hello"]


def test_set_execmodel() -> None:
    group = Group(execmodel="main_thread_only")
    assert group.execmodel.backend == "main_thread_only"
    assert group.remote_execmodel.backend == "main_thread_only"
    group.set_execmodel("thread", "main_thread_only")
    assert group.execmodel.backend == "thread"
    assert group.remote_execmodel.backend == "main_thread_only"
    with pytest.raises(ValueError):
        group.set_execmodel("foo")
    group._gateways.append(1)
    try:
        with pytest.raises(ValueError) as excinfo:
            group.set_execmodel("thread")
        assert "gateways have been created already" in str(excinfo.value)
    finally:
        group._gateways.pop()


def test_default_spec_is_used_for_falsy_specs() -> None:
    group = Group()
    group.defaultspec = "not-existing-type"
    with pytest.raises(ValueError):
        group.makegateway()
    with pytest.raises(ValueError):
        group.makegateway("")


def test_constructor_makes_gateways_and_registers_atexit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[Callable[[], object]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    group = Group(["popen//id=x", "popen"])
    try:
        assert registered == [group._cleanup_atexit]
        assert [gw.id for gw in group] == ["x", "gw0"]
    finally:
        group._cleanup_atexit()
    assert not group


def test_cleanup_atexit_terminates_real_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Callable[[], object]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    group = Group()
    gw = group.makegateway("popen")
    popen = gw._io.popen
    registered[0]()
    assert not group
    assert popen.poll() is not None


def test_default_group_and_module_makegateway() -> None:
    before = list(execnet.default_group)
    gw = execnet.makegateway("popen")
    try:
        assert gw in execnet.default_group and gw not in before
        assert gw._group is execnet.default_group
    finally:
        gw.exit()
    assert gw not in execnet.default_group


def test_concurrent_makegateway_from_8_threads(group: Group) -> None:
    barrier = threading.Barrier(8)

    def make(i: int) -> str:
        barrier.wait()
        gw = group.makegateway("popen")
        return gw.remote_exec(f"channel.send({i} * 2)").receive()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(make, range(8)))
    assert results == [i * 2 for i in range(8)]
    ids = sorted(gw.id for gw in group)
    assert ids == sorted(f"gw{i}" for i in range(8))
    pids = {gw.remote_exec("import os; channel.send(os.getpid())").receive() for gw in group}
    assert len(pids) == 8


def test_gateways_made_in_short_lived_threads_stay_alive(group: Group) -> None:
    made = []
    t = threading.Thread(target=lambda: made.append(group.makegateway("popen")))
    t.start()
    t.join()
    time.sleep(0.5)
    gw = made[0]
    assert gw.remote_exec("channel.send(1)").receive() == 1
    assert gw._io.popen.poll() is None


# --- termination -----------------------------------------------------------------------------


def test_terminate_exits_proxied_gateways_before_their_forwarders() -> None:
    group = Group()
    group.makegateway("popen//id=master")
    group.makegateway("popen//via=master//id=worker")
    group.makegateway("popen//id=plain")
    order: list[str] = []
    for gw in group:
        original = gw.exit

        def exit(gw=gw, original=original) -> None:  # type: ignore[no-untyped-def]
            order.append(gw.id)
            original()

        gw.exit = exit
    group.terminate(5.0)
    assert not group
    assert order.index("worker") < order.index("master")
    assert set(order) == {"master", "worker", "plain"}


def test_terminate_waits_for_processes(group: Group) -> None:
    gws = [group.makegateway("popen") for _ in range(3)]
    popens = [gw._io.popen for gw in gws]
    group.terminate(timeout=10.0)
    assert [p.returncode for p in popens] == [0, 0, 0]
    assert not group._gateways_to_join


def test_terminate_with_pseudo_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atexit, "register", lambda f: None)
    group = Group()
    exitlist: list[object] = []
    joinlist: list[object] = []

    class PseudoIO:
        def wait(self) -> None:
            pass

    class PseudoSpec:
        via = None

    class PseudoGW:
        id = "9999"
        _io = PseudoIO()
        spec = PseudoSpec()

        def exit(self) -> None:
            exitlist.append(self)
            group._unregister(self)  # type: ignore[arg-type]

        def join(self) -> None:
            joinlist.append(self)

    gw = PseudoGW()
    group._register(gw)  # type: ignore[arg-type]
    assert gw._group is group  # type: ignore[attr-defined]
    group._cleanup_atexit()
    assert exitlist == [gw] and joinlist == [gw]
    group._cleanup_atexit()
    assert exitlist == [gw] and joinlist == [gw]


def test_terminate_makes_progress_if_exit_does_not_unregister(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(atexit, "register", lambda f: None)
    group = Group()

    class IO:
        def wait(self) -> None:
            pass

    class Spec:
        via = None

    class StubbornGW:
        id = "stubborn"
        _io = IO()
        spec = Spec()

        def exit(self) -> None:
            pass

        def join(self) -> None:
            pass

    group._register(StubbornGW())  # type: ignore[arg-type]
    group.terminate(1.0)
    assert not group


def test_safe_terminate_runs_pairs_in_parallel() -> None:
    execmodel = get_execmodel("thread")
    killed: list[int] = []
    start = time.monotonic()
    safe_terminate(
        execmodel,
        0.5,
        [(lambda: time.sleep(3), lambda i=i: killed.append(i)) for i in range(10)],
    )
    elapsed = time.monotonic() - start
    assert sorted(killed) == list(range(10))
    assert elapsed < 2.0


def test_safe_terminate_no_kill_when_term_finishes() -> None:
    killed: list[int] = []
    safe_terminate(get_execmodel("thread"), 3, [(lambda: None, lambda: killed.append(1))] * 10)
    assert killed == []


def test_safe_terminate_kills_when_term_raises_oserror() -> None:
    killed: list[int] = []

    def term() -> None:
        raise OSError("gone")

    safe_terminate(get_execmodel("thread"), 3, [(term, lambda: killed.append(1))])
    assert killed == [1]


def test_safe_terminate_propagates_other_errors() -> None:
    def term() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        safe_terminate(get_execmodel("thread"), 3, [(term, lambda: None)])


def test_safe_terminate_does_not_hang_when_kill_blocks() -> None:
    forever = threading.Event()
    start = time.monotonic()
    safe_terminate(get_execmodel("thread"), 0.2, [(forever.wait, forever.wait)])
    assert time.monotonic() - start < 2.0
    forever.set()


# --- MultiChannel ----------------------------------------------------------------------------


def test_multichannel_container(group: Group) -> None:
    group.makegateway("popen")
    group.makegateway("popen")
    mch = group.remote_exec("channel.send(channel.receive() + 1)")
    assert isinstance(mch, MultiChannel)
    assert len(mch) == 2
    channels = list(mch)
    assert channels[0] is mch[0] and channels[1] in mch
    assert channels[0].gateway is group[0] and channels[1].gateway is group[1]
    mch.send_each(41)
    assert mch.receive_each() == [42, 42]
    mch.waitclose()


def test_multichannel_receive_each_withchannel(group: Group) -> None:
    group.makegateway("popen")
    group.makegateway("popen")
    mch = group.remote_exec("import os; channel.send(os.getpid())")
    pairs = mch.receive_each(withchannel=True)
    assert [ch for ch, _ in pairs] == list(mch)
    assert len({pid for _, pid in pairs}) == 2


def test_multichannel_receive_queue(group: Group) -> None:
    group.makegateway("popen")
    group.makegateway("popen")
    mch = group.remote_exec("import os; channel.send(os.getpid())")
    queue = mch.make_receive_queue(endmarker=-1)
    assert mch.make_receive_queue() is queue
    items = [queue.get(timeout=10) for _ in range(4)]
    by_channel: dict[object, list[object]] = {}
    for ch, item in items:
        by_channel.setdefault(ch, []).append(item)
    assert set(by_channel) == set(mch)
    for values in by_channel.values():
        assert values[1] == -1 and isinstance(values[0], int)
    with pytest.raises(AssertionError):
        mch.receive_each()


def test_multichannel_receive_queue_without_endmarker(group: Group) -> None:
    group.makegateway("popen")
    mch = group.remote_exec("channel.send(1)")
    queue = mch.make_receive_queue()
    assert queue.get(timeout=10) == (mch[0], 1)
    mch.waitclose()
    time.sleep(0.1)
    assert queue.empty()
    assert NO_ENDMARKER_WANTED is not execnet.gateway_base.NO_ENDMARKER_WANTED


def test_multichannel_waitclose_raises_first_remote_error_after_all(group: Group) -> None:
    for _ in range(3):
        group.makegateway("popen")
    mch = group.remote_exec(
        "import os\nn = channel.receive()\nif n: raise ValueError('bad %d' % n)"
    )
    for i, ch in enumerate(mch):
        ch.send(i)
    with pytest.raises(execnet.RemoteError) as excinfo:
        mch.waitclose()
    assert "bad 1" in str(excinfo.value)
    # every channel was waited for
    assert all(ch.isclosed() for ch in mch)


def test_group_remote_exec_with_kwargs(group: Group) -> None:
    group.makegateway("popen")
    group.makegateway("popen")

    def fun(channel, arg) -> None:  # type: ignore[no-untyped-def]
        channel.send(arg)

    assert group.remote_exec(fun, arg=7).receive_each() == [7, 7]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_terminate_in_a_forked_child_leaves_the_parents_workers_alone(group: Group) -> None:
    gw = group.makegateway("popen")
    popen = gw._io.popen
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            group.terminate(timeout=0.5)
            code = 0 if not group else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert popen.poll() is None
    assert gw.remote_exec("channel.send(1)").receive() == 1


def test_duplicate_explicit_id_does_not_leak_a_process(group: Group) -> None:
    group.makegateway("popen//id=x")
    before = set(_children())
    with pytest.raises(AssertionError):
        group.makegateway("popen//id=x")
    time.sleep(0.2)
    assert set(_children()) - before == set()
    assert [gw.id for gw in group] == ["x"]


def _children() -> list[int]:
    """Pids of this process's live (non-zombie) children."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(entry))
    return pids
