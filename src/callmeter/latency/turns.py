"""Turn latency arithmetic: where the wait between the user and the agent went.

Pure functions over metrics events. :func:`build_turn_metrics` attributes every instant of
``[user stopped speaking, agent started speaking]`` to exactly one component (see
``docs/latency.md``); :class:`LatencyBudget` checks a finished turn against limits.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgumentError
from ..model.events import BudgetExcess
from ..model.types import (
    COMPONENTS,
    AgentMetrics,
    EOUMetrics,
    LLMMetrics,
    LLMStepLatency,
    ToolMetrics,
    TTSMetrics,
    TurnBreakdown,
    TurnMetrics,
    TurnSegment,
)

PRECEDENCE: tuple[str, ...] = (
    "tts_ttfb",
    "llm_ttft",
    "tool",
    "llm_remainder",
    "user_turn_completed",
    "transcription",
    "end_of_utterance",
)
"""When measured intervals overlap, the instant goes to the first component in this order.

Time no interval covers is ``other``.
"""
_RANK = {name: rank for rank, name in enumerate(PRECEDENCE)}
_OTHER_RANK = len(PRECEDENCE)
_US = 1_000_000  # the arithmetic is done in integer microseconds, so the parts add up exactly


def _us(t: float) -> int:
    return round(t * _US)


def agent_start_from_metrics(metrics: Iterable[AgentMetrics]) -> float | None:
    """When the agent started speaking according to the metrics alone, or None.

    The first TTS audio byte when the turn has TTS; in a text-only turn, the first token
    of the first LLM step that no tool call follows (the step that answered).
    """
    tts_starts: list[float] = []
    llms: list[LLMMetrics] = []
    tools_end = -math.inf
    has_tts = False
    for m in metrics:
        if isinstance(m, TTSMetrics):
            has_tts = True
            if m.ttfb >= 0:
                tts_starts.append(m.started_at + m.ttfb)
        elif isinstance(m, LLMMetrics):
            llms.append(m)
        elif isinstance(m, ToolMetrics):
            tools_end = max(tools_end, m.started_at + m.duration)
    if has_tts:
        return min(tts_starts) if tts_starts else None
    for m in sorted(llms, key=lambda m: m.started_at):
        if m.ttft >= 0 and m.started_at >= tools_end:
            return m.started_at + m.ttft
    return None


def build_turn_metrics(
    metrics: Iterable[AgentMetrics],
    *,
    turn_started_at: float,
    ended_at: float,
    user_stopped_at: float | None = None,
    agent_started_at: float | None = None,
    interrupted: bool = False,
    speech_id: str | None = None,
    timestamp: float | None = None,
) -> TurnMetrics:
    """Build the :class:`TurnMetrics` of one turn from the metrics that carry its speech_id.

    ``user_stopped_at`` defaults to the earliest ``EOUMetrics.started_at``, else to
    ``turn_started_at`` (text input). ``agent_started_at`` defaults to
    :func:`agent_start_from_metrics`. When the agent never spoke the breakdown covers the
    turn up to ``ended_at`` and ``e2e_latency`` is -1.
    """
    ms = list(metrics)
    eous = [m for m in ms if isinstance(m, EOUMetrics)]
    llms = sorted((m for m in ms if isinstance(m, LLMMetrics)), key=lambda m: m.started_at)
    tools = [m for m in ms if isinstance(m, ToolMetrics)]
    text_only = not any(isinstance(m, TTSMetrics) for m in ms)
    if user_stopped_at is None:
        user_stopped_at = min(m.started_at for m in eous) if eous else turn_started_at
    if agent_started_at is None:
        agent_started_at = agent_start_from_metrics(ms)
    origin = user_stopped_at
    end = agent_started_at if agent_started_at is not None else ended_at
    end_us = max(0, _us(end - origin))

    # (rank, step, start_us, end_us) for every measured interval, relative to origin
    intervals: list[tuple[int, int, int, int]] = []

    def add(component: str, start: float, stop: float, step: int = 0) -> None:
        s, e = max(0, _us(start - origin)), min(end_us, _us(stop - origin))
        if e > s:
            intervals.append((_RANK[component], step, s, e))

    for m in eous:
        add("end_of_utterance", m.started_at, m.started_at + m.end_of_utterance_delay)
        add("transcription", m.started_at, m.started_at + m.transcription_delay)
        cb = m.started_at + m.end_of_utterance_delay
        add("user_turn_completed", cb, cb + m.on_user_turn_completed_delay)
    for step, m in enumerate(llms, 1):
        stop = m.started_at + m.duration
        first = m.started_at + m.ttft if m.ttft >= 0 else stop
        add("llm_ttft", m.started_at, first, step)
        add("llm_remainder", first, stop, step)
    for m in tools:
        add("tool", m.started_at, m.started_at + m.duration)
    for m in ms:
        if isinstance(m, TTSMetrics):
            stop = m.started_at + (m.ttfb if m.ttfb >= 0 else m.duration)
            add("tts_ttfb", m.started_at, stop)

    pieces = _attribute(intervals, end_us)
    totals = dict.fromkeys(COMPONENTS, 0)
    step_waits: dict[tuple[int, int], int] = {}
    segments: list[TurnSegment] = []
    for rank, step, s, e in pieces:
        name = PRECEDENCE[rank] if rank < _OTHER_RANK else "other"
        totals[name] += e - s
        if step:
            step_waits[(rank, step)] = step_waits.get((rank, step), 0) + e - s
        segments.append(TurnSegment(component=name, start=s / _US, end=e / _US, step=step or None))
    steps = [
        LLMStepLatency(
            step=i,
            ttft=m.ttft,
            ttft_wait=step_waits.get((_RANK["llm_ttft"], i), 0) / _US,
            remainder_wait=step_waits.get((_RANK["llm_remainder"], i), 0) / _US,
            request_id=m.request_id,
        )
        for i, m in enumerate(llms, 1)
    ]
    breakdown = TurnBreakdown(
        **{k: v / _US for k, v in totals.items()}, llm_steps=steps, segments=segments
    )
    return TurnMetrics(
        timestamp=time.time() if timestamp is None else timestamp,
        started_at=origin,
        duration=end_us / _US,
        e2e_latency=end_us / _US if agent_started_at is not None else -1.0,
        agent_started_at=agent_started_at,
        interrupted=interrupted,
        text_only=text_only,
        llm_requests=len(llms),
        tool_calls=len(tools),
        breakdown=breakdown,
        speech_id=speech_id,
    )


def _attribute(
    intervals: list[tuple[int, int, int, int]], end_us: int
) -> list[tuple[int, int, int, int]]:
    """Tile ``[0, end_us]`` into ``(rank, step, start, end)`` pieces, best rank winning.

    A sweep over the interval ends with a heap of active ``(rank, step)`` keys (ties between
    LLM steps go to the earlier step): O(n log n) however many metrics a turn has.
    """
    starts: dict[int, list[tuple[int, int]]] = {}
    ends: dict[int, list[tuple[int, int]]] = {}
    for rank, step, s, e in intervals:
        starts.setdefault(s, []).append((rank, step))
        ends.setdefault(e, []).append((rank, step))
    bounds = sorted({0, end_us, *starts, *ends})
    active: dict[tuple[int, int], int] = {}
    heap: list[tuple[int, int]] = []
    pieces: list[tuple[int, int, int, int]] = []
    for lo, hi in itertools.pairwise(bounds):
        for key in starts.get(lo, ()):
            active[key] = active.get(key, 0) + 1
            heapq.heappush(heap, key)
        for key in ends.get(lo, ()):
            active[key] -= 1
        while heap and active[heap[0]] <= 0:
            heapq.heappop(heap)
        best = heap[0] if heap else (_OTHER_RANK, 0)
        if pieces and pieces[-1][:2] == best:
            pieces[-1] = (best[0], best[1], pieces[-1][2], hi)
        else:
            pieces.append((best[0], best[1], lo, hi))
    return pieces


# budgets -----------------------------------------------------------------------------

BUDGET_KEYS: tuple[str, ...] = ("e2e", *COMPONENTS)
"""Names a latency budget can limit: ``e2e`` and every breakdown component."""


class LatencyBudget:
    """Limits, in seconds, on a turn's ``e2e`` latency and on each breakdown component.

    ``e2e`` is checked against ``e2e_latency`` (against the time waited, when the agent
    never spoke); a component name against the seconds of the turn's wait attributed to it
    (for example ``tool`` is the wall-clock union of tool time inside the wait).
    """

    __slots__ = ("limits",)

    def __init__(self, **limits: float) -> None:
        for name, value in limits.items():
            if name not in BUDGET_KEYS:
                raise InvalidArgumentError(
                    f"unknown latency budget {name!r}; use one of: {', '.join(BUDGET_KEYS)}"
                )
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InvalidArgumentError(
                    f"latency budget {name}={value!r} must be a positive number of seconds"
                )
        self.limits: dict[str, float] = {k: float(v) for k, v in limits.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.limits.items())
        return f"LatencyBudget({args})"

    def check(self, turn: TurnMetrics) -> list[BudgetExcess]:
        """The limits ``turn`` went over (empty when within budget)."""
        out = []
        parts: dict[str, Any] = turn.breakdown.components()
        for name, budget in self.limits.items():
            actual = turn.duration if name == "e2e" else parts[name]
            if actual > budget:
                out.append(BudgetExcess(name=name, budget=budget, actual=actual))
        return out
