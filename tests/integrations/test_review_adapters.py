"""Adversarial tests of the LiveKit and Pipecat adapters: bad targets, attaching twice,
malformed and out-of-order events, garbage frames. Nothing raises into the framework and
nothing is counted twice."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from livekit.agents import AgentSession as LKAgentSession
from livekit.agents import llm
from livekit.agents.voice import events as lke
from pipecat.frames.frames import (
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    ProcessingMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection

from callmeter import AgentSession, metrics
from callmeter.errors import InvalidArgumentError
from callmeter.integrations.livekit import attach
from callmeter.integrations.pipecat import CallmeterObserver


def record(session: AgentSession) -> list:
    events: list = []
    session.on("metrics_collected", lambda ev: events.append(ev.metrics))
    return events


# ------------------------------------------------------------------ LiveKit


@pytest.mark.parametrize("bad", [object(), None, 42, "lk", SimpleNamespace(on=1, off=2)])
def test_attach_to_something_that_is_not_a_livekit_session_raises_a_typed_error(bad):
    session = AgentSession()
    with pytest.raises(InvalidArgumentError, match=r"livekit\.agents\.AgentSession"):
        attach(bad, session)
    assert not session.started  # nothing was started for a failed attach


def lk_tool_events(call_id: str, t0: float):
    call = llm.FunctionCall(call_id=call_id, name="lookup", arguments="{}")
    start = lke.ToolExecutionUpdatedEvent(update=lke.ToolCallStarted(function_call=call))
    start.created_at = t0
    end = lke.ToolExecutionUpdatedEvent(
        update=lke.ToolCallEnded(id=call_id, call_id=call_id, status="done")
    )
    end.created_at = t0 + 0.2
    return start, end


async def test_attaching_twice_to_the_same_sessions_counts_once():
    lk = LKAgentSession()
    session = AgentSession()
    events = record(session)
    first = attach(lk, session)
    second = attach(lk, session)
    assert second is first
    start, end = lk_tool_events("c1", time.time())
    lk.emit("tool_execution_updated", start)
    lk.emit("tool_execution_updated", end)
    assert len([m for m in events if isinstance(m, metrics.ToolMetrics)]) == 1
    assert session.usage.tool_calls == 1
    first.detach()
    second.detach()  # detaching again does nothing
    third = attach(lk, session)  # a new handle after a detach
    assert third is not first and third.attached
    third.detach()


async def test_livekit_events_with_missing_attributes_are_skipped():
    lk = LKAgentSession()
    session = AgentSession()
    handle = attach(lk, session)
    events = record(session)
    for name in (
        "metrics_collected",
        "tool_execution_updated",
        "function_tools_executed",
        "conversation_item_added",
    ):
        for ev in (None, object(), SimpleNamespace(), SimpleNamespace(created_at=math.nan)):
            lk.emit(name, ev)  # must not raise
    bad_end = lke.ToolExecutionUpdatedEvent(
        update=lke.ToolCallEnded(id="x", call_id="x", status="done")
    )
    bad_end.created_at = math.nan
    lk.emit("tool_execution_updated", bad_end)
    assert events == [] and handle.attached
    lk.emit("close", SimpleNamespace())  # a close without an error attribute
    assert session.closed and not handle.attached


# ------------------------------------------------------------------ Pipecat

SOURCE = SimpleNamespace(name="svc")


def pushed(frame, ns: int | None = None) -> FramePushed:
    return FramePushed(
        source=SOURCE,
        destination=SOURCE,
        frame=frame,
        direction=FrameDirection.DOWNSTREAM,
        timestamp=time.monotonic_ns() if ns is None else ns,
    )


async def test_a_tool_result_before_its_start_is_not_a_cancelled_call():
    observer = CallmeterObserver(AgentSession())
    events = record(observer.session)
    call = {"function_name": "f", "tool_call_id": "c1", "arguments": {}}
    await observer.on_push_frame(pushed(FunctionCallResultFrame(**call, result="x")))
    await observer.on_push_frame(pushed(FunctionCallInProgressFrame(**call)))
    observer.close()
    assert [m for m in events if isinstance(m, metrics.ToolMetrics)] == []
    assert observer.session.usage.tool_errors == 0


async def test_garbage_frames_and_values_are_skipped_and_counts_stay_single():
    observer = CallmeterObserver(AgentSession())
    events = record(observer.session)
    for junk in (
        None,
        1,
        object(),
        SimpleNamespace(frame=None),
        SimpleNamespace(frame=MetricsFrame(data=None)),
        pushed(MetricsFrame(data=[None, 1, object()])),
        pushed(MetricsFrame(data=[TTFBMetricsData(processor="svc", value=math.nan)])),
        pushed(MetricsFrame(data=[ProcessingMetricsData(processor="svc", value=-1.0)])),
        pushed(MetricsFrame(data=[TTSUsageMetricsData(processor="tts", value=-5)])),
        pushed(MetricsFrame(data=[SimpleNamespace(processor=None, value=0.1, model=None)])),
    ):
        await observer.on_push_frame(junk)  # must not raise
    start, end = LLMFullResponseStartFrame(), LLMFullResponseEndFrame()
    huge = 10**30
    usage = MetricsFrame(
        data=[
            LLMUsageMetricsData(
                processor="svc",
                model="gpt-4o-mini",
                value=LLMTokenUsage(prompt_tokens=huge, completion_tokens=5, total_tokens=huge + 5),
            )
        ]
    )
    for f in (start, usage, end, end, usage, start):  # out of order and repeated
        await observer.on_push_frame(pushed(f))
    observer.close()
    observer.close()
    llms = [m for m in events if isinstance(m, metrics.LLMMetrics)]
    assert len(llms) == 1 and llms[0].prompt_tokens == huge
    assert observer.session.usage.llm_prompt_tokens == huge and observer.session.closed
