"""callmeter.integrations.pipecat against a real Pipecat pipeline: Pipeline + PipelineWorker
+ WorkerRunner with metrics enabled, processors reporting through Pipecat's own metrics
helpers, a 250 ms function call and two user/bot turns."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    EndFrame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
    TextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    ProcessingMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from callmeter import AgentSession, metrics
from callmeter.integrations.pipecat import CallmeterObserver

LLM_TTFB = 0.10
LLM_TAIL = 0.05  # first token to the end of an inference
TOOL = 0.25
TTS_TTFB = 0.06
STT_SECONDS = 1.5
USAGE = [(120, 12), (150, 20), (180, 25)]  # (prompt, completion) per LLM inference
ANSWERS = ["It is sunny in Paris.", "You are welcome!"]
# when the scripted services really did what they scheduled (sleeps overshoot under load)
MARKS: defaultdict[str, list[float]] = defaultdict(list)
# what the user waits for in each turn: LLM steps, the tool, the TTS first byte
E2E = [
    LLM_TTFB + LLM_TAIL + TOOL + LLM_TTFB + LLM_TAIL + TTS_TTFB,
    LLM_TTFB + LLM_TAIL + TTS_TTFB,
]


@dataclass
class UserSaid(DataFrame):
    """The transcript of one user turn (starts the scripted bot's reply)."""

    turn: int = 0


class ScriptedSTT(FrameProcessor):
    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, UserSaid):
            MARKS["user"].append(time.time())
            await self.start_ttfb_metrics(start_time=time.time() - 0.2)
            await self.stop_ttfb_metrics()
            await self.start_stt_usage_metrics(STTUsage(audio_seconds=STT_SECONDS))
        await self.push_frame(frame, direction)


class ScriptedLLM(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="scripted-llm")
        self.step = 0

    def can_generate_metrics(self) -> bool:
        return True

    async def inference(self) -> None:
        prompt, completion = USAGE[self.step]
        self.step += 1
        MARKS["llm_start"].append(time.time())
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        await asyncio.sleep(LLM_TTFB)
        await self.stop_ttfb_metrics()
        MARKS["llm_first"].append(time.time())
        await asyncio.sleep(LLM_TAIL)
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cache_read_input_tokens=prompt // 2,  # OpenAI style: inside prompt_tokens
            )
        )
        await self.stop_processing_metrics()
        MARKS["llm_end"].append(time.time())
        await self.push_frame(LLMFullResponseEndFrame())

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if not isinstance(frame, UserSaid):
            await self.push_frame(frame, direction)
            return
        await self.inference()
        if frame.turn == 1:  # a tool call, then a second inference with its result
            call = {"function_name": "get_weather", "tool_call_id": "call_1", "arguments": {}}
            MARKS["tool_start"].append(time.time())
            await self.broadcast_frame(FunctionCallInProgressFrame, **call)
            await asyncio.sleep(TOOL)
            MARKS["tool_end"].append(time.time())
            await self.broadcast_frame(FunctionCallResultFrame, **call, result="sunny")
            await self.inference()
        await self.push_frame(TextFrame(ANSWERS[frame.turn - 1]))


class ScriptedTTS(FrameProcessor):
    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            await self.start_tts_usage_metrics(frame.text)
            MARKS["tts_start"].append(time.time())
            await self.start_ttfb_metrics()
            await asyncio.sleep(TTS_TTFB)
            await self.stop_ttfb_metrics()
            MARKS["bot"].append(time.time())
            await self.broadcast_frame(BotStartedSpeakingFrame)  # two siblings
            await asyncio.sleep(0.05)
            await self.broadcast_frame(BotStoppedSpeakingFrame)
            return
        await self.push_frame(frame, direction)


def record(session: AgentSession) -> list:
    events: list = []
    session.on("metrics_collected", lambda ev: events.append(ev.metrics))
    return events


async def run_two_turns(worker, runner) -> None:
    async def drive() -> None:
        for turn in (1, 2):
            await worker.queue_frames(
                [UserStartedSpeakingFrame(), UserStoppedSpeakingFrame(), UserSaid(turn=turn)]
            )
            while len(MARKS["bot"]) < turn:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.15)  # the bot finishes speaking
        await worker.queue_frame(EndFrame())

    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=20)


def worker_for(observer, worker_cls=PipelineWorker):
    return worker_cls(
        Pipeline([ScriptedSTT(), ScriptedLLM(), ScriptedTTS()]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        observers=[observer],
        idle_timeout_secs=None,
        enable_rtvi=False,
    )


async def test_pipeline_with_tool_call_and_two_turns():
    MARKS.clear()
    observer = CallmeterObserver()
    events = record(observer.session)
    worker = worker_for(observer)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await run_two_turns(worker, runner)

    session = observer.session
    assert session.closed
    llms = [m for m in events if isinstance(m, metrics.LLMMetrics)]
    tools = [m for m in events if isinstance(m, metrics.ToolMetrics)]
    tts = [m for m in events if isinstance(m, metrics.TTSMetrics)]
    stt = [m for m in events if isinstance(m, metrics.STTMetrics)]
    turns = [m for m in events if isinstance(m, metrics.TurnMetrics)]

    # one LLM request per inference, with its usage, TTFB and duration
    assert [(m.prompt_tokens, m.completion_tokens) for m in llms] == USAGE
    assert [m.prompt_cached_tokens for m in llms] == [p // 2 for p, _ in USAGE]
    for m, start, first, end in zip(
        llms, MARKS["llm_start"], MARKS["llm_first"], MARKS["llm_end"], strict=True
    ):
        assert m.label == "scripted-llm" and m.usage_reported
        assert m.ttft == pytest.approx(first - start, abs=0.04) and m.ttft >= LLM_TTFB - 0.005
        assert m.started_at == pytest.approx(start, abs=0.04)
        assert m.duration == pytest.approx(end - start, abs=0.06)
    (tool,) = tools
    assert tool.tool_name == "get_weather" and tool.call_id == "call_1" and tool.success
    (tool_start,), (tool_end,) = MARKS["tool_start"], MARKS["tool_end"]
    assert tool.duration == pytest.approx(tool_end - tool_start, abs=0.06)
    assert tool.duration >= TOOL - 0.005
    assert [m.characters_count for m in tts] == [len(a) for a in ANSWERS]
    for m, start, first in zip(tts, MARKS["tts_start"], MARKS["bot"], strict=True):
        assert m.ttfb == pytest.approx(first - start, abs=0.04) and m.ttfb >= TTS_TTFB - 0.005
    assert [m.audio_duration for m in stt] == [STT_SECONDS, STT_SECONDS]
    assert all(m.ttfb == pytest.approx(0.2, abs=0.05) for m in stt)

    u = session.usage
    assert u.llm_prompt_tokens == sum(p for p, _ in USAGE)
    assert u.llm_completion_tokens == sum(c for _, c in USAGE)
    assert u.tts_characters_count == sum(len(a) for a in ANSWERS)
    assert u.stt_audio_duration == pytest.approx(2 * STT_SECONDS)
    assert u.tool_calls == 1 and u.llm_requests == 3

    # the e2e latency the scripted services produced: what the test scheduled, plus the
    # sleeps' overshoot on a busy machine
    assert len(turns) == 2
    for turn, scheduled, user, bot in zip(turns, E2E, MARKS["user"], MARKS["bot"], strict=True):
        assert not turn.interrupted
        assert turn.e2e_latency == pytest.approx(bot - user, abs=0.08)
        assert turn.e2e_latency >= scheduled - 0.02
    first, second = turns
    assert first.llm_requests == 2 and first.tool_calls == 1 and not first.text_only
    assert first.breakdown.tool == pytest.approx(tool.duration, abs=0.01)
    assert first.breakdown.tts_ttfb == pytest.approx(tts[0].ttfb, abs=0.01)
    assert second.llm_requests == 1 and second.tool_calls == 0
    assert tool.speech_id == first.speech_id and llms[2].speech_id == second.speech_id


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_deprecated_pipeline_task_and_runner():
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineTask

    MARKS.clear()
    observer = CallmeterObserver()
    events = record(observer.session)
    task = worker_for(observer, PipelineTask)
    runner = PipelineRunner(handle_sigint=False)
    await task.queue_frames(
        [UserStartedSpeakingFrame(), UserStoppedSpeakingFrame(), UserSaid(turn=2)]
    )
    await task.queue_frame(EndFrame())
    await asyncio.wait_for(runner.run(task), timeout=20)
    assert observer.session.closed
    (turn,) = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert turn.e2e_latency == pytest.approx(MARKS["bot"][-1] - MARKS["user"][-1], abs=0.08)
    assert observer.session.usage.llm_requests == 1


# frames fed to the observer directly ---------------------------------------------------


class Source(FrameProcessor):
    """A processor that is not set up (no clock): timestamps map from the first frame."""


def pushed(frame, source=None, ns: int | None = None) -> FramePushed:
    source = source or SOURCE
    return FramePushed(
        source=source,
        destination=source,
        frame=frame,
        direction=FrameDirection.DOWNSTREAM,
        timestamp=time.monotonic_ns() if ns is None else ns,
    )


SOURCE = Source(name="svc")


@pytest.fixture
def obs():
    observer = CallmeterObserver(AgentSession(agent_name="pipecat-test"))
    return observer, record(observer.session)


async def feed(observer, *frames):
    for f in frames:
        await observer.on_push_frame(f if isinstance(f, FramePushed) else pushed(f))


async def test_each_frame_counts_once(obs):
    observer, events = obs
    start = LLMFullResponseStartFrame()
    usage = MetricsFrame(
        data=[
            LLMUsageMetricsData(
                processor="svc",
                model="m",
                value=LLMTokenUsage(prompt_tokens=10, completion_tokens=2, total_tokens=12),
            )
        ]
    )
    end = LLMFullResponseEndFrame()
    # every hop reports the frame again; the observer counts the first
    await feed(observer, start, start, usage, usage, usage, end, end)
    call = {"function_name": "f", "tool_call_id": "t1", "arguments": {}}
    in_progress = FunctionCallInProgressFrame(**call)
    down, up = FunctionCallResultFrame(**call, result=1), FunctionCallResultFrame(**call, result=1)
    down.broadcast_sibling_id, up.broadcast_sibling_id = up.id, down.id
    again = FunctionCallResultFrame(**call, result=1)  # a late duplicate for the same call
    await feed(observer, in_progress, in_progress, down, up, again)
    (llm,) = [m for m in events if isinstance(m, metrics.LLMMetrics)]
    assert (llm.prompt_tokens, llm.completion_tokens, llm.metadata.model_name) == (10, 2, "m")
    assert len([m for m in events if isinstance(m, metrics.ToolMetrics)]) == 1


async def test_usage_normalisation_and_errors(obs):
    observer, events = obs
    anthropic = LLMTokenUsage(
        prompt_tokens=20,  # net of the cache
        completion_tokens=5,
        total_tokens=20 + 5 + 300 + 40,
        cache_read_input_tokens=300,
        cache_creation_input_tokens=40,
    )
    openai = LLMTokenUsage(
        prompt_tokens=340, completion_tokens=5, total_tokens=345, cache_read_input_tokens=300
    )
    for value in (anthropic, openai):
        await feed(
            observer,
            MetricsFrame(data=[LLMUsageMetricsData(processor="llm", value=value)]),
        )
    a, o = [m for m in events if isinstance(m, metrics.LLMMetrics)]
    assert (a.prompt_tokens, a.prompt_cached_tokens, a.cache_creation_tokens) == (360, 300, 40)
    assert (o.prompt_tokens, o.prompt_cached_tokens) == (340, 300)
    # a tool whose handler raised, and a cancelled one
    for call_id, end in (("e1", "error"), ("c1", "cancel")):
        call = {"function_name": "f", "tool_call_id": call_id}
        await feed(observer, FunctionCallInProgressFrame(**call, arguments={}))
        if end == "error":
            frame = FunctionCallResultFrame(**call, arguments={}, result=None, error="Boom: bad")
        else:
            frame = FunctionCallCancelFrame(**call)
        await feed(observer, frame)
    tools = {m.call_id: m for m in events if isinstance(m, metrics.ToolMetrics)}
    assert tools["e1"].error == "Boom: bad" and not tools["e1"].success
    assert tools["c1"].error == "cancelled" and not tools["c1"].success


async def test_initial_zero_metrics_and_unknown_kinds(obs):
    observer, events = obs
    zero = MetricsFrame(
        data=[
            TTFBMetricsData(processor="svc", value=0.0),
            ProcessingMetricsData(processor="svc", value=0.0),
        ]
    )
    await feed(observer, zero)
    # TTFB of a service whose kind is not known yet waits for its usage report
    await feed(observer, MetricsFrame(data=[TTFBMetricsData(processor="voice", value=0.3)]))
    assert events == []
    await feed(observer, MetricsFrame(data=[TTSUsageMetricsData(processor="voice", value=11)]))
    observer.close()
    (tts,) = [m for m in events if isinstance(m, metrics.TTSMetrics)]
    assert tts.ttfb == pytest.approx(0.3) and tts.characters_count == 11
    assert observer.session.usage.tts_characters_count == 11
    assert observer.session.closed


async def test_service_class_gives_the_kind_and_provider(obs):
    from pipecat.services.openai.tts import OpenAITTSService

    observer, events = obs
    tts = OpenAITTSService(api_key="sim")
    # a TTFB without usage: only the service's class tells that it is a TTS request
    ttfb = MetricsFrame(data=[TTFBMetricsData(processor=tts.name, model="tts-1", value=0.25)])
    await feed(observer, pushed(ttfb, source=tts))
    observer.close()
    (m,) = events
    assert isinstance(m, metrics.TTSMetrics) and m.ttfb == 0.25 and m.label == tts.name
    assert m.metadata == metrics.Metadata(model_name="tts-1", model_provider="openai")


async def test_malformed_and_unknown_frames_are_skipped(obs, caplog):
    observer, events = obs

    class Hostile:
        @property
        def frame(self):
            raise TypeError("boom")

    bad_usage = LLMUsageMetricsData.model_construct(
        processor="llm",
        value=LLMTokenUsage.model_construct(prompt_tokens=None, completion_tokens=-1),
    )
    nan_ttfb = TTFBMetricsData.model_construct(processor="svc", value=float("nan"))
    no_name = STTUsageMetricsData.model_construct(processor=None, value=STTUsage(audio_seconds=1))
    bad_stt = STTUsageMetricsData.model_construct(
        processor="stt", value=STTUsage.model_construct(audio_seconds="1")
    )
    broken_call = FunctionCallInProgressFrame(function_name=None, tool_call_id=None, arguments={})
    with caplog.at_level(logging.DEBUG, logger="callmeter.integrations.pipecat"):
        await feed(
            observer,
            Hostile(),
            SimpleNamespace(frame=None, timestamp=None, source=None),
            SimpleNamespace(frame=MetricsFrame(data=None), timestamp="x", source=None),
            pushed(MetricsFrame(data=[object(), None, bad_usage, nan_ttfb, no_name, bad_stt])),
            pushed(SimpleNamespace(id=1, broadcast_sibling_id=None)),
            pushed(LLMFullResponseStartFrame(), source=SimpleNamespace(name=None)),
            pushed(broken_call),
            pushed(
                FunctionCallResultFrame(function_name="x", tool_call_id=7, arguments={}, result=1)
            ),
            pushed(TextFrame("unknown to the observer")),
        )
    assert events == []
    assert "skipped" in caplog.text
    # still measuring afterwards
    await feed(
        observer,
        MetricsFrame(data=[STTUsageMetricsData(processor="stt", value=STTUsage(audio_seconds=2))]),
    )
    assert [m.audio_duration for m in events] == [2.0]


async def test_a_raising_session_handler_does_not_stop_the_observer(obs):
    observer, events = obs

    @observer.session.on("metrics_collected")
    def boom(ev):
        raise TypeError("handler bug")

    for seconds in (1, 2):
        usage = STTUsageMetricsData(processor="stt", value=STTUsage(audio_seconds=seconds))
        await feed(observer, MetricsFrame(data=[usage]))
    assert [m.audio_duration for m in events] == [1.0, 2.0]


async def test_frames_after_close_are_ignored(obs):
    observer, events = obs
    await feed(observer, UserStoppedSpeakingFrame())
    await observer.cleanup()
    assert observer.session.closed
    (turn,) = events
    assert turn.interrupted and turn.e2e_latency == -1  # the bot never spoke
    await feed(
        observer,
        MetricsFrame(data=[STTUsageMetricsData(processor="s", value=STTUsage(audio_seconds=1))]),
    )
    assert len(events) == 1


async def test_timestamps_map_to_wall_time_once(obs):
    observer, events = obs
    base = 5_000_000_000  # pipeline clock: 5 s after the pipeline started
    before = time.time()
    await feed(observer, pushed(UserStoppedSpeakingFrame(), ns=base))
    await feed(observer, pushed(BotStartedSpeakingFrame(), ns=base + 700_000_000))
    await feed(observer, pushed(UserStartedSpeakingFrame(), ns=base + 900_000_000))
    (turn,) = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert turn.e2e_latency == pytest.approx(0.7, abs=1e-6)
    assert turn.started_at == pytest.approx(before, abs=1.0)


@pytest.mark.parametrize("absurd", [2**62, 1])
async def test_an_absurd_timestamp_never_gives_an_absurd_duration(obs, absurd):
    observer, events = obs
    base = 5_000_000_000
    await feed(observer, pushed(UserStoppedSpeakingFrame(), ns=base))
    await feed(observer, pushed(BotStartedSpeakingFrame(), ns=absurd))
    await feed(observer, pushed(UserStartedSpeakingFrame(), ns=base + 900_000_000))
    (turn,) = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert 0 <= turn.e2e_latency < 5
    assert abs(turn.started_at - time.time()) < 60


async def test_barge_in_marks_the_turn_interrupted(obs):
    observer, events = obs
    await feed(observer, UserStoppedSpeakingFrame(), BotStartedSpeakingFrame())
    await feed(observer, UserStartedSpeakingFrame())  # while the bot speaks
    await feed(observer, UserStoppedSpeakingFrame(), BotStartedSpeakingFrame())
    await feed(observer, BotStoppedSpeakingFrame(), UserStartedSpeakingFrame())
    first, second = [m for m in events if isinstance(m, metrics.TurnMetrics)]
    assert first.interrupted and first.e2e_latency >= 0
    assert not second.interrupted


def test_import_without_the_extra_says_how_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "callmeter.integrations.pipecat")
    monkeypatch.setitem(sys.modules, "pipecat.frames", None)
    with pytest.raises(ImportError, match=r"pip install 'callmeter\[pipecat\]'"):
        importlib.import_module("callmeter.integrations.pipecat")


def test_observer_rejects_a_non_session():
    with pytest.raises(ValueError):
        CallmeterObserver(session="not a session")  # type: ignore[arg-type]


def test_example_runs_offline():
    import subprocess
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "pipecat_pipeline.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Total duration including tool calls" in done.stdout
    assert "closed: True" in done.stdout and "(1 call)" in done.stdout
