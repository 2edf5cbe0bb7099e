"""The plan file: a TOML document validated by pydantic (``extra`` keys refused, so a
typo is named, not ignored).

Sizes accept ``"8 GB"``, ``"256 MiB"``, ``"200 kB"`` or a number of bytes;
durations ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"1w"`` or seconds. A month is
30 days throughout.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from scalekit.errors import ConfigurationError, MissingDependency

try:
    from pydantic import (
        BaseModel,
        BeforeValidator,
        ConfigDict,
        Field,
        ValidationError,
        model_validator,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency("scalekit.capacity", "capacity", "pydantic") from exc

__all__ = ["Plan", "PlanError", "load_plan", "parse_plan"]

MONTH_SECONDS = 30 * 86_400

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGT]i?B|B)?\s*\Z")
_SIZE_UNITS = {
    None: 1, "B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}  # fmt: skip
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w)?\s*\Z")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


class PlanError(ConfigurationError):
    """A plan file that cannot be used; the message names the field(s) at fault."""


def _size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m is None or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"a size is a number with B, kB, MB, GB, TB, KiB, MiB, GiB: {value!r}")
        return float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"a duration is a number with s, m, h, d or w: {value!r}")
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return value


def _rate_range(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value)
    return value


Bytes = Annotated[float, BeforeValidator(_size), Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Model):
    """Users of one tier: their share of all users and their request rate when active."""

    name: Name
    share: Share
    requests_per_minute: NonNegative


class App(_Model):
    """Instances: how many requests one serves, and the database connections each holds
    (its pool's maximum size)."""

    requests_per_second_per_instance: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    min_instances: Annotated[int, Field(ge=1)] = 1
    db_connections_per_instance: Annotated[int, Field(ge=0)] = 0


class Cache(_Model):
    """A cache in front of the database: the share of requests reading through it and
    its hit ratio (hits never reach the database)."""

    name: Name
    share_of_requests: Share = 1.0
    hit_ratio: Share


class Database(_Model):
    queries_per_request: NonNegative = 1.0
    base_size: Bytes = 0.0
    bytes_per_user: Bytes = 0.0


class Functions(_Model):
    """Serverless / edge function invocations billed per month."""

    invocations_per_user_per_month: NonNegative = 0.0


class Realtime(_Model):
    connections_per_active_user: NonNegative = 0.0


class RedisPlan(_Model):
    base_memory: Bytes = 0.0
    bytes_per_user: Bytes = 0.0
    bytes_per_active_user: Bytes = 0.0


class Sampled(_Model):
    """Expensive work done for a sample of its candidates: ``rate`` is a share or a
    ``[low, high]`` range; ``monthly_limit`` a provider's quota for it, if any."""

    name: Name
    calls_per_user_per_month: NonNegative
    rate: Annotated[tuple[Share, Share], BeforeValidator(_rate_range)]
    monthly_limit: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None

    @model_validator(mode="after")
    def _ordered(self) -> Sampled:
        if self.rate[0] > self.rate[1]:
            raise ValueError("rate: [low, high] with low <= high")
        return self


class Job(_Model):
    """A scheduled job: how often it runs, the connections it holds while it runs, and
    the function invocations each run makes (fixed, and per user)."""

    name: Name
    every: Seconds
    db_connections: Annotated[int, Field(ge=0)] = 0
    function_invocations_per_run: NonNegative = 0.0
    function_invocations_per_run_per_user: NonNegative = 0.0


class Limits(_Model):
    """The provider's limits; leave out what does not apply."""

    db_connections: Annotated[int | None, Field(gt=0)] = None
    monthly_function_invocations: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    db_size: Annotated[Bytes | None, Field(gt=0)] = None
    realtime_connections: Annotated[int | None, Field(gt=0)] = None
    redis_memory: Annotated[Bytes | None, Field(gt=0)] = None


class PlanThresholds(_Model):
    warning: Annotated[float, Field(gt=0, le=1)] = 0.75
    critical: Annotated[float, Field(gt=0, le=1)] = 0.90

    @model_validator(mode="after")
    def _ordered(self) -> PlanThresholds:
        if self.warning > self.critical:
            raise ValueError("warning must not exceed critical")
        return self


class Plan(_Model):
    """A capacity plan: who uses the system, how hard, and what the providers allow."""

    name: Name = "plan"
    users: Annotated[int, Field(ge=1, le=10**9)]
    peak_concurrency: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    tiers: Annotated[list[Tier], Field(min_length=1)]
    app: App | None = None
    caches: list[Cache] = []
    database: Database = Database()
    functions: Functions = Functions()
    realtime: Realtime = Realtime()
    redis: RedisPlan = RedisPlan()
    sampled: list[Sampled] = []
    jobs: list[Job] = []
    limits: Limits = Limits()
    thresholds: PlanThresholds = PlanThresholds()

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        total = sum(t.share for t in self.tiers)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"tiers: the shares add up to {total:g}, not 1")
        for field, items in (("tiers", self.tiers), ("caches", self.caches),
                             ("sampled", self.sampled), ("jobs", self.jobs)):  # fmt: skip
            names = [i.name for i in items]
            if len(set(names)) != len(names):
                raise ValueError(f"{field}: names repeat ({names})")
        cached = sum(c.share_of_requests for c in self.caches)
        if cached > 1 + 1e-9:
            raise ValueError(f"caches: share_of_requests adds up to {cached:g}, more than 1")
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(plan)"


def parse_plan(data: dict[str, Any], *, source: str = "plan") -> Plan:
    """Validate a plan given as a mapping (a parsed TOML document)."""
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} error(s) in the plan"]
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  {_where(err['loc'])}: {msg}")
        raise PlanError("\n".join(lines)) from None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a TOML plan file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{p}: cannot read the plan ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{p}: not valid TOML ({exc})") from None
    return parse_plan(data, source=str(p))
