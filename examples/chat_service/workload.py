"""A realistic mix of chat traffic, for the demo and the tests.

Of the users, 40 % are active; their traffic is skewed (a few heavy users send most
messages, paid users twice as much as free ones), so the per-user limits meet the
heavy senders and nobody else. Most requests send a message (half of the bodies
are short, under the extraction's 50 characters); the others read a conversation,
the subscription or the LLM configuration, rename a conversation, change a plan,
generate an image, and a few are anonymous (all from the client's one address).
A user lists their conversations before their first message.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from typing import Any

import httpx

from ..common import WorkloadResult
from .fakes import FakeLLM, FakeMemoryExtractor

__all__ = ["run_workload"]

#: (kind, share of the requests)
MIX: tuple[tuple[str, float], ...] = (
    ("send", 0.62),
    ("anonymous_send", 0.05),
    ("read_conversation", 0.09),
    ("read_subscription", 0.06),
    ("read_llm_config", 0.04),
    ("rename_conversation", 0.04),
    ("image", 0.05),
    ("change_subscription", 0.01),
    ("change_llm_config", 0.005),
    ("anonymous_image", 0.005),
)

_WORDS = (
    "how", "do", "I", "scale", "this", "service", "when", "traffic", "grows", "and",
    "what", "should", "we", "cache", "first", "given", "the", "database", "is", "busy",
)  # fmt: skip


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:length].strip() or "hi"


def _plan(
    user_ids: list[int], paid_ids: set[int], requests: int, seed: int
) -> list[tuple[str, int, dict[str, Any]]]:
    """The requests, decided up front from ``seed``: (kind, user, payload)."""
    rng = random.Random(seed)
    users = sorted(user_ids)
    active = rng.sample(users, max(1, math.ceil(0.4 * len(users)))) if users else []
    rng.shuffle(active)
    # Zipf-like: the r-th most active user sends ~ 1/r^0.9 as much; paid users twice
    weights = [(2.0 if u in paid_ids else 1.0) / (r + 1) ** 0.9 for r, u in enumerate(active)]
    kinds = [k for k, _ in MIX]
    shares = [s for _, s in MIX]
    plan: list[tuple[str, int, dict[str, Any]]] = []
    for i in range(requests):
        kind = rng.choices(kinds, shares)[0]
        user = rng.choices(active, weights)[0] if active else 0
        payload: dict[str, Any]
        if kind in ("send", "anonymous_send"):
            short = rng.random() < 0.5
            payload = {"body": _text(rng, rng.randint(5, 49) if short else rng.randint(50, 400))}
        elif kind == "rename_conversation":
            payload = {"title": f"renamed {i}"}
        elif kind == "change_subscription":
            paid = rng.random() < 0.5
            payload = {
                "status": "active" if paid else "cancelled",
                "tier": "paid" if paid else "free",
            }
        elif kind == "change_llm_config":
            payload = {
                "model": rng.choice(("fake-gpt-1", "fake-gpt-2")),
                "temperature": round(rng.uniform(0.0, 1.2), 2),
                "system_prompt": "You are a helpful assistant. Answer briefly.",
            }
        elif kind in ("image", "anonymous_image"):
            payload = {"prompt": _text(rng, rng.randint(10, 80))}
        else:
            payload = {}
        plan.append((kind, user, payload))
    return plan


_SAMPLE = re.compile(r"^(scalekit_cache_(?:hits|misses)_total)\{([^}]*)\}\s+(\S+)$", re.M)


async def _cache_counts(client: httpx.AsyncClient) -> tuple[float, float] | None:
    """(hits, misses) of the service's cache from its own ``/metrics``; ``None``
    when it exports none (no prometheus extra)."""
    response = await client.get("/metrics", follow_redirects=True)  # a mount: /metrics/
    if response.status_code != 200:
        return None
    hits = misses = 0.0
    for name, labels, value in _SAMPLE.findall(response.text):
        if 'cache="chat_service"' not in labels:
            continue
        if name.endswith("hits_total"):
            hits += float(value)
        else:
            misses += float(value)
    return hits, misses


async def run_workload(
    client: httpx.AsyncClient,
    *,
    user_ids: list[int],
    paid_ids: set[int],
    requests: int,
    seed: int,
    llm: FakeLLM | None = None,
    extractor: FakeMemoryExtractor | None = None,
    concurrency: int = 8,
) -> WorkloadResult:
    """Drive ``requests`` requests of the mix above (``concurrency`` at a time)
    through ``client`` and report latencies, statuses and figures:

    - ``llm_calls`` / ``image_calls``: the fake LLM's calls during the run (if
      ``llm`` is given: the one the app was built with);
    - ``extraction_calls``: extractions that ran (``extractor``'s count, once the
      background queue drained that far; without it, those the service scheduled);
    - ``rate_limited``: 429 answers; ``messages_sent``: messages answered;
    - ``cache_hit_ratio``: from the service's ``/metrics`` (when it exports them
      and the cache was used).
    """
    result = WorkloadResult(service="chat")
    plan = _plan(user_ids, paid_ids, requests, seed)
    llm_before = (llm.calls, llm.image_calls) if llm is not None else (0, 0)
    extracted_before = extractor.calls if extractor is not None else 0
    cache_before = await _cache_counts(client)
    conversations: dict[int, list[int]] = {}
    pick = random.Random(seed + 1)
    scheduled = 0
    sent = 0

    async def request(method: str, url: str, user: int | None, body: Any = None) -> httpx.Response:
        headers = {} if user is None else {"X-User-Id": str(user)}
        start = time.perf_counter()
        response = await client.request(method, url, json=body, headers=headers)
        result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        result.statuses[response.status_code] += 1
        return response

    async def conversations_of(user: int) -> list[int]:
        known = conversations.get(user)
        if known is None:
            response = await request("GET", "/conversations", user)
            known = conversations.setdefault(
                user, [c["id"] for c in response.json()] if response.status_code == 200 else []
            )
        return known

    async def one(kind: str, user: int, payload: dict[str, Any]) -> None:
        nonlocal scheduled, sent
        if kind == "send":
            convs = await conversations_of(user)
            if convs and pick.random() < 0.9:
                payload = {**payload, "conversation_id": pick.choice(convs)}
            response = await request("POST", "/messages", user, payload)
            if response.status_code == 200:
                data = response.json()
                sent += 1
                scheduled += data.get("extraction") == "scheduled"
                if data["conversation_id"] not in convs:
                    convs.append(data["conversation_id"])
        elif kind == "anonymous_send":
            response = await request("POST", "/messages", None, payload)
            sent += response.status_code == 200
        elif kind in ("read_conversation", "rename_conversation"):
            convs = await conversations_of(user)
            if not convs:
                await request("GET", "/subscription", user)
                return
            url = f"/conversations/{pick.choice(convs)}"
            if kind == "read_conversation":
                await request("GET", url, user)
            else:
                await request("PATCH", url, user, payload)
        elif kind == "read_subscription":
            await request("GET", "/subscription", user)
        elif kind == "change_subscription":
            await request("PUT", "/subscription", user, payload)
        elif kind == "read_llm_config":
            await request("GET", "/llm-config", user)
        elif kind == "change_llm_config":
            await request("PUT", "/llm-config", None, payload)
        elif kind == "image":
            await request("POST", "/images", user, payload)
        elif kind == "anonymous_image":
            await request("POST", "/images", None, payload)

    queue = iter(plan)

    async def worker() -> None:
        for kind, user, payload in queue:
            await one(kind, user, payload)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

    figures = result.figures
    if llm is not None:
        figures["llm_calls"] = float(llm.calls - llm_before[0])
        figures["image_calls"] = float(llm.image_calls - llm_before[1])
    if extractor is not None:
        await extractor.wait_for_calls(extracted_before + scheduled)
        figures["extraction_calls"] = float(extractor.calls - extracted_before)
    else:
        figures["extraction_calls"] = float(scheduled)
    figures["rate_limited"] = float(result.statuses.get(429, 0))
    figures["messages_sent"] = float(sent)
    cache_after = await _cache_counts(client)
    if cache_before is not None and cache_after is not None:
        hits = cache_after[0] - cache_before[0]
        misses = cache_after[1] - cache_before[1]
        if hits + misses > 0:
            figures["cache_hit_ratio"] = hits / (hits + misses)
    return result
