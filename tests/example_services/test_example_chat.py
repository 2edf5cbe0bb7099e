"""The chat service on the suite's real PostgreSQL, with its primitives on memory and
on real Redis, and with them switched off (``primitives=False``).

Time is a FakeClock (limits, cache lifetimes, the breaker's open period, the retry
waits); the one real wait is the LLM timeout test's 50 ms per timed-out attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from examples.chat_service import (
    ChatLimits,
    ChatService,
    ExtractionItem,
    FakeLLM,
    FakeMemoryExtractor,
    create_app,
    install,
    run_workload,
    seed,
)
from examples.common import ServiceConfig
from scalekit.sampling import Cap
from scalekit.testing import FakeClock
from tests.servers import RedisServer

pytestmark = pytest.mark.postgres

LONG = "I would like to understand how the service copes when traffic grows ten times."
SHORT = "thanks!"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def redis(request: pytest.FixtureRequest) -> str | None:
    """Where the primitives keep their state: in process, or a real (flushed) Redis."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("fresh_redis_url")
    return url


@pytest.fixture
async def db(example_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(example_dsn)
    try:
        await install(conn)
        await seed(conn, users=50, seed=3)
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def serve(
    app: FastAPI, client: tuple[str, int] = ("10.0.0.1", 5000)
) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app), client_of(app, client) as c:
        yield c


def client_of(app: FastAPI, client: tuple[str, int]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


def service(app: FastAPI) -> ChatService:
    svc: ChatService = app.state.chat
    return svc


async def user_of(db: asyncpg.Connection, tier: str) -> int:
    """A user of ``tier`` with an active subscription iff paid."""
    uid: int = await db.fetchval(
        "SELECT u.id FROM users u JOIN subscriptions s ON s.user_id = u.id"
        " WHERE u.tier = $1 AND s.status = $2 ORDER BY u.id LIMIT 1",
        tier,
        "active" if tier == "paid" else "none",
    )
    return uid


async def mature_conversation(db: asyncpg.Connection, user: int) -> int:
    cid: int = await db.fetchval(
        "INSERT INTO conversations (user_id, title, message_count) VALUES ($1, 'old', 10)"
        " RETURNING id",
        user,
    )
    return cid


def as_user(user: int) -> dict[str, str]:
    return {"X-User-Id": str(user)}


async def send(
    c: httpx.AsyncClient, user: int | None, body: str = "hello", conversation: int | None = None
) -> httpx.Response:
    payload: dict[str, Any] = {"body": body}
    if conversation is not None:
        payload["conversation_id"] = conversation
    return await c.post("/messages", json=payload, headers={} if user is None else as_user(user))


# -- seed -----------------------------------------------------------------------------


async def test_seed_fills_the_shared_tables_deterministically(example_dsn: str) -> None:
    conn = await asyncpg.connect(example_dsn)
    try:
        await install(conn)
        await install(conn)  # idempotent

        async def fingerprint() -> tuple[Any, ...]:
            return tuple(
                await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM users),"
                    " (SELECT count(*) FROM users WHERE tier = 'paid'),"
                    " (SELECT count(*) FROM subscriptions WHERE status = 'active'),"
                    " (SELECT count(*) FROM llm_config),"
                    " (SELECT count(*) FROM conversations),"
                    " (SELECT min(message_count) FROM conversations),"
                    " (SELECT max(message_count) FROM conversations),"
                    " (SELECT count(*) FROM messages),"
                    " (SELECT count(*) FROM messages WHERE length(body) < 50),"
                    " (SELECT md5(string_agg(body, '|' ORDER BY id)) FROM messages)"
                )
            )

        await seed(conn, users=1000, seed=11)
        first = await fingerprint()
        users, paid, active, configs, _, least, most, msgs, short, _digest = first
        assert users == 1000 and configs == 1
        assert 250 <= paid <= 350  # about 30 % paid
        assert active == paid  # every paid user has an active subscription
        assert least >= 1 and most <= 50 and most > 30  # varied maturity
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM conversations c WHERE c.message_count <>"
            " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
        )
        assert mismatched == 0
        assert 0 < short < msgs  # varied lengths, on both sides of the extraction gate

        async def reseed(s: int) -> tuple[Any, ...]:
            await conn.execute(
                "TRUNCATE chat_memories, messages, conversations, subscriptions, llm_config,"
                " users RESTART IDENTITY CASCADE"
            )
            await seed(conn, users=1000, seed=s)
            return await fingerprint()

        assert await reseed(11) == first
        assert await reseed(12) != first
        with pytest.raises(ValueError, match="users"):
            await seed(conn, users=0, seed=1)
    finally:
        await conn.close()


# -- rate limits ------------------------------------------------------------------------


async def test_free_users_get_20_a_minute_then_429_with_retry_after(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    clock = FakeClock()
    app = create_app(ServiceConfig(database_url=example_dsn, redis_url=redis, clock=clock))
    free = await user_of(db, "free")
    async with serve(app) as c:
        statuses = [(await send(c, free)).status_code for _ in range(20)]
        assert statuses == [200] * 20
        denied = await send(c, free)
        assert denied.status_code == 429
        retry_after = int(denied.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert '"free"' in denied.headers["RateLimit-Policy"]
        clock.advance(retry_after)  # exactly what the client was told to wait
        assert (await send(c, free)).status_code == 200


async def test_paid_users_get_more_and_every_tier_meets_the_hourly_window(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    clock = FakeClock()
    app = create_app(ServiceConfig(database_url=example_dsn, clock=clock))
    paid = await user_of(db, "paid")
    async with serve(app) as c:
        statuses = [(await send(c, paid)).status_code for _ in range(61)]
        # 100/minute for paid, but 60/hour for everyone: the hour stops the 61st
        assert statuses == [200] * 60 + [429]
        clock.advance(61)  # a new minute is not a new hour
        assert (await send(c, paid)).status_code == 429


async def test_anonymous_senders_are_limited_per_address_never_unlimited(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    clock = FakeClock()
    llm = FakeLLM()
    app = create_app(ServiceConfig(database_url=example_dsn, redis_url=redis, clock=clock), llm=llm)
    async with serve(app, client=("10.0.0.1", 5000)) as first:
        statuses = [(await send(first, None)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert (await send(first, None)).json()["detail"] == "Too Many Requests"
        async with client_of(app, ("10.0.0.2", 6000)) as second:
            assert (await send(second, None)).status_code == 200
    assert llm.calls == 6  # a refused guest never reached the model


async def test_images_are_limited_to_3_a_day(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    clock = FakeClock()
    llm = FakeLLM()
    app = create_app(ServiceConfig(database_url=example_dsn, redis_url=redis, clock=clock), llm=llm)
    paid = await user_of(db, "paid")
    async with serve(app) as c:

        async def image() -> httpx.Response:
            return await c.post("/images", json={"prompt": "a cat"}, headers=as_user(paid))

        assert [(await image()).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert llm.image_calls == 3
        clock.advance(3600)
        assert (await image()).status_code == 429  # a day, not an hour
        clock.advance(86400)
        assert (await image()).status_code == 200


async def test_a_hostile_user_header_is_a_401_not_a_500(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    app = create_app(ServiceConfig(database_url=example_dsn, clock=FakeClock()))
    hostile = ["abc", "-1", "0", "1e3", "\u0663", "9" * 30, str(2**63), "", " 5"]
    async with serve(app) as c:
        for header in hostile:
            headers = {b"X-User-Id": header.encode("utf-8")}
            r = await c.post("/messages", json={"body": "hi"}, headers=headers)
            assert r.status_code == 401, header
            assert (
                await c.post("/images", json={"prompt": "x"}, headers=headers)
            ).status_code == 401
            assert (await c.get("/subscription", headers=headers)).status_code == 401
        # text PostgreSQL cannot store is refused before it reaches it
        free = as_user(await user_of(db, "free"))
        assert (await send(c, await user_of(db, "free"), "a\x00b")).status_code == 422
        assert (await c.post("/images", json={"prompt": "\x00"}, headers=free)).status_code == 422
        bad = {"model": "m\x00", "temperature": 0.5, "system_prompt": ""}
        assert (await c.put("/llm-config", json=bad)).status_code == 422
        assert (await c.put("/llm-config", json={**bad, "temperature": 9})).status_code == 422
        unknown = as_user(999_999)
        assert (await c.get("/subscription", headers=unknown)).status_code == 401
        assert (await c.post("/messages", json={"body": "hi"}, headers=unknown)).status_code == 401


# -- cache and invalidation by tag ----------------------------------------------------------


async def test_cached_reads_are_invalidated_by_tag_on_the_next_read(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    clock = FakeClock()
    app = create_app(ServiceConfig(database_url=example_dsn, redis_url=redis, clock=clock))
    free = await user_of(db, "free")
    cid = await mature_conversation(db, free)
    async with serve(app) as c:
        h = as_user(free)
        assert (await c.get("/llm-config")).json()["model"] == "fake-gpt-1"
        assert (await c.get(f"/conversations/{cid}", headers=h)).json()["title"] == "old"
        assert (await c.get("/subscription", headers=h)).json()["status"] == "none"

        # a change behind the service's back is not seen while the entry is fresh ...
        await db.execute("UPDATE llm_config SET model = 'sneaky'")
        await db.execute("UPDATE conversations SET title = 'sneaky' WHERE id = $1", cid)
        assert (await c.get("/llm-config")).json()["model"] == "fake-gpt-1"
        assert (await c.get(f"/conversations/{cid}", headers=h)).json()["title"] == "old"

        # ... and a change through the service is seen on the very next read
        new = {"model": "fake-gpt-2", "temperature": 0.2, "system_prompt": "be brief"}
        assert (await c.put("/llm-config", json=new)).json()["model"] == "fake-gpt-2"
        assert (await c.get("/llm-config")).json()["model"] == "fake-gpt-2"
        renamed = await c.patch(f"/conversations/{cid}", json={"title": "new"}, headers=h)
        assert renamed.json()["title"] == "new"
        assert (await c.get(f"/conversations/{cid}", headers=h)).json()["title"] == "new"

        # the subscription decides the tier: an upgrade lifts the limit at once
        for _ in range(20):
            assert (await send(c, free, conversation=cid)).status_code == 200
        assert (await send(c, free, conversation=cid)).status_code == 429
        up = await c.put("/subscription", json={"status": "active", "tier": "paid"}, headers=h)
        assert up.json() == {"user_id": free, "status": "active", "tier": "paid"}
        sent = await send(c, free, conversation=cid)
        assert sent.status_code == 200 and sent.json()["tier"] == "paid"

        # and lifetimes still end: 5 minutes for conversations
        await db.execute("UPDATE conversations SET title = 'later' WHERE id = $1", cid)
        clock.advance(301)
        assert (await c.get(f"/conversations/{cid}", headers=h)).json()["title"] == "later"
        stats = service(app).cache
        assert stats is not None and stats.stats().hits > 0


async def test_another_users_conversation_is_a_404(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    app = create_app(ServiceConfig(database_url=example_dsn, clock=FakeClock()))
    owner, other = await user_of(db, "free"), await user_of(db, "paid")
    cid = await mature_conversation(db, owner)
    async with serve(app) as c:
        assert (await c.get(f"/conversations/{cid}", headers=as_user(other))).status_code == 404
        assert (await send(c, other, conversation=cid)).status_code == 404
        assert (await send(c, owner, conversation=2**62)).status_code == 404


# -- sampled extraction ----------------------------------------------------------------------


async def test_extraction_is_sampled_and_skips_short_messages_and_young_conversations(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    extractor = FakeMemoryExtractor()
    app = create_app(
        ServiceConfig(database_url=example_dsn, clock=FakeClock()), extractor=extractor
    )
    paid = await user_of(db, "paid")
    cid = await mature_conversation(db, paid)
    async with serve(app) as c:
        young = await send(c, paid, LONG)  # a new conversation: 2 messages
        assert young.json()["extraction"].startswith("skipped by gate 'mature'")
        short = await send(c, paid, SHORT, conversation=cid)
        assert short.json()["extraction"].startswith("skipped by gate 'long_enough'")
        answers = [
            (await send(c, paid, f"{LONG} ({i})", conversation=cid)).json() for i in range(50)
        ]
        await service(app).drain()
    scheduled = [a["message_id"] for a in answers if a["extraction"] == "scheduled"]
    assert extractor.calls == len(scheduled)
    assert sorted(item.message_id for item in extractor.items) == sorted(scheduled)
    # 20 % rising to 30 % with maturity (12..110 messages here): about 14 of 50
    assert 5 <= len(scheduled) <= 25
    assert all(len(item.body) >= 50 and item.message_count >= 3 for item in extractor.items)
    stored = await db.fetchval("SELECT count(*) FROM chat_memories WHERE user_id = $1", paid)
    assert stored == len(scheduled)


async def test_extraction_decisions_are_stable_for_the_same_messages(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    """The maturity sampler draws from the message id, not a random generator: the
    same message gets the same decision on every replica and every run."""
    decisions = []
    paid = await user_of(db, "paid")
    for _ in range(2):
        app = create_app(ServiceConfig(database_url=example_dsn, clock=FakeClock()))
        async with app.router.lifespan_context(app):
            pipeline = service(app).extraction
            assert pipeline is not None
            items = [ExtractionItem(paid, 1, m, LONG, 20) for m in range(1, 400)]
            decisions.append([(await pipeline.adecide(it)).sampled for it in items[:90]])
    assert decisions[0] == decisions[1]
    assert 0 < sum(decisions[0]) < 90


async def test_the_daily_extraction_budget_caps_each_user(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    clock = FakeClock()
    extractor = FakeMemoryExtractor()
    # every eligible message sampled, so the budget is what stops them
    limits = ChatLimits(extraction_rate=(1.0, 1.0), extraction_budget="3/day")
    app = create_app(
        ServiceConfig(database_url=example_dsn, redis_url=redis, clock=clock),
        extractor=extractor,
        limits=limits,
    )
    paid, free = await user_of(db, "paid"), await user_of(db, "free")
    pc, fc = await mature_conversation(db, paid), await mature_conversation(db, free)
    async with serve(app) as c:
        answers = [(await send(c, paid, LONG, conversation=pc)).json() for _ in range(5)]
        assert [a["extraction"] for a in answers[:3]] == ["scheduled"] * 3
        assert all("cap 'daily_budget'" in a["extraction"] for a in answers[3:])
        # another user's budget is their own
        assert (await send(c, free, LONG, conversation=fc)).json()["extraction"] == "scheduled"
        clock.advance(86400)
        assert (await send(c, paid, LONG, conversation=pc)).json()["extraction"] == "scheduled"
        await service(app).drain()
    assert extractor.calls == 5


async def test_the_default_budget_is_100_a_day(db: asyncpg.Connection, example_dsn: str) -> None:
    app = create_app(ServiceConfig(database_url=example_dsn, clock=FakeClock()))
    async with app.router.lifespan_context(app):
        pipeline = service(app).extraction
        assert pipeline is not None
        cap = pipeline.stages[-1]
        assert isinstance(cap, Cap) and cap.name == "daily_budget"
        # straight at the cap: a sampler in front would only thin the stream
        sampled = [(await cap.adecide(ExtractionItem(1, 1, m, LONG, 30)))[0] for m in range(150)]
        assert sum(sampled) == 100 and sampled[:100] == [True] * 100


# -- the LLM behind breaker, retry budget and timeout ----------------------------------------


async def test_an_llm_outage_opens_the_breaker_and_answers_503_fast(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    clock = FakeClock()
    llm = FakeLLM()
    app = create_app(ServiceConfig(database_url=example_dsn, clock=clock), llm=llm)
    free = await user_of(db, "free")
    async with serve(app) as c:
        assert (await send(c, free)).status_code == 200
        llm.down = True
        failed = [await send(c, free) for _ in range(2)]
        assert [r.status_code for r in failed] == [503, 503]
        # 3 attempts for the first message, then the 5th failure opened the breaker
        assert llm.calls == 1 + 5
        assert service(app).breaker is not None
        assert service(app).breaker.state == "open"  # type: ignore[union-attr]
        rejected = [await send(c, free) for _ in range(20)]
        assert {r.status_code for r in rejected} == {503}
        assert all(1 <= int(r.headers["Retry-After"]) <= 30 for r in rejected)
        assert llm.calls == 6  # the open breaker answered without calling the model
        # none of the failed messages counted against the user's 20/minute
        llm.down = False
        clock.advance(31)  # the breaker lets a probe through
        assert [(await send(c, free)).status_code for _ in range(19)] == [200] * 19
        assert service(app).breaker.state == "closed"  # type: ignore[union-attr]


async def test_a_hanging_llm_times_out_then_the_breaker_answers_without_waiting(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    llm = FakeLLM()
    limits = ChatLimits(llm_timeout=0.05)
    app = create_app(
        ServiceConfig(database_url=example_dsn, clock=FakeClock()), llm=llm, limits=limits
    )
    paid = await user_of(db, "paid")
    async with serve(app) as c:
        llm.hanging = True
        timed_out = [(await send(c, paid)).status_code for _ in range(5)]
        assert timed_out == [504] * 5  # a timeout is not retried
        # then 503 at once: a call that reached the hanging model would be a 504
        rejected = [await send(c, paid) for _ in range(10)]
        assert [r.status_code for r in rejected] == [503] * 10
        assert all("Retry-After" in r.headers for r in rejected)
        assert llm.calls == 5
    # a failed message left nothing behind (no conversation without messages)
    empty = await db.fetchval(
        "SELECT count(*) FROM conversations c WHERE NOT EXISTS"
        " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)"
    )
    assert empty == 0


async def test_retries_stay_within_the_budget(db: asyncpg.Connection, example_dsn: str) -> None:
    """A flaky model (every call fails) with the breaker out of the way: retries
    stop when the budget (10 % of calls plus a floor of 1/s over 10 s) is spent."""
    llm = FakeLLM()
    limits = ChatLimits(breaker_failures=10_000)
    app = create_app(
        ServiceConfig(database_url=example_dsn, clock=FakeClock()), llm=llm, limits=limits
    )
    paid = await user_of(db, "paid")
    async with serve(app) as c:
        llm.down = True
        assert {(await send(c, paid)).status_code for _ in range(40)} == {503}
    retries = llm.calls - 40
    assert 0 < retries <= 15  # not 40 x 2


# -- primitives=False: the same endpoints without any of it --------------------------------


async def test_without_primitives_nothing_is_limited_cached_sampled_or_guarded(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    llm, extractor = FakeLLM(), FakeMemoryExtractor()
    config = ServiceConfig(database_url=example_dsn, primitives=False)
    app = create_app(config, llm=llm, extractor=extractor)
    svc = service(app)
    assert svc.cache is None and svc.messages is None and svc.breaker is None
    free = await user_of(db, "free")
    cid = await mature_conversation(db, free)
    async with serve(app) as c:
        assert {(await send(c, free, SHORT, conversation=cid)).status_code for _ in range(25)} == {
            200
        }
        assert {(await send(c, None)).status_code for _ in range(10)} == {200}
        images = [await c.post("/images", json={"prompt": "x"}, headers=as_user(free))]
        images += [await c.post("/images", json={"prompt": "x"}, headers=as_user(free))]
        images += [await c.post("/images", json={"prompt": "x"}, headers=as_user(free))]
        images += [await c.post("/images", json={"prompt": "x"}, headers=as_user(free))]
        assert {r.status_code for r in images} == {200}
        # every read queries: a change behind the service's back is seen at once
        await db.execute("UPDATE llm_config SET model = 'direct'")
        assert (await c.get("/llm-config")).json()["model"] == "direct"
        # every message extracted, short ones too
        await svc.drain()
        assert extractor.calls == 25
        # the model called directly: an outage costs a call per message, no breaker
        llm.down = True
        before = llm.calls
        assert {(await send(c, free)).status_code for _ in range(10)} == {503}
        assert llm.calls == before + 10


# -- the workload, /health and /metrics ---------------------------------------------------------


async def test_the_workload_reports_what_the_primitives_save(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    users = [r[0] for r in await db.fetch("SELECT id FROM users ORDER BY id")]
    paid = {r[0] for r in await db.fetch("SELECT id FROM users WHERE tier = 'paid'")}
    figures = {}
    for primitives in (False, True):
        llm, extractor = FakeLLM(), FakeMemoryExtractor()
        config = ServiceConfig(database_url=example_dsn, primitives=primitives)
        app = create_app(config, llm=llm, extractor=extractor)
        async with serve(app) as c:
            result = await run_workload(
                c, user_ids=users, paid_ids=paid, requests=200, seed=5, llm=llm, extractor=extractor
            )
        assert result.requests == sum(result.statuses.values()) >= 200
        assert not set(result.statuses) - {200, 429}
        assert result.figures["llm_calls"] == llm.calls  # counted by the fake, not assumed
        assert result.figures["extraction_calls"] == extractor.calls
        figures[primitives] = result.figures
    off, on = figures[False], figures[True]
    assert off["rate_limited"] == 0 and on["rate_limited"] > 0
    assert on["extraction_calls"] < 0.5 * off["extraction_calls"]
    assert on["llm_calls"] < off["llm_calls"]
    assert "cache_hit_ratio" not in off and 0.5 < on["cache_hit_ratio"] <= 1.0

    # the figures follow the workload: a smaller one gives smaller counts
    llm, extractor = FakeLLM(), FakeMemoryExtractor()
    app = create_app(ServiceConfig(database_url=example_dsn, primitives=False), llm=llm)
    async with serve(app) as c:
        small = await run_workload(
            c, user_ids=users, paid_ids=paid, requests=60, seed=5, llm=llm, extractor=None
        )
    assert 0 < small.figures["llm_calls"] < off["llm_calls"]


async def test_health_and_metrics_are_mounted(
    db: asyncpg.Connection, example_dsn: str, redis: str | None
) -> None:
    app = create_app(ServiceConfig(database_url=example_dsn, redis_url=redis, clock=FakeClock()))
    async with serve(app) as c:
        assert (await c.get("/health/live")).status_code == 200
        ready = await c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        await c.get("/llm-config")
        await c.get("/llm-config")
        metrics = await c.get("/metrics/")
        assert metrics.status_code == 200
        assert 'scalekit_cache_hits_total{cache="chat_service"' in metrics.text
        assert 'scalekit_breaker_calls_total{breaker="chat-llm"}' in metrics.text


# -- Redis killed mid-run ----------------------------------------------------------------------


@pytest.mark.redis
async def test_with_redis_killed_the_service_keeps_answering_and_limiting(
    db: asyncpg.Connection, example_dsn: str, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    extractor = FakeMemoryExtractor()
    limits = ChatLimits(extraction_rate=(1.0, 1.0))  # every eligible message reaches the cap
    config = ServiceConfig(database_url=example_dsn, redis_url=redis_server.url, clock=clock)
    app = create_app(config, extractor=extractor, limits=limits)
    free = await user_of(db, "free")
    cid = await mature_conversation(db, free)
    async with serve(app) as c:
        first = await send(c, free, LONG, conversation=cid)
        assert first.json()["extraction"] == "scheduled"
        assert (await c.get("/llm-config")).status_code == 200
        await service(app).drain()

        redis_server.stop(kill=True)  # SIGKILL, as a crash would

        # limits go on in this process (never unlimited), reads go to the database
        statuses = [(await send(c, free, LONG, conversation=cid)) for _ in range(21)]
        assert [r.status_code for r in statuses] == [200] * 20 + [429]
        # no extraction runs unbounded while its budget cannot be counted
        assert not any(r.json()["extraction"] == "scheduled" for r in statuses[:20])
        new = {"model": "while-down", "temperature": 0.1, "system_prompt": ""}
        assert (await c.put("/llm-config", json=new)).status_code == 200
        assert (await c.get("/llm-config")).json()["model"] == "while-down"
        ready = await c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["failed"]
    assert extractor.calls == 1
