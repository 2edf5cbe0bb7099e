"""What a service's workload reports to the demo (and to its own tests)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(kw_only=True, slots=True)
class WorkloadResult:
    """One service's share of a demo run.

    ``latencies_ms``: one entry per HTTP request the workload made (measured around
    the request). ``statuses``: how many responses had each status code. ``figures``:
    the service's own counts the demo reports (e.g. ``llm_calls``,
    ``extraction_calls``, ``rows_synced``, ``full_refetch_rows``); database query and
    row counts are NOT reported here: the demo reads those from PostgreSQL itself.
    """

    service: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)
