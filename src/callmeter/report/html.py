"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no fetches)."""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TextIO

from ..errors import InvalidArgumentError
from ..latency.summary import SERIES, LatencySummary, Percentiles
from ..model.types import COMPONENTS, TurnMetrics, TurnSegment
from ..records import LineError, ReadStats
from .calls import Call, Report, overview
from .fleet import Fleet
from .style import COLORS, LABELS, SERIES_LABELS, clean, color, label, seconds

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
    """Axis ticks for ``[0, scale]`` seconds: at most 8 steps of 1, 2, 2.5 or 5 x 10^k."""
    magnitude = 10.0 ** math.floor(math.log10(scale / 8)) if scale > 0 else 0.1
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * magnitude
        if scale / step <= 8:
            break
    n = int(scale / step)
    return [i * step for i in range(n + 1)]


def _clip(seg: TurnSegment, duration: float) -> tuple[float, float] | None:
    """The segment's ``(start, end)`` inside ``[0, duration]``; None when nothing is left."""
    start, end = seg.start, seg.end
    if math.isnan(start) or math.isnan(end):
        return None
    start = min(max(start, 0.0), duration)
    end = min(max(end, 0.0), duration)
    return (start, end) if end > start else None


def waterfall_svg(turns: Sequence[TurnMetrics], session_id: str = "", hidden: int = 0) -> str:
    """An SVG waterfall: one row per turn, segments coloured by component.

    Segments are clipped to their turn; an unknown component is drawn in a neutral colour
    and named in its tooltip. ``hidden`` turns not drawn are mentioned under the rows.
    """
    rows = max(len(turns), 1) + (1 if hidden else 0)
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
        name = escape(sid if len(sid) <= 24 else "…" + sid[-23:])
        out.append(f'<text x="0" y="{y + 13}">{name}</text>')
        for seg in turn.breakdown.segments:
            span = _clip(seg, turn.duration)
            if span is None:
                continue
            start, end = span
            step = f" (step {seg.step})" if seg.step else ""
            out.append(
                f'<rect x="{LABEL_W + start * k:.2f}" y="{y + 2}" width="{(end - start) * k:.2f}" '
                f'height="{ROW_H - 4}" fill="{color(seg.component)}">'
                f"<title>{escape(label(seg.component))}{step}: {end - start:.3f} s "
                f"({start:.3f}-{end:.3f})</title></rect>"
            )
        mark = " interrupted" if turn.e2e_latency < 0 else ""
        out.append(
            f'<text x="{LABEL_W + turn.duration * k + 4:.1f}" y="{y + 13}">'
            f"{turn.duration:.3f} s{mark}</text>"
        )
    if hidden:
        out.append(
            f'<text x="0" y="{len(turns) * ROW_H + 13}">… {hidden} more turns '
            "(the slowest are listed below)</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _legend() -> str:
    items = "".join(
        f'<span><i style="background:{COLORS[c]}"></i>{LABELS[c]}</span>' for c in COMPONENTS
    )
    return f'<p class="legend">{items}</p>'


def _percentiles_table(series: Sequence[tuple[str, Percentiles]]) -> str:
    rows = []
    for name, p in series:
        cells = "".join(
            f"<td>{seconds(getattr(p, q)) if p.count else '-'}</td>"
            for q in ("p50", "p90", "p99", "max")
        )
        approx = "" if p.exact else " ~"
        rows.append(f"<tr><td>{name}{approx}</td><td>{p.count}</td>{cells}</tr>")
    head = "<tr><th></th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>"
    return f'<table class="percentiles">{head}{"".join(rows)}</table>'


def _series(lat: LatencySummary) -> list[tuple[str, Percentiles]]:
    return [(SERIES_LABELS[name], getattr(lat, name)) for name in SERIES]


def _slowest_table(turns: Sequence[TurnMetrics]) -> str:
    if not turns:
        return ""
    head = "".join(f"<th>{LABELS[c]}</th>" for c in COMPONENTS)
    rows = []
    for t in turns:
        cells = "".join(f"<td>{v:.3f}</td>" for v in t.breakdown.components().values())
        rows.append(
            f"<tr><td>{escape(t.speech_id or '-')}</td><td>{t.e2e_latency:.3f}</td>{cells}</tr>"
        )
    return (
        f'<table class="slowest"><tr><th>slowest turns</th><th>e2e (s)</th>{head}</tr>'
        f"{''.join(rows)}</table>"
    )


def call_section(call: Call) -> str:
    """One call as an HTML ``<section>``: overview, waterfall, percentiles, slowest turns."""
    lat = call.latency
    title = escape(clean(call.session_id, 200))
    if call.agent_name:
        title += f" · {escape(clean(call.agent_name, 200))}"
    meta_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
        for row in overview(call)
    )
    error = f" <small>(ended by {escape(call.error)})</small>" if call.error else ""
    if not call.closed:
        error += " <small>(no close record)</small>"
    return (
        f'<section class="call" id="{escape(call.session_id)}"><h2>{title}{error}</h2>'
        f'<table class="meta">{meta_rows}</table>'
        f"{waterfall_svg(call.turns, call.session_id, call.turns_hidden)}"
        f"{_percentiles_table(_series(lat))}{_slowest_table(lat.slowest_turns)}</section>"
    )


def _head(title: str, calls: int, stats: ReadStats, errors: Sequence[LineError]) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1><p>{calls} calls</p>",
        _legend(),
    ]
    if errors or stats.skipped_total:
        items = "".join(
            f"<li>line {e.line} skipped ({escape(e.kind)}): {escape(e.message[:300])}</li>"
            for e in errors[:20]
        )
        counts = ", ".join(f"{n} {escape(k)}" for k, n in stats.skipped.most_common())
        total = (
            f'<p class="errors">{stats.skipped_total} lines skipped: {counts}</p>' if counts else ""
        )
        parts.append(f'{total}<ul class="errors">{items}</ul>')
    return "".join(parts)


def _fleet_section(fleet: Fleet, summary: bool) -> str:
    t = fleet.totals
    if t.calls <= 1 and not summary:
        return ""
    cost = f"${t.cost:.6f}" if t.cost_complete else f"at least ${t.cost:.6f}"
    rows = [
        ("calls", f"{t.calls} ({t.unclosed_calls} without close, {t.error_calls} ended by error)"),
        ("turns", f"{t.turns} ({t.interrupted_turns} interrupted)"),
        ("LLM requests", f"{t.llm_requests} ({t.llm_errors} errors)"),
        ("tool calls", f"{t.tool_calls} ({t.tool_errors} errors)"),
        ("cost", cost),
    ]
    meta = "".join(f"<tr><td>{k}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    series = [*_series(fleet.latency()), ("call duration", fleet.percentiles("call_duration"))]
    note = (
        "<p>~ percentiles from a merged sketch (1 % relative accuracy)</p>"
        if any(not p.exact for _, p in series)
        else ""
    )
    slowest = [turn for _, turn in fleet.slowest_turns]
    return (
        f'<section class="fleet"><h2>all {t.calls} calls</h2><table class="meta">{meta}</table>'
        f"{note}{_percentiles_table(series)}{_slowest_table(slowest)}</section>"
    )


class HTMLWriter:
    """Builds the HTML report as calls arrive; sections wait in a spooled temporary file
    (in memory up to a few MiB) until the header, which counts them, is written."""

    def __init__(self, *, summary: bool = False, title: str = "callmeter report") -> None:
        self.summary = summary
        self.title = title
        self.calls = 0
        self._sections = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by write()
            max_size=8 << 20, mode="w+", encoding="utf-8"
        )

    def call(self, call: Call) -> None:
        """Add one call's section."""
        if self.summary:
            return
        self.calls += 1
        self._sections.write(call_section(call))

    def write(
        self, out: TextIO, fleet: Fleet, stats: ReadStats, errors: Sequence[LineError]
    ) -> None:
        """Write the whole document to ``out``."""
        out.write(_head(self.title, fleet.totals.calls, stats, errors))
        out.write(_fleet_section(fleet, self.summary))
        self._sections.seek(0)
        shutil.copyfileobj(self._sections, out)
        self._sections.close()
        out.write("</body></html>\n")

    def save(
        self,
        path: str | os.PathLike[str],
        fleet: Fleet,
        stats: ReadStats,
        errors: Sequence[LineError],
    ) -> Path:
        """Write the document to ``path``."""
        out = Path(path)
        try:
            with out.open("w", encoding="utf-8") as f:
                self.write(f, fleet, stats, errors)
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot write the HTML report to {str(out)!r}: {exc.strerror or exc}"
            ) from None
        return out


def _from_calls(source: Report | Sequence[Call]) -> tuple[Report, Fleet]:
    report = source if isinstance(source, Report) else Report(calls=list(source))
    fleet = report.fleet
    if fleet is None:
        fleet = Fleet()
        for call in report.calls:
            fleet.add(call)
    return report, fleet


def render_html(source: Report | Sequence[Call], title: str = "callmeter report") -> str:
    """The whole report of loaded calls as one HTML document."""
    report, fleet = _from_calls(source)
    writer = HTMLWriter(title=title)
    for call in report.calls:
        writer.call(call)
    buf = io.StringIO()
    writer.write(buf, fleet, report.stats, report.errors)
    return buf.getvalue()


def write_html(
    source: str | os.PathLike[str] | Report | Sequence[Call], path: str | os.PathLike[str]
) -> Path:
    """Write the HTML report of a JSONL file (read in one pass) or of loaded calls to ``path``."""
    writer = HTMLWriter()
    if isinstance(source, str | os.PathLike):
        from .stream import scan

        result = scan(source, on_call=lambda _order, call: writer.call(call))
        return writer.save(path, result.fleet, result.stats, result.errors)
    report, fleet = _from_calls(source)
    for call in report.calls:
        writer.call(call)
    return writer.save(path, fleet, report.stats, report.errors)
