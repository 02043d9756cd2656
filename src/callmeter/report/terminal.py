"""The terminal report (rich): per call a summary, a turn waterfall, percentiles, slowest turns."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Console, Group
from rich.rule import Rule
from rich.text import Text

from ..latency.summary import SERIES, LatencySummary
from ..model.types import COMPONENTS, TurnMetrics
from .calls import Call, LineError, Report, load, overview
from .style import COLORS, LABELS, SERIES_LABELS, seconds

BAR_WIDTH = 48


def _summary(call: Call) -> Text:
    out = Text()
    for k1, v1, k2, v2 in overview(call):
        out.append(f"{k1:<15}", "bold")
        out.append(f"{v1:<18}")
        out.append(f"{k2:<26}", "bold")
        out.append(f"{v2}\n")
    return out


def _short(speech_id: str | None, width: int = 20) -> str:
    if not speech_id:
        return "-"
    return speech_id if len(speech_id) <= width else "…" + speech_id[-(width - 1) :]


def waterfall_bar(turn: TurnMetrics, scale: float, width: int = BAR_WIDTH) -> Text:
    """One turn as a bar of ``width`` cells for ``scale`` seconds, coloured by component."""
    bar = Text()
    pos = 0
    for seg in turn.breakdown.segments:
        end = round(seg.end / scale * width) if scale > 0 else 0
        if end > pos:
            bar.append("█" * (end - pos), style=COLORS[seg.component])
            pos = end
    return bar


def _waterfall(call: Call) -> Text:
    if not call.turns:
        return Text("no turns\n", style="dim")
    scale = max(t.duration for t in call.turns) or 1.0
    out = Text()
    for turn in call.turns:
        flag = "✗" if turn.e2e_latency < 0 else " "
        out.append(f"{_short(turn.speech_id):<20} ", "dim")
        out.append(f"{seconds(turn.duration):>9}{flag} ")
        out.append_text(waterfall_bar(turn, scale))
        out.append("\n")
    return out


def legend() -> Text:
    """The component colour legend."""
    out = Text()
    for name in COMPONENTS:
        out.append("█ ", style=COLORS[name])
        out.append(LABELS[name] + "  ")
    return out


def _percentiles(lat: LatencySummary) -> Text:
    out = Text()
    out.append(f"{'':<16}{'n':>7}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}\n", "bold")
    for name in SERIES:
        p = getattr(lat, name)
        label = SERIES_LABELS[name] + ("" if p.exact else " ~")
        cells = "".join(
            f"{seconds(getattr(p, q)) if p.count else '-':>10}"
            for q in ("p50", "p90", "p99", "max")
        )
        out.append(f"{label:<16}{p.count:>7}{cells}\n")
    return out


def _parts(turn: TurnMetrics, top: int = 3) -> str:
    parts = sorted(turn.breakdown.components().items(), key=lambda kv: -kv[1])
    return ", ".join(f"{LABELS[k]} {v:.3f}" for k, v in parts[:top] if v > 0)


def _slowest(lat: LatencySummary) -> Text:
    out = Text()
    out.append(f"{'slowest turns':<20} {'e2e':>9}  where the time went (s)\n", "bold")
    for turn in lat.slowest_turns:
        out.append(f"{_short(turn.speech_id):<20} {seconds(turn.e2e_latency):>9}  {_parts(turn)}\n")
    return out


def call_renderable(call: Call) -> Group:
    """Everything the terminal report shows for one call."""
    title = f"call {call.session_id}"
    if call.agent_name:
        title += f" · {call.agent_name}"
    if call.labels:
        title += " · " + ", ".join(f"{k}={v}" for k, v in call.labels.items())
    if call.error:
        title += f" · ended by {call.error}"
    parts: list = [Rule(title, align="left"), _summary(call), _waterfall(call)]
    lat = call.latency
    if lat.turns or lat.llm_ttft.count or lat.tool_duration.count:
        parts.append(_percentiles(lat))
    if lat.slowest_turns:
        parts.append(_slowest(lat))
    return Group(*parts)


def render_terminal(
    source: str | os.PathLike[str] | Report | Sequence[Call], console: Console | None = None
) -> Report:
    """Print the report of a JSONL file (or of loaded calls) to ``console``.

    Skipped lines are listed with their line number. Returns the loaded :class:`Report`.
    """
    if isinstance(source, Report):
        report = source
    elif isinstance(source, str | os.PathLike):
        report = load(source)
    else:
        report = Report(calls=list(source), errors=[])
    console = console or Console()
    print_errors(report.errors, console)
    for call in report.calls:
        console.print(call_renderable(call), soft_wrap=True)
    if report.calls:
        console.print(legend(), soft_wrap=True)
    if len(report.calls) > 1:
        merged = LatencySummary.merge(c.latency for c in report.calls)
        console.print(Rule(f"all {len(report.calls)} calls", align="left"))
        console.print(_percentiles(merged))
        console.print(Text("~ percentiles from a merged sketch (1 % relative accuracy)", "dim"))
    if not report.calls:
        console.print("no calls in the file")
    return report


def print_errors(errors: Sequence[LineError], console: Console) -> None:
    """List skipped lines."""
    for err in errors:
        console.print(f"[yellow]line {err.line} skipped:[/] {err.message}", highlight=False)
