"""The feed's share of the demo: people scrolling, opening posts, watching videos."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import httpx

from ..common import WorkloadResult

#: concurrent sessions (people scrolling at the same time)
SESSIONS = 8


async def run_workload(
    client: httpx.AsyncClient,
    *,
    user_ids: list[int],
    paid_ids: set[int],
    requests: int,
    seed: int,
) -> WorkloadResult:
    """About ``requests`` requests from ``SESSIONS`` concurrent sessions: feed pages
    (scrolling 1-4 pages deep), people's post pages, trending (revalidated with
    ``If-None-Match`` when the session holds a copy), single posts, video views and
    a few new posts. ``figures``: ``feed_pages``, ``trending_reads``,
    ``not_modified`` (304s: bodies not sent), ``views_recorded``,
    ``posts_created``, ``authors_rendered`` (author objects in the pages served)."""
    result = WorkloadResult(service="feed")
    figures: Counter[str] = Counter()
    budget = [max(0, requests)]
    users = list(user_ids) or [1]

    async def call(method: str, url: str, **kw: Any) -> httpx.Response | None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        started = time.perf_counter()
        response = await client.request(method, url, **kw)
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.statuses[response.status_code] += 1
        if response.status_code == 304:
            figures["not_modified"] += 1
        return response

    def seen(response: httpx.Response | None, into: list[dict[str, Any]]) -> str | None:
        if response is None or response.status_code != 200:
            return None
        body = response.json()
        items = body.get("items", [])
        into.extend(items)
        figures["authors_rendered"] += sum(1 for i in items if i.get("author"))
        nxt = body.get("next")
        return nxt if isinstance(nxt, str) else None

    async def session(rng: random.Random) -> None:
        posts: list[dict[str, Any]] = []
        etags: dict[str, str] = {}
        while budget[0] > 0:
            me = rng.choice(users)
            roll = rng.random()
            if roll < 0.40:  # scroll the feed
                cursor: str | None = None
                for _ in range(rng.randint(1, 4)):
                    params = {"cursor": cursor} if cursor else {}
                    response = await call("GET", "/feed", params=params)
                    figures["feed_pages"] += response is not None
                    cursor = seen(response, posts)
                    if cursor is None:
                        break
            elif roll < 0.55:  # someone's posts
                response = await call("GET", f"/users/{rng.choice(users)}/posts")
                seen(response, posts)
            elif roll < 0.75:  # trending, revalidated when we hold a copy
                headers = {"If-None-Match": etags["trending"]} if "trending" in etags else {}
                response = await call("GET", "/trending", headers=headers)
                figures["trending_reads"] += response is not None
                if response is not None and "etag" in response.headers:
                    etags["trending"] = response.headers["etag"]
                seen(response, posts)
            elif roll < 0.85 and posts:  # open a post seen before
                pid = rng.choice(posts)["id"]
                key = f"post:{pid}"
                headers = {"If-None-Match": etags[key]} if key in etags else {}
                response = await call("GET", f"/posts/{pid}", headers=headers)
                if response is not None and "etag" in response.headers:
                    etags[key] = response.headers["etag"]
            elif roll < 0.97 and posts:  # watch a video seen before
                videos = [p for p in posts if p.get("kind") == "video"]
                if videos:
                    pid = rng.choice(videos)["id"]
                    response = await call("POST", f"/posts/{pid}/views", json={"user_id": me})
                    figures["views_recorded"] += (
                        response is not None and response.status_code == 204
                    )
            else:  # write something
                kind = "video" if me in paid_ids and rng.random() < 0.5 else "text"
                response = await call(
                    "POST", "/posts", json={"author_id": me, "body": "hello", "kind": kind}
                )
                figures["posts_created"] += response is not None and response.status_code == 201

    await asyncio.gather(*(session(random.Random(f"{seed}:{i}")) for i in range(SESSIONS)))
    result.figures = {k: float(v) for k, v in sorted(figures.items())}
    for name in ("feed_pages", "trending_reads", "not_modified", "views_recorded"):
        result.figures.setdefault(name, 0.0)
    return result
