"""LatencyCollector / LatencySummary: exact percentiles per call, sketches across calls."""

from __future__ import annotations

import random

import pytest

from callmeter import AgentSession
from callmeter.latency.summary import percentile
from callmeter.metrics import LatencyCollector, LatencySummary, Percentiles, UsageCollector
from test_turns import build, eou, llm, tool, tts


def test_percentile_is_linear_interpolation():
    v = [1.0, 2.0, 3.0, 4.0]
    assert percentile(v, 50) == 2.5
    assert percentile(v, 90) == pytest.approx(3.7)
    assert percentile(v, 0) == 1.0 and percentile(v, 100) == 4.0
    assert percentile([], 50) == 0.0
    p = Percentiles.from_values([0.5, 0.1, 0.3])
    assert (p.count, p.p50, p.max, p.exact) == (3, 0.3, 0.5, True)


def turn_with(e2e_tts_start: float, sid: str):
    # EOU 0.2; LLM 0.2 .. 0.2+0.1; TTS from 0.3 with its first audio at e2e
    return build(
        [
            eou(0, 0.2, sid=sid),
            llm(0.2, 0.1, 0.3, sid=sid),
            tts(0.3, e2e_tts_start - 0.3, 1, sid=sid),
        ]
    )


def test_collector_percentiles_and_slowest_turns():
    c = LatencyCollector(slowest=3)
    e2es = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.8, 0.9, 1.1, 1.2]
    for i, e in enumerate(e2es):
        c.collect(turn_with(e, f"t{i}"))
    c.collect(build([eou(0, 0.3), llm(0.3, -1, 0.2)], ended_at=1_790_000_000.5, interrupted=True))
    c.collect(tool(0, 0.25))
    c.collect(tool(0, 0.75))
    c.collect(llm(0, -1.0, 1.0))  # no first token: not a TTFT sample
    s = c.get_summary()
    assert (s.turns, s.interrupted_turns) == (11, 1)
    exact = Percentiles.from_values(e2es)
    assert s.e2e_latency == exact
    assert s.e2e_latency.p50 == pytest.approx(1.15) and s.e2e_latency.max == pytest.approx(3.0)
    assert s.tool_duration.count == 2 and s.tool_duration.p50 == pytest.approx(0.5)
    assert s.llm_ttft.count == 0  # TurnMetrics are not requests; the bare LLM had no token
    assert s.tts_ttfb.count == 0
    assert [round(t.e2e_latency, 6) for t in s.slowest_turns] == [3.0, 2.5, 2.0]
    total = sum(e2es) + 0.5  # the interrupted turn waited 0.5 s
    assert sum(s.components.values()) == pytest.approx(total)
    d = s.to_dict()
    assert d["e2e_latency"]["p50"] == s.e2e_latency.p50
    assert d["slowest_turns"][0]["type"] == "turn_metrics"


def test_usage_collector_and_session_feed_latency():
    u = UsageCollector()
    for m in (llm(0, 0.2, 0.5), llm(1, 0.4, 0.5), tts(2, 0.3, 1.0)):
        u.collect(m)
    s = u.get_latency_summary()
    assert s.llm_ttft.count == 2 and s.llm_ttft.p50 == pytest.approx(0.3)
    assert s.tts_ttfb.max == pytest.approx(0.3)
    session = AgentSession()
    session.emit_metrics(llm(0, 0.2, 0.5))
    assert session.latency.llm_ttft.max == pytest.approx(0.2)


def test_merge_across_calls_uses_a_sketch_within_its_accuracy():
    rng = random.Random(7)
    calls, everything = [], []
    for _ in range(20):
        c = LatencyCollector()
        for _ in range(200):
            v = rng.lognormvariate(0, 0.6)
            everything.append(v)
            c.collect(tool(0, v))
        calls.append(c.get_summary())
    merged = LatencySummary.merge(calls)
    exact = Percentiles.from_values(everything)
    assert merged.tool_duration.count == len(everything) and not merged.tool_duration.exact
    assert merged.tool_duration.max == exact.max
    for q in ("p50", "p90", "p99"):
        got, want = getattr(merged.tool_duration, q), getattr(exact, q)
        assert abs(got - want) / want < 0.03, q  # sketch accuracy 1 % + rank interpolation
    # merging merged summaries keeps counting correctly (sketch of sketches)
    again = LatencySummary.merge([merged, calls[0]])
    assert again.tool_duration.count == len(everything) + 200


def test_collector_memory_is_bounded_by_folding_into_a_sketch():
    c = LatencyCollector(max_values=1000)
    for i in range(5500):
        c.collect(tool(0, (i % 100) / 100))
    assert len(c._values["tool_duration"]) < 1000
    s = c.get_summary()
    assert s.tool_duration.count == 5500 and not s.tool_duration.exact
    assert s.tool_duration.max == pytest.approx(0.99)
    assert s.tool_duration.p50 == pytest.approx(0.495, rel=0.03)
