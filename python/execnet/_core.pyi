"""Private extension module of execnet (Rust engine). Not a public API."""

__version__: str
