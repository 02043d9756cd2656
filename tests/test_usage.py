"""UsageCollector / UsageSummary arithmetic."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from callmeter import AgentSession, InvalidArgumentError, metrics
from callmeter.metrics import (
    IntervalUnion,
    LLMMetrics,
    Metadata,
    MetricsNotKeptError,
    ToolMetrics,
    UsageCollector,
    union_duration,
)

T0 = 1_790_000_000.0


def llm(start: float, dur: float, model: str = "gpt-4o-mini", **kw) -> LLMMetrics:
    return LLMMetrics(
        timestamp=T0 + start + dur,
        started_at=T0 + start,
        duration=dur,
        metadata=Metadata(model_name=model, model_provider="openai"),
        **kw,
    )


def tool(start: float, dur: float, name: str = "t", **kw) -> ToolMetrics:
    return ToolMetrics(
        timestamp=T0 + start + dur, started_at=T0 + start, duration=dur, tool_name=name, **kw
    )


async def test_parallel_tools_count_twice_in_tool_duration_once_in_active_duration():
    session = AgentSession()

    @session.tool
    async def slow_lookup(key: str) -> str:
        await asyncio.sleep(0.3)
        return key

    async with session, session.turn():
        await asyncio.gather(slow_lookup("a"), slow_lookup("b"))
    u = session.usage
    assert u.tool_calls == 2
    assert u.tool_duration == pytest.approx(0.6, abs=0.05)
    assert u.active_duration == pytest.approx(0.3, abs=0.05)
    assert u.by_tool["slow_lookup"].calls == 2
    assert u.by_tool["slow_lookup"].max_duration == pytest.approx(0.3, abs=0.05)


def test_summary_fields_by_model_and_by_tool():
    c = UsageCollector()
    c(llm(0, 1.0, prompt_tokens=100, completion_tokens=10, prompt_cached_tokens=40))
    c(tool(1.0, 0.5, "search"))
    c(tool(1.2, 0.5, "search", success=False, error="Timeout"))
    c(llm(2.0, 0.5, model="gpt-4o", prompt_tokens=50, completion_tokens=5))
    c(llm(3.0, 0.5, model="gpt-4o", usage_reported=False, error="APIError", cancelled=True))
    s = c.get_summary()
    assert (s.llm_requests, s.llm_errors, s.llm_usage_unreported) == (3, 1, 1)
    assert s.llm_duration == pytest.approx(2.0)
    assert s.tool_duration == pytest.approx(1.0)
    assert s.llm_and_tool_duration == pytest.approx(3.0)
    # [0,1] + [1,1.7] + [2,2.5] + [3,3.5] = 1.7 + 0.5 + 0.5
    assert s.active_duration == pytest.approx(2.7)
    assert (s.tool_calls, s.tool_errors) == (2, 1)
    assert s.by_tool["search"].errors == 1
    assert s.by_tool["search"].total_duration == pytest.approx(1.0)
    assert s.llm_prompt_tokens == 150 and s.llm_completion_tokens == 15
    mini, big = s.by_model["openai/gpt-4o-mini"], s.by_model["openai/gpt-4o"]
    assert (mini.requests, mini.prompt_tokens, mini.prompt_cached_tokens) == (1, 100, 40)
    assert (big.requests, big.prompt_tokens, big.usage_unreported, big.errors) == (2, 50, 1, 1)
    d = s.to_dict()
    assert d["by_model"]["openai/gpt-4o"]["requests"] == 2
    assert d["by_tool"]["search"]["calls"] == 2


def test_get_summary_is_a_copy():
    c = UsageCollector()
    c(tool(0, 1, "x"))
    s = c.get_summary()
    s.by_tool["x"].calls = 99
    s.tool_calls = 99
    assert c.get_summary().tool_calls == 1 and c.get_summary().by_tool["x"].calls == 1


def test_reset_and_unknown_event_types():
    c = UsageCollector()
    c(tool(0, 1))
    c(metrics.VADMetrics(timestamp=T0, inference_count=3))
    assert len(c.metrics) == 2
    c.reset()
    assert c.get_summary().tool_calls == 0 and c.metrics == []


def test_max_metrics_keeps_newest_and_counts_dropped():
    c = UsageCollector(max_metrics=10)
    for i in range(25):
        c(tool(i, 0.5, f"t{i}"))
    kept = c.metrics
    assert [m.tool_name for m in kept] == [f"t{i}" for i in range(15, 25)]
    assert c.dropped_metrics == 15
    assert c.get_summary().tool_calls == 25


def test_keep_metrics_false_raises_clear_error():
    c = UsageCollector(keep_metrics=False)
    c(tool(0, 1))
    with pytest.raises(MetricsNotKeptError, match="keep_metrics=True"):
        _ = c.metrics
    assert c.get_summary().tool_calls == 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10"])
def test_max_metrics_validated(bad):
    with pytest.raises(InvalidArgumentError, match="max_metrics"):
        UsageCollector(max_metrics=bad)


@pytest.mark.parametrize("max_metrics", [100, None])
def test_memory_is_bounded(max_metrics):
    """Memory stays under a fixed ceiling however many events arrive.

    The ceiling: at most 100,000 latency values per series before they fold into a sketch
    (~0.8 MB of pointers), 4,096 intervals, ``max_metrics`` events. Unbounded growth would
    be well over 10 MB for the 300,000 events fed here.
    """
    keep = max_metrics is not None
    c = UsageCollector(keep_metrics=keep, max_metrics=max_metrics)
    events = [tool(i * 2.0, 1.0, f"t{i % 5}") for i in range(1000)]  # disjoint intervals

    def feed(n: int) -> int:
        tracemalloc.start()
        for i in range(n):
            c(events[i % 1000])
        c.get_summary()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return current

    small = feed(10_000)
    large = feed(300_000)
    assert large < small + 2_000_000  # bytes
    assert c.get_summary().tool_calls == 310_000


def test_interval_union_exact_and_bounded():
    u = IntervalUnion(max_intervals=8)
    ivals = [(0, 1), (0.5, 2), (3, 4), (3.5, 3.6), (10, 11), (5, 6), (7, 8), (9, 9.5)]
    for s, e in ivals:
        u.add(s, e)
    assert u.total() == pytest.approx(union_duration(ivals)) == pytest.approx(6.5)
    for i in range(1000):
        u.add(100 + 2 * i, 101 + 2 * i)
    assert u.total() == pytest.approx(6.5 + 1000)
    assert len(u._starts) <= 8


def test_log_metrics_one_line_per_event(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="callmeter.metrics")
    metrics.log_metrics(llm(0, 0.5, prompt_tokens=3))
    metrics.log_metrics(tool(0, 0.25, "search"))
    lines = caplog.records
    assert len(lines) == 2
    assert lines[0].getMessage().startswith("llm_metrics ")
    assert "model=gpt-4o-mini" in lines[0].getMessage()
    assert "prompt_tokens=3" in lines[0].getMessage()
    assert lines[1].metrics["tool_name"] == "search"


def test_interval_union_matches_brute_force_in_any_arrival_order():
    import random

    rng = random.Random(7)
    for _ in range(200):
        ivals = []
        for _ in range(rng.randint(1, 40)):
            s = rng.uniform(0, 50)
            ivals.append((s, s + rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 20)])))
        rng.shuffle(ivals)
        u = IntervalUnion()
        for s, e in ivals:
            u.add(s, e)
        assert u.total() == pytest.approx(union_duration(ivals))
        # Brute force on a fine grid as an independent check of union_duration itself.
        if len(ivals) <= 10:
            grid = sum(1 for k in range(8000) if any(s <= k / 100 < e for s, e in ivals)) / 100
            assert union_duration(ivals) == pytest.approx(grid, abs=0.01 * len(ivals) + 0.02)


def test_models_of_one_kind_in_one_batch_are_kept_apart():
    c = UsageCollector()
    for i, (model, provider) in enumerate([("nova-3", "deepgram"), ("whisper-1", "openai")] * 3):
        md = Metadata(model_name=model, model_provider=provider)
        c(metrics.STTMetrics(timestamp=T0 + i, started_at=T0 + i, duration=0.1,
                             audio_duration=10.0, metadata=md))  # fmt: skip
        c(metrics.TTSMetrics(timestamp=T0 + i, started_at=T0 + i, duration=0.1,
                             characters_count=5, metadata=md))  # fmt: skip
    s = c.get_summary()
    assert s.by_model["deepgram/nova-3"].audio_duration == 30.0
    assert s.by_model["openai/whisper-1"].audio_duration == 30.0
    # The same provider/model string measured as two kinds stays two entries.
    assert s.by_model["openai/whisper-1"].kind == "stt"
    assert s.by_model["openai/whisper-1"].requests == 3
    assert s.by_model["openai/whisper-1#tts"].characters_count == 15
    assert s.stt_audio_duration == 60.0 and s.tts_characters_count == 30


def test_malformed_event_is_left_out_and_the_rest_still_counts(caplog):
    """A metric with None where a count belongs (e.g. built by hand from a server's JSON)."""
    import logging

    session = AgentSession()
    bad = LLMMetrics(timestamp=T0 + 1, started_at=T0, duration=1.0, prompt_tokens=None)
    with caplog.at_level(logging.WARNING):
        session.emit_metrics(llm(0, 0.5, prompt_tokens=10, completion_tokens=2))
        session.emit_metrics(bad)
        for _ in range(20):
            with session.tool_call("t"):
                pass
        u = session.usage  # must not raise
    assert (u.llm_requests, u.llm_prompt_tokens, u.tool_calls) == (1, 10, 20)
    assert u.active_duration > 0
    assert "rejected an invalid metrics event" in caplog.text and "prompt_tokens" in caplog.text
    assert session.rejected_events == 1
    assert session.usage.tool_calls == 20  # reading again gives the same totals


def test_invalid_usage_in_helpers_is_logged_not_raised(caplog):
    import logging

    session = AgentSession()
    with caplog.at_level(logging.ERROR):
        with session.llm_generation(model="m") as gen:
            gen.set_usage(prompt_tokens=None, completion_tokens=5)
        with session.tts_request(model="t") as tts:
            tts.set_usage(characters_count=-3)
        with session.stt_request(model="s") as stt:
            stt.set_usage(audio_duration=float("nan"))
    u = session.usage
    assert u.llm_usage_unreported == 1 and u.llm_prompt_tokens == 0
    assert u.tts_characters_count == 0 and u.stt_audio_duration == 0
    assert caplog.text.count("invalid") == 3


def test_valid_subclasses_of_metric_types_are_counted_as_their_base():
    # A user type adding a field to a callmeter metric passes validation; its usage must
    # be in the totals (collectors add up exact classes, so it is counted as its base).
    from callmeter import AgentSession
    from callmeter import metrics as m

    class MyLLM(m.LLMMetrics, tag="my_llm"):
        tenant: str = ""

    class MySTT(m.STTMetrics, tag="my_stt"):
        tenant: str = ""

    class MyTool(m.ToolMetrics, tag="my_tool"):
        tenant: str = ""

    md = m.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    events = [
        MyLLM(timestamp=T0, started_at=T0, duration=1.0, prompt_tokens=100,
              completion_tokens=20, metadata=md, tenant="a"),
        m.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0, prompt_tokens=1, metadata=md),
        MySTT(timestamp=T0, started_at=T0, duration=0.5, audio_duration=2.0, tenant="a"),
        MyTool(timestamp=T0, started_at=T0, duration=0.3, tool_name="lookup", tenant="a"),
    ]  # fmt: skip
    session = AgentSession(session_id="x")
    direct = UsageCollector()
    fed: list = []
    via_handler = UsageCollector()
    session.on("metrics_collected", lambda ev: (fed.append(ev.metrics), via_handler(ev.metrics)))
    for e in events:
        session.emit_metrics(e)
        direct.collect(e)
    assert fed == events and type(fed[0]) is MyLLM  # handlers get the caller's objects
    for summary in (session.usage, direct.get_summary(), via_handler.get_summary()):
        assert summary.llm_requests == 2
        assert summary.llm_prompt_tokens == 101
        assert summary.stt_audio_duration == 2.0
        assert summary.tool_calls == 1
    assert session.rejected_events == direct.rejected_events == 0
