"""The master side of a gateway: :class:`Gateway` and ``remote_exec`` source preparation."""

from __future__ import annotations

import types

from . import gateway_base
from .gateway_base import BaseGateway, Channel, Message

# typing, inspect and textwrap are imported where needed: ``import execnet`` stays cheap for
# scripts (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .gateway_base import IO
    from .xspec import XSpec

__all__ = ["Gateway", "RInfo", "RemoteStatus", "rinfo_source"]


class Gateway(BaseGateway):
    """A connection to one remote interpreter (made by ``Group.makegateway``)."""

    _group: Any = None

    def __init__(self, io: IO, spec: XSpec) -> None:
        """Private: gateways are made by ``makegateway``."""
        super().__init__(io=io, id=spec.id, _startcount=1)  # type: ignore[arg-type]  # set by Group
        self.spec = spec
        self._initreceive()

    @property
    def remoteaddress(self) -> str:
        """The remote address of the transport (AttributeError for plain popen)."""
        return self._io.remoteaddress  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        """``<Gateway id='gw0' receive-live, thread model, 2 active channels>``."""
        try:
            r = "receive-live" if self.hasreceiver() else "not-receiving"
            i = str(len(self._channelfactory.channels()))
        except AttributeError:
            r = "uninitialized"
            i = "no"
        try:
            backend = self.execmodel.backend
        except AttributeError:
            backend = "unknown"
        return (
            f"<{self.__class__.__name__} id={self.id!r} {r}, {backend} model, {i} active channels>"
        )

    def exit(self) -> None:
        """Ask the remote to shut down; does not wait (``Group.terminate`` does)."""
        self._trace("gateway.exit() called")
        group = self._group
        if group is not None:
            if self not in group:
                self._trace("gateway already unregistered with group")
                return
            group._unregister(self)
        try:
            self._trace("--> sending GATEWAY_TERMINATE")
            self._send(Message.GATEWAY_TERMINATE)
            self._trace("--> io.close_write")
            self._io.close_write()
        except (ValueError, EOFError, OSError) as exc:
            self._trace("io-error: could not send termination sequence")
            self._trace(" exception: %r" % exc)

    def reconfigure(self, py2str_as_py3str: bool = True, py3str_as_py2str: bool = False) -> None:
        """Set how strings are decoded on channels created from now on, on both sides."""
        self._strconfig = (py2str_as_py3str, py3str_as_py2str)
        data = gateway_base.dumps_internal(self._strconfig)
        self._send(Message.RECONFIGURE, data=data)

    def _rinfo(self, update: bool = False) -> RInfo:
        """Return some sys/env information from the remote (cached unless ``update``)."""
        if update or not hasattr(self, "_cache_rinfo"):
            ch = self.remote_exec(rinfo_source)
            try:
                self._cache_rinfo = RInfo(ch.receive())
            finally:
                ch.waitclose()
        return self._cache_rinfo

    def hasreceiver(self) -> bool:
        """Whether the receiver thread is still running."""
        return self._receiving()

    def remote_status(self) -> RemoteStatus:
        """The remote's ``numchannels``, ``numexecuting`` and ``execmodel``."""
        channel = self.newchannel()
        self._send(Message.STATUS, channel.id)
        statusdict = channel.receive()
        # the other side did not create a channel object: drop the local id again
        self._channelfactory._local_close(channel.id)
        return RemoteStatus(statusdict)

    def remote_exec(
        self,
        source: str | types.FunctionType | Callable[..., object] | types.ModuleType,
        **kwargs: object,
    ) -> Channel:
        """Run ``source`` remotely and return a channel connected to it.

        ``source`` is a string (dedented), a module (its source, file name kept for
        tracebacks) or a pure function whose first parameter is ``channel`` (called with
        ``kwargs``). In the remote code, ``channel`` is the other end and ``__name__`` is
        ``"__channelexec__"``.
        """
        call_name = None
        file_name = None
        if isinstance(source, types.ModuleType):
            import inspect
            import linecache

            file_name = inspect.getsourcefile(source)
            if file_name:
                # pick up edits made to the file since it was imported
                linecache.updatecache(file_name)
            source = inspect.getsource(source)
        elif isinstance(source, types.FunctionType):
            import inspect

            call_name = source.__name__
            file_name = inspect.getsourcefile(source)
            source = _source_of_function(source)
        else:
            import textwrap

            source = textwrap.dedent(str(source))

        if not call_name and kwargs:
            raise TypeError("can't pass kwargs to non-function remote_exec")

        channel = self.newchannel()
        self._send(
            Message.CHANNEL_EXEC,
            channel.id,
            gateway_base.dumps_internal((source, file_name, call_name, kwargs)),
        )
        return channel

    def remote_init_threads(self, num: int | None = None) -> None:
        """Deprecated, does nothing."""
        print("WARNING: remote_init_threads() is a no-operation in execnet-1.2")


class RInfo:
    """Attributes made from a dict (remote status or interpreter information)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        info = ", ".join(f"{k}={v}" for k, v in sorted(self.__dict__.items()))
        return f"<RInfo {info!r}>"


RemoteStatus = RInfo


def rinfo_source(channel):  # type: ignore[no-untyped-def]
    """Remote side of ``Gateway._rinfo``: send interpreter facts (shipped as source)."""
    import os
    import sys

    channel.send(
        dict(
            executable=sys.executable,
            version_info=sys.version_info[:5],
            platform=sys.platform,
            cwd=os.getcwd(),
            pid=os.getpid(),
        )
    )


def _find_non_builtin_globals(source: str, codeobj: types.CodeType) -> list[str]:
    """Names used in ``source`` that are neither local to ``codeobj`` nor builtins."""
    import ast
    import builtins

    local_names = set(codeobj.co_varnames)
    return [
        node.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Name)
        and node.id not in local_names
        and node.id not in builtins.__dict__
    ]


def _source_of_function(function: types.FunctionType | Callable[..., Any]) -> str:
    """The source of a function fit for ``remote_exec``, or ValueError saying why not."""
    import inspect
    import textwrap

    if function.__name__ == "<lambda>":
        raise ValueError("can't evaluate lambda functions'")
    args = inspect.getfullargspec(function).args
    if not args or args[0] != "channel":
        raise ValueError("expected first function argument to be `channel`")

    closure = function.__closure__
    codeobj = function.__code__

    if closure is not None:
        raise ValueError("functions with closures can't be passed")

    try:
        source = inspect.getsource(function)
    except OSError as e:
        raise ValueError("can't find source file for %s" % function) from e

    source = textwrap.dedent(source)  # just for inner functions

    used_globals = _find_non_builtin_globals(source, codeobj)
    if used_globals:
        raise ValueError("the use of non-builtin globals isn't supported", used_globals)

    # keep the original line numbers in remote tracebacks
    leading_ws = "\n" * (codeobj.co_firstlineno - 1)
    return leading_ws + source
