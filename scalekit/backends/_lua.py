"""Lua scripts shipped as package data, run by EVALSHA with a NOSCRIPT fallback."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["LuaScript", "load_script"]


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and its SHA1 (what EVALSHA needs)."""

    name: str
    source: str
    sha: str


@cache
def load_script(package: str, name: str, *, header: str | None = None) -> LuaScript:
    """Read ``<package>/lua/<name>.lua``; ``header`` names a prologue file to prepend."""
    folder = resources.files(package).joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if header is not None:
        source = folder.joinpath(f"{header}.lua").read_text(encoding="utf-8") + "\n" + source
    sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    return LuaScript(name=name, source=source, sha=sha)
