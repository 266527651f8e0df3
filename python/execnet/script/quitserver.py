"""Stop a running socket server.

Usage: ``python quitserver.py host:port`` -- connects and sends a source line that raises
KeyboardInterrupt inside the server, which ends its accept loop.
"""

from __future__ import annotations

import socket
import sys

if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect((host, int(port)))
    sock.sendall(repr("raise KeyboardInterrupt").encode("utf-8") + b"\n")
    sock.close()
