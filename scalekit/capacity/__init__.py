"""Capacity planning: a TOML plan file -> load, headroom against every provider limit,
and the user count at which each limit breaks.

    python -m scalekit capacity plan.toml [--json | --html] [--users N]

Needs the ``capacity`` extra (pydantic); TOML is read with the standard library.
"""

from __future__ import annotations

from scalekit.capacity._plan import Plan, PlanError, load_plan, parse_plan
from scalekit.capacity._project import LimitUse, Load, Projection, project
from scalekit.capacity._render import render_html, render_json, render_text

__all__ = [
    "LimitUse",
    "Load",
    "Plan",
    "PlanError",
    "Projection",
    "load_plan",
    "parse_plan",
    "project",
    "render_html",
    "render_json",
    "render_text",
]
