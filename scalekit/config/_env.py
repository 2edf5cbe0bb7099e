"""Reading ``SCALEKIT_*`` variables (see :mod:`scalekit.config`)."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from scalekit._urls import redact as _redact
from scalekit.errors import ConfigurationError, MissingDependency

if TYPE_CHECKING:
    from scalekit.pools._settings import PoolSettings
    from scalekit.ratelimit import AsyncRateLimiter, RateLimiter
    from scalekit.ratelimit._policy import PolicyLike

__all__ = [
    "LimiterOverrides",
    "Settings",
    "UnknownSettingWarning",
    "default_backend_url",
    "from_env",
]

PREFIX = "SCALEKIT_"
#: variables of this repository's own tooling (tests, benchmarks, docs checks)
_TOOLING = ("TEST_", "BENCH_", "DOCS_")


class UnknownSettingWarning(UserWarning):
    """A ``SCALEKIT_*`` variable that nothing reads (a typo, or a setting removed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterOverrides:
    """``SCALEKIT_LIMITER__<NAME>__<FIELD>``: what the environment sets for one limiter."""

    policy: str | None = None
    algorithm: str | None = None
    backend: str | None = None
    on_backend_error: str | None = None
    prefix: str | None = None

    def __repr__(self) -> str:
        shown = {
            f.name: _redact(v) if f.name == "backend" else v
            for f in fields(self)
            if (v := getattr(self, f.name)) is not None
        }
        return f"LimiterOverrides({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


_LIMITER_FIELDS = frozenset(f.name for f in fields(LimiterOverrides))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What :func:`from_env` read. URLs are shown without their password."""

    redis_url: str | None = None
    database_url: str | None = None
    limiters: Mapping[str, LimiterOverrides] = field(default_factory=dict)
    prefix: str = PREFIX
    database_url_var: str = PREFIX + "DATABASE_URL"

    def __post_init__(self) -> None:
        object.__setattr__(self, "limiters", MappingProxyType(dict(self.limiters)))

    def __repr__(self) -> str:
        r = None if self.redis_url is None else _redact(self.redis_url)
        d = None if self.database_url is None else _redact(self.database_url)
        return f"Settings(redis_url={r!r}, database_url={d!r}, limiters={dict(self.limiters)!r})"

    # -- backends ----------------------------------------------------------------------
    def backend_url(self) -> str:
        """``{prefix}REDIS_URL``, or a :class:`ConfigurationError` saying how to set it."""
        if self.redis_url is None:
            raise ConfigurationError(
                f"no backend given and {self.prefix}REDIS_URL is not set: set it to the "
                "fleet's Redis (redis://host:6379/0), or pass backend='memory://' to keep "
                "the state in this process only (every process then has its own limit)"
            )
        return self.redis_url

    def limiter(self, name: str) -> LimiterOverrides:
        """The overrides of limiter ``name`` (case-insensitive; none set: all ``None``)."""
        return self.limiters.get(name.lower(), LimiterOverrides())

    def limiter_options(self, name: str, policy: PolicyLike | None = None) -> dict[str, Any]:
        """Keyword arguments for ``RateLimiter(**options)``: the backend
        (``…__BACKEND``, else ``{prefix}REDIS_URL``), the policy (``…__POLICY``, else
        ``policy``), ``name`` and the algorithm / failure policy / key prefix if set."""
        o = self.limiter(name)
        var = f"{self.prefix}LIMITER__{name.upper()}__"
        chosen = o.policy if o.policy is not None else policy
        if chosen is None:
            raise ConfigurationError(
                f"limiter {name!r} has no policy: pass one, or set {var}POLICY "
                "(e.g. '60/hour; 1000/day')"
            )
        options: dict[str, Any] = {
            "backend": o.backend if o.backend is not None else self.backend_url(),
            "policy": chosen,
            "name": name,
        }
        for key in ("algorithm", "on_backend_error", "prefix"):
            value = getattr(o, key)
            if value is not None:
                options[key] = value
        return options

    def rate_limiter(self, name: str, policy: PolicyLike | None = None) -> RateLimiter:
        """``RateLimiter`` ``name`` configured by :meth:`limiter_options`; an invalid
        value from the environment raises a ConfigurationError naming the variable."""
        from scalekit.ratelimit import RateLimiter

        limiter: RateLimiter = self._build(RateLimiter, name, policy)
        return limiter

    def async_rate_limiter(self, name: str, policy: PolicyLike | None = None) -> AsyncRateLimiter:
        """Deprecated: :meth:`rate_limiter` (one ``RateLimiter`` serves async code
        through ``ahit`` / ``aacquire`` / ...). An ``AsyncRateLimiter``."""
        from scalekit.ratelimit import AsyncRateLimiter

        warnings.warn(
            "Settings.async_rate_limiter() is deprecated; use Settings.rate_limiter(): "
            "one RateLimiter serves async code (await limiter.ahit(key))",
            DeprecationWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():  # the one warning above names the replacement
            warnings.simplefilter("ignore", DeprecationWarning)
            limiter: AsyncRateLimiter = self._build(AsyncRateLimiter, name, policy)
        return limiter

    def _build(self, cls: Any, name: str, policy: PolicyLike | None) -> Any:
        options = self.limiter_options(name, policy)
        backend = options.pop("backend")
        chosen = options.pop("policy")
        try:
            return cls(backend, chosen, **options)
        except ConfigurationError as exc:
            given = [k for k in sorted(_LIMITER_FIELDS) if getattr(self.limiter(name), k)]
            if not given:
                raise
            names = ", ".join(f"{self.prefix}LIMITER__{name.upper()}__{k.upper()}" for k in given)
            raise ConfigurationError(f"limiter {name!r} (set by {names}): {exc}") from None

    # -- pools -------------------------------------------------------------------------
    def pool_settings(self, **overrides: Any) -> PoolSettings:
        """:class:`~scalekit.pools.PoolSettings` for the database: the URL from
        ``database_url_var`` (``{prefix}DATABASE_URL`` unless another was named), the
        other options from ``{prefix}POSTGRES_*`` as :meth:`PoolSettings.from_env
        <scalekit.pools.PoolSettings.from_env>` reads them; ``overrides`` win."""
        from scalekit.pools._settings import PoolSettings, _env_settings_class

        values: dict[str, Any] = _env_settings_class()(
            _env_prefix=f"{self.prefix}POSTGRES_"
        ).model_dump(exclude_none=True)
        env_url = values.pop("url", None)
        url = self.database_url if self.database_url is not None else env_url
        if url is None:
            raise ConfigurationError(
                f"{self.database_url_var} is not set; it names the database to pool"
            )
        return PoolSettings.from_url(url, **{**values, **overrides})


# -- reading -------------------------------------------------------------------------------
_CLASSES: dict[str, Any] = {}
_REPORTED: set[str] = set()
_LOCK = threading.Lock()


def _settings_class(database_url_var: str) -> Any:
    """The pydantic-settings model for one database variable name (built once)."""
    cls = _CLASSES.get(database_url_var)
    if cls is not None:
        return cls
    try:
        from pydantic import BaseModel, ConfigDict, Field
        from pydantic_settings import BaseSettings, SettingsConfigDict
    except ImportError as exc:
        raise MissingDependency(
            "scalekit.config.from_env", "settings", "pydantic-settings"
        ) from exc

    class _Limiter(BaseModel):
        model_config = ConfigDict(extra="ignore")
        policy: str | None = None
        algorithm: str | None = None
        backend: str | None = None
        on_backend_error: str | None = None
        prefix: str | None = None

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(
            env_file=".env",
            extra="ignore",
            env_nested_delimiter="__",
            case_sensitive=False,
        )
        redis_url: str | None = None
        database_url: str | None = Field(default=None, validation_alias=database_url_var)
        limiter: dict[str, _Limiter] = Field(default_factory=dict)

    _CLASSES[database_url_var] = _Env
    return _Env


def unknown_names(prefix: str = PREFIX, environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``prefix*`` variables that no setting of scalekit reads (sorted)."""
    from scalekit.pools._settings import PoolSettings

    pool_fields = {f.name.upper() for f in fields(PoolSettings)}
    names = {*os.environ, *_dotenv_names()} if environ is None else set(environ)
    unknown = []
    for name in names:
        upper = name.upper()
        if not upper.startswith(prefix.upper()):
            continue
        rest = upper[len(prefix) :]
        # LIMITER: every limiter as one JSON object (pydantic-settings' form)
        if rest in ("REDIS_URL", "DATABASE_URL", "CURSOR_SECRET", "LIMITER") or rest.startswith(
            _TOOLING
        ):
            continue
        kind, _, option = rest.partition("_")
        if kind in ("REDIS", "POSTGRES") and option in pool_fields:
            continue
        parts = rest.split("__")
        if (
            len(parts) == 3
            and parts[0] == "LIMITER"
            and parts[1]
            and parts[2].lower() in _LIMITER_FIELDS
        ):
            continue
        unknown.append(name)
    return sorted(unknown)


def _dotenv_names() -> list[str]:
    """The names set in ``./.env`` (read by pydantic-settings too); never the values."""
    if not os.path.isfile(".env"):
        return []
    try:
        from dotenv import dotenv_values  # a dependency of pydantic-settings
    except ImportError:
        return []
    return list(dotenv_values(".env"))


def _report(prefix: str, strict: bool) -> None:
    unknown = unknown_names(prefix)
    if not unknown:
        return
    listed = ", ".join(unknown)
    if strict:
        raise ConfigurationError(
            f"unknown {prefix}* variables: {listed} (a typo? see scalekit.config for the names)"
        )
    with _LOCK:
        new = [n for n in unknown if n not in _REPORTED]
        _REPORTED.update(new)
    if new:
        warnings.warn(
            f"ignoring unknown {prefix}* variables: {', '.join(new)} "
            "(a typo? see scalekit.config for the names)",
            UnknownSettingWarning,
            stacklevel=3,
        )


def from_env(
    *,
    prefix: str = PREFIX,
    database_url_var: str | None = None,
    strict: bool = False,
) -> Settings:
    """Read the settings from the environment (and ``.env``) now.

    ``database_url_var`` names the variable holding the database URL (default
    ``{prefix}DATABASE_URL``; e.g. ``"DATABASE_URL"`` on platforms that set it).
    Unknown ``{prefix}*`` variables are reported once each with an
    :class:`UnknownSettingWarning`, or raise with ``strict=True``.
    """
    if not isinstance(prefix, str) or not prefix.isidentifier() or not prefix.isupper():
        raise ConfigurationError(f"prefix must be an upper-case identifier, got {prefix!r}")
    var = database_url_var if database_url_var is not None else prefix + "DATABASE_URL"
    if not isinstance(var, str) or not var.isidentifier():
        raise ConfigurationError(f"database_url_var must be a variable name, got {var!r}")
    _report(prefix, strict)
    cls = _settings_class(var)
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        env = cls(_env_prefix=prefix)
    except (ValidationError, SettingsError) as exc:
        # the values may be secrets: name the variables, never echo what they hold
        where = _locations(exc, prefix)
        raise ConfigurationError(f"invalid settings in the environment: {where}") from None
    return Settings(
        redis_url=env.redis_url or None,
        database_url=env.database_url or None,
        limiters={
            name.lower(): LimiterOverrides(**{k: v for k, v in lim.model_dump().items() if v})
            for name, lim in env.limiter.items()
        },
        prefix=prefix,
        database_url_var=var,
    )


def _locations(exc: Exception, prefix: str) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        locs = {
            prefix + "__".join(str(p).upper() for p in e.get("loc", ()))
            for e in errors(include_input=False)
        }
        return ", ".join(sorted(locs)) or type(exc).__name__
    return f"{prefix}LIMITER__<NAME>__<FIELD> variables (could not be parsed)"


def default_backend_url(*, fallback: str | None = None) -> str:
    """``SCALEKIT_REDIS_URL`` (what a primitive built with ``backend=None`` uses);
    ``fallback`` if it is unset, else a :class:`ConfigurationError` saying how to set it."""
    try:
        settings = from_env()
    except MissingDependency:
        # without the extra, a primitive that has a fallback keeps working -- unless
        # the variable is set: then the user meant it, and is told what to install
        if fallback is not None and not any(k.upper() == PREFIX + "REDIS_URL" for k in os.environ):
            return fallback
        raise
    if settings.redis_url is None and fallback is not None:
        return fallback
    return settings.backend_url()
