"""``execnet.dumps``/``loads`` of odd values, and the errors of both."""

import math

from _common import attempt, execnet, show

values = [
    None,
    True,
    False,
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    2**100,
    1.5,
    -0.0,
    float("inf"),
    1e308,
    complex(1, -2),
    "",
    "ünïcødé ✓",
    "\x00",
    b"",
    b"\x00\xff",
    (),
    (1,),
    [],
    [[]],
    {},
    {1: "a", (1, 2): [3]},
    set(),
    {1, 2},
    frozenset({"x"}),
    [None] * 3,
    {"nested": [(1, {"k": b"v"})]},
]
for value in values:
    data = execnet.dumps(value)
    back = execnet.loads(data)
    show(repr(value), data.hex(), repr(back), type(back).__name__)
nan = execnet.loads(execnet.dumps(float("nan")))
show("nan", math.isnan(nan))


class Sub(int):
    pass


for bad in (
    object(),
    Sub(3),
    bytearray(b"x"),
    memoryview(b"x"),
    -(2**100),
    [object()],
    {1: set([object])},
    "\udcff",
):
    show("dumps", attempt(execnet.dumps, bad))
for data in (b"", b"\x01", b"\x02", b"\x02Z", b"\x02Q", b"\x02N", b"\x02@\x00\x00\x00\x01"):
    show("loads", data, attempt(execnet.loads, data))
show("py2str", execnet.loads(execnet.dumps("s"), py2str_as_py3str=True))
show("module", execnet.dumps is execnet.gateway_base.dumps)
