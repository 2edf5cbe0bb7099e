"""Where the demo finds the example services, and the order it runs them in.

An installed wheel carries ``examples/`` as ``scalekit._examples`` (the ``demo``
extra brings what they import); a checkout has ``examples/`` next to ``scalekit/``,
loaded as the package ``examples`` without putting the checkout on ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["SERVICES", "ExamplesMissing", "Service", "load_services"]

#: (name in the report, subpackage); chat_service seeds the shared tables, so it is first
SERVICES: tuple[tuple[str, str], ...] = (
    ("chat", "chat_service"),
    ("feed", "feed_service"),
    ("sync", "sync_service"),
    ("directory", "directory_service"),
)

INSTALL_HINT = (
    "install them with the demo extra: pip install 'scalekit-primitives[demo]', "
    "or run the demo from a checkout: python3 dev.py demo"
)


class ExamplesMissing(Exception):
    """The example services (or what they import) cannot be loaded."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    module: ModuleType

    def wiring(self) -> Wiring:
        """What this service needs beyond the contract's arguments: the chat's fakes
        (its LLM and memory extractor, whose calls the workload reports) and the sync
        service's simulated clock (its phones sync every 30 s / 60 s of simulated
        time, the clock shared by the service's limits and the workload)."""
        if self.name == "chat":
            fakes = {"llm": self.module.FakeLLM(), "extractor": self.module.FakeMemoryExtractor()}
            return Wiring(app=fakes, workload=fakes)
        if self.name == "sync":
            from scalekit.testing import FakeClock

            clock = FakeClock()
            return Wiring(config={"clock": clock}, workload={"clock": clock})
        return Wiring()


@dataclass(frozen=True, slots=True)
class Wiring:
    """Keyword arguments for ``ServiceConfig``, ``create_app`` and ``run_workload``."""

    config: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)


def _examples_package() -> tuple[str, str]:
    """The name of the package holding the services and where it came from."""
    if importlib.util.find_spec("scalekit._examples") is not None:
        return "scalekit._examples", "installed (scalekit._examples)"
    root = Path(__file__).resolve().parents[2] / "examples"
    if (root / "__init__.py").is_file():
        existing = sys.modules.get("examples")
        if existing is not None:
            if Path(getattr(existing, "__file__", "") or "").resolve().parent != root:
                raise ExamplesMissing(
                    f"another package named 'examples' is already imported ({existing!r})"
                )
            return "examples", f"checkout ({root})"
        spec = importlib.util.spec_from_file_location(
            "examples", root / "__init__.py", submodule_search_locations=[str(root)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["examples"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["examples"]
            raise
        return "examples", f"checkout ({root})"
    raise ExamplesMissing(f"the example services are not installed; {INSTALL_HINT}")


def load_services() -> tuple[list[Service], list[str], str]:
    """The services of :data:`SERVICES` that are present, the names of those that are
    not, and where they came from.

    Raises :class:`ExamplesMissing` saying what to install when the package or one of
    its dependencies (FastAPI, httpx, asyncpg) is missing.
    """
    package, origin = _examples_package()
    services, absent = [], []
    for name, sub in SERVICES:
        if importlib.util.find_spec(f"{package}.{sub}") is None:
            absent.append(name)
            continue
        try:
            module = importlib.import_module(f"{package}.{sub}")
        except ModuleNotFoundError as exc:
            raise ExamplesMissing(
                f"the example service {sub} needs {exc.name!r}, which is not installed; "
                f"{INSTALL_HINT}"
            ) from exc
        services.append(Service(name, module))
    if not services:
        raise ExamplesMissing(f"no example service found in {origin}; {INSTALL_HINT}")
    return services, absent, origin


def common_module() -> ModuleType:
    """``<examples>.common`` (ServiceConfig, apply_schema, WorkloadResult)."""
    package, _ = _examples_package()
    return importlib.import_module(f"{package}.common")
