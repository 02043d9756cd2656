"""The terminal report as plain lines: per call a summary, a turn waterfall, percentiles and
the slowest turns; then the fleet. ANSI colours only when asked (see :func:`use_color`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TextIO

from ..latency.summary import SERIES, LatencySummary, Percentiles
from ..model.types import COMPONENTS, TurnMetrics
from ..records import LineError, ReadStats
from .calls import Call, overview
from .fleet import Fleet
from .style import SERIES_LABELS, clean, color, label, seconds

BAR_WIDTH = 48
RULE_WIDTH = 100
_RESET = "\x1b[0m"


def use_color(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal and ``$NO_COLOR`` is unset (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Painter:
    """ANSI styling, or none at all when ``color`` is False."""

    __slots__ = ("_cache", "color")

    def __init__(self, color: bool) -> None:
        self.color = color
        self._cache: dict[str, str] = {}

    def fg(self, hex_color: str, text: str) -> str:
        """``text`` in a 24-bit colour given as ``#rrggbb``."""
        if not self.color or not text:
            return text
        code = self._cache.get(hex_color)
        if code is None:
            r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
            code = self._cache[hex_color] = f"\x1b[38;2;{r};{g};{b}m"
        return f"{code}{text}{_RESET}"

    def bold(self, text: str) -> str:
        """``text`` in bold."""
        return f"\x1b[1m{text}{_RESET}" if self.color else text

    def dim(self, text: str) -> str:
        """``text`` dimmed."""
        return f"\x1b[2m{text}{_RESET}" if self.color else text


def _short(speech_id: str | None, width: int = 20) -> str:
    if not speech_id:
        return "-"
    if len(speech_id) > width:
        speech_id = "…" + speech_id[-(width - 1) :]
    return clean(speech_id, width)


def rule(title: str, p: Painter, width: int = RULE_WIDTH) -> str:
    """``── title ─────`` as one line."""
    head = f"── {title} "
    return p.bold(head) + "─" * max(3, width - len(head)) + "\n"


def waterfall_bar(turn: TurnMetrics, scale: float, p: Painter, width: int = BAR_WIDTH) -> str:
    """One turn as ``width`` cells for ``scale`` seconds, coloured by component.

    Segments are clipped to the turn (``[0, duration]``), so an out-of-range or unknown
    segment never draws beyond its row.
    """
    out = []
    pos = 0
    duration = turn.duration
    k = width / scale if scale > 0 else 0.0
    for seg in turn.breakdown.segments:
        end = seg.end
        if not math.isfinite(end):
            end = duration if end > 0 else 0.0
        end = min(max(end, 0.0), duration)
        cells = min(width, round(end * k))
        if cells > pos:
            out.append(p.fg(color(seg.component), "█" * (cells - pos)))
            pos = cells
    return "".join(out)


def _waterfall(call: Call, p: Painter) -> list[str]:
    if not call.turns:
        return [p.dim("no turns" if not call.turns_total else "turns not kept") + "\n"]
    scale = max(t.duration for t in call.turns) or 1.0
    out = []
    for turn in call.turns:
        flag = "✗" if turn.e2e_latency < 0 else " "
        out.append(
            f"{p.dim(f'{_short(turn.speech_id):<20}')} {seconds(turn.duration):>9}{flag} "
            f"{waterfall_bar(turn, scale, p)}\n"
        )
    if call.turns_hidden:
        out.append(p.dim(f"… {call.turns_hidden} more turns (the slowest are listed below)") + "\n")
    return out


def legend(p: Painter) -> str:
    """The component colour legend, one line."""
    return "".join(f"{p.fg(color(c), '█')} {label(c)}  " for c in COMPONENTS) + "\n"


def percentiles_lines(
    series: Sequence[tuple[str, Percentiles]], p: Painter, *, unit: str = "s"
) -> list[str]:
    """A table of count, p50, p90, p99 and max, one row per ``(label, percentiles)``."""
    out = [p.bold(f"{'':<16}{'n':>7}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}") + "\n"]
    for name, pc in series:
        title = name + ("" if pc.exact else " ~")
        cells = "".join(
            f"{seconds(getattr(pc, q)) if pc.count else '-':>10}"
            for q in ("p50", "p90", "p99", "max")
        )
        out.append(f"{title:<16}{pc.count:>7}{cells}\n")
    return out


def _series(lat: LatencySummary) -> list[tuple[str, Percentiles]]:
    return [(SERIES_LABELS[name], getattr(lat, name)) for name in SERIES]


def _parts(turn: TurnMetrics, top: int = 3) -> str:
    parts = sorted(turn.breakdown.components().items(), key=lambda kv: -kv[1])
    return ", ".join(f"{label(k)} {v:.3f}" for k, v in parts[:top] if v > 0)


def slowest_lines(turns: Sequence[tuple[str | None, TurnMetrics]], p: Painter) -> list[str]:
    """The slowest turns and where their time went; ``(session_id or None, turn)`` pairs."""
    with_call = any(sid is not None for sid, _ in turns)
    head = f"{'slowest turns':<20} {'call':<20} " if with_call else f"{'slowest turns':<20} "
    out = [p.bold(f"{head}{'e2e':>9}  where the time went (s)") + "\n"]
    for sid, turn in turns:
        call = f"{_short(sid):<20} " if with_call else ""
        out.append(
            f"{_short(turn.speech_id):<20} {call}{seconds(turn.e2e_latency):>9}  {_parts(turn)}\n"
        )
    return out


def call_lines(call: Call, p: Painter) -> list[str]:
    """Everything the terminal report shows for one call, as lines."""
    title = f"call {clean(call.session_id)}"
    if call.agent_name:
        title += f" · {clean(call.agent_name, 40)}"
    if call.labels:
        title += " · " + clean(", ".join(f"{k}={v}" for k, v in call.labels.items()), 80)
    if call.error:
        title += f" · ended by {clean(call.error, 40)}"
    if not call.closed:
        title += " · no close record"
    out = [rule(title, p)]
    for k1, v1, k2, v2 in overview(call):
        out.append(f"{p.bold(f'{k1:<15}')}{v1:<18}{p.bold(f'{k2:<26}')}{v2}\n")
    out.extend(_waterfall(call, p))
    lat = call.latency
    if lat.turns or lat.llm_ttft.count or lat.tool_duration.count:
        out.extend(percentiles_lines(_series(lat), p))
    if lat.slowest_turns:
        out.extend(slowest_lines([(None, t) for t in lat.slowest_turns], p))
    return out


def fleet_lines(fleet: Fleet, p: Painter) -> list[str]:
    """Fleet totals, percentiles over all calls and the slowest turns of all calls."""
    t = fleet.totals
    cost = f"${t.cost:.6f}"
    if not t.cost_complete:
        unpriced = fleet.unpriced
        cost = f"at least {cost}" + (
            f" (no price: {clean(', '.join(unpriced), 120)})" if unpriced else ""
        )
    rows = [
        ("calls", f"{t.calls} ({t.unclosed_calls} without close, {t.error_calls} ended by error)"),
        ("events", str(t.events)),
        ("turns", f"{t.turns} ({t.interrupted_turns} interrupted, "
                  f"{t.budget_exceeded} over budget)"),
        ("call time", seconds(t.duration)),
        ("LLM requests", f"{t.llm_requests} ({t.llm_errors} errors)"),
        ("tokens", f"{t.llm_prompt_tokens} in / {t.llm_prompt_cached_tokens} cached / "
                   f"{t.llm_completion_tokens} out"),
        ("tool calls", f"{t.tool_calls} ({t.tool_errors} errors)"),
        ("TTS characters", str(t.tts_characters_count)),
        ("STT audio", seconds(t.stt_audio_duration)),
        ("cost", cost),
    ]  # fmt: skip
    out = [rule(f"all {t.calls} calls", p)]
    out.extend(f"{p.bold(f'{k:<15}')}{v}\n" for k, v in rows)
    lat = fleet.latency()
    series = [*_series(lat), ("call duration", fleet.percentiles("call_duration"))]
    out.extend(percentiles_lines(series, p))
    if any(not pc.exact for _, pc in series):
        out.append(p.dim("~ percentiles from a merged sketch (1 % relative accuracy)") + "\n")
    if fleet.slowest_turns:
        out.extend(slowest_lines(fleet.slowest_turns, p))
    return out


def skipped_lines(stats: ReadStats, errors: Sequence[LineError], first: int = 5) -> list[str]:
    """A few lines on what was skipped: a count per kind, the first line numbers and an
    example message (never one line per skipped line)."""
    if not stats.skipped_total:
        return []
    read = stats.lines
    out = [f"skipped {stats.skipped_total} of {read} lines:\n"]
    for kind, count in stats.skipped.most_common():
        examples = [e for e in errors if e.kind == kind][:first]
        where = ", ".join(str(e.line) for e in examples)
        more = ", ..." if count > len(examples) else ""
        message = clean(examples[0].message, 160) if examples else ""
        out.append(f"  {kind}: {count} (line {where}{more}) {message}\n")
    return out
