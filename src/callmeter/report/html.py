"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no fetches)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape
from pathlib import Path

from ..errors import InvalidArgumentError
from ..latency.summary import SERIES, LatencySummary
from ..model.types import COMPONENTS, TurnMetrics
from .calls import Call, Report, load, overview
from .style import COLORS, LABELS, SERIES_LABELS, seconds

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 10px;text-align:right}
th{font-weight:600}td:first-child,th:first-child{text-align:left}
.meta td{text-align:left}.meta td:nth-child(odd){font-weight:600}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.errors{color:#a15c00}svg{display:block;margin:8px 0}
svg text{font:11px system-ui,Helvetica,Arial,sans-serif;fill:#333}
"""

LABEL_W = 170
BAR_W = 600
ROW_H = 18


def _ticks(scale: float) -> list[float]:
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if scale / step <= 8:
            break
    n = int(scale / step)
    return [i * step for i in range(n + 1)]


def waterfall_svg(turns: Sequence[TurnMetrics], session_id: str = "") -> str:
    """An SVG waterfall: one row per turn, segments coloured by component."""
    rows = max(len(turns), 1)
    height = rows * ROW_H + 28
    width = LABEL_W + BAR_W + 70
    scale = max((t.duration for t in turns), default=0.0) or 1.0
    k = BAR_W / scale
    out = [
        f'<svg class="waterfall" data-session-id="{escape(session_id)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="turn latency waterfall of {escape(session_id)}">'
    ]
    if not turns:
        out.append('<text x="0" y="14">no turns</text></svg>')
        return "".join(out)
    axis_y = rows * ROW_H + 4
    for tick in _ticks(scale):
        x = LABEL_W + tick * k
        out.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{axis_y}" stroke="#e5e5e5"/>'
            f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{tick:g} s</text>'
        )
    for i, turn in enumerate(turns):
        y = i * ROW_H
        sid = turn.speech_id or "-"
        label = escape(sid if len(sid) <= 24 else "…" + sid[-23:])
        out.append(f'<text x="0" y="{y + 13}">{label}</text>')
        for seg in turn.breakdown.segments:
            w = (seg.end - seg.start) * k
            step = f" (step {seg.step})" if seg.step else ""
            out.append(
                f'<rect x="{LABEL_W + seg.start * k:.2f}" y="{y + 2}" width="{w:.2f}" '
                f'height="{ROW_H - 4}" fill="{COLORS[seg.component]}">'
                f"<title>{LABELS[seg.component]}{step}: {seg.end - seg.start:.3f} s "
                f"({seg.start:.3f}-{seg.end:.3f})</title></rect>"
            )
        mark = " interrupted" if turn.e2e_latency < 0 else ""
        out.append(
            f'<text x="{LABEL_W + turn.duration * k + 4:.1f}" y="{y + 13}">'
            f"{turn.duration:.3f} s{mark}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _legend() -> str:
    items = "".join(
        f'<span><i style="background:{COLORS[c]}"></i>{LABELS[c]}</span>' for c in COMPONENTS
    )
    return f'<p class="legend">{items}</p>'


def _percentiles_table(lat: LatencySummary) -> str:
    rows = []
    for name in SERIES:
        p = getattr(lat, name)
        cells = "".join(
            f"<td>{seconds(getattr(p, q)) if p.count else '-'}</td>"
            for q in ("p50", "p90", "p99", "max")
        )
        approx = "" if p.exact else " ~"
        rows.append(f"<tr><td>{SERIES_LABELS[name]}{approx}</td><td>{p.count}</td>{cells}</tr>")
    head = "<tr><th></th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>"
    return f'<table class="percentiles">{head}{"".join(rows)}</table>'


def _slowest_table(lat: LatencySummary) -> str:
    if not lat.slowest_turns:
        return ""
    head = "".join(f"<th>{LABELS[c]}</th>" for c in COMPONENTS)
    rows = []
    for t in lat.slowest_turns:
        cells = "".join(f"<td>{v:.3f}</td>" for v in t.breakdown.components().values())
        rows.append(
            f"<tr><td>{escape(t.speech_id or '-')}</td><td>{t.e2e_latency:.3f}</td>{cells}</tr>"
        )
    return (
        f'<table class="slowest"><tr><th>slowest turns</th><th>e2e (s)</th>{head}</tr>'
        f"{''.join(rows)}</table>"
    )


def _call_section(call: Call) -> str:
    lat = call.latency
    title = escape(call.session_id)
    if call.agent_name:
        title += f" · {escape(call.agent_name)}"
    meta_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
        for row in overview(call)
    )
    error = f" <small>(ended by {escape(call.error)})</small>" if call.error else ""
    return (
        f'<section class="call" id="{escape(call.session_id)}"><h2>{title}{error}</h2>'
        f'<table class="meta">{meta_rows}</table>'
        f"{waterfall_svg(call.turns, call.session_id)}"
        f"{_percentiles_table(lat)}{_slowest_table(lat)}</section>"
    )


def render_html(source: Report | Sequence[Call], title: str = "callmeter report") -> str:
    """The whole report as one HTML document."""
    report = source if isinstance(source, Report) else Report(calls=list(source), errors=[])
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1><p>{len(report.calls)} calls</p>",
        _legend(),
    ]
    if report.errors:
        items = "".join(f"<li>line {e.line}: {escape(e.message)}</li>" for e in report.errors)
        parts.append(f'<ul class="errors">{items}</ul>')
    if len(report.calls) > 1:
        merged = LatencySummary.merge(c.latency for c in report.calls)
        parts.append(
            "<h2>all calls</h2><p>~ percentiles from a merged sketch (1 % relative accuracy)</p>"
            + _percentiles_table(merged)
        )
    parts.extend(_call_section(c) for c in report.calls)
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(
    source: str | os.PathLike[str] | Report | Sequence[Call], path: str | os.PathLike[str]
) -> Path:
    """Write the HTML report of a JSONL file (or of loaded calls) to ``path``."""
    if isinstance(source, str | os.PathLike):
        source = load(source)
    out = Path(path)
    try:
        out.write_text(render_html(source), encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write the HTML report to {str(out)!r}: {exc}") from None
    return out
