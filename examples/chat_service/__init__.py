"""The chat service: rate limits per user and tier, cached reads invalidated by tag,
sampled fire-and-forget memory extraction, and an LLM call behind a breaker, a retry
budget and a timeout. See README.md.

Serve it with ``uvicorn examples.chat_service:app --factory`` (``DATABASE_URL``,
optionally ``REDIS_URL`` and ``CHAT_PRIMITIVES=0``), or ``python -m
examples.chat_service``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from ..common import ServiceConfig
from .app import ChatLimits, ChatService, create_app
from .data import install, seed
from .fakes import ExtractionItem, FakeLLM, FakeMemoryExtractor, LLMUnavailable
from .workload import run_workload

__all__ = [
    "ChatLimits",
    "ChatService",
    "ExtractionItem",
    "FakeLLM",
    "FakeMemoryExtractor",
    "LLMUnavailable",
    "app",
    "create_app",
    "install",
    "run_workload",
    "seed",
]


def app() -> FastAPI:
    """The app from the environment, for ``uvicorn examples.chat_service:app --factory``:
    ``DATABASE_URL`` (required), ``REDIS_URL`` (optional), ``CHAT_PRIMITIVES=0`` for
    the baseline without primitives. The schema must exist (``python -m
    examples.chat_service --seed 1000`` creates and fills it)."""
    return create_app(
        ServiceConfig(
            database_url=os.environ["DATABASE_URL"],
            redis_url=os.environ.get("REDIS_URL") or None,
            primitives=os.environ.get("CHAT_PRIMITIVES", "1") != "0",
        )
    )
