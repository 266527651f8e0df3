"""Send a directory tree to one or more gateways: :class:`RSync`.

The sender walks the source tree once (in Rust, :class:`execnet._core.TreeWalk`) and broadcasts
the directory-structure stream to every target. Each target runs
:mod:`execnet.rsync_remote`, mirrors the structure and asks for the files that are missing or
differ (size and mtime, then MD5); the sender answers those requests, then sends the symlinks.
Whole files are transferred; there is no delta encoding.
"""

from __future__ import annotations

import errno
import os
import queue
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from . import rsync_remote
from .gateway_base import Message, RemoteError, dumps_internal, loads_internal

try:
    from . import _core
except ImportError:  # pragma: no cover - the extension is part of every build
    _core = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .gateway import Gateway
    from .gateway_base import Channel

__all__ = ["RSync"]

#: Marks the end of the symlink list on the channel.
_LINKS_END = 42
#: Structure items walked ahead of sending them.
_CHUNK = 2048
#: Requests answered together, so that their checksums are computed in one parallel batch.
_BATCH = 256
_CHANNEL_DATA = Message.CHANNEL_DATA
#: ``dumps_internal(None)``: the answer for a file the target already has.
_NONE = dumps_internal(None)
#: ``dumps_internal((None, 0, 0))``: the structure item of an entry that vanished.
_VANISHED = dumps_internal((None, 0, 0))
#: A serialized ``bytes`` value: opcode and length, the content, STOP.
_PAYLOAD_HEADER = 5
_PAYLOAD_OVERHEAD = 6
#: Files up to this size are read in batches (at most 256 of them, so 16 MiB held at once);
#: larger ones straight into their message when they are sent.
_SMALL_FILE = 64 * 1024
#: Reading on more threads did not pay on two shared cores (the receiver needs one).
_READ_THREADS = 1


def _walk_python(root: str, filter: Callable[[str], bool] | None) -> tuple[list[Any], list[str]]:
    """Pure-Python walk with the same output as :func:`execnet._core.walk_tree`."""
    import stat

    items: list[Any] = []
    links: list[str] = []

    def visit(path: str) -> None:
        try:
            st = os.stat(path) if path is root else os.lstat(path)
        except OSError:
            items.append((None, 0, 0))
            return
        if stat.S_ISDIR(st.st_mode):
            names = [
                name
                for name in os.listdir(path)
                if filter is None or filter(os.path.join(path, name))
            ]
            items.append([st.st_mode, *names])
            for name in names:
                visit(os.path.join(path, name))
        elif stat.S_ISREG(st.st_mode):
            items.append((st.st_mode, st.st_mtime, st.st_size))
        elif stat.S_ISLNK(st.st_mode):
            items.append(None)
            links.append(path)
        else:
            raise ValueError(f"cannot sync {path!r}")

    visit(root)
    return items, links


def _md5(data: bytes | memoryview) -> bytes:
    from hashlib import md5

    return md5(data, usedforsecurity=False).digest()


def _data_sender(channels: list[Channel]) -> Callable[[bytes], None] | None:
    """A function sending one already serialized item to every channel, or None when a
    channel's gateway has no ``_send`` (then each item goes through ``Channel.send``)."""
    if not all(hasattr(c.gateway, "_send") for c in channels):
        return None
    targets = [(channel, channel.gateway._send, channel.id) for channel in channels]

    def send_encoded(data: bytes) -> None:
        for channel, send, channelid in targets:
            # What Channel.send checks, for the same error.
            if channel.isclosed():
                raise OSError(f"cannot send to {channel!r}")
            send(_CHANNEL_DATA, channelid, data)

    return send_encoded


def _broadcaster(channels: list[Channel]) -> Callable[[Any], None]:
    """A function sending one item to every channel, serialising it only once."""
    send_encoded = _data_sender(channels)
    if send_encoded is None:

        def send_each(item: Any) -> None:
            if type(item) is bytes:
                item = loads_internal(item)
            for channel in channels:
                channel.send(item)

        return send_each

    def send_item(item: Any) -> None:
        # bytes are an item serialized by the walk (a bytes item never occurs in the stream)
        send_encoded(item if type(item) is bytes else dumps_internal(item))

    return send_item


class RSync:
    """Send a directory to one or more remote places.

    Register targets with :meth:`add_target`, then call :meth:`send`. Files are compared by
    size and modification time, then by MD5; only files that differ are transferred.
    """

    def __init__(
        self,
        sourcedir: str | os.PathLike[str],
        callback: Callable[[str, int, Channel], Any] | None = None,
        verbose: bool = True,
    ) -> None:
        self._sourcedir = str(sourcedir)
        self._verbose = verbose
        assert callback is None or callable(callback)
        self._callback = callback
        self._channels: dict[Channel, Callable[[], Any] | None] = {}
        self._receivequeue: queue.Queue[tuple[Channel, Any]] = queue.Queue()
        self._links: list[tuple[str, str, str]] = []
        # Per target: sizes of the requested files (for "ack" progress) and their total.
        self._pending_sizes: dict[Channel, deque[int]] = {}
        self._requested_bytes: dict[Channel, int] = {}
        self._senders: dict[Channel, Callable[[bytes], None]] = {}
        # Channels whose requests arrive through a callback, and the one read directly.
        self._attached: set[Channel] = set()
        self._direct: Channel | None = None
        self._payloads: dict[str, bytes | None] = {}

    def filter(self, path: str) -> bool:
        """Return False to leave ``path`` (a full source path) out of the transfer."""
        return True

    def _report_send_file(self, gateway: Gateway, modified_rel_path: str) -> None:
        """Called for every file whose bytes are sent to ``gateway``."""
        if self._verbose:
            print(f"{gateway!r} <= {modified_rel_path}")

    def add_target(
        self,
        gateway: Gateway,
        destdir: str | os.PathLike[str],
        finishedcallback: Callable[[], Any] | None = None,
        **options: Any,
    ) -> None:
        """Add a remote target directory; ``options`` may only contain ``delete``.

        With ``delete=True`` the target loses every entry that the source does not have.
        """
        for name in options:
            assert name in ("delete",)
        channel = gateway.remote_exec(rsync_remote)
        channel.reconfigure(py2str_as_py3str=False, py3str_as_py2str=False)
        channel.send((str(destdir), options))
        self._channels[channel] = finishedcallback

    def _attach(self, channel: Channel) -> None:
        """Deliver the target's requests into the shared queue (several targets at once)."""
        if channel in self._attached:
            return

        def itemcallback(req: Any) -> None:
            self._receivequeue.put((channel, req))

        # Items that arrived before are handed to the callback first.
        channel.setcallback(itemcallback, endmarker=None)
        self._attached.add(channel)

    def send(self, raises: bool = True) -> None:
        """Synchronise the source directory to every target added since the last send.

        Raises OSError when there is no target (returns None instead if ``raises`` is False).
        """
        if not self._channels:
            if raises:
                raise OSError("no targets available, maybe you are trying call send() twice?")
            return
        self._links = []
        channels = list(self._channels)
        # One target is read from its own queue: with the native gateway I/O its requests
        # then reach that queue without the GIL, instead of through a callback each.
        self._direct = channels[0] if len(channels) == 1 else None
        if self._direct in self._attached:
            self._direct = None
        if self._direct is None:
            for channel in channels:
                self._attach(channel)
        self._send_directory_structure(self._root())
        while self._channels:
            self._process(self._next_batch())

    # -- sending the structure -------------------------------------------------------------

    def _root(self) -> str:
        root = self._sourcedir
        if root.endswith(os.sep) and root != os.sep:
            root = root.rstrip(os.sep) or os.sep
        return root

    def _filter_hook(self) -> Callable[[str], bool] | None:
        # The walk calls back into Python only when a subclass (or instance) replaced filter.
        if "filter" in vars(self) or type(self).filter is not RSync.filter:
            return self.filter
        return None

    def _send_directory_structure(self, root: str) -> None:
        hook = self._filter_hook()
        parts: Iterable[tuple[list[Any], list[str]]]
        if _core is not None:
            # Parts of the tree go out while the rest is walked, so targets start early; the
            # items come serialized already.
            parts = _core.TreeWalk(root, hook, _CHUNK, True)
        else:
            parts = [_walk_python(root, hook)]
        channels = list(self._channels)
        broadcast = _broadcaster(channels)
        first = True
        for items, links in parts:
            if first and items and items[0] in ((None, 0, 0), _VANISHED):
                # Sending this would make every target delete its copy of the tree.
                raise FileNotFoundError(errno.ENOENT, "rsync source directory not found", root)
            first = False
            for path in links:
                self._record_link(root, path)
            try:
                for item in items:
                    broadcast(item)
            except OSError as exc:
                self._raise_target_failure(exc, channels)

    def _record_link(self, root: str, path: str) -> None:
        prefix = root if root.endswith(os.sep) else root + os.sep
        rel = path[len(prefix) :]
        try:
            linkpoint = os.readlink(path)
        except OSError:
            return  # vanished since the walk; the target gets nothing for it
        try:
            relpath: str | None = os.path.relpath(linkpoint, root)
        except ValueError:
            relpath = None
        if (
            relpath is not None
            and relpath not in (os.curdir, os.pardir)
            and not relpath.startswith(os.pardir + os.sep)
        ):
            self._links.append(("linkbase", rel, relpath))
        else:
            self._links.append(("link", rel, linkpoint))

    # -- serving the targets ---------------------------------------------------------------

    def _next_batch(self) -> list[tuple[Channel, Any]]:
        channel = self._direct
        if channel is not None:
            return self._next_direct_batch(channel)
        batch = [self._receivequeue.get()]
        while len(batch) < _BATCH:
            try:
                batch.append(self._receivequeue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _next_direct_batch(self, channel: Channel) -> list[tuple[Channel, Any]]:
        """Requests of a single target, taken from its channel; ``None`` once it has ended."""
        batch: list[tuple[Channel, Any]] = []
        timeout = None
        while len(batch) < _BATCH:
            try:
                batch.append((channel, channel.receive(timeout)))
            except channel.TimeoutError:
                break
            except RemoteError as exc:
                # receive() hands out the target's error only once: raise it here.
                self._process(batch)
                self._channel_ended(channel, exc)
                return []
            except EOFError:
                batch.append((channel, None))
                break
            timeout = 0
        return batch

    def _process(self, batch: list[tuple[Channel, Any]]) -> None:
        digests = self._source_digests(batch)
        self._payloads = self._read_small_files(batch)
        try:
            self._answer(batch, digests)
        finally:
            self._payloads = {}

    def _answer(self, batch: list[tuple[Channel, Any]], digests: dict[str, bytes | None]) -> None:
        for channel, req in batch:
            if req is None:
                self._channel_ended(channel)
                continue
            command, data = req
            if command == "send":
                self._send_file(channel, data, digests)
            elif command == "list_done":
                if self._callback is not None:
                    self._callback("list", self._requested_bytes.get(channel, 0), channel)
            elif command == "ack":
                sizes = self._pending_sizes.get(channel)
                size = sizes.popleft() if sizes else 0
                if self._callback is not None:
                    self._callback("ack", size, channel)
            elif command == "links":
                for link in self._links:
                    self._send_to(channel, link)
                self._send_to(channel, _LINKS_END)
            elif command == "done":
                self._target_done(channel)
            else:
                raise ValueError(f"unknown rsync request {command!r} from {channel!r}")

    def _source_digests(self, batch: list[tuple[Channel, Any]]) -> dict[str, bytes | None]:
        """MD5 of every source file in ``batch`` whose target sent a checksum, in parallel."""
        paths = []
        for _, req in batch:
            if req is not None and req[0] == "send" and req[1][1] is not None:
                paths.append(self._source_path(req[1][0]))
        if not paths or _core is None:
            return {}
        unique = list(dict.fromkeys(paths))
        return dict(zip(unique, _core.md5_files(unique), strict=False))

    def _read_small_files(self, batch: list[tuple[Channel, Any]]) -> dict[str, bytes | None]:
        """Payloads of the small files that ``batch`` asks for without a checksum, read in
        one go (larger files are read one at a time, straight into their message)."""
        if _core is None:
            return {}
        paths = [
            self._source_path(req[1][0])
            for _, req in batch
            if req is not None and req[0] == "send" and req[1][1] is None
        ]
        if len(paths) < 2:
            return {}
        return dict(zip(paths, _core.file_payloads(paths, _SMALL_FILE, _READ_THREADS), strict=True))

    def _source_path(self, components: list[str]) -> str:
        return os.path.join(self._root(), *components)

    def _send_file(
        self,
        channel: Channel,
        data: tuple[list[str], bytes | None],
        digests: dict[str, bytes | None],
    ) -> None:
        components, checksum = data
        path = self._source_path(components)
        known = digests.get(path)
        payload: bytes | None
        if checksum is not None and known is not None and known == checksum:
            payload = None
            size = self._size(path) if self._callback is not None else 0
        else:
            payload = self._payloads.get(path) or self._read_payload(path)
            size = 0 if payload is None else len(payload) - _PAYLOAD_OVERHEAD
            if payload is not None:
                if (
                    checksum is not None
                    and known is None
                    and checksum == _md5(memoryview(payload)[_PAYLOAD_HEADER:-1])
                ):
                    payload = None
                else:
                    self._report_send_file(channel.gateway, os.path.join("", *components))
        self._pending_sizes.setdefault(channel, deque()).append(size)
        self._requested_bytes[channel] = self._requested_bytes.get(channel, 0) + size
        self._send_data(channel, _NONE if payload is None else payload)

    @staticmethod
    def _read_payload(path: str) -> bytes | None:
        """The file's content serialized as ``bytes`` (what ``Channel.send(content)`` would
        put on the wire), or None if it cannot be read."""
        if _core is not None:
            try:
                return _core.file_payload(path)
            except OverflowError:
                pass  # 2 GiB or more: let the serializer raise its error below
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError:
            return None
        return dumps_internal(content)

    @staticmethod
    def _size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return 0

    def _send_to(self, channel: Channel, item: Any) -> None:
        self._send_data(channel, dumps_internal(item))

    def _send_data(self, channel: Channel, data: bytes) -> None:
        """Send one serialized item (``dumps_internal`` form) on ``channel``."""
        send = self._senders.get(channel)
        if send is None:
            send = self._senders[channel] = _data_sender([channel]) or (
                lambda data: channel.send(loads_internal(data))
            )
        try:
            send(data)
        except OSError as exc:
            self._raise_target_failure(exc, [channel])

    def _raise_target_failure(self, exc: OSError, channels: list[Channel]) -> NoReturn:
        """A send failed: raise what ended the target (its RemoteError, or the lost
        connection) when that is known, else ``exc``."""
        for channel in channels:
            try:
                # Gives the gateway's reader a moment to record why the channel ended.
                channel.waitclose(timeout=0.5)
            except EOFError as lost:
                raise EOFError(
                    f"connection to {channel.gateway!r} lost during rsync: {lost}"
                ) from lost
            except OSError:
                continue  # still open (execnet's TimeoutError is an OSError)
        raise exc

    def _target_done(self, channel: Channel) -> None:
        finishedcallback = self._channels.pop(channel)
        self._forget(channel)
        if finishedcallback is not None:
            finishedcallback()
        channel.waitclose()

    def _channel_ended(self, channel: Channel, error: RemoteError | None = None) -> None:
        if channel not in self._channels:
            return  # finished normally; this is its close
        del self._channels[channel]
        self._forget(channel)
        if error is not None:
            raise error
        try:
            channel.waitclose()
        except EOFError as exc:
            raise EOFError(f"connection to {channel.gateway!r} lost during rsync: {exc}") from exc
        raise OSError(f"connection unexpectedly closed: {channel.gateway} ")

    def _forget(self, channel: Channel) -> None:
        self._senders.pop(channel, None)
        self._attached.discard(channel)
        if self._direct is channel:
            self._direct = None
        self._pending_sizes.pop(channel, None)
        self._requested_bytes.pop(channel, None)
