"""A private loopback sshd for tests: ``ssh=`` gateways against a real OpenSSH server.

The server listens on 127.0.0.1 on a free port, accepts only a key generated on the fly, and runs
sessions with a private ``HOME`` (so the login shell reads no rc files that would reorder
``PATH``) and the given Python's directory first on ``PATH`` (so a plain ``python`` on the remote
side is that interpreter). It runs in the foreground (``sshd -D``) as a child of the test process
and is stopped by its pid.

Usable from a conftest fixture and from the conformance runner::

    with running(workdir, python=sys.executable) as server:
        execnet.makegateway(f"ssh={server.ssh}//python={server.python}")
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0


class SshdError(RuntimeError):
    """The loopback sshd could not be started."""


def available() -> str | None:
    """Return None when an sshd can be started here, else the reason it cannot."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"the {tool} binary is missing (apt-get install openssh-client)"
    return None


@dataclass
class Sshd:
    """A running loopback sshd and what a client needs to reach it."""

    port: int
    #: Private key accepted by the server.
    key: Path
    #: Key the server does not accept (for authentication-failure tests).
    bad_key: Path
    #: The interpreter the remote side should run (absolute path).
    python: str
    user: str
    process: subprocess.Popen[bytes]
    log: Path

    def ssh_args(self, key: Path | None = None) -> list[str]:
        """The ssh client arguments (without the ``ssh`` program) reaching this server."""
        return [
            "-p",
            str(self.port),
            "-i",
            str(key or self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            f"{self.user}@127.0.0.1",
        ]

    @property
    def ssh(self) -> str:
        """The value of an ``ssh=`` spec key (whitespace-separated ssh client arguments)."""
        return " ".join(self.ssh_args())

    @property
    def bad_ssh(self) -> str:
        """Like :attr:`ssh`, with a key the server rejects."""
        return " ".join(self.ssh_args(self.bad_key))

    @property
    def spec(self) -> str:
        """An execnet spec string: ``ssh=...//python=...``."""
        return f"ssh={self.ssh}//python={self.python}"

    def run(self, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` through the ssh client against this server."""
        return subprocess.run(
            ["ssh", *self.ssh_args(), command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """Stop the server by its pid and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP socket listens on ``host:port`` (read from /proc, no connection made)."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] in (want, f"00000000:{port:04X}") and fields[3] == "0A":
                    return True
    except OSError:
        return False
    return False


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "execnet-tests", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _write_config(workdir: Path, port: int, python: str) -> Path:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    path_value = os.pathsep.join([os.path.dirname(python), "/usr/local/bin", "/usr/bin", "/bin"])
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {workdir / 'host_ed25519'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                f"PidFile {workdir / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "PrintLastLog no",
                "Banner none",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                f"SetEnv HOME={home} PATH={path_value}",
                "",
            ]
        )
    )
    return config


def start(workdir: Path, python: str) -> Sshd:
    """Start a loopback sshd whose sessions run ``python`` first on PATH.

    ``python`` should be an absolute path that is not resolved through symlinks (a venv's
    ``bin/python``), so that its directory holds the venv's scripts.
    """
    reason = available()
    if reason is not None:
        raise SshdError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege-separation directory.
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    _keygen(workdir / "host_ed25519")
    _keygen(workdir / "client_ed25519")
    _keygen(workdir / "other_ed25519")
    shutil.copyfile(workdir / "client_ed25519.pub", workdir / "authorized_keys")
    log = workdir / "sshd.log"
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        config = _write_config(workdir, port, python)
        process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Sshd(
            port=port,
            key=workdir / "client_ed25519",
            bad_key=workdir / "other_ed25519",
            python=python,
            user=getpass.getuser(),
            process=process,
            log=log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if is_listening(port):
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log.read_text(errors="replace") if log.exists() else "no log"
    raise SshdError(f"sshd did not start: {last_error.strip()}")


@contextlib.contextmanager
def running(workdir: Path, python: str) -> Iterator[Sshd]:
    """Context manager form of :func:`start`; stops the server on exit."""
    server = start(workdir, python)
    try:
        yield server
    finally:
        server.stop()
