"""The two codecs of this project against each other: the native one (``execnet._core``) and the
pure-Python one in ``gateway_base`` (used where its source is shipped to a remote), on the same
corpus and the same bad input, in one process.
"""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any

import pytest

from execnet import _core, gateway_base
from test_codec import BAD_INPUTS, Factory, outcome, random_value, same, same_outcome


def py_dumps(obj: object) -> bytes:
    data = gateway_base._Serializer().save(obj, versioned=True)
    assert isinstance(data, bytes)
    return data


def py_loads(data: bytes, strconfig: tuple[bool, bool] = (False, False)) -> Any:
    return gateway_base.Unserializer(BytesIO(data), strconfig=strconfig).load(versioned=True)


def test_gateway_base_uses_the_native_codec() -> None:
    assert gateway_base._core is _core
    assert gateway_base.dumps([1, "a"]) == _core.dumps([1, "a"])


def test_random_corpus_same_bytes_and_values() -> None:
    rng = random.Random(424242)
    for _ in range(10_000):
        value = random_value(rng)
        ours = outcome(_core.dumps, value)
        theirs = outcome(py_dumps, value)
        if ours[0] == "ok" and theirs[0] == "ok":
            assert ours[1] == theirs[1], value
            assert same(py_loads(ours[1]), _core.loads(theirs[1])), value
        else:
            assert ours[:2] == theirs[:2], (value, ours, theirs)


BARE_ASSERTION = b"\x02B\x00\x00\x00\x01Q"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            data,
            marks=pytest.mark.xfail(
                reason="pure-Python codec gives its AssertionError a message; upstream's is bare"
            ),
        )
        if data == BARE_ASSERTION
        else data
        for data in BAD_INPUTS
    ],
)
def test_bad_input_same_errors(data: bytes) -> None:
    assert same_outcome(outcome(_core.loads, data), outcome(py_loads, data)), data


def test_ints_below_int32() -> None:
    for value in [-(2**31) - 1, -(2**40), -(10**30)]:
        assert outcome(py_dumps, value) == outcome(_core.dumps, value)


def test_strconfig_and_channels_same() -> None:
    samples = [
        b"\x02M\x00\x00\x00\x02\xe9aQ",
        b"\x02N\x00\x00\x00\x02\xc3\xa9Q",
        b"\x02S\x00\x00\x00\x01aQ",
    ]
    for data in samples:
        for strconfig in [(False, False), (True, False), (False, True), (True, True)]:
            ours = outcome(_core.loads, data, *strconfig)
            theirs = outcome(py_loads, data, strconfig)
            assert same_outcome(ours, theirs), (data, strconfig)
    wire = b"B\x00\x00\x00\x07F\x00\x00\x00\x01@\x00\x00\x00\x02Q"
    ours_factory, theirs_factory = Factory(), Factory()
    theirs = gateway_base.Unserializer(BytesIO(wire), theirs_factory).load()
    assert _core.loads_internal(wire, ours_factory) == theirs
    assert ours_factory.made == theirs_factory.made == [7]
