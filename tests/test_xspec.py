"""XSpec parsing and the command lines built from specs; spec-driven gateway configuration."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import execnet
from execnet import XSpec
from execnet.gateway_io import popen_args, popen_bootstrapline, ssh_args, vagrant_ssh_args

LINE = "import sys;exec(eval(sys.stdin.readline()))"


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    g = execnet.Group()
    yield g
    g.terminate(timeout=5.0)


@pytest.mark.parametrize(
    "string, expected",
    [
        ("popen", {"popen": True}),
        ("popen//python=python3", {"popen": True, "python": "python3"}),
        ("ssh=-p 22 user@h//python=python3", {"ssh": "-p 22 user@h", "python": "python3"}),
        ("socket=192.168.1.2:8888", {"socket": "192.168.1.2:8888"}),
        ("socket//installvia=p1//id=s1", {"socket": True, "installvia": "p1", "id": "s1"}),
        ("popen//nice=5//chdir=/tmp/x", {"nice": "5", "chdir": "/tmp/x"}),
        ("popen//dont_write_bytecode=0", {"dont_write_bytecode": "0"}),
        ("popen//python=a=b", {"python": "a=b"}),
        ("popen//python=", {"python": ""}),
        ("hello=3", {"hello": "3", "popen": None}),
        ("vagrant_ssh=default", {"vagrant_ssh": "default", "python": None}),
        (r"popen//chdir=d:\hello", {"chdir": r"d:\hello"}),
    ],
)
def test_parsing(string: str, expected: dict[str, object]) -> None:
    spec = XSpec(string)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key
        assert type(getattr(spec, key)) is type(value)


def test_env_entries() -> None:
    spec = XSpec("popen//env:NAME=value1//env:OTHER=a=b//env:FLAG")
    assert spec.env == {"NAME": "value1", "OTHER": "a=b", "FLAG": True}
    # env: keys are not checked for duplicates: the last one wins
    assert XSpec("popen//env:A=1//env:A=2").env == {"A": "2"}


def test_unset_keys_are_none_and_private_names_raise() -> None:
    spec = XSpec("popen")
    assert spec.chdir is None
    assert spec.anything_at_all is None
    assert not hasattr(spec, "_xyz")
    with pytest.raises(AttributeError):
        spec._hello()


@pytest.mark.parametrize("string", ["", "popen//", "//popen", "popen////id=1"])
def test_empty_key_raises_index_error(string: str) -> None:
    with pytest.raises(IndexError):
        XSpec(string)


@pytest.mark.parametrize(
    "string, message",
    [
        ("popen//popen", "duplicate key: 'popen' in 'popen//popen'"),
        ("popen//popen=123", "duplicate key: 'popen' in 'popen//popen=123'"),
        ("ssh=h//ssh=h2", "duplicate key: 'ssh' in 'ssh=h//ssh=h2'"),
        ("popen//env=1", "duplicate key: 'env' in 'popen//env=1'"),
    ],
)
def test_duplicate_keys(string: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        XSpec(string)
    assert str(excinfo.value) == message


def test_underscore_key_rejected() -> None:
    with pytest.raises(AttributeError) as excinfo:
        XSpec("popen//_x=1")
    assert str(excinfo.value) == "'_x' not a valid XSpec key"


def test_str_repr_hash_eq_use_the_original_string() -> None:
    spec = XSpec("popen//id=x")
    assert str(spec) == "popen//id=x"
    assert repr(spec) == "<XSpec 'popen//id=x'>"
    assert spec._spec == "popen//id=x"
    other = XSpec("popen//id=x")
    assert spec == other and not spec != other
    assert hash(spec) == hash(other)
    other.id = "changed"
    other.chdir = "/elsewhere"
    assert spec == other and hash(spec) == hash(other)
    assert XSpec("popen") != XSpec("popen//python=123")
    assert XSpec("popen") != "popen"
    assert len({XSpec("popen"), XSpec("popen"), XSpec("ssh=h")}) == 2


def test_attributes_are_writable() -> None:
    spec = XSpec("popen")
    spec.chdir = "somewhere"
    spec.id = None
    assert spec.chdir == "somewhere" and spec.id is None


def test_samefilesystem() -> None:
    assert XSpec("popen")._samefilesystem()
    assert XSpec("popen//python=123")._samefilesystem()
    assert not XSpec("popen//chdir=hello")._samefilesystem()
    assert not XSpec("ssh=host")._samefilesystem()


# --- command lines ---------------------------------------------------------------------------


def test_bootstrap_line_is_exact() -> None:
    assert popen_bootstrapline == LINE


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("popen", [sys.executable, "-u", "-c", LINE]),
        ("popen//dont_write_bytecode", [sys.executable, "-u", "-B", "-c", LINE]),
        ("popen//python=python", ["python", "-u", "-c", LINE]),
        ("popen//python=sudo -u test python", ["sudo", "-u", "test", "python", "-u", "-c", LINE]),
        (r"popen//python=/hans\ alt/bin/python", ["/hans alt/bin/python", "-u", "-c", LINE]),
        ('popen//python="/u/test me/python" -e', ["/u/test me/python", "-e", "-u", "-c", LINE]),
        ("popen//python=", [sys.executable, "-u", "-c", LINE]),
    ],
)
def test_popen_args(spec: str, expected: list[str]) -> None:
    assert popen_args(XSpec(spec)) == expected


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("ssh=host", ["ssh", "-C", "host", f'python -c "{LINE}"']),
        (
            "ssh=-p 22 user@h//python=python3//ssh_config=/x/cfg",
            ["ssh", "-C", "-F", "/x/cfg", "-p", "22", "user@h", f'python3 -c "{LINE}"'],
        ),
        (
            "ssh=-i ~/.ssh/id -p 22100 user@host//python=/usr/bin/env python3",
            [
                "ssh",
                "-C",
                "-i",
                "~/.ssh/id",
                "-p",
                "22100",
                "user@host",
                f'/usr/bin/env python3 -c "{LINE}"',
            ],
        ),
        # -B is never passed over ssh
        ("ssh=h//dont_write_bytecode", ["ssh", "-C", "h", f'python -c "{LINE}"']),
    ],
)
def test_ssh_args(spec: str, expected: list[str]) -> None:
    assert ssh_args(XSpec(spec)) == expected


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "vagrant_ssh=default//python=python3",
            ["vagrant", "ssh", "default", "--", "-C", f'python3 -c "{LINE}"'],
        ),
        (
            "vagrant_ssh=box//ssh_config=/c",
            ["vagrant", "ssh", "box", "--", "-C", "-F", "/c", f'python -c "{LINE}"'],
        ),
    ],
)
def test_vagrant_ssh_args(spec: str, expected: list[str]) -> None:
    assert vagrant_ssh_args(XSpec(spec)) == expected


def test_ssh_config_assigned_after_parsing() -> None:
    spec = XSpec("ssh=-p 22100 user@host//python=python3")
    spec.ssh_config = "/home/user/ssh_config"
    assert ssh_args(spec)[:6] == ["ssh", "-C", "-F", "/home/user/ssh_config", "-p", "22100"]


# --- spec-driven gateways --------------------------------------------------------------------


def test_no_gateway_type(group: execnet.Group) -> None:
    with pytest.raises(ValueError) as excinfo:
        group.makegateway("hello")
    assert str(excinfo.value) == "no gateway type found for 'hello'"


def test_default_spec_is_popen(group: execnet.Group) -> None:
    gw = group.makegateway("")
    assert gw.spec.popen is True and gw.spec.python is None
    info = gw._rinfo()
    assert info.cwd == os.getcwd()
    assert info.version_info == sys.version_info
    assert info.executable == sys.executable


def test_makegateway_fills_in_a_passed_spec(group: execnet.Group) -> None:
    spec = XSpec("popen")
    gw = group.makegateway(spec)
    assert gw.spec is spec
    assert spec.id == gw.id == "gw0"
    assert spec.execmodel == "thread"
    assert gw.remote_status().execmodel == "thread"


def test_spec_execmodel_selects_the_remote_model(group: execnet.Group) -> None:
    gw = group.makegateway("popen//execmodel=main_thread_only")
    assert gw.remote_status().execmodel == "main_thread_only"


def test_env(group: execnet.Group) -> None:
    gw = group.makegateway("popen//env:NAME123=123//env:OTHER=x y")
    ch = gw.remote_exec("import os; channel.send((os.environ['NAME123'], os.environ['OTHER']))")
    assert ch.receive() == ("123", "x y")


def test_env_flag_without_value_is_a_remote_error(group: execnet.Group) -> None:
    with pytest.raises(execnet.RemoteError) as excinfo:
        group.makegateway("popen//env:FLAG")
    assert "TypeError" in str(excinfo.value)
    # the gateway was registered before the configuration failed
    assert len(group) == 1


def test_chdir_absolute(group: execnet.Group, tmp_path: Path) -> None:
    gw = group.makegateway(f"popen//chdir={tmp_path}")
    assert gw._rinfo().cwd == str(tmp_path.resolve())


def test_chdir_creates_one_level(
    group: execnet.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    gw = group.makegateway("popen//chdir=hello")
    assert gw._rinfo().cwd == str((tmp_path / "hello").resolve())
    assert (tmp_path / "hello").is_dir()
    with pytest.raises(execnet.RemoteError) as excinfo:
        group.makegateway("popen//chdir=a/b/c")
    assert "FileNotFoundError" in str(excinfo.value)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="needs os.nice")
def test_nice(group: execnet.Group) -> None:
    def getnice(channel) -> None:  # type: ignore[no-untyped-def]
        import os

        channel.send(os.nice(0))

    base = group.makegateway("popen").remote_exec(getnice).receive()
    niced = group.makegateway("popen//nice=5").remote_exec(getnice).receive()
    assert niced == min(base + 5, 19)


def test_dont_write_bytecode(group: execnet.Group, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    check = "import sys; channel.send(sys.dont_write_bytecode)"
    assert group.makegateway("popen").remote_exec(check).receive() is False
    gw = group.makegateway("popen//dont_write_bytecode")
    assert gw.remote_exec(check).receive() is True


def test_python_spec_uses_exec_bootstrap(group: execnet.Group) -> None:
    gw = group.makegateway(f"popen//python={sys.executable}")
    info = gw._rinfo()
    assert info.executable == sys.executable
    # the shipped source runs in the worker's __main__, not from the execnet package
    ch = gw.remote_exec("import sys; channel.send('execnet' in sys.modules)")
    assert ch.receive() is False


def test_import_failure_in_the_worker_falls_back_to_shipped_source(
    group: execnet.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory named execnet in the worker's cwd shadows the installed package.
    shadow = tmp_path / "execnet"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    gw = group.makegateway("popen")
    assert gw.remote_exec("channel.send(type(channel).__module__)").receive() == "__main__"
    ch = gw.remote_exec("channel.send(channel.receive() * 2)")
    ch.send(21)
    assert ch.receive() == 42
    assert gw.remote_status().execmodel == "thread"
