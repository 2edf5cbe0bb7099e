"""The public surface: what each public module lists in ``__all__``, and nothing more.

On the model of httpx's ``tests/test_exported_members.py``. A public module is
``scalekit``, a subpackage, or a module whose dotted path has no ``_``-prefixed
part (``scalekit.ratelimit.asgi``); everything under an ``_name`` is private. For
each public module:

- ``__all__`` exists, has no duplicates, and every name in it exists;
- every class and function in ``__all__`` has a docstring of its own, and every
  other name (a constant, a type alias, a shared instance) is named in docs/;
- nothing is public by accident: every public class or function the module (or,
  for a package, one of its private modules) defines is in ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import types
import typing
import warnings
from pathlib import Path

import pytest

import scalekit

DOCS = Path(__file__).resolve().parents[2] / "docs"

# The public modules besides the packages. Adding one is a decision: users will
# import it by its path, so it cannot be renamed without a deprecation.
PUBLIC_MODULES = {
    "scalekit.errors",
    "scalekit.fastapi",
    "scalekit.testing",
    "scalekit.observability.otel",
    "scalekit.observability.prometheus",
    "scalekit.ratelimit.asgi",
    "scalekit.ratelimit.fastapi",
}

# Documented module paths that went private: they still import, with a
# DeprecationWarning, for one release. module -> the names they still give.
DEPRECATED_MODULES = {
    "scalekit.resilience.shared": ("scalekit.resilience", ["SharedState"]),
}

# Public names defined in a public module but deliberately not in its __all__.
NOT_EXPORTED: set[tuple[str, str]] = set()

# Names taken out of the public surface, still served with a DeprecationWarning for
# one release: (module, name) -> the object they still give.
REMOVED = {
    ("scalekit.resilience", "BreakerMachine"): "scalekit.resilience._machine:BreakerMachine",
    ("scalekit.sampling", "ARes"): "scalekit.sampling._reservoir:_OneDrawPerItem",
    ("scalekit.sampling", "AExpJ"): "scalekit.sampling._reservoir:Reservoir",
    ("scalekit.sampling", "HASHES"): "scalekit.sampling._hash:HASHES",
    ("scalekit.pools", "POOLER_MODES"): "scalekit.pools._policy:POOLER_MODES",
}


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split(".")[1:])


def _public_modules() -> list[str]:
    names = ["scalekit"]
    for info in pkgutil.walk_packages(scalekit.__path__, "scalekit."):
        if not _is_private(info.name) and info.name not in DEPRECATED_MODULES:
            names.append(info.name)
    return names


def _is_package(name: str) -> bool:
    return hasattr(importlib.import_module(name), "__path__")


PUBLIC = _public_modules()


def _defined_by(module: types.ModuleType, value: object) -> bool:
    """Whether ``value`` is defined in ``module`` or, for a package, its private modules."""
    origin = getattr(value, "__module__", None)
    if not isinstance(origin, str):
        return False
    name = module.__name__
    if origin == name:
        return True
    return hasattr(module, "__path__") and origin.startswith(name + "._")


def _own_docstring(value: object) -> str | None:
    if inspect.isclass(value):
        doc = value.__dict__.get("__doc__")
        # a dataclass without a docstring gets its signature as one
        if isinstance(doc, str) and doc.startswith(value.__name__ + "("):
            return None
        return doc if isinstance(doc, str) else None
    return inspect.getdoc(value)


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))


def test_the_public_modules_are_the_agreed_ones() -> None:
    assert {m for m in PUBLIC if not _is_package(m)} == PUBLIC_MODULES


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_listed_without_duplicates_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert isinstance(exported, list | tuple), f"{name} has no __all__"
    assert all(isinstance(n, str) for n in exported)
    duplicates = sorted({n for n in exported if exported.count(n) > 1})
    assert not duplicates, f"{name}.__all__ lists {duplicates} twice"
    missing = [n for n in exported if n not in module.__dict__]
    assert not missing, f"{name}.__all__ lists {missing}, which {name} does not have"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    docs = _docs_text()
    undocumented = []
    for attr in module.__all__:
        if attr.startswith("__"):  # __version__
            continue
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            if not (_own_docstring(value) or "").strip():
                undocumented.append(f"{attr} (no docstring)")
        elif not re.search(rf"`[^`]*\b{re.escape(attr)}\b[^`]*`", docs):
            undocumented.append(f"{attr} (not named in docs/)")
    assert not undocumented, f"{name}: {undocumented}"


@pytest.mark.parametrize("name", PUBLIC)
def test_nothing_is_public_by_accident(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    accidental = sorted(
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and attr not in exported
        and (name, attr) not in NOT_EXPORTED
        and (inspect.isclass(value) or inspect.isfunction(value))
        and _defined_by(module, value)
    )
    assert not accidental, f"{name} defines {accidental} but does not list them in __all__"


@pytest.mark.parametrize(("where", "target"), sorted(REMOVED.items()))
def test_a_removed_name_still_works_for_one_release_with_a_warning(
    where: tuple[str, str], target: str
) -> None:
    module_name, attr = where
    module = importlib.import_module(module_name)
    assert attr not in module.__all__
    home, _, inner = target.partition(":")
    expected = getattr(importlib.import_module(home), inner)
    match = rf"{re.escape(module_name)}\.{attr} is no longer public"
    with pytest.warns(DeprecationWarning, match=match) as record:
        value = getattr(module, attr)
    assert value is expected
    assert record[0].filename == __file__  # points at the caller's line
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=match):
        exec(f"from {module_name} import {attr}", namespace)
    assert namespace[attr] is expected


@pytest.mark.parametrize("name", sorted({m for m, _ in REMOVED}))
def test_an_unknown_name_is_still_an_attribute_error(name: str) -> None:
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018
        assert not hasattr(module, "no_such_name")


def test_star_import_brings_exactly_all() -> None:
    for name in PUBLIC:
        namespace: dict[str, typing.Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(f"from {name} import *", namespace)
        namespace.pop("__builtins__", None)
        assert set(namespace) == set(importlib.import_module(name).__all__), name


@pytest.mark.parametrize("name", sorted(DEPRECATED_MODULES))
def test_a_deprecated_module_path_still_imports_with_a_warning(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, names = DEPRECATED_MODULES[name]
    monkeypatch.delitem(sys.modules, name, raising=False)
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=rf"{re.escape(name)} is deprecated") as record:
        exec(f"from {name} import {', '.join(names)}", namespace)
    assert record[0].filename == "<string>"  # points at the importing line
    for attr in names:
        assert namespace[attr] is getattr(importlib.import_module(home), attr)
