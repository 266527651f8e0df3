"""Command-line helpers: socket servers and a remote shell demo."""
