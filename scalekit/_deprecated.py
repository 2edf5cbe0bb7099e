"""Names taken out of a public module, still served for one release with a warning.

A public module lists what it took out and what to use instead, and answers a
lookup of an unknown attribute through :func:`moved_name` in its module-level
``__getattr__``::

    _REMOVED = {"OldName": (lambda: _impl.OldName, "use NewName")}

    def __getattr__(name: str) -> object:
        return moved_name(__name__, name, _REMOVED)

Every access warns (``DeprecationWarning``, pointing at the caller's line); the
names are not in ``__all__``, so ``from module import *`` does not bring them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_name"]

Removed = Mapping[str, tuple[Callable[[], object], str]]


def moved_name(module: str, name: str, removed: Removed) -> object:
    """The value of ``module.name`` if it was taken out (with a warning), else AttributeError."""
    try:
        load, instead = removed[name]
    except KeyError:
        raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
    warnings.warn(
        f"{module}.{name} is no longer public and goes in the next release; {instead}",
        DeprecationWarning,
        stacklevel=3,
    )
    return load()
