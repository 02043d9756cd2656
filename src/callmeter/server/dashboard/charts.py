"""Server-rendered SVG charts: lines over time, stacked bars over time, turn waterfalls.

Every chart scales to its container (``viewBox``), is labelled for screen readers, and has
a ``<title>`` on each mark for a tooltip.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ...model.types import COMPONENTS
from ...report.style import COLORS, LABELS

W, H = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 26


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _time_label(t: float, span: float) -> str:
    fmt = "%H:%M" if span <= 86_400 else "%m-%d %H:%M" if span <= 8 * 86_400 else "%Y-%m-%d"
    return time.strftime(fmt, time.gmtime(t))


def _frame(xs: Sequence[float], ymax: float, fmt: Any, label: str, cls: str) -> list[str]:
    out = [
        f'<svg class="chart {cls}" viewBox="0 0 {W} {H}" preserveAspectRatio="none" '
        f'role="img" aria-label="{escape(label)}">'
    ]
    ph = H - TOP - BOTTOM
    for i in range(5):
        v = ymax * i / 4
        y = TOP + ph - ph * i / 4
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(v))}</text>'
        )
    if xs:
        span = xs[-1] - xs[0]
        for i in sorted({0, len(xs) // 2, len(xs) - 1}):
            x = _x(i, len(xs))
            anchor = "start" if i == 0 else "end" if i == len(xs) - 1 else "middle"
            out.append(
                f'<text x="{x:.1f}" y="{H - 8}" text-anchor="{anchor}">'
                f"{_time_label(xs[i], span)}</text>"
            )
    return out


def _x(i: int, n: int) -> float:
    pw = W - LEFT - RIGHT
    return LEFT + (pw * (i + 0.5) / n if n else 0)


def _y(v: float, ymax: float) -> float:
    ph = H - TOP - BOTTOM
    return TOP + ph - ph * min(v, ymax) / ymax


def legend(items: Sequence[tuple[str, str]]) -> str:
    """An HTML legend: (label, colour) pairs."""
    spans = "".join(
        f'<span><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{c}"/></svg> {escape(name)}</span>'
        for name, c in items
    )
    return f'<p class="legend">{spans}</p>'


def line_chart(
    xs: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    label: str,
    fmt: Any = lambda v: f"{v:g}",
) -> str:
    """Lines over time: ``series`` of (name, colour, values aligned with ``xs``); None
    breaks a line."""
    vals = [v for _, _, ys in series for v in ys if v is not None]
    ymax = _nice_max(max(vals, default=0.0))
    out = _frame(xs, ymax, fmt, label, "lines")
    n = len(xs)
    for name, colour, ys in series:
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(ys):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{_x(i, n):.1f},{_y(v, ymax):.1f}")
        if run:
            runs.append(run)
        for r in runs:
            out.append(f'<polyline points="{" ".join(r)}" fill="none" stroke="{colour}" '
                       'stroke-width="2"/>')  # fmt: skip
        if n <= 200:
            for i, v in enumerate(ys):
                if v is not None:
                    out.append(
                        f'<circle cx="{_x(i, n):.1f}" cy="{_y(v, ymax):.1f}" r="2.5" '
                        f'fill="{colour}"><title>{escape(name)} '
                        f"{_time_label(xs[i], 0)}: {escape(fmt(v))}</title></circle>"
                    )
    out.append("</svg>")
    return "".join(out) + legend([(name, colour) for name, colour, _ in series])


def stacked_bars(
    xs: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    label: str,
    fmt: Any = lambda v: f"{v:g}",
) -> str:
    """Bars over time, one segment per series, stacked in ``series`` order from the axis."""
    n = len(xs)
    totals = [sum(ys[i] for _, _, ys in series) for i in range(n)]
    ymax = _nice_max(max(totals, default=0.0))
    out = _frame(xs, ymax, fmt, label, "bars")
    bw = max((W - LEFT - RIGHT) / max(n, 1) - 1, 0.5)
    for i in range(n):
        base = 0.0
        for name, colour, ys in series:
            v = ys[i]
            if v <= 0:
                continue
            y0, y1 = _y(base, ymax), _y(base + v, ymax)
            out.append(
                f'<rect x="{_x(i, n) - bw / 2:.1f}" y="{y1:.1f}" width="{bw:.1f}" '
                f'height="{max(y0 - y1, 0.0):.1f}" fill="{colour}"><title>{escape(name)} '
                f"{_time_label(xs[i], 0)}: {escape(fmt(v))}</title></rect>"
            )
            base += v
    out.append("</svg>")
    return "".join(out) + legend([(name, colour) for name, colour, _ in series])


LABEL_W = 170
BAR_W = 600
ROW_H = 18


def waterfall(turns: Sequence[Mapping[str, Any]], session_id: str) -> str:
    """One bar per turn, its segments coloured by component as in the HTML report (same
    colours, same order: the stored breakdown's segments in time order)."""
    rows = max(len(turns), 1)
    height = rows * ROW_H + 28
    width = LABEL_W + BAR_W + 90
    out = [
        f'<svg class="waterfall" data-session-id="{escape(session_id)}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="turn latency waterfall of {escape(session_id)}: {len(turns)} turn(s)">'
    ]
    if not turns:
        out.append('<text x="0" y="14">no turns</text></svg>')
        return "".join(out)
    scale = max((float(t["duration"]) for t in turns), default=0.0) or 1.0
    k = BAR_W / scale
    axis_y = rows * ROW_H + 4
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if scale / step <= 8:
            break
    for i in range(int(scale / step) + 1):
        x = LABEL_W + i * step * k
        out.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{axis_y}" class="grid"/>'
            f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{i * step:g} s</text>'
        )
    for i, turn in enumerate(turns):
        y = i * ROW_H
        sid = turn.get("speech_id") or "-"
        name = escape(sid if len(sid) <= 24 else "…" + sid[-23:])
        dur = float(turn["duration"])
        out.append(
            f'<g class="turn" data-seq="{int(turn["seq"])}" data-duration="{dur!r}">'
            f'<text x="0" y="{y + 13}">{name}</text>'
        )
        for seg in turn["breakdown"].get("segments", []):
            comp = seg["component"]
            start, end = float(seg["start"]), float(seg["end"])
            step_s = f" (step {seg['step']})" if seg.get("step") else ""
            out.append(
                f'<rect x="{LABEL_W + start * k:.3f}" y="{y + 2}" width="{(end - start) * k:.3f}" '
                f'height="{ROW_H - 4}" fill="{COLORS.get(comp, COLORS["other"])}" '
                f'data-component="{escape(comp)}" data-seconds="{end - start!r}">'
                f"<title>{escape(LABELS.get(comp, comp))}{step_s}: {end - start:.3f} s "
                f"({start:.3f}-{end:.3f})</title></rect>"
            )
        mark = " interrupted" if turn.get("interrupted") else ""
        out.append(
            f'<text x="{LABEL_W + dur * k + 4:.1f}" y="{y + 13}">{dur:.3f} s{mark}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def waterfall_legend() -> str:
    """The components in :data:`~callmeter.model.types.COMPONENTS` order with their colours."""
    return legend([(LABELS[c], COLORS[c]) for c in COMPONENTS])
