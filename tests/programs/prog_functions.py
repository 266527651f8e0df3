"""The checks on functions passed to ``remote_exec`` (which names count as globals)."""

import functools

from _common import attempt, execnet, show

LIMIT = 3


def with_comprehension(channel):
    channel.send([i * 2 for i in range(3)])


def with_nested(channel):
    def inner(x):
        return x + 1

    channel.send(inner(1))


def recursive(channel, n=3):
    if n:
        return recursive(channel, n - 1)
    channel.send("done")


def with_annotation(channel, value: "int" = 1) -> None:
    channel.send(value)


def with_real_annotation(channel, value: list = None):  # noqa: B006
    channel.send(value)


def with_kwonly(channel, *, key="k"):
    channel.send(key)


def with_global_default(channel, limit=LIMIT):
    channel.send(limit)


def with_attribute(channel):
    import os

    channel.send(os.path.sep)


def with_lambda_inside(channel):
    f = lambda x: x * 3  # noqa: E731
    channel.send(f(2))


def with_try(channel):
    try:
        raise KeyError("k")
    except KeyError as exc:
        channel.send(type(exc).__name__)


def with_closure_factory():
    value = 1

    def closure(channel):
        channel.send(value)

    return closure


@functools.lru_cache
def decorated(channel):
    channel.send(1)


def no_args():
    pass


gw = execnet.makegateway()
for func, kwargs in [
    (with_comprehension, {}),
    (with_nested, {}),
    (recursive, {}),
    (with_annotation, {"value": 5}),
    (with_real_annotation, {}),
    (with_kwonly, {"key": "given"}),
    (with_global_default, {}),
    (with_attribute, {}),
    (with_lambda_inside, {}),
    (with_try, {}),
    (with_closure_factory(), {}),
    (decorated, {}),
    (no_args, {}),
    (print, {}),
]:
    name = getattr(func, "__name__", repr(func))
    try:
        ch = gw.remote_exec(func, **kwargs)
    except BaseException as exc:  # noqa: B036
        show(name, "refused", type(exc).__name__, exc.args)
        continue
    show(name, attempt(ch.receive, timeout=10).splitlines()[-1])
show(
    "finder", execnet.gateway._find_non_builtin_globals("x = y + len(z)\n", (lambda: None).__code__)
)
gw.exit()
