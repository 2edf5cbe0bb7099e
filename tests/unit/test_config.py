"""Configuration from the environment (scalekit.config), with monkeypatched variables
and the suite's real Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalekit import ConcurrencyLimiter, RateLimiter
from scalekit.backends import MemoryBackend, RedisBackend, as_backend
from scalekit.config import Settings, UnknownSettingWarning, _env, from_env
from scalekit.errors import ConfigurationError
from scalekit.resilience._shared import SharedState
from scalekit.sampling import Budget

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No SCALEKIT_* variable but the suite's own, no .env file, nothing reported yet."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("SCALEKIT_", "DATABASE_URL")) and not name.upper().startswith(
            "SCALEKIT_TEST_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # pydantic-settings reads ./.env
    _env._REPORTED.clear()
    yield
    _env._REPORTED.clear()


# -- the default backend -----------------------------------------------------------------------
def test_unset_redis_url_refuses_instead_of_memory() -> None:
    for build in (
        lambda: RateLimiter(None, "3/minute"),
        lambda: ConcurrencyLimiter(None, 2),
        lambda: SharedState(),
        lambda: as_backend(None),
    ):
        with pytest.raises(ConfigurationError, match="SCALEKIT_REDIS_URL is not set") as info:
            build()
        assert "memory://" in str(info.value)  # says how to opt in to a local limit


def test_redis_url_is_the_default_backend(
    monkeypatch: pytest.MonkeyPatch, fresh_redis_url: str
) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", fresh_redis_url)
    a = RateLimiter(None, "3/minute", name="chat")
    b = RateLimiter(fresh_redis_url, "3/minute", name="chat")  # another process, by URL
    assert isinstance(a.backend, RedisBackend)
    assert [a.hit("u").allowed for _ in range(2)] == [True, True]
    assert b.peek("u").remaining == 1  # the same state on the real server
    assert b.hit("u").allowed
    assert not a.hit("u").allowed
    assert isinstance(ConcurrencyLimiter(None, 2).backend, RedisBackend)
    assert isinstance(SharedState().backend, RedisBackend)


async def test_async_limiter_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, fresh_redis_url: str
) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", fresh_redis_url)
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__POLICY", "2/minute")
    lim = from_env().rate_limiter("chat", "60/hour")
    assert [(await lim.ahit("u")).allowed for _ in range(3)] == [True, True, False]
    assert lim.stats()["degraded"] == 0  # decided by Redis, not by a failure policy


def test_budget_keeps_its_memory_default_and_follows_the_variable(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    assert isinstance(Budget("10/day").backend, MemoryBackend)
    monkeypatch.setenv("SCALEKIT_REDIS_URL", redis_url)
    assert isinstance(Budget("10/day").backend, RedisBackend)
    assert isinstance(Budget("10/day", backend="memory://").backend, MemoryBackend)


def test_cache_keeps_its_memory_default_and_follows_the_variable(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from scalekit.cache import Cache, MemoryCacheBackend, RedisCacheBackend

    monkeypatch.delenv("SCALEKIT_REDIS_URL", raising=False)
    assert isinstance(Cache().backend, MemoryCacheBackend)
    monkeypatch.setenv("SCALEKIT_REDIS_URL", redis_url)
    assert isinstance(Cache().backend, RedisCacheBackend)
    assert isinstance(Cache("memory://").backend, MemoryCacheBackend)


def test_an_explicit_backend_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "redis://127.0.0.1:1/0")
    assert isinstance(RateLimiter("memory://", "3/minute").backend, MemoryBackend)


def test_a_bad_url_in_the_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "redis://:hunter2@h:6379/0?socket_timout=1")
    with pytest.raises(ConfigurationError, match="socket_timout") as info:
        RateLimiter(None, "3/minute")
    assert "hunter2" not in str(info.value)


# -- per-name overrides -------------------------------------------------------------------------
def test_limiter_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__POLICY", "2/minute")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__ALGORITHM", "gcra")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__BACKEND", "memory://")
    monkeypatch.setenv("scalekit_limiter__Upload__policy", "1/day")  # any case
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "memory://")  # the others' backend
    settings = from_env()
    chat = settings.rate_limiter("chat", "60/hour")
    assert (chat.name, chat.algorithm, str(chat.policy)) == ("chat", "gcra", "2/minute")
    assert [chat.hit("u").allowed for _ in range(3)] == [True, True, False]
    assert str(settings.rate_limiter("UPLOAD").policy) == "1/day"
    # a limiter without overrides keeps the code's policy, on the default backend
    other = from_env().rate_limiter("search", "5/second")
    assert str(other.policy) == "5/second"
    assert other.name == "search"


def test_limiter_without_any_policy_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="SCALEKIT_LIMITER__CHAT__POLICY"):
        from_env().rate_limiter("chat")


def test_an_invalid_override_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__POLICY", "60/fortnight")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__BACKEND", "memory://")
    with pytest.raises(ConfigurationError, match="SCALEKIT_LIMITER__CHAT__POLICY"):
        from_env().rate_limiter("chat", "60/hour")


# -- unknown names, secrets -------------------------------------------------------------------
def test_unknown_names_are_reported_once_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_ULR", "redis://:hunter2@h/0")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__POLCY", "1/day")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__POLICY", "1/day")  # known
    monkeypatch.setenv("SCALEKIT_POSTGRES_MAX_SIZE", "5")  # known (PoolSettings)
    monkeypatch.setenv("SCALEKIT_CURSOR_SECRET", "x" * 32)  # known (pagination)
    with pytest.warns(UnknownSettingWarning) as record:
        from_env()
    assert len(record) == 1
    message = str(record[0].message)
    assert "SCALEKIT_LIMITER__CHAT__POLCY" in message
    assert "SCALEKIT_REDIS_ULR" in message
    assert "hunter2" not in message and "1/day" not in message
    assert "POSTGRES_MAX_SIZE" not in message and "CURSOR_SECRET" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_env()  # reported once per name


def test_unknown_names_in_the_dotenv_file_are_reported(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SCALEKIT_REDIS_URL=redis://:hunter2@h/0\nSCALEKIT_REDIS_MAX_SIZ=4\nOTHER=1\n"
    )
    with pytest.warns(UnknownSettingWarning, match="SCALEKIT_REDIS_MAX_SIZ") as record:
        settings = from_env()  # the working directory is tmp_path
    assert settings.redis_url == "redis://:hunter2@h/0"  # read from .env
    assert "hunter2" not in str(record[0].message) and "OTHER" not in str(record[0].message)


def test_strict_mode_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_ULR", "redis://h/0")
    with pytest.raises(ConfigurationError, match="SCALEKIT_REDIS_ULR"):
        from_env(strict=True)


def test_no_warning_for_known_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "redis://h/0")
    monkeypatch.setenv("SCALEKIT_REDIS_MAX_SIZE", "4")
    monkeypatch.setenv("SCALEKIT_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__ON_BACKEND_ERROR", "fail_closed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_env(strict=True)


def test_passwords_are_redacted_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "redis://:hunter2@h:6379/0")
    monkeypatch.setenv("SCALEKIT_DATABASE_URL", "postgresql://app:s3cret@db/app")
    monkeypatch.setenv("SCALEKIT_LIMITER__CHAT__BACKEND", "redis://:p4ss@other/0")
    settings = from_env()
    assert settings.redis_url == "redis://:hunter2@h:6379/0"  # the value itself is intact
    shown = repr(settings)
    for secret in ("hunter2", "s3cret", "p4ss"):
        assert secret not in shown
    assert "***" in shown


def test_an_unparsable_value_is_named_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_LIMITER", "{not json hunter2")
    with pytest.raises(ConfigurationError, match="environment") as info:
        from_env()
    assert "hunter2" not in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        from_env(prefix="scalekit-")
    with pytest.raises(ConfigurationError, match="database_url_var"):
        from_env(database_url_var="DATABASE URL")


# -- pools --------------------------------------------------------------------------------------
def test_pool_settings_from_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_DATABASE_URL", "postgresql://app:s3cret@db/app?max_size=7")
    monkeypatch.setenv("SCALEKIT_POSTGRES_ACQUIRE_TIMEOUT", "1.5")
    monkeypatch.setenv("SCALEKIT_POSTGRES_POOLER", "pgbouncer-transaction")
    ps = from_env().pool_settings(min_size=0)
    assert ps.url == "postgresql://app:s3cret@db/app"
    assert (ps.max_size, ps.acquire_timeout, ps.pooler, ps.min_size) == (
        7,
        1.5,
        "pgbouncer-transaction",
        0,
    )
    assert "s3cret" not in ps.label


def test_pool_settings_from_a_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@platform/db")
    monkeypatch.setenv("SCALEKIT_DATABASE_URL", "postgresql://u@ignored/db")
    assert from_env(database_url_var="DATABASE_URL").pool_settings().url == (
        "postgresql://u@platform/db"
    )
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        from_env(database_url_var="DATABASE_URL").pool_settings()


def test_pool_settings_keep_reading_the_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_POSTGRES_URL", "postgresql://u@h/db")
    assert from_env().pool_settings().url == "postgresql://u@h/db"


def test_settings_object_is_immutable() -> None:
    s = Settings(limiters={"chat": _env.LimiterOverrides(policy="1/day")})
    with pytest.raises(AttributeError):
        s.redis_url = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.limiters["other"] = _env.LimiterOverrides()  # type: ignore[index]


# -- without the extra --------------------------------------------------------------------------
def test_without_pydantic_settings() -> None:
    code = textwrap.dedent(
        """
        import os, sys
        sys.modules["pydantic_settings"] = None   # as if the extra were not installed
        for k in [k for k in os.environ if k.startswith("SCALEKIT_")]:
            del os.environ[k]
        import scalekit
        from scalekit.sampling import Budget
        assert Budget("10/day").backend.__class__.__name__ == "MemoryBackend"
        for build in (lambda: scalekit.RateLimiter(None, "2/minute"),
                      lambda: __import__("scalekit.config").config.from_env()):
            try:
                build()
            except scalekit.MissingDependency as exc:
                assert "pip install 'scalekit-primitives[settings]'" in str(exc), exc
            else:
                raise AssertionError("no MissingDependency")
        os.environ["SCALEKIT_REDIS_URL"] = "redis://h/0"
        try:
            Budget("10/day")   # the variable is set: the user meant it
        except scalekit.MissingDependency:
            print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
