"""What a report knows about one call (:class:`Call`) and about a whole file (:class:`Report`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..latency.summary import LatencySummary
from ..model.types import TurnMetrics
from ..records import LineError, ReadStats
from ..usage.summary import UsageSummary
from .style import clean, seconds

if TYPE_CHECKING:
    from .fleet import Fleet


@dataclass(slots=True)
class Call:
    """One session ("call") of a record file, summarised when its ``close`` record arrives
    (or at the end of the file for a call without one)."""

    session_id: str
    agent_name: str | None = None
    labels: dict[str, str] | None = None
    started_at: float | None = None
    """Wall clock of its ``session_started`` record (else of its first record)."""
    duration: float | None = None
    """Wall-clock length from the ``close`` record; None if the file has no close."""
    error: str | None = None
    events: int = 0
    budget_exceeded: int = 0
    turns: list[TurnMetrics] = field(default_factory=list)
    """The turns kept for the waterfall: the first ``max_turns`` of the call, in file order."""
    turns_total: int = 0
    """Every turn of the call, shown or not."""
    usage: UsageSummary = field(default_factory=UsageSummary)
    """Token, request, tool and cost totals of the call."""
    latency: LatencySummary = field(default_factory=LatencySummary)
    """Turn latency of the call: exact percentiles and the slowest turns."""

    @property
    def closed(self) -> bool:
        """True when the file holds the call's ``close`` record."""
        return self.duration is not None

    @property
    def turns_hidden(self) -> int:
        """Turns of the call not kept for the waterfall."""
        return max(0, self.turns_total - len(self.turns))


def overview(call: Call) -> list[tuple[str, str, str, str]]:
    """The call's headline numbers as rows of two label/value pairs (terminal and HTML)."""
    u = call.usage
    lat = call.latency
    cost = f"${u.cost:.6f}"
    if u.cost_is_lower_bound:
        cost = f"at least {cost}" + (f" (no price: {', '.join(u.unpriced)})" if u.unpriced else "")
    labels = ", ".join(f"{k}={v}" for k, v in (call.labels or {}).items())
    return [
        ("duration", seconds(call.duration), "turns",
         f"{lat.turns} ({lat.interrupted_turns} interrupted)"),
        ("LLM requests", f"{u.llm_requests} ({u.llm_errors} errors)", "tokens in / cached / out",
         f"{u.llm_prompt_tokens} / {u.llm_prompt_cached_tokens} / {u.llm_completion_tokens}"),
        ("tool calls", f"{u.tool_calls} ({u.tool_errors} errors)", "LLM + tool time",
         seconds(u.llm_and_tool_duration)),
        ("TTS characters", str(u.tts_characters_count), "STT audio",
         seconds(u.stt_audio_duration)),
        ("active time", seconds(u.active_duration), "budget exceeded",
         f"{call.budget_exceeded} turns"),
        ("cost", cost, "labels", clean(labels, 200) or "-"),
        ("cost by kind",
         " · ".join(f"{k} ${v:.6f}" for k, v in u.cost_by_kind.items() if v) or "-", "", ""),
    ]  # fmt: skip


@dataclass(slots=True)
class Report:
    """The calls of a file, the lines skipped, and the fleet totals over every call read.

    ``errors`` lists the first skipped lines (all are counted in ``stats.skipped``).
    """

    calls: list[Call]
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0
    stats: ReadStats = field(default_factory=ReadStats)
    fleet: Fleet | None = None
    """Totals and percentiles over every call that passed the filters (None when the
    report was built from a list of calls)."""


def load(
    path: str | os.PathLike[str] | BinaryIO, prices: Any = None, *, max_turns: int | None = None
) -> Report:
    """Read a JSONL record file (as written by :class:`~callmeter.export.jsonl.JSONLWriter`).

    Keeps every call in memory, in order of first appearance; ``max_turns`` bounds the turns
    kept per call for the waterfall (None: all). Bad lines are skipped and listed in
    ``errors``. For files of any size use :func:`callmeter.report.scan`, which hands over
    each call as it ends.
    """
    from .stream import ReportOptions, scan

    calls: list[tuple[int, Call]] = []
    result = scan(
        path,
        ReportOptions(prices=prices, max_turns=max_turns, cost_by_turn=True),
        on_call=lambda order, call: calls.append((order, call)),
    )
    calls.sort(key=lambda oc: oc[0])
    return Report(
        calls=[c for _, c in calls],
        errors=result.errors,
        lines=result.stats.lines + result.stats.blank,
        stats=result.stats,
        fleet=result.fleet,
    )


def load_lines(lines: Iterable[bytes], prices: Any = None) -> Report:
    """Like :func:`load`, for JSONL lines already in memory (without their line ends)."""
    import io

    return load(io.BytesIO(b"\n".join(lines)), prices)
