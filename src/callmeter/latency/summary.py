"""LatencyCollector and LatencySummary: turn latency percentiles and the slowest turns.

Percentiles of one call are exact (linear interpolation between the two nearest ranks).
Summaries of several calls are combined with a DDSketch (``ddsketch``, relative accuracy
1 %), which merges without keeping every value.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from math import exp, log, log1p
from typing import Any

from ..model.types import COMPONENTS, AgentMetrics, LLMMetrics, ToolMetrics, TTSMetrics, TurnMetrics

SERIES: tuple[str, ...] = ("e2e_latency", "llm_ttft", "tts_ttfb", "tool_duration")
"""The latency series a summary reports percentiles for."""
SKETCH_ACCURACY = 0.01
_INV_LOG_BIN = 1 / log1p(0.002)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values``, linearly
    interpolated between the closest ranks (numpy's default). 0.0 when empty."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _new_sketch() -> Any:
    from ddsketch import DDSketch  # imported here: `import callmeter` stays light

    return DDSketch(relative_accuracy=SKETCH_ACCURACY)


def add_values(sketch: Any, values: Iterable[float]) -> None:
    """Add ``values`` to a DDSketch.

    Values are binned on a 0.2 % logarithmic grid (10x finer than the sketch's accuracy)
    and added with their counts: one ``sketch.add`` per bin, not per value.
    """
    bins = Counter(round(log(v) * _INV_LOG_BIN) if v > 0 else None for v in values)
    for k, count in bins.items():
        sketch.add(0.0 if k is None else exp(k / _INV_LOG_BIN), count)


@dataclass(slots=True)
class Percentiles:
    """Count, p50/p90/p99 and max of one latency series, in seconds.

    ``exact`` is False when the percentiles come from a sketch (1 % relative accuracy);
    ``count`` and ``max`` are always exact.
    """

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    exact: bool = True

    @classmethod
    def from_values(cls, values: Iterable[float]) -> Percentiles:
        """Exact percentiles of ``values``."""
        v = sorted(values)
        if not v:
            return cls()
        return cls(len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99), v[-1])

    @classmethod
    def from_sketch(cls, sketch: Any, maximum: float) -> Percentiles:
        """Approximate percentiles from a DDSketch (``maximum`` is the exact max)."""
        n = round(sketch.count)
        if n == 0:
            return cls(exact=False)

        def q(x: float) -> float:
            return min(float(sketch.get_quantile_value(x)), maximum)

        return cls(n, q(0.5), q(0.9), q(0.99), maximum, exact=False)


@dataclass(slots=True)
class LatencySummary:
    """Turn latency of one call, or of several combined with :meth:`merge`.

    ``turns`` counts finished turns, ``interrupted_turns`` those ended before the agent
    spoke (they have no ``e2e_latency``). ``e2e_latency``, ``llm_ttft``, ``tts_ttfb`` and
    ``tool_duration`` are :class:`Percentiles` (LLM TTFT, TTS TTFB and tool duration per
    request, every request of the call). ``components`` is the total seconds per breakdown
    component over all turns; ``slowest_turns`` the turns with the highest e2e latency,
    slowest first.
    """

    turns: int = 0
    interrupted_turns: int = 0
    e2e_latency: Percentiles = field(default_factory=Percentiles)
    llm_ttft: Percentiles = field(default_factory=Percentiles)
    tts_ttfb: Percentiles = field(default_factory=Percentiles)
    tool_duration: Percentiles = field(default_factory=Percentiles)
    components: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    slowest_turns: list[TurnMetrics] = field(default_factory=list)
    _values: dict[str, list[float]] = field(default_factory=dict, repr=False, compare=False)
    _sketches: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain builtins (for JSON)."""
        from msgspec import to_builtins

        out: dict[str, Any] = {"turns": self.turns, "interrupted_turns": self.interrupted_turns}
        for name in SERIES:
            p: Percentiles = getattr(self, name)
            out[name] = {k: getattr(p, k) for k in p.__dataclass_fields__}
        out["components"] = dict(self.components)
        out["slowest_turns"] = to_builtins(self.slowest_turns)
        return out

    def sketch(self, name: str) -> Any:
        """A DDSketch of series ``name`` (one of :data:`SERIES`), for merging."""
        sketch = _new_sketch()
        if name in self._sketches:
            sketch.merge(self._sketches[name])
        add_values(sketch, self._values.get(name, ()))
        return sketch

    @classmethod
    def merge(cls, summaries: Iterable[LatencySummary], slowest: int = 5) -> LatencySummary:
        """Combine summaries (e.g. of many calls) through mergeable sketches.

        Counts, maxima, component totals and the slowest turns are exact; percentiles are
        approximate (1 % relative accuracy).
        """
        summaries = list(summaries)
        out = cls()
        sketches = {name: _new_sketch() for name in SERIES}
        maxima = dict.fromkeys(SERIES, 0.0)
        turns: list[TurnMetrics] = []
        for s in summaries:
            out.turns += s.turns
            out.interrupted_turns += s.interrupted_turns
            for k, v in s.components.items():
                out.components[k] = out.components.get(k, 0.0) + v
            turns.extend(s.slowest_turns)
            for name in SERIES:
                sk = sketches[name]
                if name in s._sketches:
                    sk.merge(s._sketches[name])
                add_values(sk, s._values.get(name, ()))
                maxima[name] = max(maxima[name], getattr(s, name).max)
        for name in SERIES:
            setattr(out, name, Percentiles.from_sketch(sketches[name], maxima[name]))
        out._sketches = sketches
        out.slowest_turns = heapq.nlargest(slowest, turns, key=lambda t: t.e2e_latency)
        return out


class LatencyCollector:
    """Collects metrics events into a :class:`LatencySummary`.

    Adding an event is a list append. Beyond ``max_values`` values per series the older
    values are folded into a DDSketch (memory stays bounded; percentiles then come from the
    sketch and say ``exact=False``). Keeps the ``slowest`` turns with the highest e2e latency.
    """

    def __init__(self, *, slowest: int = 5, max_values: int = 100_000) -> None:
        self._slowest = slowest
        self._max_values = max_values
        cls = type(self)  # functions, not bound methods: those would make a reference cycle
        self._dispatch: dict[type, Callable[[Any, Any], None]] = {
            LLMMetrics: cls._llm,
            TTSMetrics: cls._tts,
            ToolMetrics: cls._tool,
            TurnMetrics: cls._turn,
        }
        self.reset()

    def reset(self) -> None:
        """Forget everything collected so far."""
        self._values: dict[str, list[float]] = {name: [] for name in SERIES}
        self._ttft = self._values["llm_ttft"]
        self._ttfb = self._values["tts_ttfb"]
        self._tools = self._values["tool_duration"]
        self._sketches: dict[str, Any] = {}
        self._maxima = dict.fromkeys(SERIES, 0.0)
        self._turns = 0
        self._interrupted = 0
        self._components = dict.fromkeys(COMPONENTS, 0.0)
        self._heap: list[tuple[float, int, TurnMetrics]] = []
        self._seq = itertools.count()

    def __call__(self, metrics: AgentMetrics) -> None:
        self.collect(metrics)

    def collect(self, metrics: AgentMetrics) -> None:
        """Add one metrics event (types without latency are ignored)."""
        handler = self._dispatch.get(type(metrics))
        if handler is not None:
            handler(self, metrics)

    def _add(self, name: str, value: float) -> None:
        values = self._values[name]
        values.append(value)
        if len(values) >= self._max_values:
            self._fold(name)

    def collect_groups(self, groups: Mapping[type, list[Any]]) -> None:
        """Add events already grouped by type (what :class:`UsageCollector` does in batches)."""
        llm = groups.get(LLMMetrics)
        if llm:
            self._extend("llm_ttft", [m.ttft for m in llm if m.ttft >= 0])
        tts = groups.get(TTSMetrics)
        if tts:
            self._extend("tts_ttfb", [m.ttfb for m in tts if m.ttfb >= 0])
        tools = groups.get(ToolMetrics)
        if tools:
            self._extend("tool_duration", [m.duration for m in tools])
        for m in groups.get(TurnMetrics, ()):
            self._turn(m)

    def _extend(self, name: str, new: list[float]) -> None:
        values = self._values[name]
        values.extend(new)
        if len(values) >= self._max_values:
            self._fold(name)

    def _fold(self, name: str) -> None:
        values = self._values[name]
        sketch = self._sketches.get(name)
        if sketch is None:
            sketch = self._sketches[name] = _new_sketch()
        add_values(sketch, values)
        self._maxima[name] = max(self._maxima[name], max(values, default=0.0))
        values.clear()

    # the three handlers below run for every request: kept to an append and a length check

    def _llm(self, m: LLMMetrics) -> None:
        if m.ttft >= 0:
            self._ttft.append(m.ttft)
            if len(self._ttft) >= self._max_values:
                self._fold("llm_ttft")

    def _tts(self, m: TTSMetrics) -> None:
        if m.ttfb >= 0:
            self._ttfb.append(m.ttfb)
            if len(self._ttfb) >= self._max_values:
                self._fold("tts_ttfb")

    def _tool(self, m: ToolMetrics) -> None:
        self._tools.append(m.duration)
        if len(self._tools) >= self._max_values:
            self._fold("tool_duration")

    def _turn(self, m: TurnMetrics) -> None:
        self._turns += 1
        for name, value in m.breakdown.components().items():
            self._components[name] += value
        if m.e2e_latency < 0:
            self._interrupted += 1
            return
        self._add("e2e_latency", m.e2e_latency)
        item = (m.e2e_latency, -next(self._seq), m)
        if len(self._heap) < self._slowest:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def get_summary(self) -> LatencySummary:
        """The summary so far: exact percentiles unless values were folded into a sketch."""
        out = LatencySummary(turns=self._turns, interrupted_turns=self._interrupted)
        out.components = dict(self._components)
        out._values = {k: list(v) for k, v in self._values.items()}
        for name in SERIES:
            values = self._values[name]
            if name in self._sketches:
                out._sketches[name] = sketch = _new_sketch()
                sketch.merge(self._sketches[name])
                add_values(sketch, values)
                maximum = max(self._maxima[name], max(values, default=0.0))
                out._values[name] = []
                setattr(out, name, Percentiles.from_sketch(sketch, maximum))
            else:
                setattr(out, name, Percentiles.from_values(values))
        out.slowest_turns = [t for _, _, t in sorted(self._heap, reverse=True)]
        return out
