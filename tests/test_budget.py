"""Latency budgets: validation, and latency_budget_exceeded on a slow turn only."""

from __future__ import annotations

import math

import pytest

from callmeter import AgentSession, InvalidArgumentError
from callmeter.metrics import LatencyBudget, LatencyBudgetExceededEvent, TurnMetrics
from test_turns import T0, eou, llm, tool, tts


def run_tool_turn(session: AgentSession, tool_seconds: float, sid: str) -> TurnMetrics:
    """EOU 0.4 s -> LLM step 1 -> one tool -> LLM step 2 -> TTS; marks from the metrics."""
    with session.turn(speech_id=sid) as turn:
        end_tool = 0.9 + tool_seconds
        for m in (
            eou(0, 0.4, 0.15, sid=sid),
            llm(0.4, 0.3, 0.5, sid=sid),
            tool(0.9, tool_seconds, sid=sid),
            llm(end_tool, 0.2, 0.5, sid=sid),
            tts(end_tool + 0.25, 0.2, 1.0, sid=sid),
        ):
            session.emit_metrics(m)
    assert turn.metrics is not None
    return turn.metrics


def test_slow_tool_triggers_budget_event_with_the_breakdown():
    s = AgentSession(session_id="c1", agent_name="support", labels={"env": "t"})
    s.set_latency_budget(e2e=5.0, llm_ttft=0.8, tool=1.0)
    events: list[LatencyBudgetExceededEvent] = []
    s.on("latency_budget_exceeded", events.append)

    fast = run_tool_turn(s, 0.3, "fast")
    assert fast.breakdown.tool == pytest.approx(0.3)
    assert events == []  # a fast turn does not fire

    slow = run_tool_turn(s, 1.5, "slow")
    assert len(events) == 1
    ev = events[0]
    assert (ev.session_id, ev.agent_name, ev.labels) == ("c1", "support", {"env": "t"})
    assert ev.speech_id == "slow" and ev.turn is slow
    assert [(x.name, x.budget) for x in ev.exceeded] == [("tool", 1.0)]
    assert ev.exceeded[0].actual == pytest.approx(1.5)
    # the breakdown carried by the event: EOU 0.4 + TTFT 0.3 + rest 0.2 + tool 1.5
    # + TTFT 0.2 + remainder 0.05 + TTS TTFB 0.2 = 2.85
    b = ev.breakdown
    assert slow.e2e_latency == pytest.approx(2.85)
    assert (b.end_of_utterance + b.transcription, b.tool, b.llm_ttft, b.tts_ttfb) == (
        pytest.approx((0.4, 1.5, 0.5, 0.2))
    )
    assert sum(b.components().values()) == pytest.approx(slow.e2e_latency)


def test_several_budgets_exceeded_are_all_reported():
    s = AgentSession()
    s.set_latency_budget(e2e=2.0, tool=1.0, tts_ttfb=0.5, end_of_utterance=0.1)
    events: list = []
    s.on("latency_budget_exceeded", events.append)
    run_tool_turn(s, 1.5, "x")
    (ev,) = events
    assert {x.name: x.budget for x in ev.exceeded} == {
        "e2e": 2.0,
        "tool": 1.0,
        "end_of_utterance": 0.1,
    }
    assert {x.name: round(x.actual, 6) for x in ev.exceeded} == {
        "e2e": 2.85,
        "tool": 1.5,
        "end_of_utterance": 0.25,
    }


def test_interrupted_turn_is_checked_against_the_time_waited():
    s = AgentSession()
    s.set_latency_budget(e2e=0.5)
    events: list = []
    s.on("latency_budget_exceeded", events.append)
    with s.turn(speech_id="i") as turn:
        turn.user_stopped_speaking(at=T0)
        turn.interrupt()
    assert turn.metrics.e2e_latency == -1.0 and turn.metrics.interrupted
    (ev,) = events  # waited from T0 until now: far more than 0.5 s
    assert ev.exceeded[0].name == "e2e" and ev.exceeded[0].actual > 1000


def test_no_budget_or_cleared_budget_emits_nothing():
    s = AgentSession()
    events: list = []
    s.on("latency_budget_exceeded", events.append)
    run_tool_turn(s, 3.0, "a")
    s.set_latency_budget(tool=1.0)
    s.set_latency_budget()  # clears
    run_tool_turn(s, 3.0, "b")
    assert events == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"e2e_latency": 1.0}, "unknown latency budget 'e2e_latency'"),
        ({"ttft": 1.0}, "use one of: e2e, end_of_utterance"),
        ({"e2e": 0}, "positive"),
        ({"tool": -1.0}, "positive"),
        ({"tool": math.nan}, "positive"),
        ({"tool": math.inf}, "positive"),
        ({"tool": "1.0"}, "positive"),
        ({"tool": True}, "positive"),
    ],
)
def test_bad_budgets_raise_typed_errors(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        AgentSession().set_latency_budget(**kwargs)
    with pytest.raises(InvalidArgumentError):
        LatencyBudget(**kwargs)


def test_budget_check_is_pure():
    from test_turns import build

    tm = build([eou(0, 0.5, 0.2), llm(0.55, 0.25, 0.75), tts(0.85, 0.25, 0.9)])  # e2e 1.1
    assert LatencyBudget(e2e=1.2).check(tm) == []
    (x,) = LatencyBudget(e2e=1.0, llm_ttft=0.3).check(tm)
    assert (x.name, x.budget, round(x.actual, 6)) == ("e2e", 1.0, 1.1)
    assert repr(LatencyBudget(e2e=1)) == "LatencyBudget(e2e=1.0)"
