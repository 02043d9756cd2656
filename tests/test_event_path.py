"""The event hot path's shortcuts: metrics the helpers build skip the full check only when
every value the caller could influence is checked; the collector and the ledger add each
event up once, in runs, and a bad event never counts twice."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest

from callmeter import AgentSession, metrics

T0 = 1_790_000_000.0
MD = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")


def _session_with_handler() -> tuple[AgentSession, list]:
    session = AgentSession()
    seen: list = []
    session.on("metrics_collected", lambda ev: seen.append(ev.metrics))
    return session, seen


def _generation(session: AgentSession, **attrs: object) -> None:
    with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
        gen.first_token()
        gen.set_usage(prompt_tokens=100, completion_tokens=20)
        for name, value in attrs.items():
            setattr(gen, name, value)


def test_helper_metric_is_recorded_exactly():
    session, seen = _session_with_handler()
    _generation(session)
    assert len(seen) == 1 and session.rejected_events == 0
    m = seen[0]
    assert m.prompt_tokens == 100 and m.completion_tokens == 20 and m.total_tokens == 120
    assert m.metadata == MD and 0 <= m.ttft <= m.duration
    u = session.usage
    assert u.llm_requests == 1 and u.llm_prompt_tokens == 100
    assert u.by_model["openai/gpt-4o-mini"].duration == pytest.approx(m.duration)


@pytest.mark.parametrize(
    "attrs",
    [
        {"label": 5},
        {"request_id": b"req"},
        {"speech_id": 7},
        {"error": 123},
        {"model": 42},
        {"provider": ["openai"]},
        {"ended_at": math.nan},
        {"ended_at": -1e12},  # ends before it started: negative duration
        {"ended_at": math.inf},
    ],
)
def test_values_set_on_a_helper_are_still_checked(attrs):
    # What a caller can set on a timer is never trusted: the metric goes through the full
    # check, is rejected whole, counted, and reaches neither a handler nor a total.
    session, seen = _session_with_handler()
    _generation(session, **attrs)
    assert seen == []
    assert session.rejected_events == 1
    assert session.usage.llm_requests == 0


def test_a_forged_event_built_like_a_helper_metric_is_checked():
    # Trust comes from the call path inside the session's helpers, never from the object:
    # the same class with the helper's values but one bad count is rejected by emit_metrics.
    session, seen = _session_with_handler()
    _generation(session)
    good = seen[0]
    forged = metrics.LLMMetrics(
        **{name: getattr(good, name) for name in good.__struct_fields__ if name != "type"}
    )
    forged.prompt_tokens = -100
    session.emit_metrics(forged)
    assert session.rejected_events == 1 and len(seen) == 1
    assert session.usage.llm_prompt_tokens == 100


def test_helper_with_invalid_usage_records_unreported_usage():
    session, seen = _session_with_handler()
    with session.llm_generation(model="m", provider="p") as gen:
        gen.set_usage(prompt_tokens=-1, completion_tokens=2)
    assert seen[0].usage_reported is False
    assert session.usage.llm_usage_unreported == 1 and session.usage.llm_prompt_tokens == 0


def _llm(i: int, sid: str | None, md: metrics.Metadata | None, **kw: object) -> metrics.LLMMetrics:
    fields: dict[str, object] = {"duration": 0.25, **kw}
    return metrics.LLMMetrics(
        timestamp=T0 + i, started_at=T0 + i, speech_id=sid, metadata=md, **fields
    )


def test_bad_event_in_a_collector_batch_is_rejected_whole_good_ones_counted_once():
    usage = metrics.UsageCollector(keep_metrics=False)
    for i in range(5):
        usage.collect(_llm(i, "a", MD, prompt_tokens=10, completion_tokens=1))
    usage.collect(_llm(5, "a", MD, prompt_tokens=-10))  # rejected before it is queued
    usage.collect(_llm(6, "a", MD, prompt_tokens=10, duration=math.nan))
    for i in range(7, 12):
        usage.collect(_llm(i, "b", MD, prompt_tokens=10, completion_tokens=1))
    s = usage.get_summary()
    assert usage.rejected_events == 2
    assert (s.llm_requests, s.llm_prompt_tokens, s.llm_completion_tokens) == (10, 100, 10)
    assert s.llm_duration == pytest.approx(2.5)
    assert s.by_model["openai/gpt-4o-mini"].requests == 10


def _reference(events: list[metrics.LLMMetrics]) -> dict[str, object]:
    reported = [m for m in events if m.usage_reported]
    return {
        "requests": len(events),
        "prompt": sum(m.prompt_tokens for m in reported),
        "cached": sum(m.prompt_cached_tokens for m in reported),
        "completion": sum(m.completion_tokens for m in reported),
        "unreported": len(events) - len(reported),
        "errors": sum(m.error is not None for m in events),
        "duration": math.fsum(m.duration for m in events),
    }


@pytest.mark.parametrize("seed", range(5))
def test_runs_of_turns_and_models_add_up_like_a_plain_sum(seed):
    # Runs are found by equality, not identity: equal speech ids and Metadata built anew
    # for every event, interleaved turns, large and convention-breaking requests, errors,
    # unreported usage, more turns than the collector keeps costs for.
    rng = random.Random(seed)
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("acme", "unknown-model"), None]
    events = []
    for i in range(3000):
        pm = rng.choice(models)
        md = None if pm is None else metrics.Metadata(model_name=pm[1], model_provider=pm[0])
        sid = rng.choice([None, f"speech_{rng.randrange(40)}", f"speech_{i // 7}"])
        prompt = rng.choice([0, 5, 1000, 40_000])
        events.append(
            _llm(
                i,
                None if sid is None else str(sid),  # a new str object each time
                md,
                prompt_tokens=prompt,
                prompt_cached_tokens=rng.choice([0, 3, prompt + 1]),
                completion_tokens=rng.randrange(50),
                cache_creation_tokens=rng.choice([0, 0, 2]),
                input_audio_tokens=rng.choice([0, 0, 7]),
                usage_reported=rng.random() > 0.1,
                error=rng.choice([None, None, "Timeout"]),
                duration=rng.random(),
            )
        )
    usage = metrics.UsageCollector(keep_metrics=False, max_cost_turns=10)
    session = AgentSession()
    for m in events:
        usage.collect(m)
        session.emit_metrics(m)
    for s in (usage.get_summary(), session.usage):
        ref = _reference(events)
        assert s.llm_requests == ref["requests"]
        assert s.llm_prompt_tokens == ref["prompt"]
        assert s.llm_prompt_cached_tokens == ref["cached"]
        assert s.llm_completion_tokens == ref["completion"]
        assert s.llm_usage_unreported == ref["unreported"]
        assert s.llm_errors == ref["errors"]
        assert s.llm_duration == pytest.approx(ref["duration"])
        parts = sum(s.cost_by_turn.values(), Decimal(0))
        assert s.cost == parts + s.cost_unattributed + s.cost_dropped_turns
        per_model = [
            e for e in events if e.metadata is not None and e.metadata.model_name == "gpt-4o-mini"
        ]
        mini = s.by_model["openai/gpt-4o-mini"]
        assert mini.requests == len(per_model)
        assert mini.errors == sum(e.error is not None for e in per_model)


def test_collector_flush_in_batches_equals_one_big_flush():
    events = [
        _llm(i, f"s{i % 13}", MD, prompt_tokens=i % 17, completion_tokens=1) for i in range(5000)
    ]
    small = metrics.UsageCollector(keep_metrics=False)
    small._batch = 7  # flushes every 7 events: runs cut at every batch boundary
    big = metrics.UsageCollector(keep_metrics=False)
    for m in events:
        small.collect(m)
        big.collect(m)
    a, b = small.get_summary(), big.get_summary()
    assert (a.llm_requests, a.llm_prompt_tokens, a.cost) == (
        b.llm_requests,
        b.llm_prompt_tokens,
        b.cost,
    )
    assert a.cost_by_turn == b.cost_by_turn
    assert a.active_duration == pytest.approx(b.active_duration)


def test_single_handler_shortcut_follows_registration_changes():
    session = AgentSession()
    calls: list[str] = []

    def first(ev):
        calls.append("first")

    def second(ev):
        calls.append("second")

    m = _llm(0, None, MD)
    session.on("metrics_collected", first)
    session.emit_metrics(m)
    session.on("metrics_collected", second)
    session.emit_metrics(m)
    session.off("metrics_collected", first)
    session.emit_metrics(m)
    session.once("metrics_collected", first)
    session.emit_metrics(m)
    session.emit_metrics(m)
    assert calls == ["first", "first", "second", "second", "second", "first", "second"]


@pytest.mark.parametrize("helper", ["tool_call", "stt_request", "tts_request", "llm_generation"])
def test_a_helper_whose_metric_cannot_be_built_counts_a_rejected_event(helper, caplog):
    session = AgentSession(prices=False)
    timer = session.tool_call("lookup") if helper == "tool_call" else getattr(session, helper)()
    with timer as t:
        t.ended_at = "soon"  # not a perf_counter value: the duration cannot be computed
    assert session.rejected_events == 1
    assert "metric failed" in caplog.text
    assert session.usage.llm_requests == 0 and session.usage.tool_calls == 0
