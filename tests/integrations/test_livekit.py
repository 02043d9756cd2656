"""callmeter.integrations.livekit against a real LiveKit Agents AgentSession (text mode, no
room) whose LLM is the real livekit-plugins-openai plugin talking to callmeter-sim."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from types import SimpleNamespace

import pytest
from livekit.agents import Agent, function_tool, llm
from livekit.agents import AgentSession as LKAgentSession
from livekit.agents.metrics import base as lkm
from livekit.agents.voice import events as lke
from livekit.plugins import openai as lk_openai

from callmeter import AgentSession, metrics
from callmeter.integrations.livekit import attach, convert_metrics
from callmeter.sim import Reply, ToolCallSpec, tokenize

TOOL_SECONDS = 0.3
ANSWER = "It is sunny in Paris today."
TOOL_RUNS: list[tuple[float, float]] = []  # (start, end) of each run, as the tool saw it


class WeatherAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You answer weather questions.")

    @function_tool
    async def get_weather(self, city: str) -> str:
        """The weather in a city."""
        start = time.time()
        await asyncio.sleep(TOOL_SECONDS)
        TOOL_RUNS.append((start, time.time()))
        return f"sunny in {city}"


def sim_prompt_tokens(body: dict) -> int:
    """Prompt tokens as callmeter-sim counts them (docs/sim.md), from the request it got."""
    total = 0
    for m in body["messages"]:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text") or "") for p in content)
        total += 3 + len(tokenize(content or ""))
        for call in m.get("tool_calls") or []:
            total += 1 + len(tokenize(call["function"]["arguments"]))
    return total


def record(session: AgentSession) -> list:
    events: list = []
    session.on("metrics_collected", lambda ev: events.append(ev.metrics))
    return events


@pytest.fixture
def fast_sim(sim):
    sim.config.ttft = 0.05
    sim.config.token_delay = 0.005
    return sim


def lk_llm(sim) -> lk_openai.LLM:
    return lk_openai.LLM(model="gpt-4o-mini", base_url=sim.base_url, api_key="sim")


async def test_text_mode_call_with_a_tool(fast_sim):
    args = {"city": "Paris"}
    fast_sim.config.script.extend(
        [Reply(tool_calls=[ToolCallSpec("get_weather", args)]), Reply(text=ANSWER)]
    )
    TOOL_RUNS.clear()
    lk = LKAgentSession(llm=lk_llm(fast_sim))
    handle = attach(lk)
    events = record(handle.session)
    await lk.start(WeatherAgent())
    await lk.run(user_input="What is the weather in Paris?")
    assert not handle.session.closed
    await lk.aclose()

    session = handle.session
    assert session.closed and not handle.attached
    assert session.agent_name == "weather_agent"
    llms = [m for m in events if isinstance(m, metrics.LLMMetrics)]
    tools = [m for m in events if isinstance(m, metrics.ToolMetrics)]
    turns = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    bodies = fast_sim.config.requests
    assert len(llms) == 2 and len(bodies) == 2
    assert [m.prompt_tokens for m in llms] == [sim_prompt_tokens(b) for b in bodies]
    assert [m.completion_tokens for m in llms] == [
        1 + len(tokenize(json.dumps(args))),
        len(tokenize(ANSWER)),
    ]
    assert all(m.request_id.startswith("chatcmpl-") for m in llms)
    assert all(m.metadata and m.metadata.model_name == "gpt-4o-mini" for m in llms)
    assert all(abs(m.started_at + m.duration - m.timestamp) < 1e-6 for m in llms)

    (tool,) = tools
    assert tool.tool_name == "get_weather" and tool.success and tool.call_id
    # 0.3 s as the tool saw it (asyncio.sleep overshoots on a busy machine)
    ((run_start, run_end),) = TOOL_RUNS
    assert tool.duration == pytest.approx(run_end - run_start, abs=0.05)
    assert tool.duration >= TOOL_SECONDS - 0.005
    speech_id = llms[0].speech_id
    assert speech_id and speech_id.startswith("speech_")
    assert tool.speech_id == speech_id == llms[1].speech_id
    # the tool ran between the two LLM requests
    assert llms[0].started_at < tool.started_at < llms[1].started_at

    u = session.usage
    assert u.llm_requests == 2 and u.tool_calls == 1
    assert u.llm_prompt_tokens == sum(sim_prompt_tokens(b) for b in bodies)
    assert u.llm_completion_tokens == sum(m.completion_tokens for m in llms)
    assert u.llm_duration == pytest.approx(sum(m.duration for m in llms))
    assert u.tool_duration == pytest.approx(tool.duration)
    assert u.llm_and_tool_duration == pytest.approx(u.llm_duration + u.tool_duration)

    # one turn for the speech: both LLM steps and the tool in its breakdown
    (turn,) = turns
    assert turn.speech_id == speech_id and turn.llm_requests == 2 and turn.tool_calls == 1
    assert turn.text_only and turn.e2e_latency > TOOL_SECONDS
    assert turn.breakdown.tool == pytest.approx(tool.duration, abs=0.01)
    assert sum(turn.breakdown.components().values()) == pytest.approx(turn.duration, abs=1e-6)


async def test_attach_then_detach_at_once_measures_nothing(fast_sim):
    lk = LKAgentSession(llm=lk_llm(fast_sim))
    session = AgentSession(agent_name="detached")
    events = record(session)
    handle = attach(lk, session)
    handle.detach()
    handle.detach()  # a second detach does nothing
    await lk.start(WeatherAgent())
    await lk.run(user_input="hello there")
    await lk.aclose()
    assert len(fast_sim.config.requests) == 1  # LiveKit did run
    assert events == []
    assert session.usage.llm_requests == 0 and not session.closed


async def test_aclose_detaches(fast_sim):
    lk = LKAgentSession(llm=lk_llm(fast_sim))
    handle = attach(lk)
    await handle.aclose()
    assert not handle.attached
    await lk.start(WeatherAgent())
    await lk.run(user_input="hello there")
    await lk.aclose()
    assert handle.session.usage.llm_requests == 0 and not handle.session.closed


# synthetic events, emitted through a real (not started) LiveKit AgentSession -------------


@pytest.fixture
async def lk_pair():
    lk = LKAgentSession()
    session = AgentSession(agent_name="t")
    handle = attach(lk, session)
    events = record(session)
    yield lk, handle, events
    handle.detach()


def llm_metrics(**kw) -> lkm.LLMMetrics:
    fields = dict(
        label="llm",
        request_id="req_1",
        timestamp=time.time(),
        duration=0.5,
        ttft=0.2,
        cancelled=False,
        completion_tokens=10,
        prompt_tokens=100,
        prompt_cached_tokens=40,
        total_tokens=110,
        tokens_per_second=20.0,
        speech_id="speech_a",
        metadata=lkm.Metadata(model_name="gpt-4o-mini", model_provider="openai"),
    )
    return lkm.LLMMetrics(**{**fields, **kw})


def started(call_id: str, name: str = "lookup", at: float | None = None):
    call = llm.FunctionCall(call_id=call_id, name=name, arguments="{}")
    ev = lke.ToolExecutionUpdatedEvent(update=lke.ToolCallStarted(function_call=call))
    if at is not None:
        ev.created_at = at
    return ev


def ended(call_id: str, status: str = "done", at: float | None = None):
    ev = lke.ToolExecutionUpdatedEvent(
        update=lke.ToolCallEnded(id=call_id, call_id=call_id, status=status)
    )
    if at is not None:
        ev.created_at = at
    return ev


def executed(*call_ids: str, error: bool = False, name: str = "lookup"):
    calls = [llm.FunctionCall(call_id=c, name=name, arguments="{}") for c in call_ids]
    outs = [
        llm.FunctionCallOutput(call_id=c, name=name, output="x", is_error=error) for c in call_ids
    ]
    return lke.FunctionToolsExecutedEvent(function_calls=calls, function_call_outputs=outs)


async def test_every_metrics_type_is_converted(lk_pair):
    lk, _, events = lk_pair
    now = time.time()
    lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=llm_metrics(timestamp=now)))
    stt = lkm.STTMetrics(
        label="stt",
        request_id="s1",
        timestamp=now,
        duration=0.4,
        audio_duration=3.5,
        streamed=False,
        metadata=lkm.Metadata(model_name="whisper-1", model_provider="openai"),
    )
    tts = lkm.TTSMetrics(
        label="tts",
        request_id="t1",
        timestamp=now,
        ttfb=0.15,
        duration=0.9,
        audio_duration=2.0,
        cancelled=False,
        characters_count=42,
        streamed=True,
        speech_id="speech_a",
    )
    vad = lkm.VADMetrics(
        label="vad", timestamp=now, idle_time=1.0, inference_duration_total=0.1, inference_count=9
    )
    eou = lkm.EOUMetrics(
        timestamp=now,
        end_of_utterance_delay=0.5,
        transcription_delay=0.3,
        on_user_turn_completed_delay=0.1,
        speech_id="speech_a",
    )
    rt = lkm.RealtimeModelMetrics(
        request_id="resp_1",
        timestamp=now - 1.0,
        duration=1.0,
        ttft=0.3,
        input_tokens=50,
        output_tokens=20,
        total_tokens=70,
        input_token_details=lkm.RealtimeModelMetrics.InputTokenDetails(
            audio_tokens=30, text_tokens=20, cached_tokens=10
        ),
        output_token_details=lkm.RealtimeModelMetrics.OutputTokenDetails(audio_tokens=20),
    )
    connection = lkm.RealtimeModelMetrics(
        request_id="",
        timestamp=now,
        input_token_details=lkm.RealtimeModelMetrics.InputTokenDetails(),
        output_token_details=lkm.RealtimeModelMetrics.OutputTokenDetails(),
    )
    interruption = lkm.InterruptionMetrics(
        timestamp=now,
        total_duration=0.1,
        prediction_duration=0.05,
        detection_delay=0.2,
        num_interruptions=1,
        num_backchannels=0,
        num_requests=1,
    )
    for m in (stt, tts, vad, eou, rt, connection, interruption):
        lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=m))

    by_type = {type(m): m for m in events}
    llm_m = by_type[metrics.LLMMetrics]
    assert llm_m.started_at == pytest.approx(now - 0.5) and llm_m.speech_id == "speech_a"
    assert (llm_m.prompt_tokens, llm_m.prompt_cached_tokens, llm_m.completion_tokens) == (
        100,
        40,
        10,
    )
    assert llm_m.tokens_per_second == pytest.approx(10 / 0.3)  # after the first token
    assert llm_m.metadata == metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    s = by_type[metrics.STTMetrics]
    assert (s.audio_duration, s.started_at, s.request_id) == (3.5, pytest.approx(now - 0.4), "s1")
    t = by_type[metrics.TTSMetrics]
    assert (t.characters_count, t.ttfb, t.speech_id) == (42, 0.15, "speech_a")
    v = by_type[metrics.VADMetrics]
    assert v.inference_count == 9
    e = by_type[metrics.EOUMetrics]
    assert e.started_at == pytest.approx(now - 0.6) and e.transcription_delay == 0.3
    r = by_type[metrics.RealtimeModelMetrics]
    assert r.started_at == pytest.approx(now - 1.0) and r.timestamp == pytest.approx(now)
    assert r.input_token_details.cached_tokens == 10 and r.output_tokens == 20
    # the connection report and interruption metrics are not requests
    assert len(events) == 6


async def test_malformed_and_unknown_events_are_skipped(lk_pair, caplog):
    lk, handle, events = lk_pair

    class Hostile:
        @property
        def metrics(self):
            raise TypeError("LiveKit lets a TypeError through")

        update = property(metrics.fget)
        item = property(metrics.fget)

    bad_llm = lkm.LLMMetrics.model_construct(**{**llm_metrics().__dict__, "duration": None})
    nan_tts = lkm.TTSMetrics.model_construct(
        label="", request_id="", timestamp=time.time(), ttfb=0.1, duration=float("nan")
    )
    negative = llm_metrics(duration=-1.0)
    wrong_tokens = lkm.LLMMetrics.model_construct(
        **{**llm_metrics().__dict__, "prompt_tokens": "100"}
    )
    caplog.set_level(logging.DEBUG, logger="callmeter.integrations.livekit")
    with caplog.at_level(logging.DEBUG, logger="callmeter.integrations.livekit"):
        for event, payload in [
            ("metrics_collected", None),
            ("metrics_collected", object()),
            ("metrics_collected", Hostile()),
            ("metrics_collected", SimpleNamespace(metrics=SimpleNamespace(type="new_metrics"))),
            ("metrics_collected", SimpleNamespace(metrics=bad_llm)),
            ("metrics_collected", SimpleNamespace(metrics=nan_tts)),
            ("metrics_collected", SimpleNamespace(metrics=negative)),
            ("metrics_collected", SimpleNamespace(metrics=wrong_tokens)),
            ("tool_execution_updated", None),
            ("tool_execution_updated", Hostile()),
            ("tool_execution_updated", SimpleNamespace(update=None, created_at=time.time())),
            ("tool_execution_updated", SimpleNamespace(update=object(), created_at="soon")),
            ("function_tools_executed", SimpleNamespace(function_calls=[None, 3])),
            ("function_tools_executed", Hostile()),
            ("conversation_item_added", Hostile()),
            ("conversation_item_added", SimpleNamespace(item=None)),
        ]:
            lk.emit(event, payload)  # never raises
    assert events == []
    assert "skipped" in caplog.text
    # still measuring afterwards
    lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=llm_metrics()))
    assert len(events) == 1 and handle.attached


async def test_convert_metrics_raises_on_malformed_input():
    bad = lkm.LLMMetrics.model_construct(**{**llm_metrics().__dict__, "ttft": None})
    with pytest.raises(ValueError):
        convert_metrics(bad)
    assert convert_metrics(object()) is None


async def test_a_raising_callmeter_handler_does_not_escape(lk_pair):
    lk, handle, events = lk_pair

    @handle.session.on("metrics_collected")
    def boom(ev):
        raise TypeError("handler bug")

    lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=llm_metrics()))
    assert len(events) == 1


async def test_one_tool_metric_per_call_never_twice(lk_pair):
    lk, _, events = lk_pair
    t0 = time.time()
    lk.emit("tool_execution_updated", started("c1", at=t0))
    lk.emit("tool_execution_updated", started("c1", at=t0 + 0.05))  # repeated start
    lk.emit("tool_execution_updated", ended("c1", at=t0 + 0.25))
    lk.emit("tool_execution_updated", ended("c1", at=t0 + 0.5))  # duplicate end
    lk.emit("function_tools_executed", executed("c1"))  # covered already
    # c2 ends with an error; c3 only reaches function_tools_executed (fallback)
    lk.emit("tool_execution_updated", started("c2", "search", at=t0))
    lk.emit("tool_execution_updated", ended("c2", "error", at=t0 + 0.1))
    lk.emit("tool_execution_updated", started("c3", "book", at=t0))
    ev = executed("c2", "c3", name="book")
    ev.created_at = t0 + 0.4
    lk.emit("function_tools_executed", ev)
    lk.emit("function_tools_executed", ev)  # repeated batch
    lk.emit("tool_execution_updated", ended("c3", at=t0 + 0.9))  # late end: already counted
    lk.emit("tool_execution_updated", ended("c4", "cancelled", at=t0 + 0.3))  # start unseen

    tools = {m.call_id: m for m in events if isinstance(m, metrics.ToolMetrics)}
    assert len([m for m in events if isinstance(m, metrics.ToolMetrics)]) == 3
    assert tools["c1"].duration == pytest.approx(0.25) and tools["c1"].success
    assert tools["c1"].tool_name == "lookup"
    assert tools["c2"].tool_name == "search" and tools["c2"].error == "error"
    assert not tools["c2"].success and tools["c2"].duration == pytest.approx(0.1)
    assert tools["c3"].tool_name == "book" and tools["c3"].duration == pytest.approx(0.4)
    # c4 (started before attach) is named by function_tools_executed, timed by its end
    lk.emit("function_tools_executed", executed("c4", name="transfer"))
    c4 = [m for m in events if isinstance(m, metrics.ToolMetrics) and m.call_id == "c4"]
    assert len(c4) == 1 and c4[0].tool_name == "transfer" and c4[0].timestamp == t0 + 0.3


async def test_voice_turn_from_the_reports(lk_pair):
    lk, _, events = lk_pair
    stopped = time.time() - 2.0
    lk.emit(
        "metrics_collected",
        lke.MetricsCollectedEvent(
            metrics=lkm.EOUMetrics(
                timestamp=stopped + 0.6,
                end_of_utterance_delay=0.5,
                transcription_delay=0.3,
                on_user_turn_completed_delay=0.1,
                speech_id="speech_v",
            )
        ),
    )
    user = llm.ChatMessage(
        role="user",
        content=["hi"],
        metrics={"stopped_speaking_at": stopped, "end_of_turn_delay": 0.5},
    )
    lk.emit("conversation_item_added", lke.ConversationItemAddedEvent(item=user))
    lk.emit(
        "metrics_collected",
        lke.MetricsCollectedEvent(
            metrics=llm_metrics(timestamp=stopped + 1.2, duration=0.5, speech_id="speech_v")
        ),
    )
    assistant = llm.ChatMessage(
        role="assistant",
        content=["hello"],
        metrics={
            "started_speaking_at": stopped + 1.3,
            "stopped_speaking_at": stopped + 1.9,
            "e2e_latency": 1.3,
            "llm_node_ttft": 0.2,
        },
    )
    lk.emit("conversation_item_added", lke.ConversationItemAddedEvent(item=assistant))
    (turn,) = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert turn.speech_id == "speech_v" and turn.e2e_latency == pytest.approx(1.3)
    assert turn.started_at == pytest.approx(stopped)
    b = turn.breakdown
    assert b.end_of_utterance + b.transcription == pytest.approx(0.5, abs=1e-5)
    assert b.user_turn_completed == pytest.approx(0.1, abs=1e-5)
    assert b.llm_ttft == pytest.approx(0.2, abs=1e-5)


async def test_nothing_after_detach_and_close_ends_the_session(lk_pair):
    lk, handle, events = lk_pair
    lk.emit("tool_execution_updated", started("c1"))
    lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=llm_metrics()))
    lk.emit("close", SimpleNamespace())  # a close event of an unknown shape still closes
    assert handle.session.closed and not handle.attached
    n = len(events)
    lk.emit("metrics_collected", lke.MetricsCollectedEvent(metrics=llm_metrics()))
    lk.emit("tool_execution_updated", ended("c1"))
    handle._on_metrics_collected(lke.MetricsCollectedEvent(metrics=llm_metrics()))  # in-flight
    assert len(events) == n
    # the open turn of speech_a ended (interrupted) before the session closed
    (turn,) = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert turn.interrupted and turn.llm_requests == 1


def test_import_without_the_extra_says_how_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "callmeter.integrations.livekit")
    monkeypatch.setitem(sys.modules, "livekit.agents", None)
    with pytest.raises(ImportError, match=r"pip install 'callmeter\[livekit\]'"):
        importlib.import_module("callmeter.integrations.livekit")


def test_attach_rejects_a_non_session():
    with pytest.raises(ValueError):
        attach(object(), session="not a session")  # type: ignore[arg-type]


def test_example_runs_offline():
    import subprocess
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "livekit_agent.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Total duration including tool calls" in done.stdout
    assert "closed: True" in done.stdout and "(1 call)" in done.stdout
