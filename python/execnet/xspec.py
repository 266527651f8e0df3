"""Execution specifications: the ``key=value//flag//...`` strings that describe a gateway.

``XSpec("popen//python=python3.12//id=w1")`` has ``popen == True``, ``python == "python3.12"``
and ``id == "w1"``; keys that were not given read as ``None``. Values are kept as strings
(``nice="5"``); ``env:NAME=value`` entries are collected in the ``env`` dict.
"""

from __future__ import annotations

# typing is for type checkers only (type checkers treat any name TYPE_CHECKING as true)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any


class XSpec:
    """A parsed execution specification.

    Equality and hashing use the original string only, so attributes assigned after
    construction (``spec.id = ...``, ``spec.chdir = ...``) do not change either.
    """

    # Recognised keys, for type checkers; unset keys read as None through __getattr__.
    popen: bool | None
    ssh: str | None
    socket: str | bool | None
    vagrant_ssh: str | None
    python: str | None
    chdir: str | None
    nice: str | None
    dont_write_bytecode: bool | str | None
    execmodel: str | None
    id: str | None
    via: str | None
    installvia: str | None
    ssh_config: str | None
    ssh_reuse: str | bool | None
    #: seconds between heartbeat probes (opt-in; see ``Gateway.cause_of_death``)
    heartbeat: str | None

    def __init__(self, string: str) -> None:
        self._spec = string
        self.env: dict[str, Any] = {}
        for keyvalue in string.split("//"):
            i = keyvalue.find("=")
            value: str | bool
            if i == -1:
                key, value = keyvalue, True
            else:
                key, value = keyvalue[:i], keyvalue[i + 1 :]
            # An empty key ("", "popen//") raises IndexError here, as execnet does.
            if key[0] == "_":
                raise AttributeError(f"{key!r} not a valid XSpec key")
            # __dict__ already holds "_spec" and "env", so "env" is always a duplicate.
            if key in self.__dict__:
                raise ValueError(f"duplicate key: {key!r} in {string!r}")
            if key.startswith("env:"):
                self.env[key[4:]] = value
            else:
                setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        if name[:1] == "_":
            raise AttributeError(name)
        return None

    def __repr__(self) -> str:
        return f"<XSpec {self._spec!r}>"

    def __str__(self) -> str:
        return self._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def __eq__(self, other: object) -> bool:
        return self._spec == getattr(other, "_spec", None)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def _samefilesystem(self) -> bool:
        """True when the gateway runs on this host in the current directory."""
        return bool(self.popen) and self.chdir is None
