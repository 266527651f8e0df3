"""Version of this execnet implementation.

The public version is upstream's release we are compatible with (2.1.2), plus the local label
``+rs.N`` that names this implementation (the Rust engine) and its own revision.
"""

__version__ = version = "2.1.2+rs.1"
__version_tuple__ = version_tuple = (2, 1, 2, "rs", 1)
#: Name of this implementation (upstream execnet has no such attribute).
implementation = "execnet-rs"
