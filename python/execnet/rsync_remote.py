"""Receiving side of :class:`execnet.RSync`.

This module is shipped to the remote side as source text (``gateway.remote_exec(module)``) and
runs there as ``__channelexec__``. It depends on the standard library only, in every worker:
``hashlib``'s MD5 (OpenSSL) hashes faster on one core than the native ``_core.md5_file``.

Protocol, as seen from here (``channel`` is the remote_exec channel):

1. receive ``(destdir, options)``;
2. receive the directory-structure stream in pre-order and mirror it: ``[mode, names...]`` for a
   directory, ``(mode, mtime, size)`` for a file, ``None`` for a symlink; for each file that is
   missing or differs send ``("send", (components, md5_or_None))``;
3. send ``("list_done", None)``; for every requested file receive its bytes (or ``None``), send
   ``("ack", relpath)`` and write it;
4. send ``("links", None)``; receive ``(kind, relpath, target)`` tuples up to the int ``42``
   and create the symlinks;
5. send ``("done", None)``.
"""

from __future__ import annotations

import os
import shutil
import stat
from hashlib import md5
from typing import Any

_LINKS_END = 42
_CHUNK = 1 << 20
# Setting mode and times through the open descriptor saves two path lookups per file.
_FD_TIMES = hasattr(os, "fchmod") and os.utime in os.supports_fd


def _md5() -> Any:
    try:
        return md5(usedforsecurity=False)  # accepted by FIPS-restricted builds
    except TypeError:  # Python < 3.9
        return md5()


def _file_md5(path: str) -> bytes:
    digest = _md5()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                result: bytes = digest.digest()
                return result
            digest.update(chunk)


#: Requested files from which writing them on a second thread pays for starting it.
_WRITER_MIN_FILES = 16
#: Received files that may wait for the writer thread (bounds the memory they hold).
_WRITE_AHEAD = 64


class _Writer:
    """Writes received files on a second thread while the main thread receives the next ones
    (file creation and writing release the GIL). The messages are unchanged: each file is
    acknowledged when it is received, as before; an error while writing is raised in the
    main thread at its next file, or at the end."""

    def __init__(self, write: Any) -> None:
        import queue
        import threading

        self._write = write
        self._jobs: Any = queue.Queue(maxsize=_WRITE_AHEAD)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="execnet-rsync-writer")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self._write(*job)
                except BaseException as exc:  # handed to the main thread
                    self._error = exc

    def put(self, job: tuple[str, bytes, int | None, float]) -> None:
        if self._error is not None:
            self.finish()
        self._jobs.put(job)

    def finish(self) -> None:
        """Wait until everything is written; raise what failed."""
        self._jobs.put(None)
        self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        """Let the thread end after writing the files already received (the main thread
        failed, and raises its own error)."""
        self._jobs.put(None)
        self._thread.join()


class _Receiver:
    def __init__(self, channel: Any, destdir: str, options: dict[str, Any]) -> None:
        self.channel = channel
        self.destdir = destdir
        self.delete = bool(options.get("delete"))
        self.requested: list[tuple[str, list[str], tuple[Any, Any, Any]]] = []

    def remove(self, path: str) -> None:
        """Remove whatever is at ``path`` (a file, link or whole directory tree)."""
        assert path.startswith(self.destdir), (path, self.destdir)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            try:
                os.unlink(path)
            except OSError:
                pass
            return
        try:
            shutil.rmtree(path)
        except OSError:
            # Read-only directories inside: make them writable, then try once more.
            for dirpath, dirnames, _ in os.walk(path):
                for name in dirnames:
                    try:
                        os.chmod(os.path.join(dirpath, name), 0o700)
                    except OSError:
                        pass
            shutil.rmtree(path, ignore_errors=True)

    def mirror(self, path: str, parent: list[str], name: str | None, fresh: bool = False) -> None:
        """Mirror one structure item (and, for a directory, everything below it) at ``path``.

        ``parent`` holds the path components of the containing directory, ``name`` is the
        entry's own (``None`` for the root); the entry's component list is built only when
        it is needed, which for an unchanged file it is not. ``fresh`` says that the
        containing directory was just created here, so nothing exists at ``path`` yet.
        """
        st: os.stat_result | None = None
        if not fresh:
            try:
                # The destination root is followed when it is a symlink (to a directory, say);
                # a dangling one is replaced.
                st = os.lstat(path) if name is not None else os.stat(path)
            except OSError:
                if name is None:
                    try:
                        st = os.lstat(path)
                    except OSError:
                        pass
        msg = self.channel.receive()
        if isinstance(msg, list):
            self.mirror_directory(path, parent if name is None else [*parent, name], st, msg)
        elif msg is not None:
            self.mirror_file(path, parent, name, st, msg)

    def mirror_directory(
        self, path: str, components: list[str], st: os.stat_result | None, msg: list[Any]
    ) -> None:
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            st = None
        fresh = st is None
        if fresh:
            os.makedirs(path)
        mode = msg[0]
        # Owner rwx so that the entries below can be written even for a read-only source.
        if mode and (st is None or st.st_mode != mode | 0o700):
            os.chmod(path, mode | 0o700)
        names = msg[1:]
        base = path if path.endswith(os.sep) else path + os.sep
        for name in names:
            self.mirror(base + name, components, name, fresh)
        if self.delete and not fresh:
            keep = set(names)
            for name in os.listdir(path):
                if name not in keep:
                    self.remove(base + name)

    def mirror_file(
        self,
        path: str,
        parent: list[str],
        name: str | None,
        st: os.stat_result | None,
        msg: tuple[Any, ...],
    ) -> None:
        mode, mtime, size = msg
        checksum = None
        if st is not None:
            if stat.S_ISREG(st.st_mode):
                if size != st.st_size:
                    pass
                elif mtime != st.st_mtime:
                    checksum = _file_md5(path)
                elif mode and mode != st.st_mode:
                    os.chmod(path, mode)
                    return
                else:
                    return
            else:
                self.remove(path)
        components = parent if name is None else [*parent, name]
        self.channel.send(("send", (components, checksum)))
        self.requested.append((path, components, msg))

    def write(self, path: str, data: bytes, mode: int | None, mtime: float) -> None:
        """Replace the content of ``path``, then set its mode and mtime through the same fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except PermissionError:
            # A read-only file from an earlier sync: replace it.
            os.unlink(path)
            fd = os.open(path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if not _FD_TIMES:
                return
            try:
                if mode:
                    os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            except OSError:
                pass
        finally:
            os.close(fd)

    def _writer(self) -> _Writer | None:
        """A writer thread when there is enough to write and the worker runs real threads."""
        if not _FD_TIMES or len(self.requested) < _WRITER_MIN_FILES:
            return None
        execmodel = getattr(getattr(self.channel, "gateway", None), "execmodel", None)
        if getattr(execmodel, "backend", None) not in ("thread", "main_thread_only"):
            return None
        return _Writer(self.write)

    def receive_files(self) -> None:
        writer = self._writer()
        try:
            self._receive_files(writer)
        except BaseException:
            if writer is not None:
                writer.stop()
            raise
        if writer is not None:
            writer.finish()

    def _receive_files(self, writer: _Writer | None) -> None:
        for path, components, (mode, mtime, _size) in self.requested:
            data = self.channel.receive()
            self.channel.send(("ack", os.sep.join(components)))
            if data is not None:
                if writer is not None:
                    writer.put((path, data, mode, mtime))
                    continue
                self.write(path, data, mode, mtime)
                if _FD_TIMES:
                    continue
            elif mode is None:
                # The source entry vanished while the tree was walked.
                if self.delete:
                    self.remove(path)
                continue
            try:
                if mode:
                    os.chmod(path, mode)
                os.utime(path, (mtime, mtime))
            except OSError:
                pass

    def receive_links(self) -> None:
        while True:
            msg = self.channel.receive()
            if isinstance(msg, int) and msg == _LINKS_END:
                return
            kind, relpath, target = msg
            path = os.path.join(self.destdir, relpath)
            self.remove(path)
            if kind == "linkbase":
                target = os.path.join(os.path.abspath(self.destdir), target)
            os.symlink(target, path)

    def run(self) -> None:
        self.mirror(self.destdir, [], None)
        self.channel.send(("list_done", None))
        self.receive_files()
        self.channel.send(("links", None))
        self.receive_links()
        self.channel.send(("done", None))


def serve_rsync(channel: Any) -> None:
    """Receive one tree from an :class:`execnet.RSync` sender over ``channel``."""
    destdir, options = channel.receive()
    _Receiver(channel, destdir, options).run()


if __name__ == "__channelexec__":
    serve_rsync(channel)  # type: ignore[name-defined]  # noqa: F821
