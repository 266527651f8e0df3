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
"""

from . import (  # noqa: F401
    gateway_base,
    gateway_bootstrap,
    gateway_io,
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
