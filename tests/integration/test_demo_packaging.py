"""How an installed wheel gets the demo's services: ``examples/`` travels in the wheel as
``scalekit._examples``, and the ``demo`` extra brings what they import. Without the
extra, ``scalekit demo`` exits 2 naming it."""

from __future__ import annotations

import email
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "chat_service", "feed_service", "sync_service", "directory_service")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(ROOT)],
        check=True,
    )
    (built,) = work.glob("scalekit_primitives-*.whl")
    return built


def test_the_wheel_carries_the_services_and_the_demo_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(meta))
    for package in PACKAGES:
        assert f"scalekit/_examples/{package}/__init__.py" in names, package
    assert "scalekit/_examples/__init__.py" in names
    assert "scalekit/_examples/common/schema.sql" in names  # data files the services read
    assert not any(n.startswith("examples/") or "__pycache__" in n for n in names)
    demo = {
        r.split(";")[0].split(">")[0].split("=")[0].strip()
        for r in metadata.get_all("Requires-Dist") or []
        if "extra == 'demo'" in r
    }
    assert {"fastapi", "httpx", "asyncpg", "pgserver", "matplotlib", "rich"} <= demo
    assert "demo" in (metadata.get_all("Provides-Extra") or [])


def test_the_installed_layout_loads_every_service(wheel: Path, tmp_path: Path) -> None:
    """The wheel's files first on the path (this venv supplies the dependencies): the
    demo finds the services as scalekit._examples, not in a checkout."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import scalekit\n"
        "from scalekit._demo._services import load_services\n"
        "services, absent, origin = load_services()\n"
        "print(scalekit.__file__)\n"
        "print(origin)\n"
        "print(' '.join(s.name for s in services), '|', ' '.join(absent))\n"
        "print(services[0].module.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(site)
    assert out[1] == "installed (scalekit._examples)"
    assert out[2].strip() == "chat feed sync directory |"  # none absent
    assert out[3] == "scalekit._examples.chat_service"


def test_without_the_extra_the_demo_says_what_to_install(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel)],
        check=True,
    )  # fmt: skip
    out = subprocess.run(
        [str(python), "-m", "scalekit", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert "pip install 'scalekit-primitives[demo]'" in out.stderr
    assert "Traceback" not in out.stderr
    tour = subprocess.run(
        [str(python), "-m", "scalekit", "tour", "--quick"], cwd=tmp_path, capture_output=True
    )
    assert tour.returncode == 0  # the tour needs nothing beyond the standard library
