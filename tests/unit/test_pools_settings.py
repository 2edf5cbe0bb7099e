"""PoolSettings parsing and validation, and the pure pool decisions."""

from __future__ import annotations

import math
import pickle
import random
import typing
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit import errors
from scalekit.errors import ConfigurationError, PoolExhausted
from scalekit.pools import PoolerMode, PoolSettings
from scalekit.pools._policy import capacity_report, expires_at, needs_ping, pooler_options


def test_defaults_are_finite() -> None:
    s = PoolSettings(url="postgresql://u@h/db")
    assert s.kind == "postgres" and s.pooler == "direct"
    assert math.isfinite(s.acquire_seconds) and math.isfinite(s.connect_seconds)
    assert s.label == "postgresql://u@h/db"


def test_from_url_takes_pool_options_out_of_the_query() -> None:
    s = PoolSettings.from_url(
        "postgresql://u:secret@h:5433/db?sslmode=disable&max_size=7&acquire_timeout=0.5"
        "&pooler=pgbouncer-transaction&pre_ping_after=30"
    )
    assert s.url == "postgresql://u:secret@h:5433/db?sslmode=disable"
    assert (s.max_size, s.acquire_timeout, s.pooler, s.pre_ping_after) == (
        7,
        0.5,
        "pgbouncer-transaction",
        30.0,
    )
    assert "secret" not in s.label and "***" in s.label
    assert PoolSettings.from_url("redis://h/0?max_size=3", max_size=4).max_size == 4
    with pytest.raises(ConfigurationError, match="max_size in the URL must be int"):
        PoolSettings.from_url("redis://h/0?max_size=many")
    # int() and float() would take these; a URL option is ASCII only
    for raw in ("\u0661\u0660", "5\u00a0", "\uff15"):
        with pytest.raises(ConfigurationError, match="in the URL must be"):
            PoolSettings.from_url(f"redis://h/0?max_size={raw}")


def test_timedelta_and_validation() -> None:
    s = PoolSettings(url="redis://h", acquire_timeout=timedelta(milliseconds=250))
    assert s.acquire_timeout == 0.25
    for kwargs, fragment in [
        ({"max_size": 0}, "max_size must be an int >= 1"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"acquire_timeout": math.inf}, "acquire_timeout must be at most"),
        ({"acquire_timeout": math.nan}, "acquire_timeout must be > 0"),
        ({"connect_timeout": 1e16}, "connect_timeout must be at most"),
        ({"lifetime_jitter": None}, "lifetime_jitter must be a number in"),
        ({"name": ""}, "name must be a non-empty str"),
        ({"acquire_timeout": None}, "acquire_timeout"),
        ({"max_lifetime": -1}, "max_lifetime"),
        ({"lifetime_jitter": 1.5}, "lifetime_jitter"),
        ({"pooler": "pgpool"}, "pooler must be one of direct, pgbouncer-transaction"),
        ({"max_size": True}, "max_size"),
    ]:
        with pytest.raises(ConfigurationError, match=fragment):
            PoolSettings(url="postgresql://h/db", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        PoolSettings(url="redis://h", pooler="supavisor")
    with pytest.raises(ConfigurationError, match="unsupported pool URL scheme 'mysql://'"):
        PoolSettings(url="mysql://h/db")


def test_from_env_reads_scalekit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_POSTGRES_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SCALEKIT_POSTGRES_MAX_SIZE", "25")
    monkeypatch.setenv("SCALEKIT_POSTGRES_POOLER", "supavisor")
    monkeypatch.setenv("SCALEKIT_POSTGRES_ACQUIRE_TIMEOUT", "1.5")
    s = PoolSettings.from_env("postgres")
    assert (s.url, s.max_size, s.pooler, s.acquire_timeout) == (
        "postgresql://u@h/db",
        25,
        "supavisor",
        1.5,
    )
    monkeypatch.setenv("APP_REDIS_URL", "redis://h/1")
    assert PoolSettings.from_env("redis", prefix="APP_").kind == "redis"
    with pytest.raises(ConfigurationError, match="SCALEKIT_REDIS_URL is not set"):
        PoolSettings.from_env("redis")
    monkeypatch.setenv("SCALEKIT_POSTGRES_MAX_SIZE", "0")
    with pytest.raises(ConfigurationError, match="max_size must be an int >= 1"):
        PoolSettings.from_env("postgres")


def test_pooler_options() -> None:
    assert set(typing.get_args(PoolerMode)) == {
        "direct",
        "pgbouncer-transaction",
        "pgbouncer-session",
        "supavisor",
    }
    for mode in ("pgbouncer-transaction", "supavisor"):
        assert pooler_options(mode)["statement_cache_size"] == 0  # type: ignore[arg-type]
    for mode in ("direct", "pgbouncer-session"):
        assert pooler_options(mode) == {}  # type: ignore[arg-type]


@given(
    born=st.floats(0, 1e9),
    lifetime=st.floats(1e-3, 1e6),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_expiry_lies_within_the_jittered_lifetime(
    born: float, lifetime: float, jitter: float, seed: int
) -> None:
    at = expires_at(born, lifetime, jitter, random.Random(seed))
    assert born + lifetime * (1 - jitter) - 1e-6 * max(born, 1) <= at <= born + lifetime + 1e-6
    assert expires_at(born, None, jitter, random.Random(seed)) == math.inf


def test_needs_ping() -> None:
    assert not needs_ping(100.0, 0.0, None)
    assert needs_ping(100.0, 70.0, 30.0)
    assert not needs_ping(100.0, 71.0, 30.0)


@given(
    processes=st.integers(1, 500),
    max_size=st.integers(1, 200),
    max_connections=st.integers(1, 10_000),
    server_reserved=st.integers(0, 10),
    reserve=st.integers(0, 100),
)
def test_capacity_report(
    processes: int, max_size: int, max_connections: int, server_reserved: int, reserve: int
) -> None:
    r = capacity_report(
        processes=processes,
        max_size=max_size,
        max_connections=max_connections,
        server_reserved=server_reserved,
        reserve=reserve,
    )
    assert r.ok == (processes * max_size <= max_connections - server_reserved - reserve)
    assert ("does NOT fit" in r.message) == (not r.ok)


def test_pool_exhausted_is_in_the_tree_and_pickles() -> None:
    e = PoolExhausted("db", size=10, waiters=3, timeout=0.5)
    assert isinstance(e, errors.ScalekitError) and isinstance(e, TimeoutError)
    assert "all 10 connection(s)" in str(e) and "3 caller(s) waiting" in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert (again.pool, again.size, again.waiters, again.timeout) == ("db", 10, 3, 0.5)


def test_subpackage_all_is_importable() -> None:
    from scalekit import batching, pools

    for module in (pools, batching):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_pools_and_batching_import_without_drivers() -> None:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["redis"] = None
        sys.modules["asyncpg"] = None
        sys.modules["pydantic_settings"] = None
        import scalekit.pools, scalekit.batching
        from scalekit import MissingDependency
        for build, extra in [
            (lambda: asyncio.run(scalekit.pools.PgPool("postgresql://h/db").open()), "postgres"),
            (lambda: scalekit.pools.redis_client("redis://h"), "redis"),
            (lambda: scalekit.pools.PoolSettings.from_env(), "settings"),
        ]:
            try:
                build()
            except MissingDependency as exc:
                assert f"[{extra}]" in str(exc), exc
            else:
                raise AssertionError(extra)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_pgpool_rejects_bad_arguments() -> None:
    from scalekit.pools import PgPool

    with pytest.raises(ConfigurationError, match="connection_class"):
        PgPool("postgresql://h/db", connection_class=object)
    with pytest.raises(ConfigurationError, match="needs a postgresql:// URL"):
        PgPool("redis://h/0")
    for bad in (0, math.nan, -1, True, 1e16):
        with pytest.raises(ConfigurationError, match="timeout must"):
            PgPool("postgresql://h/db").acquire(timeout=bad)
