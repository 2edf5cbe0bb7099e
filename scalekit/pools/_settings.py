"""Pool settings: one frozen dataclass, built from keywords, a URL or the environment.

``PoolSettings(url=..., max_size=10)`` validates everything at construction.
``PoolSettings.from_url("postgresql://h/db?max_size=5&pooler=pgbouncer-transaction")``
takes the pool options from the query string (and strips them before the URL
reaches the driver). ``PoolSettings.from_env("postgres")`` reads ``SCALEKIT_POSTGRES_URL``,
``SCALEKIT_POSTGRES_MAX_SIZE``, … through pydantic-settings (the ``settings``
extra, imported only there).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any, Literal, Self, TypeAlias, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from scalekit import _validate as check
from scalekit._urls import redact
from scalekit.errors import ConfigurationError, MissingDependency
from scalekit.pools._policy import POOLER_MODES, PoolerMode

__all__ = ["Kind", "PoolSettings", "redact"]

Kind: TypeAlias = Literal["postgres", "redis"]
_PG_SCHEMES = ("postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
Seconds: TypeAlias = float | timedelta

# options that may appear in a URL's query string, with their parsers
_URL_OPTIONS: dict[str, type] = {
    "min_size": int,
    "max_size": int,
    "acquire_timeout": float,
    "connect_timeout": float,
    "command_timeout": float,
    "pooler": str,
    "pre_ping_after": float,
    "max_lifetime": float,
    "lifetime_jitter": float,
    "max_idle": float,
    "name": str,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    """How to build one pool. Durations are seconds (float) or a ``timedelta``.

    - ``url``: ``postgresql://…`` (asyncpg) or ``redis://`` / ``rediss://`` / ``unix://``.
    - ``min_size`` / ``max_size``: connections kept open / at most open.
    - ``acquire_timeout``: the longest wait for a free connection before
      :class:`~scalekit.errors.PoolExhausted`; always finite.
    - ``connect_timeout``: the longest wait to open one connection; ``command_timeout``
      a default per-query timeout (PostgreSQL; ``None`` for none) or the socket
      timeout (Redis; ``None`` for none).
    - ``pooler``: what sits between the client and PostgreSQL: ``"direct"``,
      ``"pgbouncer-transaction"``, ``"pgbouncer-session"`` or ``"supavisor"``
      (transaction mode, as on Supavisor's pooled port). Transaction modes turn
      asyncpg's statement cache off. Redis accepts only ``"direct"``.
    - ``pre_ping_after``: ping a connection idle for this long before handing it out
      (``None``: never).
    - ``max_lifetime``: replace a connection this old (``None``: never), shortened
      by a random fraction up to ``lifetime_jitter`` (0..1) per connection.
    - ``max_idle``: close PostgreSQL connections idle this long (asyncpg's
      ``max_inactive_connection_lifetime``; ``None``: never).
    - ``name``: the pool's name in metrics and errors (default: the redacted URL);
      ``application_name``: PostgreSQL's ``application_name`` for these connections.
    """

    url: str
    min_size: int = 1
    max_size: int = 10
    acquire_timeout: Seconds = 5.0
    connect_timeout: Seconds = 5.0
    command_timeout: Seconds | None = None
    pooler: PoolerMode = "direct"
    pre_ping_after: Seconds | None = None
    max_lifetime: Seconds | None = 3600.0
    lifetime_jitter: float = 0.1
    max_idle: Seconds | None = 300.0
    name: str | None = None
    application_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigurationError(f"url must be a non-empty string, got {self.url!r}")
        scheme = urlsplit(self.url).scheme
        if scheme not in _PG_SCHEMES + _REDIS_SCHEMES:
            raise ConfigurationError(
                f"unsupported pool URL scheme {scheme + '://' if scheme else redact(self.url)!r}; "
                "expected postgresql://, postgres://, redis://, rediss:// or unix://"
            )
        check.count(self.min_size, "min_size", minimum=0)
        check.count(self.max_size, "max_size")
        if self.min_size > self.max_size:
            raise ConfigurationError(
                f"min_size ({self.min_size}) must be <= max_size ({self.max_size})"
            )
        for name in ("acquire_timeout", "connect_timeout"):
            object.__setattr__(self, name, check.duration(getattr(self, name), name))
        for name in ("command_timeout", "pre_ping_after", "max_lifetime", "max_idle"):
            object.__setattr__(self, name, check.optional_duration(getattr(self, name), name))
        object.__setattr__(
            self, "lifetime_jitter", check.fraction(self.lifetime_jitter, "lifetime_jitter")
        )
        for name in ("name", "application_name"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check.name(getattr(self, name), name))
        if self.pooler not in POOLER_MODES:
            raise ConfigurationError(
                f"pooler must be one of {', '.join(POOLER_MODES)}, got {self.pooler!r}"
            )
        if self.kind == "redis" and self.pooler != "direct":
            raise ConfigurationError(
                f"pooler {self.pooler!r} applies to PostgreSQL only; Redis URLs take 'direct'"
            )

    # -- derived -------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return "postgres" if urlsplit(self.url).scheme in _PG_SCHEMES else "redis"

    @property
    def label(self) -> str:
        """``name``, or the URL without its password."""
        return self.name if self.name is not None else redact(self.url)

    # typed views of the normalised durations (floats after __post_init__)
    @property
    def acquire_seconds(self) -> float:
        return cast(float, self.acquire_timeout)

    @property
    def connect_seconds(self) -> float:
        return cast(float, self.connect_timeout)

    def seconds(self, name: str) -> float | None:
        return cast("float | None", getattr(self, name))

    def with_options(self, **changes: Any) -> PoolSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # -- constructors --------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Self:
        """Settings from a URL; pool options in its query string are taken out of it.

        ``postgresql://u@h/db?max_size=5&acquire_timeout=2&pooler=pgbouncer-transaction``;
        keyword ``overrides`` win over the query string.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"a pool URL must be a string, got {url!r}")
        base, _, query = url.partition("?")
        options: dict[str, Any] = {}
        kept: list[tuple[str, str]] = []
        for key, raw in parse_qsl(query, keep_blank_values=True):
            parser = _URL_OPTIONS.get(key)
            if parser is None:
                kept.append((key, raw))  # the driver's own option (sslmode, db, ...)
                continue
            try:
                if not raw.isascii():  # int() and float() take Arabic-Indic digits, NBSP
                    raise ValueError(raw)
                options[key] = parser(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{key} in the URL must be {parser.__name__}, got {raw!r}"
                ) from None
        clean = base + (f"?{urlencode(kept)}" if kept else "")
        options.update(overrides)
        return cls(url=clean, **options)

    @classmethod
    def from_env(cls, kind: Kind = "postgres", *, prefix: str = "SCALEKIT_") -> Self:
        """Settings from ``{prefix}{KIND}_URL``, ``{prefix}{KIND}_MAX_SIZE``, …

        Every field of this class can be set, upper-cased: e.g. for ``kind="redis"``
        ``SCALEKIT_REDIS_URL``, ``SCALEKIT_REDIS_MAX_SIZE``,
        ``SCALEKIT_REDIS_ACQUIRE_TIMEOUT``. Read by pydantic-settings (``pip install
        'scalekit-primitives[settings]'``), which also reads a ``.env`` file if present.
        """
        if kind not in ("postgres", "redis"):
            raise ConfigurationError(f"kind must be 'postgres' or 'redis', got {kind!r}")
        env_cls = _env_settings_class()
        env_prefix = f"{prefix}{kind.upper()}_"
        values: dict[str, Any] = env_cls(_env_prefix=env_prefix).model_dump(exclude_none=True)
        if "url" not in values:
            raise ConfigurationError(f"{env_prefix}URL is not set; it names the server to pool")
        url = values.pop("url")
        return cls.from_url(url, **values)


_ENV_CLASS: Any = None


def _env_settings_class() -> Any:
    """The pydantic-settings model mirroring :class:`PoolSettings` (built once, lazily)."""
    global _ENV_CLASS
    if _ENV_CLASS is not None:
        return _ENV_CLASS
    try:
        from pydantic import create_model
        from pydantic_settings import BaseSettings, SettingsConfigDict
    except ImportError as exc:
        raise MissingDependency("PoolSettings.from_env", "settings", "pydantic-settings") from exc

    field_types: dict[str, Any] = {
        "url": str,
        "min_size": int,
        "max_size": int,
        "pooler": str,
        "lifetime_jitter": float,
        "name": str,
        "application_name": str,
    }
    definitions: dict[str, Any] = {}
    for f in fields(PoolSettings):
        typ = field_types.get(f.name, float)
        definitions[f.name] = (typ | None, None)

    class _Base(BaseSettings):
        model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    _ENV_CLASS = create_model("ScalekitPoolEnv", __base__=_Base, **definitions)
    return _ENV_CLASS
