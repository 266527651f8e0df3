"""Side environments for the benchmark runner.

Two interpreters are compared, each in an environment that holds the same third-party packages
(pytest 8.4.2 and pytest-xdist 3.8.0) and differs only in the ``execnet`` it imports:

* ``<repo>/.side/bench-upstream``: a venv with upstream ``execnet==2.1.2`` from PyPI;
* ``<repo>/.side/bench-ours``: a venv whose ``execnet`` is this repository's ``python/`` folder
  (a ``.pth`` entry, like an editable install), so the native module must have been built there
  first (``pip install --no-build-isolation -e .`` in any venv of this interpreter).

Both folders are git-ignored and reused between runs; ``--ours-python`` / ``--upstream-python``
point the runner at other interpreters instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDE = REPO / ".side"
UPSTREAM_DIR = SIDE / "bench-upstream"
OURS_DIR = SIDE / "bench-ours"

PYTEST_PIN = "pytest==8.4.2"
XDIST_PIN = "pytest-xdist==3.8.0"
UPSTREAM_PINS = ["execnet==2.1.2", PYTEST_PIN, XDIST_PIN]
# The stamp records what an environment was built with; a different stamp rebuilds it.
_STAMP = ".bench-stamp"

Log = Callable[[str], None]

_DESCRIBE = r"""
import json, os, sys
info = {"python": sys.executable, "python_version": sys.version.split()[0]}
try:
    import execnet
    info["execnet_version"] = getattr(execnet, "__version__", "?")
    info["execnet_file"] = os.path.dirname(os.path.abspath(execnet.__file__))
except Exception as exc:
    info["execnet_error"] = "%s: %s" % (type(exc).__name__, exc)
for mod in ("pytest", "xdist"):
    try:
        info[mod + "_version"] = __import__(mod).__version__
    except Exception:
        info[mod + "_version"] = None
print(json.dumps(info))
"""


def venv_python(env_dir: Path) -> Path:
    """The interpreter of a venv folder (POSIX layout)."""
    return env_dir / "bin" / "python"


def clean_env() -> dict[str, str]:
    """The environment for every measured subprocess.

    Bytecode writing is enabled (a real installation has ``.pyc`` files; compiling
    ``gateway_base`` on every worker start would dominate start-up times), and variables that
    change which modules load or how pytest reports are removed so that both sides see the same.
    """
    env = dict(os.environ)
    for name in (
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "EXECNET_DEBUG",
        "VIRTUAL_ENV",
        # pytest disables its assertion-diff truncation when these are set.
        "CI",
        "BUILD_NUMBER",
    ):
        env.pop(name, None)
    return env


def describe(python: str) -> dict[str, object]:
    """Versions and locations of execnet, pytest and xdist as seen by ``python``."""
    proc = subprocess.run(
        [python, "-c", _DESCRIBE],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=str(SIDE if SIDE.is_dir() else REPO),
        timeout=60,
    )
    if proc.returncode != 0:
        return {"python": python, "error": proc.stderr.strip()[-2000:]}
    info: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return info


def is_ours(info: dict[str, object]) -> bool:
    """Whether ``describe()`` output shows this package (its version carries ``+rs``)."""
    return "+rs" in str(info.get("execnet_version", ""))


def _pip(python: Path, args: list[str], log: Log) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    log("  $ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=clean_env())


def _read_stamp(env_dir: Path) -> str | None:
    try:
        return (env_dir / _STAMP).read_text()
    except OSError:
        return None


def _make_venv(env_dir: Path, log: Log) -> Path:
    log(f"creating venv {env_dir}")
    venv.EnvBuilder(clear=True, with_pip=True, symlinks=True).create(env_dir)
    return venv_python(env_dir)


def ensure_upstream(log: Log) -> str:
    """Create or reuse ``.side/bench-upstream`` (upstream execnet, pytest, pytest-xdist)."""
    stamp = "\n".join(UPSTREAM_PINS)
    python = venv_python(UPSTREAM_DIR)
    if python.exists() and _read_stamp(UPSTREAM_DIR) == stamp:
        return str(python)
    python = _make_venv(UPSTREAM_DIR, log)
    _pip(python, UPSTREAM_PINS, log)
    (UPSTREAM_DIR / _STAMP).write_text(stamp)
    return str(python)


def native_module() -> Path | None:
    """The built ``execnet._core`` extension in this repository's ``python/`` folder, if any."""
    for path in sorted((REPO / "python" / "execnet").glob("_core*.so")):
        return path
    return None


def stale_native_module() -> str | None:
    """A warning when a Rust source file is newer than the built extension, else None."""
    module = native_module()
    if module is None:
        return "execnet._core is not built in python/execnet"
    built = module.stat().st_mtime
    newer = [p for p in (REPO / "src").rglob("*.rs") if p.stat().st_mtime > built]
    if newer:
        return f"execnet._core is older than {len(newer)} Rust source file(s), e.g. {newer[0]}"
    return None


def ensure_ours(log: Log) -> str:
    """Create or reuse ``.side/bench-ours`` (this repository's execnet, pytest, pytest-xdist).

    Without a built extension in ``python/execnet`` the current interpreter is used instead if
    it imports this package (a non-editable install, as in CI).
    """
    if native_module() is None:
        if is_ours(describe(sys.executable)):
            log(f"execnet._core is not built in python/execnet: using {sys.executable}")
            return sys.executable
        raise SystemExit(
            "execnet._core is not built in python/execnet: run "
            "`pip install --no-build-isolation -e .` in a venv first, or pass --ours-python"
        )
    source = str(REPO / "python")
    stamp = "\n".join([PYTEST_PIN, XDIST_PIN, source])
    python = venv_python(OURS_DIR)
    if not (python.exists() and _read_stamp(OURS_DIR) == stamp):
        python = _make_venv(OURS_DIR, log)
        _pip(python, [PYTEST_PIN], log)
        # Without --no-deps pip would pull upstream execnet in beside ours.
        _pip(python, ["--no-deps", XDIST_PIN], log)
        (OURS_DIR / _STAMP).write_text(stamp)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout.strip()
    (Path(site) / "execnet_rs_bench.pth").write_text(source + "\n")
    return str(python)


def ensure_matplotlib(log: Log) -> bool:
    """Whether the runner's own interpreter can import matplotlib (installed on request)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if sys.prefix == sys.base_prefix:
            log("matplotlib missing and this interpreter is not a venv: no plot")
            return False
        try:
            _pip(Path(sys.executable), ["matplotlib"], log)
        except subprocess.CalledProcessError:
            return False
    return True
