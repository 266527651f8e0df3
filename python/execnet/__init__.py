"""execnet: rapid multi-Python deployment, with its engine in Rust."""

from ._version import __version__

__all__ = ["__version__"]
