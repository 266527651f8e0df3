"""``RSync`` to two gateways with a progress callback, a filter and ``delete``."""

import os
import tempfile

from _common import attempt, execnet, show, tree


class FilteredRSync(execnet.RSync):
    def filter(self, path):
        return not path.endswith(".pyc") and os.path.basename(path) != "skipped"


base = tempfile.mkdtemp()
src = os.path.join(base, "src")
os.makedirs(os.path.join(src, "sub", "deeper"))
os.makedirs(os.path.join(src, "skipped"))
files = {
    "a.txt": b"alpha",
    "sub/b.txt": b"beta" * 100,
    "sub/c.pyc": b"compiled",
    "sub/deeper/d.bin": bytes(range(256)),
    "skipped/e.txt": b"never",
}
for rel, data in files.items():
    with open(os.path.join(src, rel), "wb") as f:
        f.write(data)
os.symlink(os.path.join(src, "a.txt"), os.path.join(src, "abs-link"))
os.symlink("elsewhere/x", os.path.join(src, "rel-link"))

gw1 = execnet.makegateway()
gw2 = execnet.makegateway()
events = []
finished = []


def progress(kind, size, channel):
    events.append((kind, size, channel.gateway.id))


rs = FilteredRSync(src, callback=progress, verbose=False)
dst1 = os.path.join(base, "dst1")
dst2 = os.path.join(base, "dst2")
os.makedirs(os.path.join(dst2, "stale"))
with open(os.path.join(dst2, "old.txt"), "w") as f:
    f.write("old")
rs.add_target(gw1, dst1, finishedcallback=lambda: finished.append("gw1"))
rs.add_target(gw2, dst2, finishedcallback=lambda: finished.append("gw2"), delete=True)
show("send", rs.send())
show("finished", sorted(finished))
show("events gw0", [e for e in events if e[2] == "gw0"])
show("events gw1", [e for e in events if e[2] == "gw1"])
for dst in (dst1, dst2):
    show(os.path.basename(dst), [e.replace(base, "<BASE>") for e in tree(dst)])
show("send again", attempt(rs.send))
show("send again quietly", rs.send(raises=False))

with open(os.path.join(src, "a.txt"), "wb") as f:
    f.write(b"ALPHA")
reported = []


class Reporting(execnet.RSync):
    def _report_send_file(self, gateway, modified_rel_path):
        reported.append((gateway.id, modified_rel_path))


rs2 = Reporting(src, verbose=False)
rs2.add_target(gw1, dst1)
rs2.send()
show("resync reported", reported)
show("dst1 a.txt", open(os.path.join(dst1, "a.txt"), "rb").read())
show("bad option", attempt(rs2.add_target, gw1, dst1, bogus=True))
gw1.exit()
gw2.exit()
