"""Fleet totals: every call of a file added up, in memory that does not grow with the file."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..latency.summary import (
    SERIES,
    LatencySummary,
    Percentiles,
    _new_sketch,
    add_values,
)
from ..model.types import COMPONENTS, TurnMetrics
from .calls import Call

FLEET_SERIES: tuple[str, ...] = (*SERIES, "call_duration")
"""Series the fleet reports percentiles for: the turn series and the length of calls."""
MAX_VALUES = 100_000
"""Values per series kept exactly; beyond that they are folded into a DDSketch."""

_TOTALS = (
    "llm_requests",
    "llm_errors",
    "llm_prompt_tokens",
    "llm_prompt_cached_tokens",
    "llm_completion_tokens",
    "tool_calls",
    "tool_errors",
    "tts_characters_count",
    "stt_audio_duration",
)


@dataclass(slots=True)
class FleetTotals:
    """Sums over calls. ``cost`` is a lower bound when ``cost_complete`` is False."""

    calls: int = 0
    unclosed_calls: int = 0
    """Calls without a ``close`` record (still running, or their writer crashed)."""
    error_calls: int = 0
    """Calls whose session ended by an exception."""
    events: int = 0
    turns: int = 0
    interrupted_turns: int = 0
    budget_exceeded: int = 0
    duration: float = 0.0
    llm_requests: int = 0
    llm_errors: int = 0
    llm_prompt_tokens: int = 0
    llm_prompt_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tts_characters_count: int = 0
    stt_audio_duration: float = 0.0
    cost: Decimal = Decimal(0)
    cost_complete: bool = True


class Fleet:
    """Adds calls up: totals, turn-latency percentiles and the slowest turns of all calls.

    Percentiles are exact while a series has at most :data:`MAX_VALUES` values, then come
    from a DDSketch (1 % relative accuracy). Memory is bounded whatever the number of calls.
    """

    def __init__(self, slowest: int = 5) -> None:
        self.totals = FleetTotals()
        self._values: dict[str, list[float]] = {name: [] for name in FLEET_SERIES}
        self._sketches: dict[str, Any] = {}
        self._maxima = dict.fromkeys(FLEET_SERIES, 0.0)
        self._components = dict.fromkeys(COMPONENTS, 0.0)
        self._slowest = slowest
        self._heap: list[tuple[float, int, str, TurnMetrics]] = []
        self._seq = itertools.count()
        self._unpriced: set[str] = set()

    def add(self, call: Call) -> None:
        """Add one finished call. Its latency summary may be discarded afterwards."""
        t = self.totals
        u = call.usage
        lat = call.latency
        t.calls += 1
        t.events += call.events
        t.budget_exceeded += call.budget_exceeded
        if call.duration is None:
            t.unclosed_calls += 1
        else:
            t.duration += call.duration
            self._extend("call_duration", [call.duration])
        if call.error:
            t.error_calls += 1
        for name in _TOTALS:
            setattr(t, name, getattr(t, name) + getattr(u, name))
        t.cost += u.cost
        if u.cost_is_lower_bound:
            t.cost_complete = False
        if u.unpriced and len(self._unpriced) < 1000:
            self._unpriced.update(u.unpriced)
        t.turns += lat.turns
        t.interrupted_turns += lat.interrupted_turns
        for k, v in lat.components.items():
            if k in self._components:
                self._components[k] += v
        for name in SERIES:
            values = lat._values.get(name)
            if values:
                self._extend(name, values)
            sketch = lat._sketches.get(name)
            if sketch is not None:
                self._sketch(name).merge(sketch)
                self._maxima[name] = max(self._maxima[name], getattr(lat, name).max)
        for turn in lat.slowest_turns:
            item = (turn.e2e_latency, -next(self._seq), call.session_id, turn)
            if len(self._heap) < self._slowest:
                heapq.heappush(self._heap, item)
            elif item > self._heap[0]:
                heapq.heapreplace(self._heap, item)

    def _sketch(self, name: str) -> Any:
        sketch = self._sketches.get(name)
        if sketch is None:
            sketch = self._sketches[name] = _new_sketch()
        return sketch

    def _extend(self, name: str, new: list[float]) -> None:
        values = self._values[name]
        values.extend(new)
        if len(values) >= MAX_VALUES:
            add_values(self._sketch(name), values)
            self._maxima[name] = max(self._maxima[name], max(values))
            values.clear()

    def percentiles(self, name: str) -> Percentiles:
        """Percentiles of series ``name`` (one of :data:`FLEET_SERIES`) over all calls."""
        values = self._values[name]
        if name not in self._sketches:
            return Percentiles.from_values(values)
        sketch = _new_sketch()
        sketch.merge(self._sketches[name])
        add_values(sketch, values)
        return Percentiles.from_sketch(sketch, max(self._maxima[name], max(values, default=0.0)))

    @property
    def slowest_turns(self) -> list[tuple[str, TurnMetrics]]:
        """``(session_id, turn)`` of the slowest turns of all calls, slowest first."""
        return [(sid, turn) for _, _, sid, turn in sorted(self._heap, reverse=True)]

    def latency(self) -> LatencySummary:
        """The fleet's turn latency as a :class:`LatencySummary`."""
        t = self.totals
        out = LatencySummary(turns=t.turns, interrupted_turns=t.interrupted_turns)
        for name in SERIES:
            setattr(out, name, self.percentiles(name))
        out.components = dict(self._components)
        out.slowest_turns = [turn for _, turn in self.slowest_turns]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Totals and percentiles as plain builtins (for JSON)."""
        t = self.totals
        totals = {name: getattr(t, name) for name in t.__dataclass_fields__}
        totals["cost"] = f"{t.cost.normalize():f}"
        totals["unpriced"] = sorted(self._unpriced)
        latency = self.latency().to_dict()
        p = self.percentiles("call_duration")
        latency["call_duration"] = {k: getattr(p, k) for k in p.__dataclass_fields__}
        latency["slowest_turns"] = [
            {"session_id": sid, **turn} for sid, turn in zip(
                (sid for sid, _ in self.slowest_turns), latency["slowest_turns"], strict=True
            )
        ]  # fmt: skip
        return {"calls": t.calls, "totals": totals, "latency": latency}

    @property
    def unpriced(self) -> list[str]:
        """Models with usage but no price, over all calls."""
        return sorted(self._unpriced)
