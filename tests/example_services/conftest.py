"""Fixtures for the example services' tests: a fresh database per test, on the suite's
real PostgreSQL, with the shared example schema applied."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `examples` is a package at the repository root
    sys.path.insert(0, str(ROOT))

from examples.common import apply_schema  # noqa: E402


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
async def example_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """DSN of a database created for this test (dropped afterwards) holding the shared
    example schema (users, subscriptions, llm_config, conversations, messages)."""
    name = f"ex_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(postgres_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(postgres_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
