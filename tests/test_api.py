"""The public surface of the package: names, submodules and version."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import execnet

# execnet 2.1.2's ``__all__``, in its order.
UPSTREAM_ALL = [
    "Channel",
    "DataFormatError",
    "DumpError",
    "Gateway",
    "Group",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "RSync",
    "RemoteError",
    "TimeoutError",
    "XSpec",
    "__version__",
    "default_group",
    "dump",
    "dumps",
    "load",
    "loads",
    "makegateway",
    "set_execmodel",
]


def test_all_is_upstreams_list() -> None:
    assert execnet.__all__ == UPSTREAM_ALL


def test_every_exported_name_exists() -> None:
    for name in execnet.__all__:
        assert hasattr(execnet, name), name


@pytest.mark.parametrize(
    "name, module",
    [
        ("Channel", "gateway_base"),
        ("DataFormatError", "gateway_base"),
        ("DumpError", "gateway_base"),
        ("LoadError", "gateway_base"),
        ("RemoteError", "gateway_base"),
        ("TimeoutError", "gateway_base"),
        ("dump", "gateway_base"),
        ("dumps", "gateway_base"),
        ("load", "gateway_base"),
        ("loads", "gateway_base"),
        ("Gateway", "gateway"),
        ("HostNotFound", "gateway_bootstrap"),
        ("Group", "multi"),
        ("MultiChannel", "multi"),
        ("default_group", "multi"),
        ("XSpec", "xspec"),
    ],
)
def test_names_are_the_submodule_objects(name: str, module: str) -> None:
    mod = importlib.import_module("execnet." + module)
    assert getattr(execnet, name) is getattr(mod, name)


def test_module_functions_are_default_group_methods() -> None:
    assert execnet.makegateway == execnet.default_group.makegateway
    assert execnet.set_execmodel == execnet.default_group.set_execmodel
    assert isinstance(execnet.default_group, execnet.Group)


def test_timeout_error_is_an_oserror_not_the_builtin() -> None:
    assert issubclass(execnet.TimeoutError, OSError)
    assert execnet.TimeoutError is not TimeoutError
    assert issubclass(execnet.DumpError, execnet.DataFormatError)
    assert issubclass(execnet.LoadError, execnet.DataFormatError)
    assert issubclass(execnet.HostNotFound, Exception)


def test_version() -> None:
    assert execnet.__version__.startswith("2.1.2")


def test_submodules_are_attributes_after_plain_import() -> None:
    code = (
        "import execnet\n"
        "for name in ('gateway_base', 'gateway', 'gateway_bootstrap', 'gateway_io',"
        " 'multi', 'xspec'):\n"
        "    assert hasattr(execnet, name), name\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_star_import_gives_all_names() -> None:
    namespace: dict[str, object] = {}
    exec("from execnet import *", namespace)
    assert set(UPSTREAM_ALL) <= set(namespace)
