"""The directory's share of the demo: searches in the big school, and one deep page."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import httpx

from ..common import WorkloadResult
from ._db import _FIRST, _LAST, BIG_SCHOOL, SMALL_SCHOOLS

#: how deep the deep page is (rows before it), and the page size of the walk there
DEEP_DEPTH = 25_000
WALK_LIMIT = 1000
#: how often the deep page is timed (the figure is the median)
DEEP_REPEATS = 5


async def run_workload(
    client: httpx.AsyncClient,
    *,
    user_ids: list[int],
    paid_ids: set[int],
    requests: int,
    seed: int,
) -> WorkloadResult:
    """Searches (first pages with random filters, some followed to the next page),
    then the deep page: the client walks the big school's unfiltered listing to row
    ``DEEP_DEPTH`` in pages of ``WALK_LIMIT`` (with cursors, whatever they hold),
    asks the 50-row page there ``DEEP_REPEATS`` times and has the service EXPLAIN it.

    ``figures``: ``deep_page_depth``, ``deep_page_ms`` (median latency of the deep
    page), ``deep_page_rows_read`` and ``deep_page_buffers`` (read by the server for
    it, from ``EXPLAIN (ANALYZE, BUFFERS)``), ``first_page_rows_read`` (the same for
    the first page, the baseline), ``deep_walk_ms`` (the whole walk), ``searches``.
    The deep-page requests are made even when ``requests`` is smaller (about
    ``DEEP_DEPTH / WALK_LIMIT + DEEP_REPEATS + 2`` of them)."""
    rng = random.Random(f"directory:{seed}")
    result = WorkloadResult(service="directory")
    base = f"/schools/{BIG_SCHOOL}/members"

    async def get(url: str, params: dict[str, Any]) -> httpx.Response:
        started = time.perf_counter()
        response = await client.get(url, params=params)
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.statuses[response.status_code] += 1
        return response

    # -- the deep page ---------------------------------------------------------------
    walk_started = time.perf_counter()
    cursor: str | None = None
    depth = 0
    while depth < DEEP_DEPTH:
        params: dict[str, Any] = {"limit": min(WALK_LIMIT, DEEP_DEPTH - depth)}
        if cursor:
            params["cursor"] = cursor
        response = await get(base, params)
        response.raise_for_status()
        body = response.json()
        depth += len(body["items"])
        cursor = body["next"]
        if cursor is None:
            break
    walk_ms = (time.perf_counter() - walk_started) * 1000
    deep = {"limit": 50, **({"cursor": cursor} if cursor else {})}
    timings = []
    for _ in range(DEEP_REPEATS):
        started = time.perf_counter()
        (await get(base, deep)).raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    deep_plan = (await get(f"{base}/explain", deep)).json()
    first_plan = (await get(f"{base}/explain", {"limit": 50})).json()

    # -- searches ----------------------------------------------------------------------
    searches = 0
    schools = [BIG_SCHOOL] * 8 + list(SMALL_SCHOOLS)
    while result.requests < requests:
        school = rng.choice(schools)
        params = {"limit": rng.choice((20, 50, 100))}
        roll = rng.random()
        if roll < 0.5:
            params["role"] = rng.choice(("student", "student", "teacher", "parent", "staff"))
            if params["role"] == "student" and rng.random() < 0.6:
                params["grade"] = rng.randint(1, 12)
        if rng.random() < 0.4:
            params["prefix"] = rng.choice(_LAST)[: rng.randint(1, 3)]
            if rng.random() < 0.3:
                params["prefix"] = f"{rng.choice(_LAST)}, {rng.choice(_FIRST)[:1]}"
        response = await get(f"/schools/{school}/members", params)
        searches += 1
        nxt = response.json().get("next") if response.status_code == 200 else None
        if nxt and rng.random() < 0.3 and result.requests < requests:
            await get(f"/schools/{school}/members", {**params, "cursor": nxt})

    result.figures = {
        "deep_page_depth": float(depth),
        "deep_page_ms": statistics.median(timings),
        "deep_page_rows_read": float(deep_plan["rows_read"]),
        "deep_page_buffers": float(deep_plan["shared_buffers"]),
        "first_page_rows_read": float(first_plan["rows_read"]),
        "deep_walk_ms": walk_ms,
        "searches": float(searches),
    }
    return result
