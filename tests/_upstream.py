"""Upstream execnet 2.1.2 as a test peer.

It is installed once into ``<repo>/.side/upstream-2.1.2`` (``pip install --target`` into a
temporary folder, then an atomic rename, under a file lock so concurrent pytest processes do not
clash) and only ever run in subprocesses. Tests are skipped only when PyPI cannot be reached.

* :func:`ensure_upstream` installs it and returns its folder.
* :func:`run_upstream` runs Python code with upstream's ``execnet`` importable.
* :func:`upstream_gateway_base_path` is the path of upstream's ``gateway_base.py``, which is
  standalone-importable under another module name (see :data:`IMPORT_SNIPPET`).
* :class:`UpstreamServer` is a long-lived subprocess that evaluates requests (pickled over pipes),
  for feeding it thousands of values cheaply.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SIDE = REPO / ".side"
UPSTREAM_VERSION = "2.1.2"
UPSTREAM_DIR = SIDE / f"upstream-{UPSTREAM_VERSION}"

#: Python code that imports upstream's gateway_base as module ``ugb`` (given ``UGB_PATH``).
IMPORT_SNIPPET = """
import importlib.util as _ilu, sys as _sys
_spec = _ilu.spec_from_file_location("upstream_gateway_base", UGB_PATH)
ugb = _ilu.module_from_spec(_spec)
_sys.modules["upstream_gateway_base"] = ugb
_spec.loader.exec_module(ugb)
"""


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/execnet/", timeout=15):
            return True
    except (urllib.error.URLError, OSError):
        return False


def ensure_upstream() -> Path:
    """Installs upstream execnet into the side folder (once) and returns that folder."""
    marker = UPSTREAM_DIR / "execnet" / "gateway_base.py"
    if marker.exists():
        return UPSTREAM_DIR
    SIDE.mkdir(exist_ok=True)
    with open(SIDE / f"upstream-{UPSTREAM_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return UPSTREAM_DIR
        tmp = Path(tempfile.mkdtemp(prefix="upstream-", dir=SIDE))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                 "--disable-pip-version-check", "--target", str(tmp),
                 f"execnet=={UPSTREAM_VERSION}"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if proc.returncode != 0:
                if not _pypi_reachable():
                    pytest.skip("PyPI unreachable: cannot install upstream execnet")
                raise RuntimeError(f"installing upstream execnet failed:\n{proc.stderr}")
            os.rename(tmp, UPSTREAM_DIR)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return UPSTREAM_DIR


def upstream_gateway_base_path() -> Path:
    """Path of upstream's ``execnet/gateway_base.py``."""
    return ensure_upstream() / "execnet" / "gateway_base.py"


def upstream_env() -> dict[str, str]:
    """Environment for a subprocess in which ``import execnet`` gives upstream's package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ensure_upstream())
    return env


def run_upstream(
    code: str, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``code`` in a fresh interpreter where ``execnet`` is upstream's; raises on failure."""
    check = (
        "import execnet, os\n"
        f"assert os.path.realpath(execnet.__file__).startswith({str(UPSTREAM_DIR.resolve())!r}),"
        " execnet.__file__\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check + textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        env=upstream_env(),
        cwd=tempfile.gettempdir(),
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"upstream subprocess failed:\n{proc.stderr.decode(errors='replace')}")
    return proc


_SERVER_LOOP = """
import pickle, struct, sys, traceback
UGB_PATH = sys.argv[1]
exec(sys.argv[2])
namespace = {"ugb": ugb}
exec(sys.argv[3], namespace)
handle = namespace["handle"]
rd, wr = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = rd.read(4)
    if len(head) < 4:
        break
    request = pickle.loads(rd.read(struct.unpack("!I", head)[0]))
    try:
        reply = ("ok", handle(request))
    except BaseException:
        reply = ("crash", traceback.format_exc())
    data = pickle.dumps(reply, protocol=4)
    wr.write(struct.pack("!I", len(data)) + data)
    wr.flush()
"""


class UpstreamServer:
    """A subprocess with upstream's gateway_base imported as ``ugb`` that answers requests.

    ``handler_source`` defines ``handle(request)``; requests and replies are pickled. The
    subprocess's ``sys.path`` is the test environment's, so it can import this project's
    ``execnet`` too and compare both in one process.
    """

    def __init__(self, handler_source: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SERVER_LOOP,
                str(upstream_gateway_base_path()),
                IMPORT_SNIPPET,
                textwrap.dedent(handler_source),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=tempfile.gettempdir(),
        )

    def call(self, request: Any) -> Any:
        """Sends one request and returns the handler's result (raises if the handler crashed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = pickle.dumps(request, protocol=4)
        self.proc.stdin.write(struct.pack("!I", len(data)) + data)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            raise RuntimeError(f"upstream server died (exit code {self.proc.wait()})")
        status, result = pickle.loads(self.proc.stdout.read(struct.unpack("!I", head)[0]))
        if status != "ok":
            raise RuntimeError(f"upstream server handler failed:\n{result}")
        return result

    def close(self) -> None:
        """Ends the subprocess."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
