"""The Redis rate-limit store: one EVALSHA per decision, whatever the windows.

Keys: ``<prefix>:v2:<algorithm>:<name>[:<tier>]:<rates>:{<subject>}:<period in us>``
-- every window of one subject shares the ``{subject}`` hash tag, so the multi-key
script runs on one Redis Cluster slot. The subject is escaped (see
:mod:`scalekit._keys`); the algorithm and the format version are part of the key, so
a limiter redeployed with another ``algorithm=`` (or a newer scalekit with another
state format) starts from clean keys instead of reading the other one's state. The
period is written exactly (whole microseconds). Every key the scripts write carries
an expiry.

A key whose value is not what the script expects (written by something else, a
wrong type, garbage) is that key's problem: the scripts treat a value they cannot
parse as no state, and a server error about the value
(:class:`~scalekit.errors.BackendDataError`: ``WRONGTYPE``, "not an integer") makes
the store delete that subject's keys and decide again from a clean state, counting
it in ``corrupt_keys``. Other keys are never touched and the guard never trips; should
the clean state fail again (something keeps writing garbage), the error reaches the
limiter, which answers that one call by its failure policy without a cooldown.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from typing import Any

from scalekit._keys import build_key, escape
from scalekit.backends._lua import LuaScript, load_script
from scalekit.backends._redis import RedisBackend
from scalekit.errors import BackendDataError
from scalekit.ratelimit._algorithms import Algorithm, combine
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._metrics import StoreCounters
from scalekit.ratelimit._policy import Policy

__all__ = ["FORMAT_VERSION", "RedisRateStore"]

log = logging.getLogger("scalekit.ratelimit")

#: the state format of the scripts in ``lua/``; part of every key
FORMAT_VERSION = "v2"

_new_decision = tuple.__new__
_INF = math.inf
_NO_ARGS: list[str] = []  # never mutated


class RedisRateStore:
    """One policy's state for one algorithm, on Redis."""

    local = False

    def __init__(
        self,
        backend: RedisBackend,
        algorithm: Algorithm,
        policy: Policy,
        *,
        prefix: str,
        name: tuple[str, ...],
        counters: StoreCounters | None = None,
    ) -> None:
        self.backend = backend
        self.counters = counters or StoreCounters(None, "", algorithm, "")
        self.algorithm = algorithm
        self.policy = policy
        # token_bucket and gcra make the same decisions (see algorithms.gcra)
        bucket = algorithm in ("gcra", "token_bucket")
        # build_key(prefix, *parts, tag=...) with the trusted parts joined once
        self._head = build_key(
            prefix, FORMAT_VERSION, algorithm, *(escape(n) for n in name), tag=""
        )
        self._head = self._head[: self._head.rindex(":")]
        suffixes: list[str] = []
        constants: list[str] = []
        for r in policy.rates:
            p = str(r.period_us)
            suffixes.extend([f":{p}:z", f":{p}:m"] if algorithm == "sliding_log" else [f":{p}"])
            if bucket:
                constants += [str(r.limit), p, str(r.capacity)]
            elif algorithm == "fixed_window":  # see lua/fixed_window.lua
                s = 2 * r.limit + 1
                constants += [str(r.limit), p, str(s), str(2**53 // s)]
            else:
                constants += [str(r.limit), p]
        self._suffixes = suffixes
        self._suffix = suffixes[0] if len(suffixes) == 1 else None
        # One script per policy, its constants written in (integers, exact in Lua): a hit
        # of cost 1 on Redis TIME sends no argument, the cheapest EVALSHA there is.
        family = "gcra" if bucket else algorithm
        self._script = self._with_constants(family, constants)
        self._refund_script = self._with_constants(f"{family}_refund", constants)
        self._limits = [(r.limit, r.period) for r in policy.rates]
        self._one = len(policy.rates) == 1
        self._limit, self._period = self._limits[0]
        self._name = policy.name
        self._lock = threading.Lock()
        self._corrupt: set[str] = set()  # subjects reset and not yet decided cleanly

    @staticmethod
    def _with_constants(script: str, constants: list[str]) -> LuaScript:
        body = load_script("scalekit.ratelimit", script, header="_header")
        source = f"local R = {{{', '.join(constants)}}}\n{body.source}"
        return LuaScript(
            name=f"{body.name} {','.join(constants)}",
            source=source,
            sha=hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest(),
        )

    def keys(self, key: str) -> list[str]:
        base = build_key(self._head, tag=key)
        if self._suffix is not None:
            return [base + self._suffix]
        return [base + s for s in self._suffixes]

    def _args(self, cost: int, commit: bool) -> list[str]:
        now = self.backend.server_now
        if now is None:
            if cost == 1 and commit:
                return _NO_ARGS
            return [str(cost if commit else -cost)]
        return [str(cost if commit else -cost), str(math.floor(now() * 1_000_000))]

    def _decision(self, reply: Any) -> Decision:
        if isinstance(reply, str):  # a client built with decode_responses=True
            reply = reply.encode()
        raw = reply.split()
        if self._one:  # one window: no folding needed
            if raw[0] == b"1":
                return _new_decision(
                    Decision,
                    (True, self._limit, int(raw[1]), int(raw[2]) / 1e6, 0.0, self._name,
                     self._period),
                )  # fmt: skip
            retry = int(raw[3])
            return _new_decision(
                Decision,
                (False, self._limit, int(raw[1]), int(raw[2]) / 1e6,
                 _INF if retry < 0 else retry / 1e6, self._name, self._period),
            )  # fmt: skip
        results = []
        for i in range(0, len(raw), 4):
            retry = int(raw[i + 3])
            results.append(
                (raw[i] == b"1", int(raw[i + 1]), int(raw[i + 2]) / 1e6,
                 _INF if retry < 0 else retry / 1e6)
            )  # fmt: skip
        return combine(results, self._limits, self._name)

    # -- corrupt state ---------------------------------------------------------------
    def _corrupt_key(self, key: str, exc: BackendDataError) -> list[str]:
        """Count a data error on ``key`` (logged once per episode); its keys to delete."""
        self.counters.corrupt_keys.inc()
        with self._lock:
            first = key not in self._corrupt
            if first:
                if len(self._corrupt) >= 1024:  # bounded: an attack must not grow it
                    self._corrupt.clear()
                self._corrupt.add(key)
        if first:
            log.warning(
                "rate limiter %r: the state of key %r is not what the %s script expects "
                "(%s); resetting that key",
                self.policy.name,
                key,
                self.algorithm,
                exc,
            )
        return self.keys(key)

    def _clean(self, key: str) -> None:
        """``key`` decided without an error: its episode (if any) is over."""
        with self._lock:
            self._corrupt.discard(key)

    # -- decisions -------------------------------------------------------------------
    def decide(self, key: str, cost: int, commit: bool) -> Decision:
        keys = self.keys(key)
        try:
            reply = self.backend.evalsha(self._script, keys, self._args(cost, commit))
        except BackendDataError as exc:
            self.backend.delete(self._corrupt_key(key, exc))
            return self._decision(
                self.backend.evalsha(self._script, keys, self._args(cost, commit))
            )
        if self._corrupt:
            self._clean(key)
        return self._decision(reply)

    async def adecide(self, key: str, cost: int, commit: bool) -> Decision:
        keys = self.keys(key)
        try:
            reply = await self.backend.aevalsha(self._script, keys, self._args(cost, commit))
        except BackendDataError as exc:
            await self.backend.adelete(self._corrupt_key(key, exc))
            return self._decision(
                await self.backend.aevalsha(self._script, keys, self._args(cost, commit))
            )
        if self._corrupt:
            self._clean(key)
        return self._decision(reply)

    def _refund_args(self, cost: int) -> list[str]:
        now = self.backend.server_now
        if now is None:
            return [str(cost)]
        return [str(cost), str(math.floor(now() * 1_000_000))]

    # A data error on a refund resets the key: a clean state is a full refund already.
    def refund(self, key: str, cost: int) -> None:
        self.counters.refunds.inc()
        try:
            self.backend.evalsha(self._refund_script, self.keys(key), self._refund_args(cost))
        except BackendDataError as exc:
            self.backend.delete(self._corrupt_key(key, exc))

    async def arefund(self, key: str, cost: int) -> None:
        self.counters.refunds.inc()
        try:
            await self.backend.aevalsha(
                self._refund_script, self.keys(key), self._refund_args(cost)
            )
        except BackendDataError as exc:
            await self.backend.adelete(self._corrupt_key(key, exc))

    def reset(self, key: str) -> None:
        self.backend.delete(self.keys(key))

    async def areset(self, key: str) -> None:
        await self.backend.adelete(self.keys(key))
