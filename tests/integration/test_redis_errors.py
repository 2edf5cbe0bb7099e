"""The one error mapping: data errors about a key vs. backend outages, on a real server."""

from __future__ import annotations

import asyncio

import pytest
import redis

from scalekit.backends import RedisBackend
from scalekit.backends._errors import classify_redis_error, map_redis_errors
from scalekit.backends._guard import BackendGuard
from scalekit.backends._lua import LuaScript
from scalekit.errors import BackendDataError, BackendError
from scalekit.testing import FakeClock

_INCR = "return redis.call('INCRBY', KEYS[1], 1)"
INCR = LuaScript("t_incr", _INCR, __import__("hashlib").sha1(_INCR.encode()).hexdigest())


def test_wrongtype_and_script_errors_are_data_errors(fresh_redis_url: str) -> None:
    backend = RedisBackend(fresh_redis_url)
    client = redis.Redis.from_url(fresh_redis_url)
    try:
        client.rpush("k:list", "x")
        client.set("k:garbage", "not a number")
        with pytest.raises(BackendDataError) as info:
            backend.evalsha(INCR, ["k:list"], [])
        assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
        with pytest.raises(BackendDataError):
            backend.evalsha(INCR, ["k:garbage"], [])
        # another key is unaffected
        assert backend.evalsha(INCR, ["k:ok"], []) == 1
    finally:
        client.close()
        backend.close()


def test_async_data_error(fresh_redis_url: str) -> None:
    async def main() -> None:
        backend = RedisBackend(fresh_redis_url)
        client = redis.asyncio.Redis.from_url(fresh_redis_url)
        try:
            await client.hset("k:hash", "a", "1")
            with pytest.raises(BackendDataError):
                await backend.aevalsha(INCR, ["k:hash"], [])
            assert await backend.aevalsha(INCR, ["k:fine"], []) == 1
        finally:
            await client.aclose()
            await backend.aclose()

    asyncio.run(main())


def test_connection_failure_is_a_backend_error() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0", connect_timeout=0.05)
    with pytest.raises(BackendError) as info:
        backend.evalsha(INCR, ["k"], [])
    assert not isinstance(info.value, BackendDataError)
    backend.close()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("WRONGTYPE Operation against a key holding the wrong kind of value", BackendDataError),
        ("ERR value is not an integer or out of range", BackendDataError),
        ("ERR user_script:3: attempt to compare nil with number", BackendDataError),
        ("LOADING Redis is loading the dataset in memory", BackendError),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL", BackendError),
        ("CLUSTERDOWN The cluster is down", BackendError),
        ("MISCONF Redis is configured to save RDB snapshots", BackendError),
    ],
)
def test_classification(reply: str, kind: type[Exception]) -> None:
    mapped = classify_redis_error(redis.exceptions.ResponseError(reply), "redis://x")
    assert type(mapped) is kind


def test_classification_of_driver_classes() -> None:
    ex = redis.exceptions
    for exc in (
        ex.ConnectionError("x"),
        ex.TimeoutError("x"),
        ex.ReadOnlyError("x"),
        ex.OutOfMemoryError("x"),
        ConnectionRefusedError(),
    ):
        assert type(classify_redis_error(exc, "w")) is BackendError
    assert classify_redis_error(ValueError("x"), "w") is None
    with pytest.raises(redis.exceptions.NoScriptError), map_redis_errors("w"):
        raise redis.exceptions.NoScriptError("NOSCRIPT")
    with pytest.raises(KeyError), map_redis_errors("w"):
        raise KeyError("not the driver's")


def test_guard_call_trips_on_outage_only() -> None:
    clock = FakeClock()
    guard = BackendGuard("g", 5.0, clock.now)
    seen: list[object] = []

    def outage() -> int:
        raise BackendError("down")

    def data() -> int:
        raise BackendDataError("bad key")

    def degrade(exc: BackendError | None) -> int:
        seen.append(exc)
        return -1

    with pytest.raises(BackendDataError):
        guard.call(data, degrade)
    assert guard.errors == 0 and not guard.skip()
    assert guard.call(lambda: 7, degrade) == 7
    assert guard.call(outage, degrade) == -1
    assert guard.errors == 1 and isinstance(seen[-1], BackendError)
    calls: list[int] = []
    assert guard.call(lambda: calls.append(1) or 1, degrade) == -1  # cooling down
    assert calls == [] and seen[-1] is None
    clock.advance(5.0)
    assert guard.call(lambda: 3, degrade) == 3  # the probe succeeds
    assert not guard.skip()


def test_guard_acall() -> None:
    clock = FakeClock()
    guard = BackendGuard("g", 1.0, clock.now)

    async def down() -> int:
        raise BackendError("down")

    async def bad() -> int:
        raise BackendDataError("bad")

    async def ok() -> int:
        return 1

    async def main() -> None:
        assert await guard.acall(down, lambda e: 0) == 0
        assert await guard.acall(ok, lambda e: 0) == 0  # skipped
        clock.advance(1.0)
        with pytest.raises(BackendDataError):
            await guard.acall(bad, lambda e: 0)
        assert not guard.skip()  # the data error proved the backend healthy
        assert await guard.acall(ok, lambda e: 0) == 1

    asyncio.run(main())


def test_execute_maps_errors(fresh_redis_url: str) -> None:
    backend = RedisBackend(fresh_redis_url)
    try:
        assert backend.execute("SET", "k:s", "v") in (True, b"OK")
        assert backend.execute("GET", "k:s") == b"v"
        with pytest.raises(BackendDataError):
            backend.execute("LPUSH", "k:s", "x")

        async def main() -> None:
            assert await backend.aexecute("GET", "k:s") == b"v"
            with pytest.raises(BackendDataError):
                await backend.aexecute("INCR", "k:s")
            await backend.aclose()

        asyncio.run(main())
    finally:
        backend.close()


def test_guard_call_resets_on_a_data_error_and_decides_again() -> None:
    clock = FakeClock()
    guard = BackendGuard("g", 5.0, clock.now)
    state = {"corrupt": True, "resets": 0}

    def fn() -> str:
        if state["corrupt"]:
            raise BackendDataError("WRONGTYPE")
        return "fresh"

    def reset(exc: BackendDataError) -> None:
        assert "WRONGTYPE" in str(exc)
        state["resets"] += 1
        state["corrupt"] = False

    assert guard.call(fn, lambda e: "degraded", reset) == "fresh"
    assert (guard.corrupt, guard.errors, state["resets"]) == (1, 0, 1)
    # corrupted again as fast as it is reset: this call is degraded, the guard stays healthy
    always = {"resets": 0}

    def still_bad() -> str:
        raise BackendDataError("WRONGTYPE")

    got = guard.call(still_bad, lambda e: "degraded", lambda exc: always.__setitem__("resets", 1))
    assert got == "degraded" and always["resets"] == 1
    assert guard.errors == 0 and not guard.skip()

    async def main() -> None:
        state["corrupt"] = True

        async def afn() -> str:
            return fn()

        async def areset(exc: BackendDataError) -> None:
            reset(exc)

        assert await guard.acall(afn, lambda e: "degraded", areset) == "fresh"

    asyncio.run(main())
    assert guard.corrupt == 3
