"""Process checks shared by the lifecycle, termination, stress and fault tests."""

from __future__ import annotations

import os
import time


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (missing, or a zombie nobody reaped yet)."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for every pid to be gone; return those still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not process_gone(pid)]
        if not alive:
            return []
        time.sleep(0.02)
    return [pid for pid in pids if not process_gone(pid)]
