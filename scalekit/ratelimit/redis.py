"""The Redis rate-limit store: one EVALSHA per decision, whatever the windows.

Keys: ``<prefix>:<name>:{<subject>}:<period>`` — every window of one subject
shares the ``{subject}`` hash tag, so the multi-key script runs on one Redis
Cluster slot. The subject is escaped (see :mod:`scalekit._keys`). Every key the
scripts write carries an expiry.
"""

from __future__ import annotations

from typing import Any

from scalekit._keys import build_key, escape
from scalekit.backends._lua import load_script
from scalekit.backends.redis import RedisBackend
from scalekit.ratelimit.algorithms import Algorithm, combine
from scalekit.ratelimit.decision import Decision
from scalekit.ratelimit.policy import Policy

__all__ = ["RedisRateStore"]

_new_decision = tuple.__new__


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
    ) -> None:
        self.backend = backend
        self.algorithm = algorithm
        self.policy = policy
        # token_bucket and gcra make the same decisions (see algorithms.gcra)
        script = "gcra" if algorithm == "token_bucket" else algorithm
        self._script = load_script("scalekit.ratelimit", script, header="_header")
        self._prefix = prefix
        self._name = tuple(escape(n) for n in name)
        suffixes: list[str] = []
        for r in policy.rates:
            p = f"{r.period:g}"
            suffixes.extend([f"{p}:z", f"{p}:m"] if algorithm == "sliding_log" else [p])
        self._suffixes = suffixes
        self._rate_args: list[str] = []
        for r in policy.rates:
            self._rate_args += [str(r.limit), repr(r.period), str(r.capacity)]
        self._limits = [(r.limit, r.period) for r in policy.rates]

    def keys(self, key: str) -> list[str]:
        base = build_key(self._prefix, *self._name, tag=key)
        return [f"{base}:{s}" for s in self._suffixes]

    def _args(self, cost: int, commit: bool) -> list[str]:
        now = self.backend.server_now
        return [str(cost), "1" if commit else "0", repr(now()) if now else "", *self._rate_args]

    def _decision(self, reply: Any) -> Decision:
        if isinstance(reply, str):  # a client built with decode_responses=True
            reply = reply.encode()
        raw = reply.split()
        if len(raw) == 5:  # one window: no folding needed
            limit, period = self._limits[0]
            ok = raw[1] == b"1"
            return _new_decision(
                Decision,
                (ok, limit, int(raw[2]), float(raw[3]), float(raw[4]) if not ok else 0.0,
                 self.policy.name, period),
            )  # fmt: skip
        results = [
            (raw[i] == b"1", int(raw[i + 1]), float(raw[i + 2]), float(raw[i + 3]))
            for i in range(1, len(raw), 4)
        ]
        return combine(results, self._limits, self.policy.name)

    def decide(self, key: str, cost: int, commit: bool) -> Decision:
        return self._decision(
            self.backend.evalsha(self._script, self.keys(key), self._args(cost, commit))
        )

    async def adecide(self, key: str, cost: int, commit: bool) -> Decision:
        return self._decision(
            await self.backend.aevalsha(self._script, self.keys(key), self._args(cost, commit))
        )

    def reset(self, key: str) -> None:
        self.backend.delete(self.keys(key))

    async def areset(self, key: str) -> None:
        await self.backend.adelete(self.keys(key))
