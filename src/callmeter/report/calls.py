"""Loading a JSONL event file into calls: one :class:`Call` per session_id."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InvalidArgumentError
from ..latency.summary import LatencyCollector, LatencySummary
from ..latency.turns import build_turn_metrics
from ..model.types import AgentMetrics, TurnMetrics
from ..pricing.prices import resolve_prices
from ..usage.collector import UsageCollector, UsageSummary
from .style import seconds


class _Line(msgspec.Struct):
    event: str
    session_id: str
    created_at: float = 0.0
    agent_name: str | None = None
    labels: dict[str, str] | None = None
    metrics: AgentMetrics | None = None
    duration: float | None = None
    error: str | None = None


_decoder = msgspec.json.Decoder(_Line)


@dataclass(slots=True)
class LineError:
    """A line of the file that could not be read (it was skipped)."""

    line: int
    message: str


@dataclass(slots=True)
class Call:
    """Everything a JSONL file holds about one session ("call")."""

    session_id: str
    agent_name: str | None = None
    labels: dict[str, str] | None = None
    started_at: float | None = None
    duration: float | None = None
    """Wall-clock length from the ``close`` event; None if the file has no close."""
    error: str | None = None
    events: int = 0
    budget_exceeded: int = 0
    metrics: list[AgentMetrics] = field(default_factory=list)
    turns: list[TurnMetrics] = field(default_factory=list)
    prices: Any = None
    """Prices for :attr:`usage` (as ``UsageCollector(prices=...)``; None for the defaults)."""
    _usage: UsageSummary | None = None
    _latency: LatencySummary | None = None

    @property
    def usage(self) -> UsageSummary:
        """Token, request and tool totals of the call."""
        if self._usage is None:
            collector = UsageCollector(keep_metrics=False, prices=self.prices)
            for m in self.metrics:
                collector.collect(m)
            self._usage = collector.get_summary()
        return self._usage

    @property
    def latency(self) -> LatencySummary:
        """Turn latency of the call: exact percentiles and the slowest turns."""
        if self._latency is None:
            collector = LatencyCollector()
            for m in self.metrics:
                collector.collect(m)
            for t in self.turns:
                collector.collect(t)
            self._latency = collector.get_summary()
        return self._latency


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
        ("cost", cost, "labels", labels or "-"),
    ]  # fmt: skip


@dataclass(slots=True)
class Report:
    """The calls of a file, in order of first appearance, and the lines skipped."""

    calls: list[Call]
    errors: list[LineError]
    lines: int = 0


def _finish(call: Call) -> None:
    """Turns from the metrics when the file has no ``TurnMetrics`` (e.g. events recorded by
    a source that groups by speech_id without ``session.turn()``)."""
    if call.turns:
        return
    by_speech: dict[str, list[AgentMetrics]] = {}
    for m in call.metrics:
        sid = getattr(m, "speech_id", None)
        if sid is not None:
            by_speech.setdefault(sid, []).append(m)
    for sid, ms in by_speech.items():
        starts = [m.started_at for m in ms if hasattr(m, "started_at")]
        ends = [m.started_at + m.duration for m in ms if hasattr(m, "started_at")]
        if starts:
            call.turns.append(
                build_turn_metrics(
                    ms,
                    turn_started_at=min(starts),
                    ended_at=max(ends),
                    speech_id=sid,
                    timestamp=max(ends),
                )
            )


def load_lines(lines: Iterable[bytes], prices: Any = None) -> Report:
    """Group JSONL event lines by session_id; bad lines become :class:`LineError`.

    ``prices`` prices every call (as ``UsageCollector(prices=...)``).
    """
    resolved = resolve_prices(prices)
    prices = False if resolved is None else resolved
    calls: dict[str, Call] = {}
    errors: list[LineError] = []
    n = 0
    decode = _decoder.decode
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = decode(raw)
        except msgspec.DecodeError as exc:
            text = str(exc)
            if "truncated" in text:
                text = f"truncated line ({text})"
            errors.append(LineError(n, text))
            continue
        call = calls.get(line.session_id)
        if call is None:
            call = calls[line.session_id] = Call(session_id=line.session_id, prices=prices)
        call.events += 1
        if line.agent_name is not None:
            call.agent_name = line.agent_name
        if line.labels is not None:
            call.labels = line.labels
        event = line.event
        if event == "metrics_collected":
            m = line.metrics
            if m is None:
                errors.append(LineError(n, f"{event} line without metrics"))
            elif isinstance(m, TurnMetrics):
                call.turns.append(m)
            else:
                call.metrics.append(m)
        elif event == "session_started":
            call.started_at = line.created_at
        elif event == "close":
            call.duration = line.duration
            call.error = line.error
        elif event == "latency_budget_exceeded":
            call.budget_exceeded += 1
    for call in calls.values():
        _finish(call)
    return Report(calls=list(calls.values()), errors=errors, lines=n)


def load(path: str | os.PathLike[str], prices: Any = None) -> Report:
    """Read a JSONL file written by :class:`~callmeter.export.jsonl.JSONLWriter`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {str(path)!r}: {exc}") from None
    return load_lines(data.split(b"\n") if data else [], prices)
