"""Real execnet programs run side by side under this package and under upstream execnet 2.1.2.

Each ``tests/programs/prog_*.py`` is a small program in the style of execnet's documentation
that prints what its user would observe (values, exception types and texts, callback order).
Both runs happen at the same time in fresh interpreters that differ only in the ``execnet`` they
import (``PROGRAMS_EXPECT`` makes a program check which one it got); their exit codes, standard
output and standard error must be equal after :func:`normalise`, which removes what
legitimately differs (addresses, pids, line numbers, execnet's own traceback frames), and after
mapping the deliberate differences of docs/compatibility.md that a program reaches
(:data:`KNOWN`). ``prog_ssh`` runs against the loopback sshd of ``conftest.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import _sshd
from _upstream import ensure_upstream, upstream_env

pytestmark = [pytest.mark.upstream]

PROGRAMS = Path(__file__).resolve().parent / "programs"
#: Programs that need the loopback sshd run in their own test.
SSH_NAMES = ["prog_ssh"]
NAMES = sorted(p.stem for p in PROGRAMS.glob("prog_*.py") if p.stem not in SSH_NAMES)

#: Deliberate differences (docs/compatibility.md): (program, pattern in upstream's normalised
#: output, what this package prints instead).
KNOWN: list[tuple[str, str, str]] = [
    # "A callback that raises records a RemoteError" (2.1.2 recorded the bare text, so
    # waitclose() raised TypeError: exceptions must derive from BaseException).
    ("prog_errors", "callback raised -> TypeError", "callback raised -> RemoteError"),
    # "Ints below -2**31 are serialized" (2.1.2: struct.error).
    (
        "prog_serializer",
        "dumps raised error: argument out of range",
        "dumps returned b'\\x02H\\x00\\x00\\x00 -1267650600228229401496703205376Q'",
    ),
]

_EXECNET_FRAME = re.compile(r'^(\s*)File "[^"]*/execnet/[^"]*", line \d+, in \S+$')
_SUBSTITUTIONS = [
    # "The cause of death is appended to the EOFError text" (docs/compatibility.md).
    (re.compile(r"(expected 9 bytes, got \d+) \((remote|terminated)[^)]*\)"), r"\1"),
    (re.compile(r'File "<string>", line \d+'), 'File "<string>", line N'),
    (re.compile(r"\b0x[0-9a-f]+\b"), "0xADDR"),
    (re.compile(r"^\[\d+\] ", re.M), "[PID] "),
]


def normalise(text: str) -> str:
    """Drops execnet's own traceback frames and masks addresses, pids and line numbers."""
    out: list[str] = []
    skip_indent: int | None = None
    for line in text.splitlines():
        if skip_indent is not None:
            if line.strip() and len(line) - len(line.lstrip()) > skip_indent:
                continue  # the frame's source line and its caret line
            skip_indent = None
        match = _EXECNET_FRAME.match(line)
        if match:
            skip_indent = len(match.group(1))
            out.append(match.group(1) + 'File "<execnet>"')
            continue
        out.append(line)
    # Consecutive execnet frames count as one: the internal call depth differs.
    collapsed = [
        ln for i, ln in enumerate(out) if i == 0 or ln != out[i - 1] or "<execnet>" not in ln
    ]
    text = "\n".join(collapsed)
    for pattern, repl in _SUBSTITUTIONS:
        text = pattern.sub(repl, text)
    return text


def _start(name: str, upstream: bool, cwd: str, extra_env: dict[str, str]) -> subprocess.Popen[str]:
    env = upstream_env() if upstream else dict(os.environ)
    env.update(extra_env)
    if not upstream:
        env.pop("PYTHONPATH", None)
    env["PROGRAMS_EXPECT"] = "upstream" if upstream else "ours"
    env.pop("EXECNET_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, str(PROGRAMS / f"{name}.py")],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_both(name: str, extra_env: dict[str, str] | None = None) -> dict[str, tuple[int, str, str]]:
    """Runs program ``name`` under both implementations at once: (exit code, stdout, stderr)."""
    ensure_upstream()
    results = {}
    with tempfile.TemporaryDirectory() as cwd:
        procs = {
            side: _start(name, side == "upstream", cwd, extra_env or {})
            for side in ("upstream", "ours")
        }
        for side, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                for other in procs.values():
                    other.kill()
                    other.communicate()
                pytest.fail(f"{name} did not finish within 60 s under {side}")
            results[side] = (proc.returncode, normalise(out), normalise(err))
    return results


@pytest.mark.parametrize("name", NAMES)
def test_program_behaves_like_upstream(name: str) -> None:
    compare(name, run_both(name))


@pytest.mark.ssh
@pytest.mark.parametrize("name", SSH_NAMES)
def test_ssh_program_behaves_like_upstream(name: str, sshd: _sshd.Sshd) -> None:
    bad = f"ssh={sshd.bad_ssh}//python={sshd.python}"
    compare(name, run_both(name, {"PROGRAMS_SSH": sshd.spec, "PROGRAMS_SSH_BAD": bad}))


def compare(name: str, results: dict[str, tuple[int, str, str]]) -> None:
    """Asserts that both runs of ``name`` are equal once :data:`KNOWN` differences are mapped."""
    up_code, up_out, up_err = results["upstream"]
    code, out, err = results["ours"]
    assert up_code == 0, f"{name} failed under upstream:\n{up_err}"
    for program, theirs, ours in KNOWN:
        if program == name:
            assert theirs in up_out, f"known difference no longer seen: {theirs!r}"
            up_out = up_out.replace(theirs, ours)
    assert out.splitlines() == up_out.splitlines(), f"stderr (ours):\n{err}"
    assert code == up_code, f"stderr (ours):\n{err}"
    assert err.splitlines() == up_err.splitlines()


def test_normalise_keeps_user_frames() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/x/execnet/gateway_base.py", line 9, in _execute\n'
        "    co = compile(source)\n"
        "         ^^^^^^^\n"
        '  File "/x/execnet/gateway_base.py", line 19, in _compile\n'
        "    native()\n"
        '  File "<remote exec>", line 1\n'
        "    def (:\n"
        "SyntaxError: invalid syntax\n"
        "[4242] Warning: got 0 (remote exited with code 7)"
    )
    assert normalise(text).splitlines() == [
        "Traceback (most recent call last):",
        '  File "<execnet>"',
        '  File "<remote exec>", line 1',
        "    def (:",
        "SyntaxError: invalid syntax",
        "[PID] Warning: got 0 (remote exited with code 7)",
    ]
