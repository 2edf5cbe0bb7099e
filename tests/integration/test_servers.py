"""The real-server fixtures themselves: Redis, Redis Cluster, PostgreSQL (tests/servers.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
import redis.cluster
from servers import CLUSTER_SLOTS, PostgresMethod, PostgresServer, RedisServer, ServerUnavailable


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or 6379


# --------------------------------------------------------------------------- Redis


@pytest.mark.redis
def test_redis_answers_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.redis
def test_fresh_redis_url_starts_empty(redis_url: str, request: pytest.FixtureRequest) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("scalekit:test:leftover", b"1")
        fresh = request.getfixturevalue("fresh_redis_url")
        assert fresh == redis_url
        assert client.dbsize() == 0
    finally:
        client.close()


@pytest.mark.redis
def test_redis_stop_then_restart_comes_back_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=1)
    try:
        client.set("k", "v")
        redis_server.stop()
        redis_server.stop()  # idempotent
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()

        redis_server.restart()
        assert redis_server.port == port
        assert redis_server.url.endswith(f":{port}/0")
        assert client.ping() is True  # the same client reconnects
        assert client.get("k") is None  # no persistence: a restart starts empty

        redis_server.stop(kill=True)  # SIGKILL, as a crash would
        redis_server.restart()
        assert redis_server.port == port
        assert client.ping() is True
    finally:
        client.close()


# --------------------------------------------------------------------------- Redis Cluster


@pytest.mark.cluster
def test_cluster_is_ok_with_three_masters_covering_all_slots(redis_cluster_url: str) -> None:
    assert redis_cluster_url.startswith("redis+cluster://")
    host, port = _host_port(redis_cluster_url)
    seed = redis.Redis(host=host, port=port, decode_responses=True)
    try:
        info = seed.cluster("INFO")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == CLUSTER_SLOTS
        assert int(info["cluster_slots_ok"]) == CLUSTER_SLOTS

        slots = seed.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        owners = {(str(entry[2][0]), int(entry[2][1])) for entry in slots}
        covered = sorted(s for entry in slots for s in range(int(entry[0]), int(entry[1]) + 1))
        assert covered == list(range(CLUSTER_SLOTS))
        if not os.environ.get("SCALEKIT_TEST_REDIS_CLUSTER_URL"):  # our own: exactly 3
            assert len(owners) == 3
            assert int(info["cluster_known_nodes"]) == 3
    finally:
        seed.close()


@pytest.mark.cluster
def test_cluster_client_sets_and_gets_keys_on_every_node(redis_cluster_url: str) -> None:
    host, port = _host_port(redis_cluster_url)
    client = redis.cluster.RedisCluster(host=host, port=port, decode_responses=True)
    try:
        masters = {(n.host, n.port) for n in client.get_primaries()}  # type: ignore[no-untyped-call]
        assert len(masters) >= 2
        by_node: dict[tuple[str, int], str] = {}
        for i in range(1000):
            key = f"scalekit:test:spread:{i}"
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            by_node.setdefault((node.host, node.port), key)
            if len(by_node) == len(masters):
                break
        assert set(by_node) == masters  # the keys land on different nodes

        for (node_host, node_port), key in by_node.items():
            assert client.set(key, f"{node_host}:{node_port}") is True
            assert client.get(key) == f"{node_host}:{node_port}"
            # the key really lives on that node: a plain connection to it finds it
            direct = redis.Redis(host=node_host, port=node_port, decode_responses=True)
            try:
                assert direct.get(key) == f"{node_host}:{node_port}"
            finally:
                direct.close()
        client.delete(*by_node.values())
    finally:
        client.close()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
async def test_postgres_answers_select_1(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


@pytest.fixture(params=["pg_ctl", "pgserver"])
def postgres_by_method(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer]:
    """A private PostgreSQL started one specific way (both ways must work, also as root)."""
    method: PostgresMethod = request.param
    try:
        server = PostgresServer(tmp_path_factory.mktemp(f"pg-{method}"), method=method)
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL via {method} is not available here: {exc}")
    with server:
        yield server


@pytest.mark.postgres
async def test_postgres_each_method_serves_and_restarts(
    postgres_by_method: PostgresServer,
) -> None:
    server = postgres_by_method
    assert server.dsn.startswith("postgresql://")
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        await conn.execute("create table t (x int); insert into t values (42)")
    finally:
        await conn.close()

    dsn = server.dsn
    await asyncio.to_thread(server.restart)
    assert server.dsn == dsn  # same port / socket after a restart
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval("select x from t") == 42  # the data survived
    finally:
        await conn.close()
