"""Serializer benchmark: execnet-rs's native codec side by side with upstream execnet 2.1.2.

One run times, on the same data, ``execnet._core`` (this project), upstream 2.1.2's pure-Python
``gateway_base`` (imported from ``.side/upstream-2.1.2`` under another module name), and
``pickle``/``marshal`` as references:

* a big structure: 10,000 nested dicts (str, int, float, bool, list, tuple and a nested dict
  each; about 2.3 MB encoded), ``dumps`` and ``loads``;
* a small tuple ``(7, 'abc', 1.5)``, ``dumps`` and ``loads``.

Timing runs with the garbage collector off, as ``timeit`` does; ``big_loads_gc`` repeats the big
``loads`` with it on, as in a running program (where its collections traverse the many new
containers).

It prints a markdown table with ratios (upstream time / our time) and with ``--json PATH``
writes the numbers. ``--quick`` runs a smaller, shorter version (for CI). Rounds interleave the
implementations; big operations are timed one call at a time, several calls per round (one for
upstream), and the best call is reported, with the medians' ratio as a second view of the
noise. Correctness is recorded: our bytes must equal upstream's and both must decode back to
the input.

``--alternate N`` instead runs only the big ``loads`` against ``pickle.loads``, alternating
call by call for N rounds and timing CPU time (``time.process_time``), the decode alone and the
decode with the freeing of its result: a quieter view of that one ratio. ``--baseline SO`` adds
another build of the extension (a ``_core.abi3.so`` file) to the alternation, to compare builds.

Usage: ``python benchmarks/bench_serializer.py [--quick] [--json PATH] [--cpu N]
[--alternate N [--baseline SO]]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import marshal
import os
import pickle
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: Targets from the project's requirements (ratios are upstream time / our time).
TARGETS = {"big_dumps_vs_upstream": 25.0, "big_loads_vs_upstream": 10.0, "small_dumps_us": 0.3}


def load_upstream() -> ModuleType:
    """Upstream's gateway_base, installed into the side folder if needed."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from _upstream import upstream_gateway_base_path
    finally:
        sys.path.pop(0)
    spec = importlib.util.spec_from_file_location(
        "upstream_gateway_base", upstream_gateway_base_path()
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["upstream_gateway_base"] = module
    spec.loader.exec_module(module)
    return module


def record(i: int) -> dict[str, Any]:
    return {
        "name": f"rec-{i:06d}",
        "id": i,
        "score": i * 0.25 + 0.1,
        "active": i % 3 == 0,
        "tags": ["alpha", "beta", i % 7],
        "point": (i, -i, 1.5),
        "meta": {"owner": f"u{i % 100}", "size": i * 1024, "ratio": 1.0 / (i + 1)},
    }


def per_call(func: Callable[[], Any], number: int, gc_on: bool = False) -> float:
    """Time per call in seconds over ``number`` calls, with the garbage collector off (as
    ``timeit`` runs) unless ``gc_on``."""
    gc.collect()
    return timeit.timeit(func, setup="gc.enable()" if gc_on else "pass", number=number) / number


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_extension(path: str) -> ModuleType:
    """Another build of ``execnet._core`` from its shared library file, as module ``_core``."""
    spec = importlib.util.spec_from_file_location("_core", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alternate(rounds: int, baseline: str | None) -> int:
    """Big ``loads`` alternating with ``pickle.loads`` (and a baseline build), CPU time."""
    from execnet import _core

    big = [record(i) for i in range(10_000)]
    data = _core.dumps(big)
    pickled = pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL)
    impls: dict[str, Callable[[], Any]] = {}
    if baseline is not None:
        base = load_extension(baseline)
        if base.loads(data) != big:
            return 1
        impls["baseline"] = lambda: base.loads(data)
    impls["execnet-rs"] = lambda: _core.loads(data)
    impls["pickle"] = lambda: pickle.loads(pickled)
    if _core.loads(data) != big or pickle.loads(pickled) != big:
        return 1
    decode: dict[str, list[float]] = {name: [] for name in impls}
    total: dict[str, list[float]] = {name: [] for name in impls}
    clock = time.process_time
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, func in impls.items():
                start = clock()
                result = func()
                built = clock()
                del result
                freed = clock()
                decode[name].append(built - start)
                total[name].append(freed - start)
    finally:
        if enabled:
            gc.enable()
    print(f"big loads alternating, {rounds} rounds, CPU time, GC off; load average")
    print(f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| implementation | decode best / median | decode+free best / median |")
    print("|---|---|---|")
    for name in impls:
        d, t = decode[name], total[name]
        print(
            f"| {name} | {min(d) * 1e3:.2f} / {statistics.median(d) * 1e3:.2f} ms | "
            f"{min(t) * 1e3:.2f} / {statistics.median(t) * 1e3:.2f} ms |"
        )
    print()
    for name in impls:
        if name == "pickle":
            continue
        for label, res in (("decode", decode), ("decode+free", total)):
            best = min(res["pickle"]) / min(res[name])
            median = statistics.median(res["pickle"]) / statistics.median(res[name])
            print(f"pickle / {name}, {label}: best {best:.3f}x, medians {median:.3f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few repeats (CI)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    parser.add_argument(
        "--alternate", type=int, metavar="N", help="only big loads vs pickle, N rounds"
    )
    parser.add_argument("--baseline", metavar="SO", help="another build's _core.abi3.so")
    args = parser.parse_args(argv)

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.alternate is not None:
        return alternate(args.alternate, args.baseline)
    from execnet import _core

    upstream = load_upstream()
    count = 1000 if args.quick else 10_000
    big = [record(i) for i in range(count)]
    small = (7, "abc", 1.5)
    small_number = 20_000 if args.quick else 100_000

    big_ours = _core.dumps(big)
    big_upstream = upstream.dumps(big)
    small_ours = _core.dumps(small)
    correct = (
        big_ours == big_upstream
        and small_ours == upstream.dumps(small)
        and _core.loads(big_ours) == big
        and upstream.loads(big_ours) == big
        and _core.loads(small_ours) == small
    )
    big_pickle = pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL)
    big_marshal = marshal.dumps(big)
    small_pickle = pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL)
    small_marshal = marshal.dumps(small)

    impls: dict[str, dict[str, Callable[[], Any]]] = {
        "execnet-rs": {
            "big_dumps": lambda: _core.dumps(big),
            "big_loads": lambda: _core.loads(big_ours),
            "big_loads_gc": lambda: _core.loads(big_ours),
            "small_dumps": lambda: _core.dumps(small),
            "small_loads": lambda: _core.loads(small_ours),
        },
        "upstream 2.1.2": {
            "big_dumps": lambda: upstream.dumps(big),
            "big_loads": lambda: upstream.loads(big_upstream),
            "big_loads_gc": lambda: upstream.loads(big_upstream),
            "small_dumps": lambda: upstream.dumps(small),
            "small_loads": lambda: upstream.loads(small_ours),
        },
        "pickle": {
            "big_dumps": lambda: pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL),
            "big_loads": lambda: pickle.loads(big_pickle),
            "big_loads_gc": lambda: pickle.loads(big_pickle),
            "small_dumps": lambda: pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL),
            "small_loads": lambda: pickle.loads(small_pickle),
        },
        "marshal": {
            "big_dumps": lambda: marshal.dumps(big),
            "big_loads": lambda: marshal.loads(big_marshal),
            "big_loads_gc": lambda: marshal.loads(big_marshal),
            "small_dumps": lambda: marshal.dumps(small),
            "small_loads": lambda: marshal.loads(small_marshal),
        },
    }
    # Rounds interleave the implementations, so that load changes on a shared machine hit all
    # of them alike. Each big call is one sample (several per round, one for upstream's slow
    # ones); each small sample averages many calls. The best sample is reported.
    samples: dict[str, dict[str, list[float]]] = {
        name: {op: [] for op in impls[name]} for name in impls
    }
    rounds = 3 if args.quick else 9
    big_calls = 2 if args.quick else 5
    for _ in range(rounds):
        for name, ops in impls.items():
            for op, func in ops.items():
                if op.startswith("big"):
                    calls, number = (1 if name == "upstream 2.1.2" else big_calls), 1
                elif name == "upstream 2.1.2":
                    calls, number = 1, small_number // 20
                else:
                    calls, number = 1, small_number
                gc_on = op.endswith("_gc")
                samples[name][op].extend(per_call(func, number, gc_on) for _ in range(calls))
    times = {name: {op: min(ts) for op, ts in ops.items()} for name, ops in samples.items()}
    medians = {
        name: {op: statistics.median(ts) for op, ts in ops.items()} for name, ops in samples.items()
    }

    ours = times["execnet-rs"]
    median_ratios = {
        f"{op}_vs_pickle": medians["pickle"][op] / medians["execnet-rs"][op] for op in ours
    }
    ratios = {
        f"{op}_vs_{ref}": times[label][op] / ours[op]
        for op in ours
        for ref, label in [
            ("upstream", "upstream 2.1.2"),
            ("pickle", "pickle"),
            ("marshal", "marshal"),
        ]
    }
    targets_met = {
        "big_dumps_vs_upstream": ratios["big_dumps_vs_upstream"]
        >= TARGETS["big_dumps_vs_upstream"],
        "big_loads_vs_upstream": ratios["big_loads_vs_upstream"]
        >= TARGETS["big_loads_vs_upstream"],
        "big_dumps_vs_pickle": ratios["big_dumps_vs_pickle"] >= 1.0,
        "big_loads_vs_pickle": ratios["big_loads_vs_pickle"] >= 1.0,
        "small_dumps_us": ours["small_dumps"] * 1e6 <= TARGETS["small_dumps_us"],
    }

    size = len(big_ours)
    print(f"## Serializer ({'quick' if args.quick else 'full'} run)\n")
    print(
        f"big structure: {count:,} nested dicts, {size:,} bytes encoded "
        f"(pickle {len(big_pickle):,}, marshal {len(big_marshal):,}); small: {small!r}\n"
    )
    header = "| operation | " + " | ".join(impls) + " | vs upstream | vs pickle |"
    print(header)
    print("|" + "---|" * (len(impls) + 3))
    for op in ours:
        unit, scale = ("ms", 1e3) if op.startswith("big") else ("µs", 1e6)
        cells = " | ".join(f"{times[name][op] * scale:.3f} {unit}" for name in impls)
        print(
            f"| {op} | {cells} | {ratios[op + '_vs_upstream']:.1f}x | "
            f"{ratios[op + '_vs_pickle']:.2f}x |"
        )
    print(
        "\nmedians' ratios vs pickle: "
        + ", ".join(f"{op} {median_ratios[op + '_vs_pickle']:.2f}x" for op in ours)
    )
    print(f"\ncorrect: {correct}; targets met: {targets_met}")

    if args.json:
        result = {
            "quick": args.quick,
            "records": count,
            "encoded_bytes": size,
            "seconds_per_call": times,
            "median_seconds_per_call": medians,
            "ratios": ratios,
            "median_ratios": median_ratios,
            "targets": TARGETS,
            "targets_met": targets_met,
            "correct": correct,
            "machine": {
                "nproc": os.cpu_count(),
                "cpu": cpu_model(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "loadavg": os.getloadavg(),
            },
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if correct else 1


if __name__ == "__main__":
    raise SystemExit(main())
