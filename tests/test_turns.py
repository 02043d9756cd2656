"""Turn latency breakdown on synthetic timelines whose answers are known by construction."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from callmeter import AgentSession, metrics
from callmeter.metrics import (
    COMPONENTS,
    EOUMetrics,
    LLMMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnMetrics,
    build_turn_metrics,
    decode,
    encode,
)

T0 = 1_790_000_000.0


def eou(at, delay, transcription=0.0, callback=0.0, sid="s1"):
    return EOUMetrics(
        timestamp=T0 + at + delay,
        started_at=T0 + at,
        end_of_utterance_delay=delay,
        transcription_delay=transcription,
        on_user_turn_completed_delay=callback,
        speech_id=sid,
    )


def llm(at, ttft, duration, sid="s1", rid=""):
    return LLMMetrics(
        timestamp=T0 + at + duration,
        started_at=T0 + at,
        duration=duration,
        ttft=ttft,
        request_id=rid,
        speech_id=sid,
    )


def tool(at, duration, name="lookup", sid="s1"):
    return ToolMetrics(
        timestamp=T0 + at + duration,
        started_at=T0 + at,
        duration=duration,
        tool_name=name,
        speech_id=sid,
    )


def tts(at, ttfb, duration, sid="s1"):
    return TTSMetrics(
        timestamp=T0 + at + duration,
        started_at=T0 + at,
        duration=duration,
        ttfb=ttfb,
        speech_id=sid,
    )


def us(x: float) -> int:
    return round(x * 1_000_000)


def check_tiling(tm: TurnMetrics) -> None:
    """The segments tile [0, duration] and the components add up to it exactly (in us)."""
    segs = tm.breakdown.segments
    assert segs[0].start == 0.0
    assert segs[-1].end == tm.duration
    for a, b in itertools.pairwise(segs):
        assert a.end == b.start
        assert (a.component, a.step) != (b.component, b.step)  # adjacent pieces merged
    parts = tm.breakdown.components()
    assert list(parts) == list(COMPONENTS)
    assert sum(us(v) for v in parts.values()) == us(tm.duration)
    assert sum(parts.values()) == pytest.approx(tm.duration, abs=1e-9)


def seg_list(tm: TurnMetrics) -> list[tuple]:
    return [
        (s.component, round(s.start, 6), round(s.end, 6), s.step) for s in tm.breakdown.segments
    ]


def build(ms, **kw):
    kw.setdefault("turn_started_at", T0)
    kw.setdefault("ended_at", T0 + 60)
    return build_turn_metrics(ms, speech_id="s1", timestamp=T0 + 99, **kw)


def test_plain_voice_turn():
    # user stops at 0; transcript at 0.2; turn decided at 0.5; LLM 0.55 -> first token 0.8
    # -> done 1.3; TTS starts streaming at 0.85 and plays its first audio at 1.1
    tm = build([eou(0, 0.5, 0.2), llm(0.55, 0.25, 0.75), tts(0.85, 0.25, 0.9)])
    assert tm.started_at == T0
    assert tm.agent_started_at == pytest.approx(T0 + 1.1)
    assert tm.e2e_latency == tm.duration == pytest.approx(1.1)
    assert not tm.interrupted and not tm.text_only
    assert (tm.llm_requests, tm.tool_calls) == (1, 0)
    assert seg_list(tm) == [
        ("transcription", 0.0, 0.2, None),
        ("end_of_utterance", 0.2, 0.5, None),
        ("other", 0.5, 0.55, None),
        ("llm_ttft", 0.55, 0.8, 1),
        ("llm_remainder", 0.8, 0.85, 1),
        ("tts_ttfb", 0.85, 1.1, None),  # TTS TTFB wins over the LLM still streaming
    ]
    b = tm.breakdown
    assert (b.transcription, b.end_of_utterance, b.other) == pytest.approx((0.2, 0.3, 0.05))
    assert (b.llm_ttft, b.llm_remainder, b.tts_ttfb, b.tool) == pytest.approx((0.25, 0.05, 0.25, 0))
    assert [(s.step, s.ttft, s.ttft_wait, s.remainder_wait) for s in b.llm_steps] == [
        (1, 0.25, 0.25, 0.05)
    ]
    check_tiling(tm)


def test_tool_turn_includes_tool_time_and_sums_exactly():
    # LLM step 1 -> two parallel tools -> LLM step 2 -> TTS
    ms = [
        eou(0, 0.4, 0.15),
        llm(0.4, 0.3, 0.5, rid="r1"),  # 0.4 .. first 0.7 .. 0.9 (asks for two tools)
        tool(0.95, 0.6, "get_weather"),  # 0.95 .. 1.55
        tool(1.0, 0.35, "get_time"),  # 1.0 .. 1.35, in parallel
        llm(1.6, 0.2, 0.6, rid="r2"),  # 1.6 .. first 1.8 .. 2.2
        tts(1.85, 0.2, 1.5),  # first audio at 2.05
    ]
    tm = build(ms)
    assert tm.e2e_latency == pytest.approx(2.05)
    assert (tm.llm_requests, tm.tool_calls) == (2, 2)
    assert seg_list(tm) == [
        ("transcription", 0.0, 0.15, None),
        ("end_of_utterance", 0.15, 0.4, None),
        ("llm_ttft", 0.4, 0.7, 1),
        ("llm_remainder", 0.7, 0.9, 1),
        ("other", 0.9, 0.95, None),
        ("tool", 0.95, 1.55, None),  # union of the parallel tools: 0.6, not 0.95
        ("other", 1.55, 1.6, None),
        ("llm_ttft", 1.6, 1.8, 2),
        ("llm_remainder", 1.8, 1.85, 2),
        ("tts_ttfb", 1.85, 2.05, None),
    ]
    b = tm.breakdown
    assert b.tool == pytest.approx(0.6)
    assert b.llm_ttft == pytest.approx(0.5) and b.llm_remainder == pytest.approx(0.25)
    assert b.other == pytest.approx(0.1)
    assert [(s.step, s.request_id, s.ttft_wait, s.remainder_wait) for s in b.llm_steps] == [
        (1, "r1", pytest.approx(0.3), pytest.approx(0.2)),
        (2, "r2", pytest.approx(0.2), pytest.approx(0.05)),
    ]
    # the documented formula (EOU + TTFT + TTFB) misses more than half of the wait
    assert tm.e2e_latency / 2 > 0.4 + 0.3 + 0.2
    check_tiling(tm)


def test_turn_interrupted_before_the_agent_spoke():
    ms = [eou(0, 0.3), llm(0.3, -1.0, 0.4), tts(0.5, -1.0, 0.2)]  # cancelled before output
    tm = build(ms, ended_at=T0 + 0.75, interrupted=True)
    assert tm.interrupted and tm.agent_started_at is None
    assert tm.e2e_latency == -1.0
    assert tm.duration == pytest.approx(0.75)
    assert seg_list(tm) == [
        ("end_of_utterance", 0.0, 0.3, None),
        ("llm_ttft", 0.3, 0.5, 1),
        ("tts_ttfb", 0.5, 0.7, None),
        ("other", 0.7, 0.75, None),
    ]
    check_tiling(tm)


def test_text_only_turn_agent_starts_at_first_token():
    # text input arrives at 0 (no EOU); the answer's first token is the agent "speaking"
    tm = build([llm(0.05, 0.4, 1.0)], turn_started_at=T0)
    assert tm.text_only and not tm.interrupted
    assert tm.agent_started_at == pytest.approx(T0 + 0.45)
    assert tm.e2e_latency == pytest.approx(0.45)
    assert seg_list(tm) == [("other", 0.0, 0.05, None), ("llm_ttft", 0.05, 0.45, 1)]
    check_tiling(tm)


def test_text_only_tool_turn_starts_at_the_answering_step():
    ms = [llm(0.0, 0.2, 0.3), tool(0.3, 0.5), llm(0.8, 0.25, 0.5)]
    tm = build(ms, user_stopped_at=T0)
    assert tm.e2e_latency == pytest.approx(1.05)  # step 2's first token, not step 1's
    assert tm.breakdown.tool == pytest.approx(0.5)
    check_tiling(tm)


def test_explicit_marks_win_and_overlaps_follow_precedence():
    # marks given explicitly; the LLM starts while the EOU callback still runs, and a tool
    # starts while the LLM is still streaming
    ms = [eou(0, 0.3, 0.1, callback=0.1), llm(0.35, 0.2, 0.6), tool(0.7, 0.5)]
    tm = build(ms, user_stopped_at=T0 - 0.1, agent_started_at=T0 + 1.3)
    assert tm.started_at == T0 - 0.1 and tm.e2e_latency == pytest.approx(1.4)
    assert seg_list(tm) == [
        ("other", 0.0, 0.1, None),
        ("transcription", 0.1, 0.2, None),
        ("end_of_utterance", 0.2, 0.4, None),
        ("user_turn_completed", 0.4, 0.45, None),
        ("llm_ttft", 0.45, 0.65, 1),  # LLM TTFT outranks the callback
        ("llm_remainder", 0.65, 0.8, 1),
        ("tool", 0.8, 1.3, None),  # a tool outranks the LLM remainder
        ("other", 1.3, 1.4, None),
    ]
    check_tiling(tm)


def test_turn_metrics_round_trip_through_the_codec():
    tm = build([eou(0, 0.5, 0.2), llm(0.55, 0.25, 0.75), tts(0.85, 0.25, 0.9)])
    back = decode(encode(tm))
    assert back == tm and isinstance(back, TurnMetrics)
    assert metrics.decode_list(encode([tm, tm]))[1].breakdown.segments[0].component == (
        "transcription"
    )


def test_session_turn_picks_up_its_metrics_and_emits_turn_metrics():
    s = AgentSession(session_id="c1", agent_name="a")
    completed, collected = [], []
    s.on(
        "metrics_collected",
        lambda ev: (completed if isinstance(ev.metrics, TurnMetrics) else collected).append(ev),
    )
    with s, s.turn(speech_id="s1") as turn:
        turn.user_stopped_speaking(at=T0)
        for m in (eou(0, 0.5, 0.2), llm(0.55, 0.25, 0.75), tts(0.85, 0.25, 0.9)):
            s.emit_metrics(m)
        s.emit_metrics(llm(0.0, 0.01, 5.0, sid="other"))  # another turn's: ignored
        s.emit_metrics(metrics.VADMetrics(timestamp=T0))  # no speech_id: ignored
    assert len(completed) == 1
    ev = completed[0]
    assert (ev.session_id, ev.agent_name) == ("c1", "a")
    tm = ev.metrics
    assert tm is turn.metrics and tm.speech_id == "s1"
    expected = build([eou(0, 0.5, 0.2), llm(0.55, 0.25, 0.75), tts(0.85, 0.25, 0.9)])
    assert tm.breakdown == expected.breakdown and tm.e2e_latency == expected.e2e_latency
    assert len(collected) == 5  # the five requests, each once; the turn is its own event
    assert s.latency.turns == 1 and s.latency.e2e_latency.max == pytest.approx(1.1)
    assert not s._open_turns


def test_session_turn_measured_live_text_only():
    s = AgentSession()
    with s.turn() as turn, s.llm_generation(model="m") as gen:
        time.sleep(0.03)
        gen.first_token()
        time.sleep(0.01)
    tm = turn.metrics
    assert tm.text_only and tm.llm_requests == 1
    # agent started at the first token: e2e = the turn's lead-in + the TTFT
    assert tm.e2e_latency == pytest.approx(tm.breakdown.llm_ttft + tm.breakdown.other, abs=2e-6)
    assert tm.breakdown.llm_ttft == pytest.approx(0.03, abs=0.02)
    check_tiling(tm)


async def test_turn_left_by_cancellation_is_interrupted():
    s = AgentSession()
    turns: list = []
    s.on(
        "metrics_collected",
        lambda ev: turns.append(ev.metrics) if isinstance(ev.metrics, TurnMetrics) else None,
    )

    async def agent_reply():
        async with s.turn() as turn:
            turn.user_stopped_speaking()
            async with s.llm_generation(model="m"):
                await asyncio.sleep(10)

    task = asyncio.create_task(agent_reply())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (tm,) = turns
    assert tm.interrupted and tm.e2e_latency == -1.0 and tm.agent_started_at is None
    assert tm.breakdown.llm_ttft == pytest.approx(tm.duration, abs=0.01)
    check_tiling(tm)


def test_agent_started_speaking_mark_first_call_counts():
    s = AgentSession()
    with s.turn() as turn:
        turn.user_stopped_speaking(at=T0)
        turn.agent_started_speaking(at=T0 + 0.7)
        turn.agent_started_speaking(at=T0 + 5)
    assert turn.metrics.e2e_latency == pytest.approx(0.7)
    assert turn.metrics.breakdown.other == pytest.approx(0.7)


def test_failing_turn_arithmetic_never_reaches_the_agent(caplog):
    s = AgentSession()
    with s.turn() as turn:
        turn.user_stopped_speaking(at="not a time")  # type: ignore[arg-type]
    assert turn.metrics is None
    assert "building the metrics of turn" in caplog.text


def reference_components(ms, origin: float, end: float) -> dict[str, int]:
    """Brute force, per microsecond: the best-ranked interval covering each instant."""
    from callmeter.latency.turns import PRECEDENCE

    labelled = []
    for m in ms:
        s = us(m.started_at - origin)
        if isinstance(m, EOUMetrics):
            labelled += [
                ("end_of_utterance", s, s + us(m.end_of_utterance_delay)),
                ("transcription", s, s + us(m.transcription_delay)),
            ]
        elif isinstance(m, LLMMetrics):
            first = s + us(m.ttft)
            labelled += [("llm_ttft", s, first), ("llm_remainder", first, s + us(m.duration))]
        elif isinstance(m, ToolMetrics):
            labelled.append(("tool", s, s + us(m.duration)))
        elif isinstance(m, TTSMetrics):
            labelled.append(("tts_ttfb", s, s + us(m.ttfb)))
    out = dict.fromkeys(COMPONENTS, 0)
    for t in range(0, us(end - origin), 1000):  # one sample per millisecond
        covering = [c for c, s, e in labelled if s <= t < e]
        out[min(covering, key=PRECEDENCE.index) if covering else "other"] += 1000
    return out


def test_random_timelines_match_a_brute_force_reference():
    import random

    rng = random.Random(5)
    for _ in range(60):
        ms = [eou(0, rng.randint(1, 6) / 10, rng.randint(0, 3) / 10)]
        for _ in range(rng.randint(1, 4)):
            at, ttft = rng.randint(0, 30) / 10, rng.randint(1, 5) / 10
            ms.append(llm(at, ttft, ttft + rng.randint(0, 5) / 10))
        for _ in range(rng.randint(0, 3)):
            ms.append(tool(rng.randint(0, 30) / 10, rng.randint(1, 10) / 10))
        ms.append(tts(rng.randint(10, 35) / 10, rng.randint(1, 4) / 10, 1.0))
        tm = build(ms)
        check_tiling(tm)
        got = {k: us(v) for k, v in tm.breakdown.components().items()}
        assert got == reference_components(ms, T0, T0 + tm.duration)


def test_a_turn_with_thousands_of_metrics_is_still_exact():
    ms = [tool(i * 0.001, 0.0015, sid="s1") for i in range(5000)]
    tm = build([*ms, tts(5.0, 0.1, 1.0)])
    assert tm.tool_calls == 5000 and tm.e2e_latency == pytest.approx(5.1)
    # tools cover 0 .. 5.0005, but from 5.0 the TTS TTFB outranks them
    assert tm.breakdown.tool == pytest.approx(5.0) and tm.breakdown.tts_ttfb == pytest.approx(0.1)
    check_tiling(tm)
