"""execnet: rapid multi-Python deployment, with its engine in Rust.

Start Python interpreters (local subprocesses, over ssh, through socket servers or through
other gateways), run code in them and exchange data over channels::

    import execnet
    gw = execnet.makegateway()              # a local subprocess
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(41)
    assert ch.receive() == 42

Exceptions::

    Exception
    +-- RemoteError          an error raised by remote code (its traceback text)
    +-- DataFormatError
    |   +-- DumpError        a value cannot be serialized
    |   +-- LoadError        serialized data is malformed
    +-- HostNotFound         an ssh/socket gateway cannot reach its host
    +-- OSError
        +-- TimeoutError     receive()/waitclose() timed out

The public names and the submodules are loaded on first use: a worker that imports
``execnet.gateway_base`` (every popen gateway does) loads that module and nothing of the
master side.
"""

from __future__ import annotations

# ``typing`` itself costs more to import than the rest of this module: the constant is spelled
# out (type checkers treat any name TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from . import (  # noqa: F401
        gateway,
        gateway_base,
        gateway_bootstrap,
        gateway_io,
        multi,
        rsync,
        rsync_remote,
        xspec,
    )
    from ._version import __version__
    from .gateway import Gateway
    from .gateway_base import (
        Channel,
        DataFormatError,
        DumpError,
        LoadError,
        RemoteError,
        TimeoutError,
        dump,
        dumps,
        load,
        loads,
    )
    from .gateway_bootstrap import HostNotFound
    from .multi import Group, MultiChannel, default_group, makegateway, set_execmodel
    from .rsync import RSync
    from .xspec import XSpec

__all__ = [
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

#: Where each public name is defined.
_ORIGIN = {
    "Channel": "gateway_base",
    "DataFormatError": "gateway_base",
    "DumpError": "gateway_base",
    "LoadError": "gateway_base",
    "RemoteError": "gateway_base",
    "TimeoutError": "gateway_base",
    "dump": "gateway_base",
    "dumps": "gateway_base",
    "load": "gateway_base",
    "loads": "gateway_base",
    "Gateway": "gateway",
    "HostNotFound": "gateway_bootstrap",
    "Group": "multi",
    "MultiChannel": "multi",
    "default_group": "multi",
    "makegateway": "multi",
    "set_execmodel": "multi",
    "RSync": "rsync",
    "XSpec": "xspec",
    "__version__": "_version",
}

#: Submodules that are attributes of the package after a plain ``import execnet``.
_SUBMODULES = (
    "gateway_base",
    "gateway",
    "gateway_bootstrap",
    "gateway_io",
    "multi",
    "rsync",
    "rsync_remote",
    "xspec",
)


def __getattr__(name: str) -> Any:
    from importlib import import_module

    origin = _ORIGIN.get(name)
    if origin is not None:
        value = getattr(import_module("." + origin, __name__), name)
    elif name in _SUBMODULES:
        value = import_module("." + name, __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ORIGIN) | set(_SUBMODULES))
