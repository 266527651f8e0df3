"""RSync end to end: real popen gateways, real trees on disk."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import execnet
from execnet import RSync
from execnet.gateway_base import dumps_internal, loads_internal


@pytest.fixture
def group() -> Iterator[Any]:
    if not hasattr(execnet, "makegateway"):
        pytest.skip("gateways not available in this build")
    group = execnet.Group()
    yield group
    group.terminate(timeout=10)


@pytest.fixture
def gw(group: Any) -> Any:
    return group.makegateway("popen")


@pytest.fixture
def gw2(group: Any) -> Any:
    return group.makegateway("popen")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    return tmp_path / "dst"


def snapshot(root: Path) -> dict[str, Any]:
    """Everything RSync promises to reproduce: kinds, file bytes and modes, link targets."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", Path(path).read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def sync(source: Path, *targets: tuple[Any, Path], **options: Any) -> list[str]:
    """Run one RSync; returns the reported (sent) relative paths."""
    reported: list[str] = []

    class Recording(RSync):
        def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
            reported.append(modified_rel_path)

    rsync = Recording(source, verbose=False)
    for gateway, dest in targets:
        rsync.add_target(gateway, dest, **options)
    rsync.send()
    return sorted(reported)


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "file.txt").write_bytes(b"hello")
    (root / "sub" / "a.bin").write_bytes(bytes(range(256)) * 10)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")


def test_no_targets(src: Path) -> None:
    rsync = RSync(src)
    with pytest.raises(
        OSError, match=r"no targets available, maybe you are trying call send\(\) twice\?"
    ):
        rsync.send()
    assert rsync.send(raises=False) is None


def test_attributes_and_options(gw: Any, src: Path, dst: Path) -> None:
    callback = lambda *args: None  # noqa: E731
    rsync = RSync(sourcedir=src, callback=callback, verbose=False)
    assert rsync._sourcedir == str(src)
    assert rsync._verbose is False
    assert rsync._callback is callback
    assert rsync._channels == {}
    assert rsync._links == []
    assert rsync._receivequeue.empty()
    with pytest.raises(AssertionError):
        RSync(src, callback=42)  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as excinfo:
        rsync.add_target(gw, dst, bogus=True)
    assert excinfo.value.args == ()
    assert gw.remote_status().numchannels == 0


def test_two_targets_with_and_without_delete(gw: Any, gw2: Any, src: Path, tmp_path: Path) -> None:
    make_tree(src)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    finished: list[str] = []
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, d1, finishedcallback=lambda: finished.append("d1"))
    rsync.add_target(gw2, d2, finishedcallback=lambda: finished.append("d2"), delete=True)
    rsync.send()
    assert sorted(finished) == ["d1", "d2"]
    assert rsync._channels == {}
    assert snapshot(d1) == snapshot(d2) == snapshot(src)

    (src / "sub" / "a.bin").unlink()
    (src / "sub" / "deeper" / "empty").unlink()
    (src / "sub" / "deeper").rmdir()
    (d1 / "extra").write_text("x")
    (d2 / "extra").write_text("x")
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, d1)
    rsync.add_target(gw2, d2, delete=True)
    rsync.send()
    assert snapshot(d2) == snapshot(src)
    assert {"sub/a.bin", "sub/deeper", "extra"} <= set(snapshot(d1))


def test_send_twice_needs_new_targets(gw: Any, src: Path, dst: Path) -> None:
    make_tree(src)
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    with pytest.raises(OSError, match="no targets available"):
        rsync.send()
    assert sync(src, (gw, dst)) == []
    (src / "file.txt").write_bytes(b"changed!")
    assert sync(src, (gw, dst)) == ["file.txt"]
    assert snapshot(dst) == snapshot(src)


def test_same_size_change_and_touch(gw: Any, src: Path, dst: Path) -> None:
    make_tree(src)
    sync(src, (gw, dst))
    target = src / "sub" / "a.bin"
    st = target.stat()
    target.write_bytes(bytes(reversed(target.read_bytes())))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_123))
    assert sync(src, (gw, dst)) == ["sub/a.bin"]
    assert snapshot(dst) == snapshot(src)
    # Only the mtime changes: the MD5s agree, nothing is sent, the mtime is copied.
    os.utime(src / "file.txt", (1_000_000_000.5, 1_000_000_000.5))
    assert sync(src, (gw, dst)) == []
    assert os.stat(dst / "file.txt").st_mtime == 1_000_000_000.5
    assert sync(src, (gw, dst)) == []


def test_default_reporting(gw: Any, src: Path, dst: Path, capsys: Any) -> None:
    (src / "x").write_text("1")
    rsync = RSync(src)
    rsync.add_target(gw, dst)
    rsync.send()
    out = capsys.readouterr().out
    assert out.startswith(f"<Gateway id={gw.id!r}") and out.endswith("> <= x\n")
    assert out.count("\n") == 1
    rsync = RSync(src, verbose=False)
    (src / "x").write_text("22")
    rsync.add_target(gw, dst)
    rsync.send()
    assert capsys.readouterr().out == ""
    assert (dst / "x").read_text() == "22"


def test_progress_callback_totals(gw: Any, src: Path, dst: Path) -> None:
    (src / "hundred").write_bytes(b"a" * 100)
    (src / "ten").write_bytes(b"b" * 10)
    calls: list[tuple[str, int]] = []
    channels: set[Any] = set()

    def callback(kind: str, size: int, channel: Any) -> None:
        calls.append((kind, size))
        channels.add(channel)

    rsync = RSync(src, callback=callback, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    assert set(calls) == {("list", 110), ("ack", 100), ("ack", 10)}
    assert len(calls) == 3 and len(channels) == 1
    # An up-to-date target reports an empty listing (execnet 2.1.2 raised KeyError here).
    calls.clear()
    rsync = RSync(src, callback=callback, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    assert calls == [("list", 0)]


def test_permissions(gw: Any, src: Path, dst: Path) -> None:
    modes = {"exe": 0o755, "private": 0o600, "readonly": 0o444, "odd": 0o640}
    for name, mode in modes.items():
        (src / name).write_text(name)
        os.chmod(src / name, mode)
    sync(src, (gw, dst))
    for name, mode in modes.items():
        assert stat.S_IMODE(os.stat(dst / name).st_mode) == mode, name
    # A mode-only change is applied exactly, without sending data.
    os.chmod(src / "odd", 0o604)
    os.chmod(src / "exe", 0o700)
    assert sync(src, (gw, dst)) == []
    assert stat.S_IMODE(os.stat(dst / "odd").st_mode) == 0o604
    assert stat.S_IMODE(os.stat(dst / "exe").st_mode) == 0o700
    # New content for a read-only target file replaces it.
    os.chmod(src / "readonly", 0o644)
    (src / "readonly").write_text("rewritten")
    os.chmod(src / "readonly", 0o444)
    assert sync(src, (gw, dst)) == ["readonly"]
    assert (dst / "readonly").read_text() == "rewritten"


def test_readonly_directories(gw: Any, src: Path, dst: Path) -> None:
    ro = src / "ro"
    (ro / "inner").mkdir(parents=True)
    (ro / "inner" / "f").write_text("data")
    (ro / "g").write_text("more")
    os.chmod(ro / "inner", 0o555)
    os.chmod(ro, 0o500)
    try:
        sync(src, (gw, dst))
        assert (dst / "ro" / "inner" / "f").read_text() == "data"
        assert (dst / "ro" / "g").read_text() == "more"
        # Directories keep the source mode plus owner rwx, so later syncs can write into them.
        assert stat.S_IMODE(os.stat(dst / "ro").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(dst / "ro" / "inner").st_mode) == 0o755
        os.chmod(ro, 0o700)
        (ro / "g").write_text("changed")
        os.chmod(ro, 0o500)
        assert sync(src, (gw, dst)) == ["ro/g"]
    finally:
        os.chmod(ro, 0o755)
        os.chmod(ro / "inner", 0o755)


def test_symlinks(gw: Any, src: Path, dst: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("out")
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_text("b")
    (src / "rel").symlink_to("sub/b.txt")
    (src / "abs").symlink_to(src / "sub" / "b.txt")
    (src / "chain").symlink_to("rel")
    (src / "out_abs").symlink_to(outside)
    (src / "out_rel").symlink_to("../outside.txt")
    (src / "dangling").symlink_to("nowhere")
    (src / "absdir").symlink_to(src / "sub")
    (src / "top").symlink_to(src)
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    links = {rel: (kind, target) for kind, rel, target in rsync._links}
    assert links == {
        "rel": ("link", "sub/b.txt"),
        "abs": ("linkbase", "sub/b.txt"),
        "chain": ("link", "rel"),
        "out_abs": ("link", str(outside)),
        "out_rel": ("link", "../outside.txt"),
        "dangling": ("link", "nowhere"),
        "absdir": ("linkbase", "sub"),
        "top": ("link", str(src)),
    }
    assert os.readlink(dst / "rel") == "sub/b.txt"
    assert os.readlink(dst / "abs") == str(dst / "sub" / "b.txt")
    assert os.readlink(dst / "chain") == "rel"
    assert (dst / "chain").read_text() == "b"
    assert os.readlink(dst / "out_abs") == str(outside)
    assert os.readlink(dst / "out_rel") == "../outside.txt"
    assert (dst / "out_rel").read_text() == "out"
    assert os.readlink(dst / "dangling") == "nowhere"
    assert os.readlink(dst / "absdir") == str(dst / "sub")
    # A second sync replaces existing links (and a file now standing where a link was).
    os.unlink(dst / "rel")
    (dst / "rel").write_text("not a link")
    sync(src, (gw, dst))
    assert os.readlink(dst / "rel") == "sub/b.txt"


def test_symlinked_roots_are_followed(gw: Any, src: Path, tmp_path: Path) -> None:
    """A source or destination given as a symlink to a directory means that directory."""
    make_tree(src)
    real_dst = tmp_path / "real-dst"
    real_dst.mkdir()
    (tmp_path / "dst-link").symlink_to(real_dst)
    (tmp_path / "src-link").symlink_to(src)
    assert len(sync(tmp_path / "src-link", (gw, tmp_path / "dst-link"))) == 3
    assert os.path.islink(tmp_path / "dst-link")
    assert snapshot(real_dst) == snapshot(src)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    sync(src, (gw, tmp_path / "dangling"))
    assert snapshot(tmp_path / "dangling") == snapshot(src)
    assert not os.path.islink(tmp_path / "dangling")


def test_relative_link_classified_against_cwd(
    gw: Any, src: Path, dst: Path, monkeypatch: Any
) -> None:
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_text("b")
    (src / "rel").symlink_to("sub/b.txt")
    monkeypatch.chdir(src)
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    assert rsync._links == [("linkbase", "rel", "sub/b.txt")]
    assert os.readlink(dst / "rel") == str(dst / "sub" / "b.txt")


def test_type_changes(gw: Any, src: Path, dst: Path) -> None:
    (src / "was_dir").write_text("now a file")
    (src / "was_file").mkdir()
    (src / "was_file" / "x").write_text("x")
    (src / "was_link").write_text("plain")
    (dst / "was_dir" / "deep").mkdir(parents=True)
    (dst / "was_dir" / "deep" / "f").write_text("old")
    (dst / "was_file").write_text("old")
    (dst / "was_link").symlink_to("elsewhere")
    sync(src, (gw, dst))
    assert snapshot(dst) == snapshot(src)


def test_filter_and_delete(gw: Any, src: Path, dst: Path) -> None:
    make_tree(src)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    (src / "skip.pyc").write_text("bytecode")
    sync(src, (gw, dst))
    assert (dst / ".git" / "HEAD").exists()
    seen: list[str] = []

    class Filtered(RSync):
        def filter(self, path: str) -> bool:
            seen.append(path)
            return not path.endswith((".git", ".pyc"))

    rsync = Filtered(src, verbose=False)
    rsync.add_target(gw, dst, delete=True)
    rsync.send()
    assert not (dst / ".git").exists()
    assert not (dst / "skip.pyc").exists()
    assert (dst / "sub" / "a.bin").exists()
    assert str(src / ".git") in seen and str(src / "sub" / "a.bin") in seen
    assert str(src / ".git" / "HEAD") not in seen
    assert str(src) not in seen


def test_file_vanishing_during_filter(gw: Any, src: Path, dst: Path) -> None:
    (src / "stays").write_text("s")
    (src / "goes").write_text("g")

    class Vanishing(RSync):
        def filter(self, path: str) -> bool:
            if path.endswith("goes"):
                os.unlink(path)
            return True

    rsync = Vanishing(src, verbose=False)
    rsync.add_target(gw, dst)
    rsync.send()
    assert (dst / "stays").read_text() == "s"
    assert not (dst / "goes").exists()


def test_missing_source_leaves_targets_alone(gw: Any, tmp_path: Path, dst: Path) -> None:
    (dst / "keep").mkdir(parents=True)
    rsync = RSync(tmp_path / "no-such-dir", verbose=False)
    rsync.add_target(gw, dst, delete=True)
    with pytest.raises(FileNotFoundError, match="rsync source directory not found"):
        rsync.send()
    assert (dst / "keep").is_dir()


def test_unsupported_file_type(gw: Any, src: Path, dst: Path) -> None:
    os.mkfifo(src / "fifo")
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, dst)
    with pytest.raises(ValueError, match=r"cannot sync '.*fifo'"):
        rsync.send()


def test_remote_failure_raises_remote_error(gw: Any, src: Path, tmp_path: Path) -> None:
    (src / "f").write_text("x")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, blocker / "below")
    with pytest.raises(execnet.RemoteError, match="NotADirectoryError"):
        rsync.send()


def test_non_ascii_names(gw: Any, src: Path, dst: Path) -> None:
    names = ["café.txt", "日本語", "emoji-🐍", "ünïcödé dir"]
    for name in names[:3]:
        (src / name).write_text(name)
    (src / names[3]).mkdir()
    (src / names[3] / "ß").write_text("eszett")
    assert sync(src, (gw, dst)) == sorted([*names[:3], f"{names[3]}/ß"])
    assert snapshot(dst) == snapshot(src)


def test_undecodable_name_raises_dumperror(gw: Any, src: Path, dst: Path) -> None:
    """A name that is not UTF-8 cannot travel as a str; execnet 2.1.2 fails the same way."""
    (src / "good").write_text("ok")
    os.close(os.open(os.path.join(os.fsencode(src), b"bad\xffname"), os.O_CREAT | os.O_WRONLY))
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, dst)
    with pytest.raises(execnet.DumpError):
        rsync.send()


def test_xdist_style_subclass(group: Any, src: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    gw = group.makegateway(f"popen//execmodel=main_thread_only//chdir={workdir}")
    make_tree(src)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "m.pyc").write_text("")
    sent: list[str] = []
    done: list[bool] = []

    class HostRSync(RSync):
        def __init__(self, sourcedir: Path, *, ignores: list[str], verbose: bool) -> None:
            self._ignores = ignores
            super().__init__(sourcedir=sourcedir, verbose=verbose)

        def filter(self, path: str) -> bool:
            return os.path.basename(path) not in self._ignores

        def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
            if self._verbose:
                sent.append(modified_rel_path)

    rsync = HostRSync(src, ignores=["__pycache__"], verbose=True)
    assert rsync._sourcedir == str(src)
    rsync.add_target(gw, src.name, finishedcallback=lambda: done.append(True), delete=True)
    rsync.send()
    assert done == [True]
    assert sorted(sent) == ["file.txt", "sub/a.bin", "sub/deeper/empty"]
    assert snapshot(workdir / src.name) == {
        k: v for k, v in snapshot(src).items() if "__pycache__" not in k
    }


def test_shipped_source_receiver(group: Any, src: Path, dst: Path) -> None:
    """An exec-bootstrapped worker (as over ssh) has no execnet package to lean on."""
    gw = group.makegateway(f"popen//python={sys.executable}")
    assert not gw.remote_exec("import sys; channel.send('execnet' in sys.modules)").receive()
    make_tree(src)
    sync(src, (gw, dst))
    target = src / "sub" / "a.bin"
    target.write_bytes(bytes(reversed(target.read_bytes())))
    os.utime(target, (1_234_567_890.0, 1_234_567_890.0))
    (src / "file.txt").touch()
    assert sync(src, (gw, dst)) == ["sub/a.bin"]
    assert snapshot(dst) == snapshot(src)


def test_writer_thread_writes_in_order_and_reports_errors(tmp_path: Path) -> None:
    from execnet import rsync_remote

    written: list[str] = []

    def write(path: str, data: bytes, mode: int | None, mtime: float) -> None:
        if data == b"fail":
            raise PermissionError(path)
        (tmp_path / path).write_bytes(data)
        os.utime(tmp_path / path, (mtime, mtime))
        written.append(path)

    writer = rsync_remote._Writer(write)
    for i in range(200):
        writer.put((f"f{i}", b"x" * i, None, 1_000_000.0 + i))
    writer.finish()
    assert written == [f"f{i}" for i in range(200)]
    assert (tmp_path / "f199").read_bytes() == b"x" * 199
    assert os.stat(tmp_path / "f7").st_mtime == 1_000_007.0

    writer = rsync_remote._Writer(write)
    writer.put(("bad", b"fail", None, 0.0))
    with pytest.raises(PermissionError, match="bad"):
        for i in range(1000):  # raised at a later file at the latest
            writer.put((f"g{i}", b"y", None, 0.0))
        writer.finish()
    assert not writer._thread.is_alive()

    # the main thread failed: what was received is still written, then the thread ends
    writer = rsync_remote._Writer(write)
    writer.put(("late", b"z", None, 0.0))
    writer.stop()
    assert (tmp_path / "late").read_bytes() == b"z"


def test_many_files_through_the_writer_thread(gw: Any, src: Path, dst: Path) -> None:
    for i in range(300):
        (src / f"f{i:03}").write_bytes(os.urandom(i * 37))
        os.chmod(src / f"f{i:03}", 0o640 if i % 2 else 0o755)
    assert len(sync(src, (gw, dst))) == 300
    assert snapshot(dst) == snapshot(src)
    for i in (0, 1, 150, 299):
        assert os.stat(dst / f"f{i:03}").st_mtime == os.stat(src / f"f{i:03}").st_mtime
    assert sync(src, (gw, dst)) == []


@pytest.mark.ssh
def test_ssh_target(group: Any, sshd: Any, src: Path, dst: Path, tmp_path: Path) -> None:
    gw = group.makegateway(sshd.spec)
    make_tree(src)
    (src / "link").symlink_to("file.txt")
    local = tmp_path / "local"
    assert len(sync(src, (gw, dst), (group.makegateway("popen"), local))) == 6
    assert snapshot(dst) == snapshot(local) == snapshot(src)
    (src / "file.txt").write_text("changed over ssh")
    assert sync(src, (gw, dst), delete=True) == ["file.txt"]
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_big_file(gw: Any, src: Path, dst: Path) -> None:
    chunk = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    with open(src / "big", "wb") as f:
        for i in range(64):
            f.write(bytes([i]) + chunk[1:])
    expected = hashlib.md5((src / "big").read_bytes()).hexdigest()
    assert sync(src, (gw, dst)) == ["big"]
    assert hashlib.md5((dst / "big").read_bytes()).hexdigest() == expected
    assert os.stat(dst / "big").st_size == 64 * 1024 * 1024
    assert sync(src, (gw, dst)) == []


@pytest.mark.slow
def test_ten_thousand_files(gw: Any, src: Path, dst: Path) -> None:
    for d in range(100):
        sub = src / f"d{d:03}"
        sub.mkdir()
        for i in range(100):
            (sub / f"f{i:03}").write_text(f"{d}-{i}")
    assert len(sync(src, (gw, dst))) == 10_000
    assert snapshot(dst) == snapshot(src)
    assert sync(src, (gw, dst)) == []
    for d in (0, 50, 99):
        (src / f"d{d:03}" / "f007").write_text("new content")
    assert sync(src, (gw, dst)) == ["d000/f007", "d050/f007", "d099/f007"]


def test_killed_target_then_repair(group: Any, src: Path, dst: Path) -> None:
    for i in range(40):
        (src / f"f{i:02}").write_bytes(os.urandom(200_000))
    victim = group.makegateway("popen")
    pid = victim.remote_exec("import os; channel.send(os.getpid())").receive()
    sent: list[str] = []

    class Killing(RSync):
        def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
            # The target writes a file only after its bytes arrive: killing it after the
            # fifth file was sent leaves at most five complete files behind.
            sent.append(modified_rel_path)
            if len(sent) == 5:
                os.kill(pid, 9)

    rsync = Killing(src, verbose=False)
    rsync.add_target(victim, dst)
    with pytest.raises(EOFError, match="lost during rsync"):
        rsync.send()
    assert len(sent) < 40
    partial = snapshot(dst) if dst.exists() else {}
    assert partial != snapshot(src)

    healthy = group.makegateway("popen")
    sync(src, (healthy, dst))
    assert snapshot(dst) == snapshot(src)


def test_target_failing_during_the_structure_stream(group: Any, src: Path, tmp_path: Path) -> None:
    """The error that ended the target is raised, not a bare "cannot send"."""
    for d in range(40):
        (src / f"d{d}").mkdir()
        for i in range(100):
            (src / f"d{d}" / f"f{i}").write_text("x")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory is needed")
    gw = group.makegateway("popen")
    rsync = RSync(src, verbose=False)
    rsync.add_target(gw, blocker / "below")
    with pytest.raises(execnet.RemoteError, match="NotADirectoryError"):
        rsync.send()

    victim = group.makegateway("popen")
    pid = victim.remote_exec("import os; channel.send(os.getpid())").receive()
    rsync = RSync(src, verbose=False)
    rsync.add_target(victim, tmp_path / "dst")
    os.kill(pid, 9)
    with pytest.raises(EOFError, match="lost during rsync"):
        rsync.send()


def test_structure_stream_matches_python_walk(src: Path) -> None:
    """The Rust walk yields exactly what a plain os.lstat/os.listdir walk yields."""
    from execnet import _core
    from execnet.rsync import _walk_python

    make_tree(src)
    (src / "link").symlink_to("file.txt")
    for i in range(300):
        f = src / "sub" / f"n{i}"
        f.write_text(str(i))
        os.utime(f, ns=(0, 1_700_000_000_000_000_000 + i * 7_777_777))
    assert _core.walk_tree(str(src)) == _walk_python(str(src), None)
    calls_rust: list[str] = []
    calls_py: list[str] = []

    def f1(p: str) -> bool:
        calls_rust.append(p)
        return "sub" not in os.path.basename(p)

    def f2(p: str) -> bool:
        calls_py.append(p)
        return "sub" not in os.path.basename(p)

    assert _core.walk_tree(str(src), f1) == _walk_python(str(src), f2)
    assert calls_rust == calls_py
    with pytest.raises(ZeroDivisionError):
        _core.walk_tree(str(src), lambda p: 1 / 0)


def test_tree_walk_parts_join_to_the_whole_walk(src: Path) -> None:
    import gc
    import weakref

    from execnet import _core

    make_tree(src)
    for d in range(30):
        (src / f"d{d}").mkdir()
        for i in range(20):
            (src / f"d{d}" / f"f{i}").write_text("x")
        (src / f"d{d}" / "ln").symlink_to("f0")
    whole = _core.walk_tree(str(src))
    parts = list(_core.TreeWalk(str(src), None, 50))
    assert len(parts) > 10
    assert all(len(items) <= 50 for items, _ in parts)
    assert ([i for p in parts for i in p[0]], [ln for p in parts for ln in p[1]]) == whole

    def keep(path: str) -> bool:
        return not path.endswith("ln")

    filtered = [p for p in _core.TreeWalk(src, keep, 7)]
    joined = ([i for p in filtered for i in p[0]], [ln for p in filtered for ln in p[1]])
    assert joined == _core.walk_tree(str(src), keep)
    assert joined[1] == []

    box: list[Any] = []
    walk = _core.TreeWalk(str(src), lambda p: next(box[0]) is None, 5)
    box.append(walk)
    with pytest.raises(RuntimeError):
        next(walk)
    assert list(walk) == []  # a failed walk is over

    class Holder:
        def keep(self, path: str) -> bool:
            return True

    holder = Holder()
    walk = _core.TreeWalk(str(src), holder.keep)
    holder.walk = walk  # type: ignore[attr-defined]
    ref = weakref.ref(holder)
    del holder, walk
    gc.collect()
    assert ref() is None


def test_encoded_walk_items(tmp_path: Path) -> None:
    from execnet import _core

    (tmp_path / "big").write_bytes(b"")
    os.truncate(tmp_path / "big", 3 << 30)  # sparse; a size beyond int32
    os.utime(tmp_path / "big", ns=(0, 1_234_567_890_123_456_789))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "名前 é").write_text("x")
    (tmp_path / "ln").symlink_to("nowhere")
    (tmp_path / os.fsdecode(b"bad\xff")).write_text("x")
    plain = [i for p in _core.TreeWalk(str(tmp_path), None, 3) for i in p[0]]
    encoded = [i for p in _core.TreeWalk(str(tmp_path), None, 3, True) for i in p[0]]
    assert len(plain) == len(encoded) == 6
    for item, data in zip(plain, encoded, strict=True):
        if isinstance(item, list) and any("\udcff" in str(n) for n in item[1:]):
            assert data == item  # left to the serializer, which rejects it
            with pytest.raises(execnet.DataFormatError):
                dumps_internal(item)
        else:
            assert type(data) is bytes
            assert data == dumps_internal(item)
            assert loads_internal(data) == item


def _build(root: Path, spec: dict[str, Any]) -> None:
    for name, node in spec.items():
        path = root / name
        if isinstance(node, dict):
            path.mkdir()
            _build(path, node)
        elif isinstance(node, tuple):
            path.symlink_to(node[0])
        else:
            path.write_bytes(b"x" * node)
            os.utime(path, ns=(0, 1_600_000_000_000_000_000 + node * 123_456_789))


_names = st.text(alphabet=st.sampled_from("abcXYZ09_-. äß日"), min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)
_trees = st.recursive(
    st.integers(min_value=0, max_value=300) | st.tuples(_names),
    lambda children: st.dictionaries(_names, children, max_size=6),
    max_leaves=40,
).filter(lambda t: isinstance(t, dict))


@settings(max_examples=60, deadline=None)
@given(tree=_trees, chunk=st.integers(min_value=1, max_value=50))
def test_rust_walk_equals_python_walk(tree: dict[str, Any], chunk: int) -> None:
    import shutil
    import tempfile

    from execnet import _core
    from execnet.rsync import _walk_python

    root = Path(tempfile.mkdtemp(prefix="execnet-walk-prop-"))
    try:
        _build(root, tree)
        expected = _walk_python(str(root), None)
        assert _core.walk_tree(str(root)) == expected
        parts = list(_core.TreeWalk(str(root), None, chunk))
        assert ([i for p in parts for i in p[0]], [ln for p in parts for ln in p[1]]) == expected
        # serialized by the walk: the same bytes as the serializer gives for each item
        encoded = [i for p in _core.TreeWalk(str(root), None, chunk, True) for i in p[0]]
        assert encoded == [dumps_internal(item) for item in expected[0]]

        def keep(path: str) -> bool:
            return "a" not in os.path.basename(path)

        assert _core.walk_tree(str(root), keep) == _walk_python(str(root), keep)
    finally:
        shutil.rmtree(root)


def test_walk_order_is_listdir_order(tmp_path: Path) -> None:
    from execnet import _core

    names = [f"entry-{(i * 7919) % 1000}" for i in range(1000)]
    for name in names:
        (tmp_path / name).write_text("")
    items, _ = _core.walk_tree(str(tmp_path))
    assert items[0][1:] == os.listdir(tmp_path)
    for item, name in zip(items[1:], items[0][1:], strict=False):
        st = os.lstat(tmp_path / name)
        assert item == (st.st_mode, st.st_mtime, st.st_size)


def test_walk_errors(tmp_path: Path) -> None:
    from execnet import _core

    assert _core.walk_tree(str(tmp_path / "missing")) == ([(None, 0, 0)], [])
    os.mkfifo(tmp_path / "p")
    with pytest.raises(ValueError, match=r"^cannot sync '.*/p'$"):
        _core.walk_tree(str(tmp_path))
    with pytest.raises(TypeError):
        _core.walk_tree(42)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError) as info:
        _core.md5_file(str(tmp_path / "missing"))
    assert info.value.filename == str(tmp_path / "missing")
    assert _core.md5_files([str(tmp_path / "missing")]) == [None]
    data = os.urandom(5_000_000)
    paths = []
    for i in range(4):
        (tmp_path / f"h{i}").write_bytes(data[i:])
        paths.append(str(tmp_path / f"h{i}"))
    assert _core.md5_files(paths) == [hashlib.md5(data[i:]).digest() for i in range(4)]
    assert _core.md5_file(paths[0]) == hashlib.md5(data).digest()


@pytest.mark.skipif(os.getuid() == 0, reason="root lists any directory")
def test_walk_unreadable_directory(tmp_path: Path) -> None:
    from execnet import _core

    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0)
    try:
        with pytest.raises(PermissionError):
            _core.walk_tree(str(tmp_path))
    finally:
        os.chmod(locked, 0o755)


# -- side by side with upstream execnet 2.1.2 --------------------------------------------------

UPSTREAM = Path(__file__).resolve().parent.parent / ".side" / "upstream-2.1.2"

# Runs in a fresh interpreter with either implementation importable as ``execnet``: records every
# item the master sends on, and receives from, RSync channels over two syncs of the tree. What
# the master sends is recorded where it becomes a message (``BaseGateway._send``: every
# CHANNEL_DATA payload, decoded), so an item that bypasses ``Channel.send`` is still seen; what
# it receives, in both ways a master can take items (a callback, or ``receive()``).
TRACE = r"""
import os, sys
import execnet
from execnet.gateway_base import BaseGateway, Channel, Message, loads_internal

root = sys.argv[1]
log = []
orig_send, orig_setcallback = BaseGateway._send, Channel.setcallback
orig_receive = Channel.receive

def send(self, msgcode, channelid=0, data=b""):
    if msgcode == Message.CHANNEL_DATA:
        log.append(("M>R", loads_internal(data)))
    return orig_send(self, msgcode, channelid, data)

def setcallback(self, callback, endmarker=None):
    def wrapped(item):
        log.append(("R>M", item))
        return callback(item)
    return orig_setcallback(self, wrapped, endmarker=endmarker)

def receive(self, timeout=None):
    item = orig_receive(self, timeout)
    log.append(("R>M", item))
    return item

BaseGateway._send, Channel.setcallback, Channel.receive = send, setcallback, receive
gw = execnet.makegateway("popen")
progress = []
reports = []

class Traced(execnet.RSync):
    def _report_send_file(self, gateway, modified_rel_path):
        reports.append(modified_rel_path)

def sync():
    rsync = Traced(os.path.join(root, "src"), verbose=False,
                   callback=lambda kind, size, ch: progress.append((kind, size)))
    rsync.add_target(gw, os.path.join(root, "dst"), delete=True)
    rsync.send()
    log.append(("links", sorted(rsync._links)))

sync()
same_size = os.path.join(root, "src", "sub", "data.bin")
data = open(same_size, "rb").read()
with open(same_size, "wb") as f:
    f.write(data[::-1])
os.utime(same_size, (1_600_000_000.25, 1_600_000_000.25))
os.chmod(os.path.join(root, "src", "run.sh"), 0o700)
with open(os.path.join(root, "src", "grown.txt"), "ab") as f:
    f.write(b"more")
os.utime(os.path.join(root, "src", "grown.txt"), (1_600_000_001.5, 1_600_000_001.5))
sync()
gw.exit()
print(repr((log, progress, reports)))
"""


def upstream_available() -> bool:
    if (UPSTREAM / "execnet" / "__init__.py").exists():
        return True
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(UPSTREAM), "execnet==2.1.2"],
        capture_output=True,
    )
    return result.returncode == 0


def trace_rsync(root: Path, upstream: bool) -> Any:
    import ast
    import shutil
    import subprocess

    shutil.rmtree(root, ignore_errors=True)
    src = root / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "sub" / "data.bin").write_bytes(bytes(range(256)) * 4)
    (src / "sub" / "deeper" / "ünï.txt").write_text("text")
    (src / "grown.txt").write_text("grow")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "rel").symlink_to("sub/data.bin")
    (src / "abs").symlink_to(src / "grown.txt")
    (src / "outside").symlink_to("/etc/hostname")
    for i, path in enumerate(sorted(p for p in src.rglob("*") if not p.is_symlink())):
        os.utime(path, (1_500_000_000 + i * 1.5, 1_500_000_000 + i * 1.5))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if upstream:
        env["PYTHONPATH"] = str(UPSTREAM)
    out = subprocess.run(
        [sys.executable, "-c", TRACE, str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
        cwd="/",
    ).stdout
    return ast.literal_eval(out)


@pytest.mark.upstream
def test_messages_match_upstream(tmp_path: Path) -> None:
    if not upstream_available():
        pytest.skip("upstream execnet 2.1.2 cannot be installed")
    ours = trace_rsync(tmp_path / "ours", upstream=False)
    theirs = trace_rsync(tmp_path / "theirs", upstream=True)

    def normalise(trace: Any, root: Path) -> Any:
        log, progress, reports = ast_replace(trace, str(root), "<root>")
        # Each direction in order; how the two interleave depends on thread timing. A None
        # from the target is a callback's endmarker (the channel closed), not a message.
        split = {
            way: [item for w, item in log if w == way and (way != "R>M" or item is not None)]
            for way in ("M>R", "R>M", "links")
        }
        return split, sorted(progress), reports

    want = normalise(theirs, tmp_path / "theirs")
    got = normalise(ours, tmp_path / "ours")
    for key in want[0]:
        assert got[0][key] == want[0][key], key
    assert got[1:] == want[1:]
    log, progress, reports = ours
    assert ("M>R", 42) in log
    assert any(item == ("R>M", ("list_done", None)) for item in log)
    assert sorted(reports) == sorted(
        ["run.sh", "sub/data.bin", "sub/deeper/ünï.txt", "grown.txt", "sub/data.bin", "grown.txt"]
    )
    assert ("list", 4 + 1024 + 10 + 4) in progress


def ast_replace(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, list):
        return [ast_replace(x, old, new) for x in obj]
    if isinstance(obj, tuple):
        return tuple(ast_replace(x, old, new) for x in obj)
    if isinstance(obj, dict):
        return {ast_replace(k, old, new): ast_replace(v, old, new) for k, v in obj.items()}
    return obj


@pytest.mark.slow
def test_walk_interrupted_by_ctrl_c(tmp_path_factory: Any) -> None:
    """The GIL-free walk looks for signals between slices: Ctrl-C does not wait for the tree."""
    import signal
    import threading
    import time

    from execnet import _core

    shm = Path("/dev/shm")
    root = Path(tempfile_dir(shm if shm.is_dir() else tmp_path_factory.mktemp("walk")))
    try:
        for d in range(200):
            sub = root / f"d{d}"
            sub.mkdir()
            for i in range(250):
                (sub / f"f{i}").touch()
        t0 = time.perf_counter()
        _core.walk_tree(str(root))
        full = time.perf_counter() - t0
        if full < 0.3:
            pytest.skip(f"walk too fast to interrupt reliably ({full:.3f} s)")
        timer = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            _core.walk_tree(str(root))
        assert time.perf_counter() - t0 < full * 0.6
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def tempfile_dir(base: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="execnet-walk-", dir=base)


@pytest.mark.upstream
@pytest.mark.slow
def test_benchmark_smoke() -> None:
    """benchmarks/bench_rsync.py --fast runs all three implementations and checks the copies."""
    import shutil
    import subprocess

    if shutil.which("rsync") is None or not upstream_available():
        pytest.skip("needs the rsync command and upstream execnet 2.1.2")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_rsync.py"
    out = subprocess.run(
        [sys.executable, str(script), "--fast"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "'ours': True, 'upstream': True, 'rsync': True" in out
    assert "| noop |" in out
