"""Helpers shared by the side-by-side programs (run under this package and under upstream).

Each program prints what a user of execnet would observe; ``tests/test_programs.py`` runs it
under both implementations and compares the normalised outputs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import execnet

__all__ = ["attempt", "describe", "execnet", "show", "tree"]


def show(*args: object) -> None:
    """Prints one line and flushes, so output order matches event order."""
    print(*args, flush=True)


def describe(exc: BaseException) -> str:
    """``TypeName: message`` of an exception."""
    return f"{type(exc).__name__}: {exc}"


def attempt(func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Calls ``func`` and describes its result or the exception it raised."""
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:  # noqa: B036 - programs report every outcome
        return "raised " + describe(exc)
    return f"returned {result!r}"


def tree(root: str) -> list[str]:
    """Sorted relative paths below ``root`` with a file's content or a link's target."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                entries.append(f"{rel} -> {os.readlink(path)}")
            elif os.path.isdir(path):
                entries.append(rel + "/")
            else:
                with open(path, "rb") as f:
                    entries.append(f"{rel} = {f.read()!r}")
    return sorted(entries)


_expect = os.environ.get("PROGRAMS_EXPECT")
if _expect is not None and ("+rs" in execnet.__version__) != (_expect == "ours"):
    sys.exit(f"expected the {_expect} execnet, imported {execnet.__file__}")
sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
