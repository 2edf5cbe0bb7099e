"""The chat service's tables (``install``) and the demo's data (``seed``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["install", "seed"]

SCHEMA = Path(__file__).with_name("schema.sql")


async def install(conn: Any) -> None:
    """Create the service's own table (``chat_memories``) on top of the shared schema
    (``examples.common.apply_schema``); safe to run again. ``conn``: an asyncpg
    connection or pool, or a ``PgPool``."""
    await conn.execute(SCHEMA.read_text())


def _u(key: str) -> str:
    """SQL for a deterministic number in [0, 1) from the text expression ``key`` and
    the seed ``$2`` (md5, not random(): the same seed gives the same rows whatever
    the plan or the server)."""
    digest = f"md5(({key}) || ':' || $2::bigint::text)"
    return f"((('x' || substr({digest}, 1, 8))::bit(32)::bigint) / 4294967296.0)"


# Every statement takes $1 = users, $2 = seed. One statement per table, set-based.
_USERS = f"""
INSERT INTO users (id, name, tier)
SELECT g, 'user ' || g, CASE WHEN {_u("'tier:' || g")} < 0.3 THEN 'paid' ELSE 'free' END
FROM generate_series(1, $1::bigint) AS g
"""

# paid users have an active paid subscription; a few free users cancelled one
_SUBSCRIPTIONS = f"""
INSERT INTO subscriptions (user_id, status, tier)
SELECT id,
       CASE WHEN tier = 'paid' THEN 'active'
            WHEN {_u("'cancel:' || id")} < 0.1 THEN 'cancelled' ELSE 'none' END,
       tier
FROM users WHERE id <= $1::bigint
"""

_LLM_CONFIG = """
INSERT INTO llm_config (id, model, temperature, system_prompt)
VALUES (1, 'fake-gpt-1', 0.7, 'You are a helpful assistant. Answer briefly.')
ON CONFLICT (id) DO NOTHING
"""

# 0..4 conversations per user (most have few), each of 1..50 messages (most short):
# the maturity the extraction sampler weighs
_CONVERSATIONS = f"""
INSERT INTO conversations (user_id, title, message_count, created_at, updated_at)
SELECT u.id,
       'conversation ' || k || ' of user ' || u.id,
       1 + floor(50 * power({_u("'len:' || u.id || ':' || k")}, 3))::int,
       now() - make_interval(hours => (k * 24 + u.id % 24)::int),
       now() - make_interval(mins => (k * 60 + u.id % 60)::int)
FROM users AS u
CROSS JOIN LATERAL generate_series(1, floor(5 * power({_u("'n:' || u.id")}, 1.5))::int) AS k
WHERE u.id <= $1::bigint
"""

_MESSAGES = f"""
INSERT INTO messages (conversation_id, user_id, role, body, created_at)
SELECT c.id, c.user_id,
       CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
       left(repeat('tell me more about scaling chat services with caches and limits ', 8),
            5 + floor(300 * power({_u("'body:' || c.id || ':' || i")}, 2))::int),
       c.created_at + make_interval(mins => i)
FROM conversations AS c
CROSS JOIN LATERAL generate_series(1, c.message_count) AS i
WHERE c.user_id <= $1::bigint
"""


async def seed(conn: Any, *, users: int, seed: int) -> None:
    """Fill the SHARED tables on an empty schema, deterministically for ``seed``:
    ``users`` users (about 70 % free, 30 % paid), their subscriptions, the one
    ``llm_config`` row, 0-4 conversations per user of 1-50 messages (skewed towards
    short ones) and those messages, of 5-300 characters (skewed towards short ones).

    Set-based (``generate_series``): a thousand users take well under a second.
    ``conn``: an asyncpg connection (the statements run in one transaction), pool or
    ``PgPool``.
    """
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ValueError(f"users must be an int >= 1, got {users!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    transaction = getattr(conn, "transaction", None)
    if transaction is not None and hasattr(conn, "is_in_transaction"):  # a connection
        async with transaction():
            await _seed(conn, users, seed)
    else:
        await _seed(conn, users, seed)


async def _seed(conn: Any, users: int, seed: int) -> None:
    await conn.execute(_USERS, users, seed)
    await conn.execute(_SUBSCRIPTIONS, users, seed)
    await conn.execute(_LLM_CONFIG)
    await conn.execute(_CONVERSATIONS, users, seed)
    await conn.execute(_MESSAGES, users, seed)
    await conn.execute("ANALYZE users, subscriptions, conversations, messages")
