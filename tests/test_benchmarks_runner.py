"""The benchmark runner's plumbing: real processes, real pytest runs; no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _report  # noqa: E402
import _side  # noqa: E402
import run  # noqa: E402
from workloads import xdist_suites  # noqa: E402


def _entry(up: float, ours: float, better: str = "lower", section: str = "x") -> dict[str, Any]:
    def side(v: float) -> dict[str, Any]:
        return {"median": v, "min": v, "max": v, "samples": [v], "correct": True, "errors": []}

    return {
        "section": section,
        "description": "d",
        "unit": "s",
        "better": better,
        "baseline": False,
        "upstream": side(up),
        "ours": side(ours),
        "ratio": ours / up,
    }


def test_targets_cover_every_kind() -> None:
    results = {
        "bare_start": _entry(0.02, 0.02),
        "popen_start": _entry(0.06, 0.025),
        "echo_thread": _entry(100.0, 60.0),
        "oneway_m2w": _entry(10_000.0, 90_000.0, better="higher"),
        "terminate16": _entry(300.0, 25.0),
        "xdist_single_serial": _entry(0.30, 0.32),
        "xdist_single_n2": _entry(0.65, 0.45),
    }
    targets = {(t["workload"], t["kind"]): t for t in _report.evaluate_targets(results)}
    assert targets[("popen_start", "over:bare_start")]["value"] == pytest.approx(1.25)
    assert targets[("popen_start", "over:bare_start")]["met"] is True
    assert targets[("echo_thread", "ratio")]["met"] is False  # 0.6 > 0.55
    assert targets[("oneway_m2w", "ratio")]["met"] is True  # 9x >= 8x
    assert targets[("terminate16", "ours")]["value"] == 25.0
    fixed = targets[("xdist_single_n2", "fixed")]
    assert fixed["value"] == pytest.approx((0.45 - 0.32) / (0.65 - 0.30))
    assert fixed["met"] is True
    assert targets[("xdist_single_n2", "ratio")]["met"] is True
    # Workloads that did not run have no target row.
    assert not any(t["workload"] == "bulk_w2m" for t in targets.values())


def test_missing_median_gives_no_verdict() -> None:
    results = {"echo_thread": _entry(100.0, 60.0)}
    results["echo_thread"]["ours"] = {"samples": [], "correct": False, "errors": ["exit 1"]}
    results["echo_thread"]["ratio"] = None
    (target,) = _report.evaluate_targets(results)
    assert target["value"] is None and target["met"] is None


def test_fmt() -> None:
    assert _report.fmt(123456.7) == "123,457"
    assert _report.fmt(123.4) == "123"
    assert _report.fmt(12.34) == "12.3"
    assert _report.fmt(1.234) == "1.23"
    assert _report.fmt(0.01234) == "0.0123"
    assert _report.fmt(None) == "–"


def _report_dict(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": "python benchmarks/run.py",
        "started": "2026-01-01 00:00:00 UTC",
        "duration_s": 1.0,
        "machine": run.machine(),
        "quick": True,
        "sides": {"upstream": {"execnet_version": "2.1.2"}, "ours": {"execnet_version": "x"}},
        "warnings": [],
        "results": results,
        "targets": _report.evaluate_targets(results),
        "external": {},
    }


def test_write_docs_replaces_only_its_region(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Serializer\n\nnumbers of others\n")
    report = _report_dict({"echo_thread": _entry(100.0, 40.0, section="messages")})
    _report.write_docs(report, docs, None)
    first = docs.read_text()
    assert first.startswith("# Benchmarks\n\n" + _report.DOCS_BEGIN)
    assert "## Serializer\n\nnumbers of others\n" in first
    assert "| `echo_thread`" in first and "**0.40x**" in first
    report["results"]["echo_thread"] = _entry(100.0, 50.0, section="messages")
    report["targets"] = _report.evaluate_targets(report["results"])
    _report.write_docs(report, docs, None)
    second = docs.read_text()
    assert second.count(_report.DOCS_BEGIN) == 1 and "**0.50x**" in second
    assert "**0.40x**" not in second
    assert second.endswith("## Serializer\n\nnumbers of others\n")


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report_dict(
        {"echo_thread": _entry(100.0, 40.0), "bulk_w2m": _entry(100.0, 350.0, better="higher")}
    )
    out = tmp_path / "ratios.png"
    _report.plot(report, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dict((n, round(s, 3)) for n, s, _ in _report.speedups(report)) == {
        "echo_thread": 2.5,
        "bulk_w2m": 3.5,
    }


def test_measure_kills_a_hanging_measurement_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    hang = run.Workload("hang", "x", "d", "s", "lower", 1, lambda py: [py, "-c", code])
    t0 = time.monotonic()
    sample = run.measure(hang, sys.executable, tmp_path, timeout=3.0)
    assert time.monotonic() - t0 < 30
    assert sample.value is None and not sample.correct
    assert sample.error is not None and "timed out after 3 s" in sample.error
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_measure_reports_leftover_processes(tmp_path: Path) -> None:
    code = (
        "import json, subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(json.dumps({'value': 1.5, 'correct': True, 'detail': {}}))\n"
    )
    leak = run.Workload("leak", "x", "d", "s", "lower", 1, lambda py: [py, "-c", code])
    sample = run.measure(leak, sys.executable, tmp_path, timeout=60.0)
    assert sample.value == 1.5 and sample.correct
    assert sample.detail["leftovers"] is True
    tidy = run.Workload(
        "tidy",
        "x",
        "d",
        "s",
        "lower",
        1,
        lambda py: [py, "-c", code.split("\n")[0] + "\n" + code.split("\n")[2]],
    )
    assert run.measure(tidy, sys.executable, tmp_path, timeout=60.0).detail["leftovers"] is False


def test_measure_reports_bad_output(tmp_path: Path) -> None:
    noise = run.Workload("noise", "x", "d", "s", "lower", 1, lambda py: [py, "-c", "print('hi')"])
    sample = run.measure(noise, sys.executable, tmp_path, timeout=60.0)
    assert sample.value is None and sample.error and sample.error.startswith("unreadable output")
    fail = run.Workload(
        "fail", "x", "d", "s", "lower", 1, lambda py: [py, "-c", "raise SystemExit(3)"]
    )
    sample = run.measure(fail, sys.executable, tmp_path, timeout=60.0)
    assert sample.value is None and sample.error and sample.error.startswith("exit 3")


def test_incorrect_results_do_not_count(tmp_path: Path) -> None:
    code = "import json; print(json.dumps({'value': 0.001, 'correct': False, 'detail': {}}))"
    wrong = run.Workload("wrong", "x", "d", "s", "lower", 1, lambda py: [py, "-c", code])
    sample = run.measure(wrong, sys.executable, tmp_path, timeout=60.0)
    assert sample.value is None and sample.error == "incorrect result"
    assert sample.detail["value_when_incorrect"] == 0.001
    summary = run.summarize([sample])
    assert "median" not in summary and summary["correct"] is False


FAKE_BENCH = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--json")
p.add_argument("--quick", action="store_true")
a = p.parse_args()
json.dump({"dumps": {"ratio": 0.25 if a.quick else 0.5}, "note": "x"}, open(a.json, "w"))
print("| table |")
"""


def test_external_scripts_are_run_with_json_and_quick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bench_fake.py").write_text(FAKE_BENCH)
    (tmp_path / "bench_noquick.py").write_text(
        FAKE_BENCH.replace('p.add_argument("--quick", action="store_true")', "").replace(
            "a.quick", "False"
        )
    )
    (tmp_path / "bench_fast.py").write_text(
        FAKE_BENCH.replace('"--quick"', '"--fast"').replace("a.quick", "a.fast")
    )
    monkeypatch.setattr(run, "HERE", tmp_path)
    monkeypatch.setattr(
        run,
        "EXTERNAL",
        {
            "ext_fake": "bench_fake.py",
            "ext_noquick": "bench_noquick.py",
            "ext_fast": "bench_fast.py",
        },
    )
    args = run.parse_args(["--quick"])
    external = run.Runner(args).run_external(
        ["ext_fake", "ext_noquick", "ext_fast"], sys.executable
    )
    assert external["ext_fake"]["result"] == {"dumps": {"ratio": 0.25}, "note": "x"}
    assert external["ext_fake"]["argv"][-1] == "--quick"
    assert external["ext_fast"]["argv"][-1] == "--fast"
    assert external["ext_fast"]["result"]["dumps"]["ratio"] == 0.25
    del external["ext_fast"]
    assert external["ext_noquick"] == {
        "script": "bench_noquick.py",
        "skipped": "no smoke-run option",
    }
    text = "\n".join(_report.external_section({"external": external}))
    assert "| table |" in text and "skipped (no smoke-run option)" in text
    del external["ext_fake"]["stdout"]
    text = "\n".join(_report.external_section({"external": external}))
    assert "| `dumps.ratio` | 0.25 |" in text
    full = run.Runner(run.parse_args([])).run_external(["ext_noquick"], sys.executable)
    assert full["ext_noquick"]["result"]["dumps"]["ratio"] == 0.5


@pytest.mark.parametrize("name", ["fail", "single"])
def test_generated_suites_have_the_stated_outcome(tmp_path: Path, name: str) -> None:
    (suite,) = [s for s in xdist_suites.suites(quick=True) if s.name == name]
    folder = suite.write(tmp_path)
    workload = [w for w in run.xdist_workloads(tmp_path, True) if w.name == f"xdist_{name}_serial"][
        0
    ]
    sample = run.measure(workload, sys.executable, tmp_path, timeout=120.0)
    assert sample.error is None, sample.error
    assert sample.correct and suite.expected_summary() in sample.detail["summary"]
    assert len(list(folder.glob("test_*.py"))) == suite.files
    if suite.failing:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:xdist",
                "-x",
                str(folder),
            ],
            capture_output=True,
            text=True,
            cwd=folder,
            env=_side.clean_env(),
        ).stdout
        # The full diff is shown: no truncation, both changed lines appear.
        assert "LINE 0010" in out and "LINE 0100" in out and "truncated" not in out


def _run_cli(
    args: list[str], tmp_path: Path, status: int = 0
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            *args,
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "r.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == status, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_cli_alternates_sides_and_survives_a_broken_side(tmp_path: Path) -> None:
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'no such interpreter feature' >&2\nexit 7\n")
    broken.chmod(0o755)
    proc, report = _run_cli(
        [
            "--quick",
            "--repeat",
            "2",
            "--only",
            "bare_start,pipe_*",
            "--upstream-python",
            sys.executable,
            "--ours-python",
            str(broken),
        ],
        tmp_path,
        status=1,
    )
    assert set(report["results"]) == {"bare_start", "pipe_pingpong", "pipe_throughput"}
    for entry in report["results"].values():
        assert entry["upstream"]["correct"] and len(entry["upstream"]["samples"]) == 2
        assert entry["upstream"]["cpu_median_s"] > 0
        # The broken side fails once per workload and is then skipped.
        assert entry["ours"]["samples"] == [] and len(entry["ours"]["errors"]) == 1
        assert "exit 7" in entry["ours"]["errors"][0]
        assert entry["ratio"] is None
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    sides = [ln.split()[3] for ln in lines if ln.split()[2] == "bare_start"]
    assert sides == ["upstream", "ours", "upstream"]
    assert "| `pipe_pingpong`" in (tmp_path / "r.md").read_text()
    assert "3 measurement(s) failed or were incorrect" in proc.stderr


def test_cli_only_rejects_unknown_names(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--only", "no_such_workload", "--no-external"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no workload matches" in proc.stderr


@pytest.mark.upstream
@pytest.mark.slow
def test_cli_runs_gateway_workloads_on_both_sides(tmp_path: Path) -> None:
    """Ours (this interpreter) against upstream 2.1.2 from the side venv; correctness only."""
    execnet = pytest.importorskip("execnet")

    if "+rs" not in getattr(execnet, "__version__", ""):
        pytest.skip("this interpreter does not import this package")
    upstream = _side.ensure_upstream(lambda text: None)
    _, report = _run_cli(
        [
            "--quick",
            "--only",
            "echo_thread,oneway_m2w,terminate16",
            "--upstream-python",
            upstream,
            "--ours-python",
            sys.executable,
        ],
        tmp_path,
    )
    assert report["sides"]["upstream"]["execnet_version"] == "2.1.2"
    assert "+rs" in report["sides"]["ours"]["execnet_version"]
    for name, entry in report["results"].items():
        for side in ("upstream", "ours"):
            assert entry[side]["correct"], (name, side, entry[side]["errors"])
        assert entry["ratio"] is not None


def test_embedded_markdown_is_demoted_and_tables_set_apart() -> None:
    text = "## Serializer\nintro line\n| a | b |\n|---|---|\n| 1 | 2 |\ncorrect: True\n"
    assert _report._embed(text) == [
        "#### Serializer",
        "",
        "intro line",
        "",
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "",
        "correct: True",
    ]
