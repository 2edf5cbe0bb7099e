"""A projection as a terminal table, JSON, or a self-contained HTML page (inline SVG,
no script, nothing fetched)."""

from __future__ import annotations

import html
import json

from scalekit.capacity._project import Projection

__all__ = ["render_html", "render_json", "render_text"]


def _num(value: float, unit: str = "") -> str:
    if unit == "bytes":
        for size, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= size:
                return f"{value / size:.3g} {suffix}"
        return f"{value:.0f} B"
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}K"
    return f"{value:,.1f}" if value != int(value) else f"{int(value):,}"


def _users(n: int | None) -> str:
    return "never" if n is None else f"{n:,}"


def _rows(p: Projection) -> list[list[str]]:
    rows = []
    for u in p.limits:
        rows.append([
            u.name, _num(u.load, u.unit), _num(u.limit, u.unit), f"{u.used:.0%}",
            f"{u.headroom:.0%}", u.status.upper() if u.status != "ok" else "ok",
            _users(u.warns_at_users), _users(u.breaks_at_users),
        ])  # fmt: skip
    return rows


def _summary(p: Projection) -> list[str]:
    ld = p.load
    tiers = ", ".join(f"{k} {v:,.1f}" for k, v in ld.requests_per_second_by_tier.items())
    lines = [
        f"{p.plan}: {p.users:,} users, {ld.concurrent_users:,.0f} active at the peak",
        f"requests: {ld.requests_per_second:,.1f}/s at the peak ({tiers})",
    ]
    if ld.instances:
        lines.append(f"instances: {ld.instances}; database connections: {ld.db_connections:,.0f}")
    lines.append(f"database queries after the caches: {ld.db_queries_per_second:,.1f}/s")
    for s in ld.sampled:
        lines.append(
            f"sampled {s.name}: {_num(s.candidates_per_month)} candidates/month -> "
            f"{_num(s.calls_per_month_low)}-{_num(s.calls_per_month_high)} calls/month"
        )
    for name, runs in ld.job_runs_per_month.items():
        lines.append(f"job {name}: {runs:,.0f} runs/month")
    return lines


def _verdict(p: Projection) -> str:
    at = p.first_break_users
    if p.first_to_break is None or at is None:
        return "No limit breaks below a billion users."
    return (
        f"First to break: {p.first_to_break} at {at:,} users "
        f"({at / p.users:.2f}x the plan's {p.users:,})."
    )


_HEAD = ["limit", "load", "limit", "used", "headroom", "status", "warn at users", "breaks at users"]


def render_text(p: Projection) -> str:
    """The projection as a plain-text table for a terminal."""
    rows = [_HEAD, *_rows(p)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEAD))]
    out = [*_summary(p), ""]
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out += [
        "",
        f"thresholds: warning {p.warning:.0%}, critical {p.critical:.0%}; a month is 30 days",
        _verdict(p),
    ]
    return "\n".join(out)


def render_json(p: Projection) -> str:
    """The projection as indented JSON (``Projection.as_dict()``)."""
    return json.dumps(p.as_dict(), indent=2, allow_nan=False)


_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "critical": "#ef6c00", "over": "#c62828"}


def _chart(p: Projection) -> str:
    bar_h, gap, label_w, plot_w = 22, 10, 260, 480
    scale_max = max(1.2, *(min(u.used, 2.0) for u in p.limits)) if p.limits else 1.2
    height = len(p.limits) * (bar_h + gap) + 40

    def x(share: float) -> float:
        return label_w + plot_w * min(share, scale_max) / scale_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 70}" '
        f'height="{height}" role="img" aria-label="share of each limit used">'
    ]
    for i, u in enumerate(p.limits):
        y = 10 + i * (bar_h + gap)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7}" text-anchor="end" '
            f'font-size="13">{html.escape(u.name)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{x(u.used) - label_w:.1f}" height="{bar_h}" '
            f'fill="{_COLOURS[u.status]}"><title>{html.escape(u.name)}: {u.used:.1%} used, '
            f"{u.headroom:.1%} headroom</title></rect>"
        )
        parts.append(
            f'<text x="{x(u.used) + 4:.1f}" y="{y + bar_h * 0.7}" font-size="12">'
            f"{u.used:.0%}</text>"
        )
    bottom = height - 24
    for share, label in ((p.warning, "warning"), (p.critical, "critical"), (1.0, "limit")):
        parts.append(
            f'<line x1="{x(share):.1f}" y1="4" x2="{x(share):.1f}" y2="{bottom}" '
            f'stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{x(share):.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11">'
            f"{label} {share:.0%}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(p: Projection) -> str:
    """The projection as an HTML page (table and summary)."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _rows(p))
    summary = "".join(f"<li>{e(line)}</li>" for line in _summary(p))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Capacity: {e(p.plan)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-weight: bold; }}
</style></head><body>
<h1>Capacity: {e(p.plan)}</h1>
<ul>{summary}</ul>
<h2>Share of each limit used</h2>
{_chart(p)}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Thresholds: warning {p.warning:.0%}, critical {p.critical:.0%}. A month is 30 days.</p>
<p class="verdict">{e(_verdict(p))}</p>
</body></html>
"""
