"""The code in README.md, docs/usage.md and examples/ runs and does what it says.

Every fenced block whose info string is exactly ``python`` is written to a file and run in a fresh
interpreter (functions passed to ``remote_exec`` need a source file).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import execnet

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/usage.md"]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for name in DOCS:
        text = (ROOT / name).read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((name, line, match.group(1)))
    return found


BLOCKS = _blocks()


def _run(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docs_have_examples() -> None:
    assert {name for name, _, _ in BLOCKS} == set(DOCS)


@pytest.mark.parametrize(("name", "line", "code"), BLOCKS, ids=[f"{n}:{i}" for n, i, _ in BLOCKS])
def test_doc_example_runs(name: str, line: int, code: str, tmp_path: Path) -> None:
    missing = [n for n in re.findall(r"execnet\.([A-Za-z_]+)\(", code) if not hasattr(execnet, n)]
    if missing:
        pytest.skip(f"{name}:{line} uses execnet.{missing[0]}, which does not exist yet")
    script = tmp_path / "example.py"
    script.write_text(code)
    result = _run(script, tmp_path)
    assert result.returncode == 0, f"{name}:{line}\n{result.stdout}\n{result.stderr}"


def test_readme_quickstart_prints_42(tmp_path: Path) -> None:
    name, line, code = next(b for b in BLOCKS if b[0] == "README.md")
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["42"]


def test_demo(tmp_path: Path) -> None:
    result = _run(ROOT / "examples" / "demo.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "received squares + 1: [2, 5, 10, 17, 26]" in out
    assert "(equal: True)" in out
    assert "RemoteError: ValueError: raised remotely" in out
    assert out.rstrip().endswith("demo succeeded")
