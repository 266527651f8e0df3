"""execnet demo: start local Python interpreters, run code in them, exchange data both ways.

Run with ``make demo`` (or ``python examples/demo.py`` once the package is installed).
"""

from __future__ import annotations

import os
import sys

import execnet


def squares(channel, offset):
    """Runs in the remote interpreter: answer every number received with its square + offset.

    Shipped as source text, so it may use only builtins and its arguments (no annotations
    naming module globals).
    """
    for number in channel:
        channel.send(number * number + offset)


def main() -> int:
    print(f"execnet {execnet.__version__} from {os.path.dirname(execnet.__file__)}")
    print(f"local interpreter: pid {os.getpid()}, Python {sys.version.split()[0]}")
    group = execnet.Group()
    try:
        first = group.makegateway("popen//id=first")
        second = group.makegateway("popen//id=second")
        print(f"opened {first!r}")
        print(f"opened {second!r}")

        # Source text runs remotely; `channel` connects it to us.
        channel = first.remote_exec(
            "import os, sys\nchannel.send((os.getpid(), '%d.%d.%d' % sys.version_info[:3]))"
        )
        pid, version = channel.receive()
        print(f"[first] remote pid {pid}, Python {version}")

        # A module-level function, shipped as source, with keyword arguments; data goes both ways.
        channel = second.remote_exec(squares, offset=1)
        for number in range(1, 6):
            channel.send(number)
        answers = [channel.receive() for _ in range(5)]
        channel.close()
        channel.waitclose()
        print(f"[second] sent 1..5, received squares + 1: {answers}")

        # Structured data survives the trip unchanged.
        payload = {"name": "demo", "sizes": (1, 2, 3), "blob": b"\x00\xff", "tags": {"a", "b"}}
        channel = first.remote_exec("channel.send(channel.receive())")
        channel.send(payload)
        echoed = channel.receive()
        print(f"[first] echoed {echoed!r} (equal: {echoed == payload})")

        # The same code on every gateway of the group.
        pids = group.remote_exec("import os; channel.send(os.getpid())").receive_each()
        print(f"[group] pids of {[gw.id for gw in group]}: {pids}")

        # A remote exception comes back as execnet.RemoteError with the remote traceback.
        channel = second.remote_exec("raise ValueError('raised remotely')")
        try:
            channel.receive()
        except execnet.RemoteError as exc:
            print(f"[second] RemoteError: {str(exc).strip().splitlines()[-1]}")

        ok = answers == [n * n + 1 for n in range(1, 6)] and echoed == payload
    finally:
        group.terminate(timeout=5)
    print(f"terminated all gateways; demo {'succeeded' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
