"""The chat service's stand-ins for its paid dependencies: a fake LLM and a fake
memory extractor. Both count their calls, which is what the demo and the tests read.

They run in process and take no network; ``FakeLLM`` can be switched to fail
(``down = True``: every call raises :class:`LLMUnavailable` at once) or to hang
(``hanging = True``: every call waits for ever, as a provider that accepted the
connection and never answers), and fails a ``fail_rate`` share of its calls drawn
from a seeded generator.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass

__all__ = ["ExtractionItem", "FakeLLM", "FakeMemoryExtractor", "LLMUnavailable"]


class LLMUnavailable(Exception):
    """The model provider failed (what a 5xx or a reset connection is in a real client)."""


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


_WORDS = (
    "sure", "here", "is", "a", "thought", "about", "that", "question", "consider", "the",
    "context", "you", "gave", "and", "one", "more", "detail", "worth", "noting", "today",
)  # fmt: skip


class FakeLLM:
    """A chat model in process: ``await complete(...)`` returns a deterministic reply.

    ``latency``: seconds each call takes (a real ``asyncio.sleep``; 0 by default).
    ``fail_rate``: the share of calls that raise :class:`LLMUnavailable`, drawn from
    ``random.Random(seed)``. ``down = True`` makes every call fail at once;
    ``hanging = True`` makes every call wait until it is cancelled. ``calls`` and
    ``image_calls`` count what was asked of it (including failed calls).
    """

    def __init__(self, *, latency: float = 0.0, fail_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate!r}")
        if not latency >= 0.0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
        self.latency = latency
        self.fail_rate = fail_rate
        self._rng = random.Random(seed)
        self.down = False
        self.hanging = False
        self.calls = 0
        self.image_calls = 0

    async def complete(
        self,
        *,
        model: str,
        temperature: float,
        system_prompt: str,
        history: list[tuple[str, str]],
        message: str,
    ) -> str:
        """The assistant's reply to ``message`` after ``history`` ((role, body) pairs)."""
        self.calls += 1
        if self.hanging:
            await asyncio.Event().wait()  # until cancelled (a timeout)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.down or (self.fail_rate and self._rng.random() < self.fail_rate):
            raise LLMUnavailable(f"{model}: the provider answered 503")
        h = _digest(model, len(history), message)
        words = [_WORDS[(h >> (i % 60)) % len(_WORDS)] for i in range(8 + h % 40)]
        return " ".join(words).capitalize() + "."

    async def generate_image(self, prompt: str) -> str:
        """A URL of the picture ``prompt`` asked for."""
        self.image_calls += 1
        if self.down:
            raise LLMUnavailable("images: the provider answered 503")
        if self.latency:
            await asyncio.sleep(self.latency)
        return f"https://images.example/{_digest(prompt):016x}.png"


@dataclass(frozen=True, slots=True)
class ExtractionItem:
    """One message considered for memory extraction (what the sampling pipeline sees).

    ``message_count``: the conversation's messages after this exchange (its maturity).
    """

    user_id: int
    conversation_id: int
    message_id: int
    body: str
    message_count: int


class FakeMemoryExtractor:
    """Extracts "memories" (facts worth keeping about the user) from a message.

    ``calls`` counts the extractions that ran (counted when one starts); ``items``
    keeps what they were asked about. ``await wait_for_calls(n)`` returns once ``n``
    extractions have started (the background queue drained that far), without
    polling.
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls = 0
        self.items: list[ExtractionItem] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def extract(self, item: ExtractionItem) -> list[str]:
        self.calls += 1
        self.items.append(item)
        for n, fut in self._waiters:
            if self.calls >= n and not fut.done():
                fut.set_result(None)
        if self.latency:
            await asyncio.sleep(self.latency)
        return [f"user {item.user_id} said: {item.body[:80]}"]

    async def wait_for_calls(self, n: int, *, timeout: float = 10.0) -> bool:
        """Wait until ``calls >= n``; ``False`` if ``timeout`` seconds passed first."""
        if self.calls >= n:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.remove(entry)
