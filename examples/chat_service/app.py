"""The chat service: FastAPI on asyncpg (through ``scalekit.pools.PgPool``).

Endpoints (``X-User-Id`` names the caller; without it a request is anonymous):

- ``POST /messages`` ``{"body": ..., "conversation_id": ...}``: send a message, get
  the model's reply. Rate-limited per user and tier; anonymous senders (a guest
  chat, nothing stored) per client address. Reads the caller's subscription, the
  LLM configuration and the conversation's metadata (all cached), calls the LLM
  (breaker, retry budget, timeout), stores both messages in one statement and
  hands the message to the sampled memory extraction (fire-and-forget).
- ``POST /images`` ``{"prompt": ...}``: 3 per day per user (or client address).
- ``GET /conversations``, ``GET/PATCH /conversations/{id}``, ``GET/PUT
  /subscription``, ``GET/PUT /llm-config``: what the cache holds, and the writes
  that invalidate it by tag.
- ``/health`` and ``/metrics`` from :mod:`scalekit.observability`.

``ServiceConfig(primitives=False)`` builds the same endpoints with every primitive
off: no limits, every read queries, every message extracted, the LLM called
directly. The branching happens here, once, in :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from scalekit import DeadlineExceeded, MemoryBackend, RateLimiter, RedisBackend
from scalekit.cache import Cache, RedisCacheBackend, cached
from scalekit.errors import CircuitOpenError
from scalekit.fastapi import install_exception_handlers
from scalekit.observability import PostgresProbe, Probe, RedisProbe, health_app, metrics_app
from scalekit.pools import PgPool, PoolSettings
from scalekit.ratelimit.fastapi import limit
from scalekit.resilience import CircuitBreaker, RetryBudget, retry, timeout
from scalekit.sampling import BackgroundTasks, Cap, Gate, Pipeline, SampleDecision, Weighted, ramp

from ..common import ServiceConfig
from .fakes import ExtractionItem, FakeLLM, FakeMemoryExtractor, LLMUnavailable

__all__ = ["ChatLimits", "ChatService", "create_app"]

log = logging.getLogger("examples.chat_service")

MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatLimits:
    """The numbers of the chat service (the defaults are the production plan's).

    ``messages``: the message limit per tier, several windows each (all must allow
    a message); the ``"anonymous"`` tier applies per client address.
    ``images``: image generations per user (or address). Cache lifetimes in seconds.
    Extraction: messages shorter than ``extraction_min_chars`` or in conversations of
    fewer than ``extraction_min_messages`` messages are skipped; the others are
    sampled at ``extraction_rate[0]`` rising to ``[1]`` with the conversation's
    maturity (``extraction_ramp`` messages), at most ``extraction_budget`` per user.
    ``extraction_concurrency``: extractions running at once (the rest wait).
    The LLM: ``llm_timeout`` seconds per attempt, ``llm_attempts`` attempts within the
    retry budget, the breaker opens after ``breaker_failures`` consecutive failures
    for ``breaker_open_seconds``.
    """

    messages: dict[str, str] = field(
        default_factory=lambda: {
            "free": "20/minute; 60/hour",
            "paid": "100/minute; 60/hour",
            "anonymous": "5/minute; 20/hour",
        }
    )
    images: str = "3/day"
    llm_config_ttl: float = 600.0
    conversation_ttl: float = 300.0
    subscription_ttl: float = 600.0
    extraction_min_chars: int = 50
    extraction_min_messages: int = 3
    extraction_rate: tuple[float, float] = (0.20, 0.30)
    extraction_ramp: tuple[int, int] = (3, 30)
    extraction_budget: str = "100/day"
    extraction_concurrency: int = 4
    llm_timeout: float = 10.0
    llm_attempts: int = 3
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0


# -- the API's shapes ---------------------------------------------------------------


def _no_nul(text: str) -> str:
    if "\x00" in text:  # PostgreSQL text cannot hold it: a 422, not a 500
        raise ValueError("text must not contain NUL characters")
    return text


#: text the database can store
Text = Annotated[str, AfterValidator(_no_nul)]


class Subscription(BaseModel):
    user_id: int
    status: Literal["active", "cancelled", "none"]
    tier: Literal["free", "paid"]

    @property
    def effective_tier(self) -> Literal["free", "paid"]:
        """The tier the limits use: paid only while the subscription is active."""
        return "paid" if self.status == "active" and self.tier == "paid" else "free"


class LLMConfig(BaseModel):
    model: Text = Field(min_length=1, max_length=100)
    temperature: float = Field(ge=0.0, le=2.0)
    system_prompt: Text = Field(max_length=4000)


class Conversation(BaseModel):
    """A conversation's metadata (the message count changes with every message and
    is not part of it: it is read where it is written)."""

    id: int
    user_id: int
    title: str
    created_at: datetime


class SendMessage(BaseModel):
    body: Text = Field(min_length=1, max_length=4000)
    conversation_id: int | None = Field(default=None, ge=1, le=MAX_USER_ID)


class TitleChange(BaseModel):
    title: Text = Field(min_length=1, max_length=200)


class SubscriptionChange(BaseModel):
    status: Literal["active", "cancelled", "none"]
    tier: Literal["free", "paid"]


class ImageRequest(BaseModel):
    prompt: Text = Field(min_length=1, max_length=1000)


UserHeader = Annotated[str | None, Header(alias="X-User-Id")]


def parse_user(raw: str | None) -> int | None:
    """The caller's id from ``X-User-Id`` (``None``: anonymous); anything but a
    positive decimal integer of at most 19 digits is a 401."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 19) or not (
        0 < int(raw) <= MAX_USER_ID
    ):
        raise HTTPException(status_code=401, detail="invalid X-User-Id")
    return int(raw)


async def current_user(x_user_id: UserHeader = None) -> int:
    """The caller (a dependency of the endpoints that need one): 401 when anonymous."""
    user = parse_user(x_user_id)
    if user is None:
        raise HTTPException(status_code=401, detail="X-User-Id required")
    return user


# FastAPI reads endpoint annotations as strings here (postponed evaluation): the
# names they use must be module globals, not locals of create_app
CurrentUser = Annotated[int, Depends(current_user)]


# -- the service --------------------------------------------------------------------


@dataclass(eq=False)
class ChatService:
    """What the endpoints share (``app.state.chat``): the pool once the app started,
    the fakes, and the primitives (``None`` each when ``primitives=False``)."""

    config: ServiceConfig
    limits: ChatLimits
    llm: FakeLLM
    extractor: FakeMemoryExtractor
    pool: PgPool | None = None
    backend: MemoryBackend | RedisBackend | None = None
    cache: Cache | None = None
    messages: RateLimiter | None = None
    images: RateLimiter | None = None
    extraction: Pipeline[ExtractionItem] | None = None
    background: BackgroundTasks | None = None
    breaker: CircuitBreaker | None = None
    retry_budget: RetryBudget | None = None
    #: extractions started without primitives (plain tasks, referenced until done)
    _naive_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def db(self) -> PgPool:
        if self.pool is None:
            raise RuntimeError("the chat service's pool opens in the app's lifespan")
        return self.pool

    # -- loaders: one query each; wrapped by @cached when the primitives are on ----

    async def load_subscription(self, user_id: int) -> Subscription | None:
        row = await self.db.fetchrow(
            "SELECT u.id, coalesce(s.status, 'none') AS status, coalesce(s.tier, 'free') AS tier"
            " FROM users u LEFT JOIN subscriptions s ON s.user_id = u.id WHERE u.id = $1",
            user_id,
        )
        return None if row is None else Subscription(user_id=row[0], status=row[1], tier=row[2])

    async def load_llm_config(self) -> LLMConfig:
        row = await self.db.fetchrow(
            "SELECT model, temperature, system_prompt FROM llm_config WHERE id = 1"
        )
        if row is None:
            raise HTTPException(status_code=503, detail="no LLM configuration")
        return LLMConfig(model=row[0], temperature=row[1], system_prompt=row[2])

    async def load_conversation(self, conversation_id: int) -> Conversation | None:
        row = await self.db.fetchrow(
            "SELECT id, user_id, title, created_at FROM conversations WHERE id = $1",
            conversation_id,
        )
        if row is None:
            return None
        return Conversation(id=row[0], user_id=row[1], title=row[2], created_at=row[3])

    # -- memory extraction ------------------------------------------------------------

    async def _extract(self, item: ExtractionItem) -> None:
        memories = await self.extractor.extract(item)
        if memories:
            async with self.db.acquire() as con:
                await con.executemany(
                    "INSERT INTO chat_memories (user_id, conversation_id, message_id, body)"
                    " VALUES ($1, $2, $3, $4)",
                    [(item.user_id, item.conversation_id, item.message_id, m) for m in memories],
                )

    async def schedule_extraction(self, item: ExtractionItem) -> str:
        """Decide whether ``item`` is worth extracting and start it in the background;
        returns ``"scheduled"`` or why it was not."""
        if self.extraction is None:  # no primitives: every message, a plain task
            task = asyncio.get_running_loop().create_task(self._extract(item))
            self._naive_tasks.add(task)
            task.add_done_callback(self._naive_done)
            return "scheduled"
        decision: SampleDecision = await self.extraction.adecide(item)
        if not decision.sampled:
            return decision.explain()
        assert self.background is not None
        if self.background.spawn(self._extract(item)) is None:
            return "dropped: the extraction queue is full"
        return "scheduled"

    def _naive_done(self, task: asyncio.Task[None]) -> None:
        self._naive_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a memory extraction failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the background extractions started so far."""
        if self.background is not None:
            await self.background.drain()
        while self._naive_tasks:
            await asyncio.gather(*list(self._naive_tasks), return_exceptions=True)


# Storing an exchange: $1 the conversation (its id, or a new one's title), $2 the
# user, $3 the message, $4 the reply; returns (conversation id, message count,
# the user message's id).
_STORE_TAIL = (
    " RETURNING id, message_count),"
    " ins AS ("
    "  INSERT INTO messages (conversation_id, user_id, role, body)"
    "  SELECT conv.id, $2, v.role, v.body FROM conv,"
    "   (VALUES (1, 'user', $3::text), (2, 'assistant', $4::text)) AS v(n, role, body)"
    "  ORDER BY v.n RETURNING id, role)"
    " SELECT conv.id, conv.message_count, (SELECT min(id) FROM ins WHERE role = 'user')"
    " FROM conv"
)
_STORE_IN = (
    "WITH conv AS (UPDATE conversations SET message_count = message_count + 2,"
    " updated_at = now() WHERE id = $1 AND user_id = $2" + _STORE_TAIL
)
_STORE_NEW = (
    "WITH conv AS (INSERT INTO conversations (user_id, title, message_count)"
    " VALUES ($2, $1, 2)" + _STORE_TAIL
)


def _make_backend(config: ServiceConfig) -> MemoryBackend | RedisBackend:
    if config.redis_url is None:
        return MemoryBackend()
    # a clock only in tests (Lua scripts then use it instead of the server's TIME)
    return RedisBackend.from_url(config.redis_url, clock=config.clock)


def create_app(
    config: ServiceConfig,
    *,
    llm: FakeLLM | None = None,
    extractor: FakeMemoryExtractor | None = None,
    limits: ChatLimits | None = None,
) -> FastAPI:
    """The chat service as a FastAPI app; its pool (and Redis clients) open in its
    lifespan. ``llm`` / ``extractor``: the fakes to use (new ones by default);
    ``limits``: the numbers (:class:`ChatLimits` defaults)."""
    svc = ChatService(
        config=config,
        limits=limits or ChatLimits(),
        llm=llm if llm is not None else FakeLLM(),
        extractor=extractor if extractor is not None else FakeMemoryExtractor(),
    )
    lim = svc.limits
    clock = config.clock

    # -- the reads the service makes on every message, cached or not ---------------
    get_subscription: Callable[[int], Awaitable[Subscription | None]] = svc.load_subscription
    get_llm_config: Callable[[], Awaitable[LLMConfig]] = svc.load_llm_config
    get_conversation: Callable[[int], Awaitable[Conversation | None]] = svc.load_conversation

    async def invalidate(*tags: str) -> None:
        if svc.cache is not None:
            await svc.cache.ainvalidate_tags(*tags)

    complete: Callable[[LLMConfig, list[tuple[str, str]], str], Awaitable[str]]

    async def call_llm(cfg: LLMConfig, history: list[tuple[str, str]], text: str) -> str:
        return await svc.llm.complete(
            model=cfg.model,
            temperature=cfg.temperature,
            system_prompt=cfg.system_prompt,
            history=history,
            message=text,
        )

    send_limits: list[Any] = []
    image_limits: list[Any] = []
    if config.primitives:
        backend = svc.backend = _make_backend(config)
        cache_backend: Any = (
            RedisCacheBackend(backend, namespace="chat", clock=clock)
            if isinstance(backend, RedisBackend)
            else "memory://"
        )
        # an invalidation Redis cannot take now is queued, and reads skip Redis until
        # it is applied: a write is never followed by a stale read
        svc.cache = cache = Cache(
            cache_backend, name="chat_service", clock=clock, on_invalidation_error="defer"
        )
        get_subscription = cached(
            ttl=lim.subscription_ttl,
            cache=cache,
            namespace="chat.subscription",
            tags=lambda user_id: (f"subscription:{user_id}",),
            cache_none=True,  # unknown users are asked about too: remember the answer
            negative_ttl=60.0,
        )(svc.load_subscription)
        get_llm_config = cached(
            ttl=lim.llm_config_ttl, cache=cache, namespace="chat.llm_config", tags=("llm_config",)
        )(svc.load_llm_config)
        get_conversation = cached(
            ttl=lim.conversation_ttl,
            cache=cache,
            namespace="chat.conversation",
            tags=lambda conversation_id: (f"conversation:{conversation_id}",),
        )(svc.load_conversation)

        # while Redis is down each process keeps limiting on its own (never unlimited)
        svc.messages = RateLimiter(
            backend,
            lim.messages,
            name="chat-messages",
            clock=clock,
            on_backend_error="local_fallback",
        )
        svc.images = RateLimiter(
            backend, lim.images, name="chat-images", clock=clock, on_backend_error="local_fallback"
        )

        low, high = lim.extraction_rate
        svc.extraction = Pipeline(
            Gate("long_enough", lambda it: len(it.body) >= lim.extraction_min_chars),
            Gate("mature", lambda it: it.message_count >= lim.extraction_min_messages),
            Weighted(
                ramp(
                    lambda it: it.message_count,
                    (lim.extraction_ramp[0], low),
                    (lim.extraction_ramp[1], high),
                ),
                name="maturity",
                key=lambda it: it.message_id,  # the same decision on every replica
            ),
            Cap(
                lim.extraction_budget,
                key=lambda it: str(it.user_id),
                name="daily_budget",
                backend=backend,
                clock=clock,
            ),
            name="chat-extraction",
        )
        svc.background = BackgroundTasks(
            lim.extraction_concurrency, max_pending=1000, name="chat-extraction"
        )

        svc.breaker = CircuitBreaker(
            "chat-llm",
            record=(LLMUnavailable, DeadlineExceeded),
            failure_threshold=lim.breaker_failures,
            open_duration=lim.breaker_open_seconds,
            clock=clock,
        )
        svc.retry_budget = RetryBudget(0.1, name="chat-llm", clock=clock)

        # outermost first: retries (within the budget, never while the breaker is
        # open), the breaker, then each attempt's own timeout
        @retry(
            on=LLMUnavailable,
            attempts=lim.llm_attempts,
            budget=svc.retry_budget,
            breaker=svc.breaker,
            wait_initial=0.05,
            wait_max=1.0,
            wait_jitter=0.05,
            clock=clock,
        )
        @svc.breaker
        @timeout(lim.llm_timeout, clock=clock)
        async def guarded_llm(cfg: LLMConfig, history: list[tuple[str, str]], text: str) -> str:
            return await call_llm(cfg, history, text)

        complete = guarded_llm

        def user_key(request: Request) -> str | None:
            user = parse_user(request.headers.get("x-user-id"))
            return None if user is None else f"user:{user}"  # None: the client address

        async def user_tier(request: Request) -> str:
            user = parse_user(request.headers.get("x-user-id"))
            if user is None:
                return "anonymous"
            sub = await get_subscription(user)
            if sub is None:
                raise HTTPException(status_code=401, detail="unknown user")
            return sub.effective_tier

        # a message the model never answered is not counted against the sender
        refund = (LLMUnavailable, CircuitOpenError, DeadlineExceeded)
        send_limits = [Depends(limit(svc.messages, key=user_key, tier=user_tier, refund_on=refund))]
        image_limits = [Depends(limit(svc.images, key=user_key, refund_on=(LLMUnavailable,)))]
    else:
        complete = call_llm

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = PoolSettings.from_url(
            config.database_url, max_size=config.pool_size, min_size=1, name="chat"
        )
        svc.pool = await PgPool(settings).open()
        try:
            yield
        finally:
            try:
                await svc.drain()  # extractions in flight still write to the pool
            finally:
                await svc.pool.close()
                svc.pool = None
                if isinstance(svc.backend, RedisBackend):
                    await svc.backend.aclose()
                    svc.backend.close()

    app = FastAPI(title="scalekit chat service", lifespan=lifespan)
    app.state.chat = svc
    install_exception_handlers(app)

    async def llm_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the model is unavailable"}, status_code=503)

    app.add_exception_handler(LLMUnavailable, llm_unavailable)

    probes: list[Probe] = [PostgresProbe(config.database_url)]
    if config.redis_url is not None and config.primitives:
        probes.append(RedisProbe(config.redis_url))
    app.mount("/health", health_app(*probes))
    app.mount("/metrics", metrics_app())

    async def subscription_of(user: int) -> Subscription:
        sub = await get_subscription(user)
        if sub is None:
            raise HTTPException(status_code=401, detail="unknown user")
        return sub

    async def owned_conversation(conversation_id: int, user: int) -> Conversation:
        if not 0 < conversation_id <= MAX_USER_ID:
            raise HTTPException(status_code=404, detail="no such conversation")
        conv = await get_conversation(conversation_id)
        if conv is None or conv.user_id != user:
            raise HTTPException(status_code=404, detail="no such conversation")
        return conv

    @app.post("/messages", dependencies=send_limits)
    async def send_message(msg: SendMessage, x_user_id: UserHeader = None) -> dict[str, Any]:
        user = parse_user(x_user_id)
        cfg = await get_llm_config()
        if user is None:  # a guest: answered, nothing stored, nothing extracted
            return {"reply": await complete(cfg, [], msg.body), "conversation_id": None}
        sub = await subscription_of(user)
        db = svc.db
        history: list[tuple[str, str]] = []
        if msg.conversation_id is not None:
            conversation = await owned_conversation(msg.conversation_id, user)
            rows = await db.fetch(
                "SELECT role, body FROM messages WHERE conversation_id = $1"
                " ORDER BY id DESC LIMIT 10",
                conversation.id,
            )
            history = [(r[0], r[1]) for r in reversed(rows)]
        reply = await complete(cfg, history, msg.body)
        # the conversation (new or not), both messages and its count in one statement:
        # one round trip, and a failed model call leaves nothing behind
        if msg.conversation_id is None:
            row = await db.fetchrow(_STORE_NEW, msg.body[:60], user, msg.body, reply)
        else:
            row = await db.fetchrow(_STORE_IN, msg.conversation_id, user, msg.body, reply)
        if row is None:  # deleted meanwhile
            raise HTTPException(status_code=404, detail="no such conversation")
        conversation_id = int(row[0])
        message_count, message_id = int(row[1]), int(row[2])
        extraction = await svc.schedule_extraction(
            ExtractionItem(user, conversation_id, message_id, msg.body, message_count)
        )
        return {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "message_count": message_count,
            "reply": reply,
            "tier": sub.effective_tier,
            "extraction": extraction,
        }

    @app.post("/images", dependencies=image_limits)
    async def generate_image(req: ImageRequest, x_user_id: UserHeader = None) -> dict[str, Any]:
        user = parse_user(x_user_id)
        if user is not None:
            await subscription_of(user)
        return {"url": await svc.llm.generate_image(req.prompt)}

    @app.get("/conversations")
    async def list_conversations(user: CurrentUser) -> list[Any]:
        rows = await svc.db.fetch(
            "SELECT id, title, message_count, updated_at FROM conversations WHERE user_id = $1"
            " ORDER BY updated_at DESC, id DESC LIMIT 20",
            user,
        )
        return [
            {"id": r[0], "title": r[1], "message_count": r[2], "updated_at": r[3]} for r in rows
        ]

    @app.get("/conversations/{conversation_id}")
    async def read_conversation(conversation_id: int, user: CurrentUser) -> Conversation:
        return await owned_conversation(conversation_id, user)

    @app.patch("/conversations/{conversation_id}")
    async def rename_conversation(
        conversation_id: int, change: TitleChange, user: CurrentUser
    ) -> Conversation:
        await owned_conversation(conversation_id, user)
        await svc.db.execute(
            "UPDATE conversations SET title = $1, updated_at = now() WHERE id = $2",
            change.title,
            conversation_id,
        )
        await invalidate(f"conversation:{conversation_id}")
        return await owned_conversation(conversation_id, user)

    @app.get("/subscription")
    async def read_subscription(user: CurrentUser) -> Subscription:
        return await subscription_of(user)

    @app.put("/subscription")
    async def change_subscription(change: SubscriptionChange, user: CurrentUser) -> Subscription:
        """What the billing provider's webhook does: the new plan applies at once."""
        await subscription_of(user)
        async with svc.db.acquire() as con, con.transaction():
            await con.execute(
                "INSERT INTO subscriptions (user_id, status, tier) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status,"
                " tier = EXCLUDED.tier, updated_at = now()",
                user,
                change.status,
                change.tier,
            )
            await con.execute("UPDATE users SET tier = $1 WHERE id = $2", change.tier, user)
        await invalidate(f"subscription:{user}")
        return await subscription_of(user)

    @app.get("/llm-config")
    async def read_llm_config() -> LLMConfig:
        return await get_llm_config()

    @app.put("/llm-config")
    async def change_llm_config(new: LLMConfig) -> LLMConfig:
        """An operator's endpoint (put it behind your admin auth)."""
        await svc.db.execute(
            "INSERT INTO llm_config (id, model, temperature, system_prompt) VALUES (1, $1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model,"
            " temperature = EXCLUDED.temperature, system_prompt = EXCLUDED.system_prompt,"
            " updated_at = now()",
            new.model,
            new.temperature,
            new.system_prompt,
        )
        await invalidate("llm_config")
        return await get_llm_config()

    return app
