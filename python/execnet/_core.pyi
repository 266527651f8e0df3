"""Private extension module of execnet (Rust engine). Not a public API."""

from typing import Any, Protocol

__version__: str

class _ChannelFactory(Protocol):
    def new(self, id: int) -> Any: ...

def dumps(obj: object) -> bytes:
    """Serializes ``obj`` in execnet's versioned format (version byte ``\\x02``, then the
    internal form). Raises ``execnet.gateway_base.DumpError`` for what execnet cannot serialize
    (dispatch is on the exact type; any class named ``Channel`` travels as a channel id)."""

def dumps_internal(obj: object) -> bytes:
    """Serializes ``obj`` in the unversioned internal form used in message payloads."""

def loads(
    data: bytes | bytearray | memoryview,
    py2str_as_py3str: bool = False,
    py3str_as_py2str: bool = False,
) -> Any:
    """Deserializes the versioned form. Raises ``LoadError``, ``EOFError``, ``struct.error``,
    ``UnicodeDecodeError``, ``ValueError``, ``TypeError`` or ``IndexError`` where execnet 2.1.2
    does."""

def loads_internal(
    data: bytes | bytearray | memoryview,
    channelfactory: _ChannelFactory | None = None,
    strconfig: tuple[bool, bool] | None = None,
) -> Any:
    """Deserializes the internal form; ``CHANNEL`` opcodes call ``channelfactory.new(id)``
    (``AssertionError`` without a factory). ``strconfig`` is ``(py2str_as_py3str,
    py3str_as_py2str)``; ``None`` means the default ``(True, False)``."""

def _scan(data: bytes | bytearray | memoryview) -> tuple[bool, bool]:
    """Validates an internal-form payload without building objects; returns ``(channel_refs,
    needs_python_check)`` or raises what decoding would raise."""
