"""Every event is validated before it touches a total; emit_metrics and collect never raise."""

from __future__ import annotations

import logging
import math
from decimal import Decimal

import pytest

from callmeter import AgentSession, metrics
from callmeter.model import validate

T0 = 1_790_000_000.0


def llm(**kw):
    base = dict(timestamp=T0 + 1, started_at=T0, duration=1.0, prompt_tokens=10,
                completion_tokens=2, total_tokens=12)  # fmt: skip
    base.update(kw)
    return metrics.LLMMetrics(**base)


def good_events() -> list:
    md = metrics.Metadata(model_name="m", model_provider="p")
    return [
        llm(metadata=md),
        metrics.ToolMetrics(timestamp=T0 + 1, started_at=T0, duration=0.5, tool_name="t"),
        metrics.STTMetrics(timestamp=T0 + 1, started_at=T0, duration=0.5, audio_duration=2.0),
        metrics.TTSMetrics(timestamp=T0 + 1, started_at=T0, duration=0.5, characters_count=9),
        metrics.VADMetrics(timestamp=T0, idle_time=1.0, inference_count=3),
        metrics.EOUMetrics(timestamp=T0 + 1, started_at=T0, end_of_utterance_delay=0.3),
        metrics.RealtimeModelMetrics(
            timestamp=T0 + 1, started_at=T0, duration=0.5, input_tokens=5, output_tokens=7
        ),
        metrics.TurnMetrics(timestamp=T0 + 2, started_at=T0, duration=1.0, e2e_latency=1.0),
    ]


# (field, bad value) per metric type, each of which must be rejected
BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1.0, -1, None, "1", Decimal("1"), True, [1]]
BAD_COUNTS = [1.5, 2.0, -1, None, "3", True, math.nan, Decimal(3)]


def _with(m, field, value):
    m = metrics.from_dict(metrics.to_dict(m))  # a fresh copy
    setattr(m, field, value)
    return m


def _cases():
    for m in good_events():
        name = type(m).__name__
        for field in m.__struct_fields__:
            value = getattr(m, field)
            if field in ("timestamp", "started_at", "duration", "audio_duration",
                         "end_of_utterance_delay", "idle_time"):  # fmt: skip
                bad = BAD_NUMBERS
            elif field.endswith("_tokens") or field.endswith("_count"):
                bad = BAD_COUNTS
            elif field in ("speech_id", "error", "call_id"):
                bad = [[1], {"a": 1}, 3, b"\xff"]
            elif field == "metadata":
                bad = [{"model_name": "m"}, metrics.Metadata(model_name=3),
                       metrics.Metadata(model_provider=["x"])]  # fmt: skip
            elif isinstance(value, bool):
                bad = [None, 1, "yes"]
            else:
                continue
            for b in bad:
                yield pytest.param(m, field, b, id=f"{name}.{field}={b!r}")


@pytest.mark.parametrize(("good", "field", "bad"), list(_cases()))
def test_each_bad_field_is_rejected_by_check(good, field, bad):
    assert validate.check(good) is None
    reason = validate.check(_with(good, field, bad))
    assert reason is not None


def test_good_events_pass_and_ints_are_accepted_for_seconds():
    for m in good_events():
        assert validate.check(m) is None, m
    assert validate.check(llm(duration=2, ttft=-1, timestamp=int(T0), started_at=int(T0))) is None
    assert validate.check(llm(ttft=-0.5)) is not None  # -1 means "did not happen", nothing else
    assert validate.check(llm(duration=2e9)) is not None  # beyond the decoding bound


def test_reason_names_the_field():
    reason = validate.check(llm(prompt_tokens=1.5))
    assert reason is not None and reason.startswith("prompt_tokens must be a non-negative int")
    reason = validate.check(llm(metadata=metrics.Metadata(model_name=3)))
    assert reason is not None and reason.startswith("metadata")
    assert validate.check(None) == "not a callmeter metrics event: NoneType"


@pytest.mark.parametrize("value", [None, 5, "llm", object(), {"type": "llm_metrics"}, [1, 2]])
def test_emit_metrics_accepts_anything_without_raising(value):
    s = AgentSession()
    seen: list = []
    s.on("metrics_collected", seen.append)
    s.emit_metrics(value)
    assert s.rejected_events == 1 and s.dropped == 1 and seen == []
    assert s.usage.llm_requests == 0


def test_unhashable_speech_id_with_a_turn_open_is_rejected_not_raised():
    s = AgentSession()
    with s, s.turn():
        s.emit_metrics(llm(speech_id=["not", "hashable"]))
        s.emit_metrics(llm(speech_id={"a": 1}))
        with s.llm_generation(model="m", speech_id=[1]):  # a helper given a bad speech_id
            pass
    assert s.rejected_events == 3
    assert s.usage.llm_requests == 0


def test_bad_model_name_does_not_break_later_usage_reads():
    s = AgentSession()
    s.emit_metrics(llm(metadata=metrics.Metadata(model_name=42, model_provider="p")))
    s.emit_metrics(llm(metadata=metrics.Metadata(model_name="m", model_provider="p")))
    for _ in range(3):
        u = s.usage
        assert u.llm_requests == 1 and list(u.by_model) == ["p/m"]
    assert s.rejected_events == 1


@pytest.mark.parametrize(
    "bad",
    [
        llm(started_at=None),
        llm(duration=math.nan),
        llm(prompt_tokens=None),
        llm(completion_tokens=2.5),
        metrics.ToolMetrics(timestamp=T0, started_at=None, duration=1.0, tool_name="t"),
    ],
    ids=["started_at=None", "duration=nan", "prompt_tokens=None", "fractional", "tool"],
)
def test_one_bad_event_in_a_collector_batch_counts_nothing_twice(bad):
    c = metrics.UsageCollector()
    for _ in range(5):
        c.collect(llm())
    c.collect(bad)
    s = c.get_summary()
    assert (s.llm_requests, s.llm_prompt_tokens, s.llm_completion_tokens) == (5, 50, 10)
    assert s.tool_calls == 0 and c.rejected_events == 1
    assert len(c.metrics) == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration", math.nan),
        ("duration", math.inf),
        ("duration", -0.5),
        ("prompt_tokens", -3),
        ("prompt_tokens", 2.5),
        ("completion_tokens", math.nan),
    ],
)
def test_bad_numbers_never_reach_totals(field, value):
    s = AgentSession()
    c = metrics.UsageCollector()
    s.on("metrics_collected", lambda ev: c.collect(ev.metrics))
    s.emit_metrics(llm())
    s.emit_metrics(llm(**{field: value}))
    c.collect(llm(**{field: value}))  # fed directly as well
    for u in (s.usage, c.get_summary()):
        assert (u.llm_requests, u.llm_prompt_tokens, u.llm_duration) == (1, 10, 1.0)
        assert u.active_duration == 1.0
    assert s.rejected_events == 1 and c.rejected_events == 1


def test_rejections_are_logged_at_a_bounded_rate(caplog):
    s = AgentSession()
    with caplog.at_level(logging.WARNING, logger="callmeter"):
        for _ in range(500):
            s.emit_metrics(None)
    lines = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert 1 <= len(lines) <= 10
    assert s.rejected_events == 500


def test_session_validates_once_and_a_collector_checks_other_objects():
    # The session's handler hands the validated object on; a different object is checked.
    s = AgentSession()
    c = metrics.UsageCollector()
    s.on("metrics_collected", lambda ev: c.collect(ev.metrics))
    s.emit_metrics(llm())
    c.collect(llm(duration=-1.0))
    assert c.get_summary().llm_requests == 1 and c.rejected_events == 1


def test_helper_with_a_bad_end_time_is_rejected_not_raised():
    s = AgentSession()
    with s.tool_call("t") as call:
        call.ended_at = float("nan")
    with s.tool_call("t") as call:
        call.ended_at = "soon"  # type: ignore[assignment]
    assert s.usage.tool_calls == 0


def test_get_summary_and_usage_never_raise_on_internal_failure(caplog):
    c = metrics.UsageCollector()
    c.collect(llm())

    def broken(s):
        raise RuntimeError("bug")

    c._summarize = broken  # an internal failure while summarizing
    with caplog.at_level(logging.ERROR):
        u = c.get_summary()
    assert u.cost_complete is False and "bug" in caplog.text


def test_subclasses_are_checked_as_their_base_type():
    class MyLLM(metrics.LLMMetrics, tag="my_llm"):
        pass

    class Wider(metrics.LLMMetrics, tag="wider_llm"):
        note: str = ""

    assert validate.check(MyLLM(timestamp=T0, started_at=T0, duration=1.0)) is None
    assert validate.check(MyLLM(timestamp=T0, started_at=T0, duration=-1.0)) is not None
    assert validate.check(Wider(timestamp=T0, started_at=T0, duration=1.0)) is None
    assert validate.check(Wider(timestamp=T0, started_at=T0, duration=math.nan)) is not None


def test_collector_rejects_none_before_any_session_validated_anything():
    c = metrics.UsageCollector()
    c.collect(None)
    assert c.rejected_events == 1 and c.metrics == []
