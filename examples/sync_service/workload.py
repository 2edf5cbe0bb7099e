"""Simulated phones that keep a copy of their user's chats in sync while the chats change.

:class:`Phone` is a client of ``GET /sync``: it applies pages to its local copy
(``reset`` first clears it) and follows ``more``. :func:`run_workload` drives a few
of them through simulated time: every 30 s tick some users write (new messages,
edits, deletions, new and deleted conversations, through the service's write
endpoints), paid phones sync every tick and free ones every other tick, and now and
then an impatient phone syncs early (a 429 when the interval is enforced).

Figures: ``rows_synced`` is the rows (upserts and deletes) the syncs received;
``full_refetch_rows`` what a full refetch would have returned for the same syncs
(the size of the phone's copy after each sync, which then equals the user's rows on
the server); with ``primitives=False`` the two are equal by construction.
"""

from __future__ import annotations

import random
import string
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..common import WorkloadResult

#: simulated seconds between two rounds of the workload
TICK = 30.0


class AdvancingClock(Protocol):
    def advance(self, seconds: float) -> float: ...


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """One sync: its last HTTP status, the rows received, whether the copy was reset
    (and why the server forced it), and how many requests it took."""

    status: int
    rows: int = 0
    reset: bool = False
    refetch: str | None = None
    requests: int = 0


async def _timed(
    result: WorkloadResult | None, http: httpx.AsyncClient, method: str, url: str, **kw: Any
) -> httpx.Response:
    """One request, its latency and status recorded in ``result``."""
    start = time.perf_counter()
    response = await http.request(method, url, **kw)
    if result is not None:
        result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        result.statuses[response.status_code] += 1
    return response


@dataclass(slots=True)
class Phone:
    """A phone's copy of one user's conversations and messages, by id."""

    user_id: int
    tier: str = "free"
    conversations: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    cursor: str | None = None
    syncs: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"X-User-Id": str(self.user_id), "X-User-Tier": self.tier}

    @property
    def size(self) -> int:
        return len(self.conversations) + len(self.messages)

    def apply(self, body: dict[str, Any]) -> int:
        """Apply one page; returns its rows (upserts and deletes)."""
        tables = (("conversations", self.conversations), ("messages", self.messages))
        if body["reset"]:
            for _, copy in tables:
                copy.clear()
        rows = 0
        for name, copy in tables:
            page = body[name]
            for key in page["deletes"]:
                copy.pop(key, None)
            for row in page["upserts"]:
                copy[row["id"]] = row
            rows += len(page["deletes"]) + len(page["upserts"])
        return rows

    async def sync(
        self, http: httpx.AsyncClient, result: WorkloadResult | None = None, *, limit: int = 500
    ) -> SyncOutcome:
        """One sync: pages until ``more`` is false (or a refusal, whose cursor is kept
        so the next sync resumes where this one stopped)."""
        rows = requests = 0
        reset, refetch = False, None
        while True:
            params: dict[str, str | int] = {"limit": limit}
            if self.cursor is not None:
                params["cursor"] = self.cursor
            response = await _timed(
                result, http, "GET", "/sync", params=params, headers=self.headers
            )
            requests += 1
            if response.status_code != 200:
                return SyncOutcome(response.status_code, rows, reset, refetch, requests)
            body = response.json()
            rows += self.apply(body)
            reset = reset or body["reset"]
            refetch = refetch or body["refetch"]
            self.cursor = body["cursor"]
            if not body["more"]:
                self.syncs += 1
                return SyncOutcome(200, rows, reset, refetch, requests)


def _text(rng: random.Random) -> str:
    words = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(40))
    return " ".join(words)[: rng.randint(20, 240)].strip() or "hello"


class _Writer:
    """Changes one user's chats through the write endpoints, as the user's other
    devices and the assistant would."""

    def __init__(self, http: httpx.AsyncClient, result: WorkloadResult, rng: random.Random):
        self.http = http
        self.result = result
        self.rng = rng
        self.gone: set[tuple[str, int]] = set()  # deleted here, maybe not synced yet
        self.writes = 0

    async def _call(self, method: str, url: str, phone: Phone, **kw: Any) -> httpx.Response:
        self.writes += 1
        return await _timed(self.result, self.http, method, url, headers=phone.headers, **kw)

    def _pick(self, kind: str, ids: dict[int, Any]) -> int | None:
        live = [i for i in ids if (kind, i) not in self.gone]
        return self.rng.choice(live) if live else None

    async def change(self, phone: Phone) -> None:
        rng = self.rng
        cid = self._pick("conversation", phone.conversations)
        roll = rng.random()
        if cid is None or roll < 0.04:
            await self._call("POST", "/conversations", phone, json={"title": _text(rng)[:60]})
            return
        mid = self._pick("message", phone.messages)
        if roll < 0.06:
            self.gone.add(("conversation", cid))
            for key, message in phone.messages.items():  # deleted with it
                if message["conversation_id"] == cid:
                    self.gone.add(("message", key))
            await self._call("DELETE", f"/conversations/{cid}", phone)
        elif mid is not None and roll < 0.22:
            self.gone.add(("message", mid))
            await self._call("DELETE", f"/messages/{mid}", phone)
        elif mid is not None and roll < 0.40:
            await self._call("PATCH", f"/messages/{mid}", phone, json={"body": _text(rng)})
        else:  # a message and the assistant's answer
            for role in ("user", "assistant"):
                body = {"role": role, "body": _text(rng)}
                await self._call("POST", f"/conversations/{cid}/messages", phone, json=body)


async def run_workload(
    client: httpx.AsyncClient,
    *,
    user_ids: list[int],
    paid_ids: set[int],
    requests: int,
    seed: int,
    clock: AdvancingClock | None = None,
) -> WorkloadResult:
    """About ``requests`` HTTP requests from phones syncing while their chats change.

    ``clock``: the clock given to the service as ``ServiceConfig(clock=...)`` (a
    :class:`scalekit.testing.FakeClock`); the workload advances it 30 s per tick, so
    phones sync at their tier's interval in simulated time. Without it the phones
    sync as fast as the workload runs and the interval refuses most syncs (429s).
    """
    rng = random.Random(seed)
    result = WorkloadResult(service="sync_service")
    if not user_ids or requests <= 0:
        return result
    count = max(1, min(len(user_ids), requests // 30))  # ~15 syncs each
    phones = [
        Phone(u, "paid" if u in paid_ids else "free") for u in rng.sample(sorted(user_ids), count)
    ]
    writer = _Writer(client, result, rng)
    rows_synced = full_refetch_rows = first_sync_rows = syncs = refused = 0
    tick = 0
    while result.requests < requests:
        for phone in phones:
            if result.requests >= requests:
                break
            if phone.syncs and rng.random() < 0.4:
                await writer.change(phone)
            due = phone.tier == "paid" or tick % 2 == 0
            if not (due or rng.random() < 0.05):  # 5 %: an impatient early sync
                continue
            first = phone.syncs == 0
            outcome = await phone.sync(client, result)
            if outcome.status != 200:
                refused += 1
                continue
            syncs += 1
            rows_synced += outcome.rows
            full_refetch_rows += phone.size
            if first:
                first_sync_rows += outcome.rows
        tick += 1
        if clock is not None:
            clock.advance(TICK)
    result.figures.update(
        rows_synced=rows_synced,
        full_refetch_rows=full_refetch_rows,
        first_sync_rows=first_sync_rows,
        syncs=syncs,
        refused_syncs=refused,
        writes=writer.writes,
        clients=len(phones),
        simulated_seconds=tick * TICK,
    )
    return result
