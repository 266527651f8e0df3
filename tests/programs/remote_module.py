"""A module sent whole with ``remote_exec(module)``: it runs only as ``__channelexec__``."""

import sys


def double(x):
    return x * 2


if __name__ == "__channelexec__":
    for item in channel:  # type: ignore[name-defined]  # noqa: F821
        if item is None:
            break
        channel.send((double(item), sys.platform))  # type: ignore[name-defined]  # noqa: F821
    raise RuntimeError("module ends with an error on purpose")
