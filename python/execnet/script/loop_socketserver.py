"""Run the socket server again and again: each time it stops (for instance after
``quitserver.py``), a fresh one is started with the same arguments.

Usage: ``python loop_socketserver.py [host:port]``
"""

from __future__ import annotations

import os
import subprocess
import sys

if __name__ == "__main__":
    directory = os.path.dirname(os.path.abspath(sys.argv[0]))
    script = os.path.join(directory, "socketserver.py")
    while True:
        cmdlist = ["python", script]
        cmdlist.extend(sys.argv[1:])
        text = "starting subcommand: " + " ".join(cmdlist)
        print(text)
        process = subprocess.Popen(cmdlist)
        process.wait()
