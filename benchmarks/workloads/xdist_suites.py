"""Generated pytest suites for the pytest-xdist end-to-end benchmark.

Each suite is a folder with its own ``pytest.ini`` (so the repository's configuration is never
picked up) and test files written by ``generate()``. The runner times
``python -m pytest -q -p no:cacheprovider SUITE`` with ``-p no:xdist``, ``-n 2`` and ``-n 4`` in
a fresh process of each side's interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PYTEST_INI = """\
[pytest]
# Full assertion diffs: every failure report is as large as the diff, with or without CI set.
truncation_limit_lines = 0
truncation_limit_chars = 0
"""

TRIVIAL = "def test_{i}():\n    pass\n\n\n"

SLEEP_HEADER = "import time\n\n\n"
SLEEP = "def test_{i}():\n    time.sleep(0.01)\n\n\n"

FAIL_HEADER = """\
TEXT = "\\n".join("line %04d of a long text that is compared in full" % i for i in range(150))


"""
# The two sides of the comparison differ in lines far apart, so the diff spans ~130 lines.
FAIL = (
    "def test_{i}():\n"
    '    assert TEXT.replace("line 0010", "LINE 0010") == '
    'TEXT.replace("line {line:04d}", "LINE {line:04d}")\n\n\n'
)


@dataclass(frozen=True)
class Suite:
    """A generated suite: ``files`` files of ``per_file`` tests each."""

    name: str
    files: int
    per_file: int
    header: str
    body: str
    failing: bool
    description: str

    @property
    def tests(self) -> int:
        return self.files * self.per_file

    def write(self, root: Path) -> Path:
        """Write the suite under ``root/name`` (replacing stale files) and return its folder."""
        folder = root / self.name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("test_*.py"):
            old.unlink()
        (folder / "pytest.ini").write_text(PYTEST_INI)
        for f in range(self.files):
            parts = [self.header]
            for j in range(self.per_file):
                i = f * self.per_file + j
                parts.append(self.body.format(i=i, line=100 + i % 40))
            (folder / f"test_{self.name}_{f:03d}.py").write_text("".join(parts))
        return folder

    def expected_summary(self) -> str:
        """The count that pytest's last line must show."""
        return f"{self.tests} failed" if self.failing else f"{self.tests} passed"


def suites(quick: bool) -> list[Suite]:
    """The four suites; ``quick`` shrinks the three large ones tenfold."""
    scale = 10 if quick else 1
    return [
        Suite(
            "trivial",
            60 // scale,
            50,
            "",
            TRIVIAL,
            False,
            f"{3000 // scale} trivial tests in {60 // scale} files",
        ),
        Suite(
            "sleep",
            10 // scale,
            30,
            SLEEP_HEADER,
            SLEEP,
            False,
            f"{300 // scale} tests that sleep 10 ms",
        ),
        Suite(
            "fail",
            20 // scale,
            30,
            FAIL_HEADER,
            FAIL,
            True,
            f"{600 // scale} failing tests with ~130-line assertion diffs",
        ),
        Suite("single", 1, 1, "", TRIVIAL, False, "a single trivial test"),
    ]


MODES = {
    "serial": ["-p", "no:xdist"],
    "n2": ["-n", "2"],
    "n4": ["-n", "4"],
}
