"""The demo's figures: one dictionary, printed as text and written as JSON and HTML.

The dictionary is built once (:func:`build`); the text, the JSON file and the HTML
page are three renderings of it, so they cannot disagree. The HTML page draws its
charts with matplotlib as SVG and embeds them as ``data:`` URIs: it needs no network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalekit._demo._runner import PHASES, ServiceRun

__all__ = [
    "CLAIMS",
    "Claim",
    "build",
    "claim_outcome",
    "render_text",
    "write_html",
    "write_json",
]

Figures = dict[str, Any]


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _ratio(hits: float, misses: float) -> float | None:
    total = hits + misses
    return hits / total if total else None


def _service_figures(runs: list[ServiceRun]) -> Figures:
    latencies = [x for r in runs for x in r.latencies_ms]
    statuses: Counter[int] = Counter()
    figures: Counter[str] = Counter()
    registry: Counter[str] = Counter()
    for r in runs:
        statuses.update(r.statuses)
        figures.update(r.figures)
        registry.update(r.registry)
    hits, misses = registry["cache_hits"], registry["cache_misses"]
    return {
        "requests": len(latencies),
        "status_429": statuses[429],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_p50_ms": percentile(latencies, 0.50),
        "latency_p95_ms": percentile(latencies, 0.95),
        "db_queries": sum(r.db.queries for r in runs),
        "db_rows_read": sum(r.db.rows_read for r in runs),
        "db_rows_written": sum(r.db.rows_written for r in runs),
        "cache_hits": int(hits),
        "cache_misses": int(misses),
        "cache_hit_ratio": _ratio(hits, misses),
        "ratelimit_denied": int(registry["ratelimit_denied"]),
        "service_figures": {k: figures[k] for k in sorted(figures)},
        "seconds": sum(r.seconds for r in runs),
    }


@dataclass(frozen=True, slots=True)
class Claim:
    """A figure the scaling plans promised, and how the demo measures it.

    ``measure`` returns ``(without, with)`` from the phases' figures, or a reason it
    could not. The claim holds when ``1 - with / without`` reaches ``low``.
    """

    key: str
    claim: str
    what: str
    low: float
    high: float | None
    measure: Callable[[Figures], tuple[float, float] | str]


def _figure(phases: Figures, phase: str, service: str, name: str) -> float | None:
    svc = phases[phase]["services"].get(service)
    if svc is None:
        return None
    value = svc.get(name)
    if value is None:
        value = svc["service_figures"].get(name)
    return None if value is None else float(value)


def _pair(service: str, off_name: str, on_name: str | None = None) -> Callable[[Figures], Any]:
    def measure(phases: Figures) -> tuple[float, float] | str:
        off = _figure(phases, "off", service, off_name)
        on = _figure(phases, "on", service, on_name or off_name)
        if off is None or on is None:
            return f"the {service} service did not report {on_name or off_name}"
        return off, on

    return measure


def _sync_rows(phases: Figures) -> tuple[float, float] | str:
    """Rows the phones received by delta sync after their first sync, against what a
    full refetch would have sent them for the same syncs (their copy's size after each
    sync; the primitives-off phase shows the two are equal when every sync refetches).
    A phone's first sync is a full one either way, so it is left out of both."""
    on = _figure(phases, "on", "sync", "rows_synced")
    full = _figure(phases, "on", "sync", "full_refetch_rows")
    first = _figure(phases, "on", "sync", "first_sync_rows") or 0.0
    if on is None or full is None:
        return "the sync service did not report rows_synced and full_refetch_rows"
    return full - first, on - first


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "caching",
        "40-50 % fewer DB queries from caching",
        "DB queries of the chat service",
        0.40,
        0.50,
        _pair("chat", "db_queries"),
    ),
    Claim(
        "sampling",
        "70-80 % fewer extraction calls from sampling",
        "memory-extraction calls of the chat service",
        0.70,
        0.80,
        _pair("chat", "extraction_calls"),
    ),
    Claim(
        "delta_sync",
        "95 % fewer rows from delta sync",
        "rows sent to phones after their first sync (delta sync against a full refetch "
        "for the same syncs)",
        0.95,
        None,
        _sync_rows,
    ),
    Claim(
        "keyset",
        "keyset pagination flat with depth, OFFSET reading every row before the page",
        "rows PostgreSQL read for the directory's deep page (EXPLAIN ANALYZE)",
        0.90,
        None,
        _pair("directory", "deep_page_rows_read"),
    ),
)


def _claimed(c: Figures) -> str:
    low, high = c["claimed_low"], c["claimed_high"]
    return f"{low:.0%}" if high is None else f"{low * 100:.0f}-{high:.0%}"


def claim_outcome(c: Figures) -> str:
    """One line: the verdict, the measured reduction and the counts it comes from."""
    if c["verdict"] == "not measured":
        return f"not measured ({c['reason']})"
    measured = (
        f"measured {c['reduction']:.0%} fewer {c['measured_on']} "
        f"({c['without']:,.0f} without the primitives, {c['with_primitives']:,.0f} with)"
    )
    if c["verdict"] == "not reproduced":
        return f"not reproduced: {measured}"
    high = c["claimed_high"]
    where = "above the claimed" if high is not None and c["reduction"] > high else "claimed"
    return f"reproduced: {measured}; {where} {_claimed(c)}"


def _verdict(claim: Claim, phases: Figures) -> Figures:
    measured = claim.measure(phases)
    entry: Figures = {
        "key": claim.key,
        "claim": claim.claim,
        "measured_on": claim.what,
        "claimed_low": claim.low,
        "claimed_high": claim.high,
    }
    if isinstance(measured, str):
        return {**entry, "verdict": "not measured", "reason": measured}
    off, on = measured
    entry.update(without=off, with_primitives=on)
    if off <= 0:
        return {**entry, "verdict": "not measured", "reason": "nothing to reduce (0 without)"}
    reduction = 1.0 - on / off
    entry["reduction"] = reduction
    entry["verdict"] = "reproduced" if reduction >= claim.low else "not reproduced"
    return entry


def build(runs: list[ServiceRun], meta: Figures) -> Figures:
    """The report's figures: settings, how each is counted, per phase and service, claims."""
    phases: Figures = {}
    for phase, label, primitives in PHASES:
        mine = [r for r in runs if r.phase == phase]
        services = {}
        for name in dict.fromkeys(r.service for r in mine):
            services[name] = _service_figures([r for r in mine if r.service == name])
        phases[phase] = {
            "label": label,
            "primitives": primitives,
            "services": services,
            "total": _service_figures(mine),
        }
    report: Figures = {**meta, "phases": phases}
    report["claims"] = [_verdict(c, phases) for c in CLAIMS]
    return report


# -- text ------------------------------------------------------------------------------------
def _fmt(value: Any, kind: str = "n") -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.1f} ms"
    if kind == "%":
        return f"{value:.0%}"
    return f"{value:,.0f}"


_ROWS: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", "n"),
    ("db_queries", "DB queries", "n"),
    ("db_rows_read", "rows read (PostgreSQL)", "n"),
    ("db_rows_written", "rows written (PostgreSQL)", "n"),
    ("latency_p50_ms", "latency p50", "ms"),
    ("latency_p95_ms", "latency p95", "ms"),
    ("status_429", "429 responses", "n"),
    ("cache_hit_ratio", "cache hit ratio", "%"),
)

_SERVICE_FIGURES: tuple[tuple[str, str], ...] = (
    ("llm_calls", "LLM calls"),
    ("extraction_calls", "extraction calls"),
    ("rows_synced", "sync rows sent"),
    ("full_refetch_rows", "full refetch rows"),
    ("first_sync_rows", "first sync rows"),
    ("deep_page_depth", "deep page: rows before it"),
    ("deep_page_rows_read", "deep page: rows read"),
    ("deep_page_ms", "deep page: latency (ms)"),
)


def _change(off: float | None, on: float | None) -> str:
    if off is None or on is None or off == 0:
        return ""
    return f"{(on - off) / off:+.0%}"


def _table(lines: list[str], title: str, off: Figures, on: Figures) -> None:
    lines.append(f"\n{title}")
    lines.append(f"  {'':<28}{'primitives off':>16}{'primitives on':>16}{'change':>9}")
    rows = [(key, label, kind, off.get(key), on.get(key)) for key, label, kind in _ROWS]
    for key, label in _SERVICE_FIGURES:
        a, b = off["service_figures"].get(key), on["service_figures"].get(key)
        if a is not None or b is not None:
            rows.append((key, label, "n", a, b))
    for _key, label, kind, a, b in rows:
        change = _change(a, b) if kind != "%" else ""
        lines.append(f"  {label:<28}{_fmt(a, kind):>16}{_fmt(b, kind):>16}{change:>9}")


def render_text(report: Figures) -> str:
    off, on = report["phases"]["off"], report["phases"]["on"]
    lines = [
        f"scalekit {report['scalekit_version']} measured demo: "
        f"{report['population']['users']:,} users, "
        f"{report['population']['active']:,} active at peak "
        f"({report['population']['paid']:,} paid), "
        f"{report['settings']['requests']:,} requests per service and phase",
        f"database: {report['settings']['database']}; "
        f"backends: {report['settings']['backend']}; "
        f"services: {report['settings']['services_from']}",
        "counted by:",
        *(f"  {k}: {v}" for k, v in report["counted_by"].items()),
    ]
    _table(lines, "All services", off["total"], on["total"])
    for name in off["services"]:
        if name in on["services"]:
            _table(lines, f"{name} service", off["services"][name], on["services"][name])
    lines.append("\nThe plans' claims")
    for c in report["claims"]:
        lines.append(f"  {c['claim']}: {claim_outcome(c)}")
    lines.append(f"\nfinished in {report['elapsed_seconds']:.1f} s")
    return "\n".join(lines)


# -- JSON ------------------------------------------------------------------------------------
def write_json(report: Figures, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
td,th{padding:.25rem .7rem;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
.ok{color:#17702f;font-weight:600}.no{color:#a3261b;font-weight:600}
.charts img{max-width:100%;margin:.5rem 0}.note{color:#555;font-size:.9rem}
"""

_OFF_COLOR, _ON_COLOR = "#9aa5b1", "#2f6fbd"


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grouped(report: Figures, key: str, title: str, *, log: bool = False) -> str:
    import matplotlib.pyplot as plt

    off, on = report["phases"]["off"]["services"], report["phases"]["on"]["services"]
    names = [n for n in off if n in on]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    xs = range(len(names))
    a = [off[n].get(key) or 0 for n in names]
    b = [on[n].get(key) or 0 for n in names]
    ax.bar([x - 0.2 for x in xs], a, 0.4, label="primitives off", color=_OFF_COLOR)
    ax.bar([x + 0.2 for x in xs], b, 0.4, label="primitives on", color=_ON_COLOR)
    ax.set_xticks(list(xs), names)
    ax.set_title(title)
    if log and any(v > 0 for v in a + b):
        ax.set_yscale("log")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _latency_chart(report: Figures) -> str:
    import matplotlib.pyplot as plt

    off, on = report["phases"]["off"]["services"], report["phases"]["on"]["services"]
    names = [n for n in off if n in on]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.2
    series = (
        ("off p50", off, "latency_p50_ms", _OFF_COLOR, None),
        ("off p95", off, "latency_p95_ms", _OFF_COLOR, "//"),
        ("on p50", on, "latency_p50_ms", _ON_COLOR, None),
        ("on p95", on, "latency_p95_ms", _ON_COLOR, "//"),
    )
    for i, (label, phase, key, color, hatch) in enumerate(series):
        xs = [x + (i - 1.5) * width for x in range(len(names))]
        ys = [phase[n].get(key) or 0 for n in names]
        ax.bar(xs, ys, width, label=label, color=color, hatch=hatch, edgecolor="white")
    ax.set_xticks(list(range(len(names))), names)
    ax.set_ylabel("ms")
    ax.set_title("Latency per request (p50, p95)")
    ax.legend(frameon=False, ncols=4, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, -0.3))
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _claims_chart(report: Figures) -> str:
    import matplotlib.pyplot as plt

    claims = [c for c in report["claims"] if "reduction" in c]
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.6 * max(1, len(claims))))
    for i, c in enumerate(claims):
        high = c["claimed_high"] if c["claimed_high"] is not None else 1.0
        ax.barh(i, (high - c["claimed_low"]) * 100, left=c["claimed_low"] * 100, height=0.6,
                color="#e8d9a8", label="claimed" if i == 0 else None)  # fmt: skip
        color = "#17702f" if c["verdict"] == "reproduced" else "#a3261b"
        ax.plot([c["reduction"] * 100], [i], "o", color=color, markersize=9,
                label="measured" if i == 0 else None)  # fmt: skip
        ax.annotate(f"{c['reduction']:.0%}", (c["reduction"] * 100, i), xytext=(0, 9),
                    textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    ax.set_yticks(list(range(len(claims))), [c["key"] for c in claims])
    ax.set_xlim(min([0.0] + [c["reduction"] * 100 - 5 for c in claims]), 104)
    ax.set_ylim(-0.6, len(claims) - 0.2)
    ax.set_xlabel("reduction with the primitives on (%)")
    ax.set_title("The plans' claims against the measurement")
    ax.legend(frameon=False, loc="lower left", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _html_table(off: Figures, on: Figures) -> str:
    rows = []
    for key, label, kind in _ROWS:
        a, b = off.get(key), on.get(key)
        change = _change(a, b) if kind != "%" else ""
        rows.append((label, _fmt(a, kind), _fmt(b, kind), change))
    for key, label in _SERVICE_FIGURES:
        a, b = off["service_figures"].get(key), on["service_figures"].get(key)
        if a is not None or b is not None:
            rows.append((label, _fmt(a), _fmt(b), _change(a, b)))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    head = "<tr><th></th><th>primitives off</th><th>primitives on</th><th>change</th></tr>"
    return f"<table>{head}{body}</table>"


def _claims_html(claims: Iterable[Figures]) -> str:
    items = []
    for c in claims:
        css = "ok" if c["verdict"] == "reproduced" else "no"
        items.append(
            f"<li>{html.escape(c['claim'])}: "
            f"<span class='{css}'>{html.escape(claim_outcome(c))}</span></li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def write_html(report: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("svg", force=True)
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable
    off, on = report["phases"]["off"], report["phases"]["on"]
    charts = [
        ("The plans' claims against the measured reductions", _claims_chart(report)),
        (
            "DB queries per service, primitives off and on",
            _grouped(report, "db_queries", "DB queries (counted by PostgreSQL)"),
        ),
        (
            "Rows read by PostgreSQL per service, primitives off and on",
            _grouped(report, "db_rows_read", "Rows read by PostgreSQL (log scale)", log=True),
        ),
        ("Latency p50 and p95 per service, primitives off and on", _latency_chart(report)),
    ]
    sections = [f"<h2>All services</h2>{_html_table(off['total'], on['total'])}"]
    for name in off["services"]:
        if name in on["services"]:
            table = _html_table(off["services"][name], on["services"][name])
            sections.append(f"<h2>{html.escape(name)} service</h2>{table}")
    settings = report["settings"]
    counted = "".join(
        f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in report["counted_by"].items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>scalekit measured demo</title><style>{_CSS}</style></head><body>
<h1>scalekit {html.escape(report["scalekit_version"])}: the measured demo</h1>
<p>{report["population"]["users"]:,} users ({report["population"]["active"]:,} active
at peak, {report["population"]["paid"]:,} paid), {settings["requests"]:,} requests per
service and phase, seed {settings["seed"]}. Database: {html.escape(settings["database"])};
backends: {html.escape(settings["backend"])}; finished in
{report["elapsed_seconds"]:.1f} s.</p>
<h2>The plans' claims</h2>{_claims_html(report["claims"])}
<div class="charts">{"".join(f'<img alt="{alt}" src="{c}">' for alt, c in charts)}</div>
{"".join(sections)}
<h2>How each figure is counted</h2><ul>{counted}</ul>
<p class="note">Command: <code>{html.escape(report["command"])}</code></p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
