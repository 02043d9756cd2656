"""AgentSession: events, handlers, lifecycle and measurement helpers."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time

import pytest

from callmeter import (
    AgentSession,
    CloseEvent,
    InvalidArgumentError,
    MetricsCollectedEvent,
    SessionStartedEvent,
    current_session,
    metrics,
)


def collect(session: AgentSession) -> list:
    """Request metrics the session emits (turn summaries left out)."""
    seen: list = []

    @session.on("metrics_collected")
    def _on(ev):
        if not isinstance(ev.metrics, metrics.TurnMetrics):
            seen.append(ev.metrics)

    return seen


def test_session_id_generated_and_labels_carried():
    a, b = AgentSession(), AgentSession()
    assert a.session_id != b.session_id and a.session_id.startswith("call_")
    s = AgentSession(session_id="c1", agent_name="support", labels={"env": "test"})
    events: list = []
    s.on("session_started", events.append)
    s.on("metrics_collected", events.append)
    s.on("close", events.append)
    with s, s.tool_call("t"):
        pass
    assert [type(e) for e in events] == [SessionStartedEvent, MetricsCollectedEvent, CloseEvent]
    for e in events:
        assert (e.session_id, e.agent_name, e.labels) == ("c1", "support", {"env": "test"})
    assert events[1].created_at >= events[0].created_at
    assert events[2].duration == s.duration > 0


def test_bad_constructor_arguments():
    with pytest.raises(InvalidArgumentError, match="labels"):
        AgentSession(labels={"a": 1})
    with pytest.raises(InvalidArgumentError, match="session_id"):
        AgentSession(session_id=42)
    with pytest.raises(InvalidArgumentError, match="tool name"):
        AgentSession().tool_call("")
    with pytest.raises(InvalidArgumentError, match="callable"):
        AgentSession().on("metrics_collected", 3)


def test_on_once_off_and_decorator_forms():
    s = AgentSession()
    calls: list = []

    @s.on("x")
    def deco(v):
        calls.append(("deco", v))

    def plain(v):
        calls.append(("plain", v))

    s.on("x", plain)
    s.once("x", lambda v: calls.append(("once", v)))
    s.emit("x", 1)
    s.off("x", plain)
    s.emit("x", 2)
    assert calls == [("deco", 1), ("plain", 1), ("once", 1), ("deco", 2)]


def test_raising_handler_is_logged_and_others_still_run(caplog):
    s = AgentSession()
    got: list = []

    def bad(ev):
        raise RuntimeError("handler bug")

    s.on("metrics_collected", bad)
    s.on("metrics_collected", lambda ev: got.append(ev))
    with caplog.at_level(logging.ERROR, logger="callmeter.session"), s.tool_call("t"):
        pass  # exiting emits; must not raise into this block
    assert len(got) == 1
    assert "handler bug" in caplog.text and "Traceback" in caplog.text
    assert s.usage.tool_calls == 1


async def test_async_handlers_scheduled_not_awaited_inline(caplog):
    s = AgentSession()
    order: list = []
    release = asyncio.Event()

    async def slow(ev):
        order.append("slow-start")
        await release.wait()
        order.append("slow-end")

    async def broken(ev):
        raise ValueError("async handler bug")

    s.on("metrics_collected", slow)
    s.on("metrics_collected", broken)
    s.on("metrics_collected", lambda ev: order.append("sync"))
    async with s:
        async with s.tool_call("t"):
            pass
        order.append("after-emit")  # the emitter did not wait for `slow`
        await asyncio.sleep(0)
        assert order == ["sync", "after-emit", "slow-start"]
        release.set()
    assert order[-1] == "slow-end"  # aclose drained the scheduled handlers
    assert "async handler bug" in caplog.text


def test_async_handler_without_loop_is_skipped_with_warning(caplog):
    s = AgentSession()

    async def h(ev):
        raise AssertionError("must not run")

    s.on("metrics_collected", h)
    with caplog.at_level(logging.WARNING), s.tool_call("t"):
        pass
    assert "no event loop" in caplog.text
    assert s.dropped_events == 1 and s.dropped == 1


def test_llm_generation_measures_ttft_duration_and_speed():
    s = AgentSession()
    seen = collect(s)
    with s.llm_generation(model="m", provider="p", label="l") as gen:
        gen.request_id = "req-9"
        time.sleep(0.05)
        gen.first_token()
        time.sleep(0.05)
        gen.first_token()  # ignored
        gen.set_usage(prompt_tokens=7, completion_tokens=10, prompt_cached_tokens=3)
    (m,) = seen
    assert isinstance(m, metrics.LLMMetrics)
    assert m.ttft == pytest.approx(0.05, abs=0.02)
    assert m.duration == pytest.approx(0.10, abs=0.03)
    assert m.duration > m.ttft
    gen_time = m.duration - m.ttft
    assert m.tokens_per_second == pytest.approx(10 / gen_time, rel=0.05)
    assert m.tokens_per_second_overall == pytest.approx(10 / m.duration)
    assert (m.prompt_tokens, m.completion_tokens, m.prompt_cached_tokens) == (7, 10, 3)
    assert m.total_tokens == 17 and m.usage_reported and not m.cancelled
    assert m.request_id == "req-9" and m.label == "l"
    assert m.metadata == metrics.Metadata(model_name="m", model_provider="p")
    assert m.started_at <= m.timestamp
    assert m.timestamp - m.started_at == pytest.approx(m.duration, abs=0.01)


def test_llm_without_usage_says_unreported():
    s = AgentSession()
    seen = collect(s)
    with s.llm_generation(model="m"):
        pass
    assert seen[0].usage_reported is False and seen[0].ttft == -1.0
    assert s.usage.llm_usage_unreported == 1


def test_llm_exception_marks_failed_and_reraises():
    s = AgentSession()
    seen = collect(s)
    with pytest.raises(TimeoutError), s.llm_generation(model="m"):
        raise TimeoutError
    assert seen[0].cancelled is False and seen[0].error == "TimeoutError"


async def test_llm_cancellation_recorded_and_reraised():
    s = AgentSession()
    seen = collect(s)
    started = asyncio.Event()

    async def generate():
        async with s.llm_generation(model="m") as gen:
            gen.first_token()
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(generate())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (m,) = seen
    assert m.cancelled is True and m.error is None and m.ttft >= 0


def test_tool_call_exception_recorded_and_propagates_unchanged():
    s = AgentSession()
    seen = collect(s)
    err = KeyError("city")
    with pytest.raises(KeyError) as info, s.tool_call("lookup", call_id="c9"):
        raise err
    assert info.value is err
    (m,) = seen
    assert (m.tool_name, m.call_id, m.success, m.error) == ("lookup", "c9", False, "KeyError")
    summary = s.usage
    assert summary.tool_errors == 1 and summary.by_tool["lookup"].errors == 1


def test_tool_decorator_sync_keeps_signature_and_docstring():
    s = AgentSession()
    seen = collect(s)

    @s.tool
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    sig = inspect.signature(add)
    assert list(sig.parameters) == ["a", "b"] and sig.parameters["b"].default == 2
    assert sig.return_annotation == "int"  # postponed annotations are kept as written
    assert seen[0].tool_name == "add" and seen[0].success


async def test_tool_decorator_async_and_named_and_failing():
    s = AgentSession()
    seen = collect(s)

    @s.tool(name="weather")
    async def get_weather(city: str) -> str:
        """Weather for a city."""
        await asyncio.sleep(0.02)
        if city == "Atlantis":
            raise LookupError(city)
        return "sunny"

    assert inspect.iscoroutinefunction(get_weather)
    assert await get_weather("Paris") == "sunny"
    with pytest.raises(LookupError):
        await get_weather("Atlantis")
    assert [(m.tool_name, m.success, m.error) for m in seen] == [
        ("weather", True, None),
        ("weather", False, "LookupError"),
    ]
    assert seen[0].duration >= 0.02


async def test_speech_id_reaches_metrics_in_child_tasks():
    s = AgentSession()
    seen = collect(s)

    @s.tool
    async def work() -> None:
        await asyncio.sleep(0.001)

    async with s:
        async with s.turn() as turn:
            await asyncio.gather(work(), asyncio.create_task(work()))

            async def nested():
                async with s.llm_generation(model="m"):
                    pass

            await asyncio.create_task(nested())
        with s.tool_call("outside"):
            pass
    assert [m.speech_id for m in seen] == [turn.speech_id] * 3 + [None]
    assert turn.speech_id.startswith("speech_")


async def test_concurrent_turns_keep_their_own_speech_ids():
    s = AgentSession()
    seen = collect(s)

    async def one(sid: str):
        async with s.turn(speech_id=sid):
            await asyncio.sleep(0.01)
            with s.tool_call(sid):
                await asyncio.sleep(0.01)

    await asyncio.gather(one("a"), one("b"), one("c"))
    assert sorted((m.tool_name, m.speech_id) for m in seen) == [("a", "a"), ("b", "b"), ("c", "c")]


async def test_current_session_follows_context():
    async def body():
        s = AgentSession()
        assert current_session() is None
        async with s:
            assert current_session() is s
            assert await asyncio.create_task(asyncio.sleep(0, current_session())) is s
        assert current_session() is None

    # a fresh context: a session another test started and never closed is not current here
    await asyncio.create_task(body(), context=contextvars.Context())


def test_stt_and_tts_timers():
    s = AgentSession()
    seen = collect(s)
    with s.turn():
        with s.stt_request(model="nova-3", provider="deepgram", streamed=True) as stt:
            time.sleep(0.02)
            stt.first_byte()
            stt.set_usage(audio_duration=3.5)
        with s.tts_request(model="sonic", provider="cartesia") as tts:
            time.sleep(0.03)
            tts.first_byte()
            tts.set_usage(characters_count=42, audio_duration=2.25)
    stt_m, tts_m = seen
    assert isinstance(stt_m, metrics.STTMetrics) and isinstance(tts_m, metrics.TTSMetrics)
    assert stt_m.ttfb == pytest.approx(0.02, abs=0.015) and stt_m.audio_duration == 3.5
    assert tts_m.ttfb == pytest.approx(0.03, abs=0.015)
    assert (tts_m.characters_count, tts_m.audio_duration) == (42, 2.25)
    assert stt_m.speech_id == tts_m.speech_id is not None
    u = s.usage
    assert u.stt_audio_duration == 3.5 and u.tts_characters_count == 42
    assert u.tts_audio_duration == 2.25
    assert u.by_model["deepgram/nova-3"].audio_duration == 3.5
    assert u.by_model["cartesia/sonic"].characters_count == 42


def test_session_lifecycle_start_close_idempotent_and_duration():
    s = AgentSession()
    assert s.duration == 0.0 and not s.started
    closes: list = []
    s.on("close", closes.append)
    s.start()
    time.sleep(0.02)
    s.close()
    s.close()
    assert len(closes) == 1 and s.closed
    assert s.duration == closes[0].duration >= 0.02


def test_with_block_exception_closes_with_error_and_propagates():
    s = AgentSession()
    closes: list = []
    s.on("close", closes.append)
    with pytest.raises(ZeroDivisionError), s:
        1 / 0  # noqa: B018
    assert closes[0].error == "ZeroDivisionError"


# the three outcomes, from every timer ------------------------------------------------------

TIMERS = {
    "llm": lambda s: s.llm_generation(model="m"),
    "tool": lambda s: s.tool_call("t"),
    "stt": lambda s: s.stt_request(model="m"),
    "tts": lambda s: s.tts_request(model="m"),
}


def _outcome(m) -> tuple[bool, str | None]:
    if isinstance(m, metrics.ToolMetrics):
        assert m.success is (not m.cancelled and m.error is None)
    return m.cancelled, m.error


@pytest.mark.parametrize("kind", TIMERS)
def test_timer_outcomes_completed_failed_and_reported(kind):
    s = AgentSession()
    seen = collect(s)
    with TIMERS[kind](s):
        pass
    with pytest.raises(ValueError), TIMERS[kind](s):
        raise ValueError("boom")
    with TIMERS[kind](s) as t:
        t.error = "RateLimitError: 429"  # a failure the block handled itself
    with TIMERS[kind](s) as t:
        t.cancelled = True  # e.g. a stream abandoned before its end
    assert [_outcome(m) for m in seen] == [
        (False, None),
        (False, "ValueError"),
        (False, "RateLimitError: 429"),
        (True, None),
    ]


@pytest.mark.parametrize("kind", TIMERS)
@pytest.mark.parametrize("exc", [KeyboardInterrupt, GeneratorExit, asyncio.CancelledError])
def test_timer_cancelled_by_the_caller(kind, exc):
    s = AgentSession()
    seen = collect(s)
    with pytest.raises(exc), TIMERS[kind](s):
        raise exc
    assert [_outcome(m) for m in seen] == [(True, None)]
    if kind == "tool":
        assert s.usage.tool_errors == 0 and s.usage.tool_calls == 1


@pytest.mark.parametrize("kind", TIMERS)
async def test_timer_cancelled_task_is_cancelled_not_failed(kind):
    s = AgentSession()
    seen = collect(s)
    started = asyncio.Event()

    async def work():
        async with TIMERS[kind](s):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [_outcome(m) for m in seen] == [(True, None)]


def test_cancelled_tool_is_not_an_error_in_the_summary():
    s = AgentSession()
    with pytest.raises(asyncio.CancelledError), s.tool_call("t"):
        raise asyncio.CancelledError
    with pytest.raises(RuntimeError), s.tool_call("t"):
        raise RuntimeError
    u = s.usage
    assert (u.tool_calls, u.tool_errors, u.by_tool["t"].errors) == (2, 1, 1)


# handlers never replace the agent's exception ----------------------------------------------


def test_sync_handler_raising_cancelled_error_does_not_replace_the_agents_exception(caplog):
    s = AgentSession()
    got: list = []

    def cancels(ev):
        raise asyncio.CancelledError

    s.on("metrics_collected", cancels)
    s.on("metrics_collected", got.append)
    with pytest.raises(ZeroDivisionError), s.tool_call("t"):
        1 / 0  # noqa: B018
    with s.tool_call("t"):  # and nothing raises when the block itself succeeds
        pass
    assert len(got) == 2  # the other handler still ran
    assert "CancelledError" in caplog.text


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_from_a_handler_propagate(exc):
    s = AgentSession()

    def stop(ev):
        raise exc

    s.on("metrics_collected", stop)
    with pytest.raises(exc), s.tool_call("t"):
        pass


async def test_async_handler_that_never_finishes_does_not_hang_exit(caplog):
    s = AgentSession(drain_timeout=0.2)
    fast: list = []

    async def hangs(ev):
        await asyncio.Event().wait()

    async def quick(ev):
        await asyncio.sleep(0.01)
        fast.append(ev)

    s.on("metrics_collected", hangs)
    s.on("metrics_collected", quick)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        async with s, s.tool_call("t"):
            pass
    assert time.perf_counter() - start < 2.0
    assert len(fast) == 1  # the drain waited for the handler that does finish
    assert "stopped waiting for 1 async handler" in caplog.text
    assert s.dropped_events == 1


def test_drain_timeout_must_be_a_finite_non_negative_number():
    for bad in (-1, float("nan"), float("inf"), "5", True):
        with pytest.raises(InvalidArgumentError, match="drain_timeout"):
            AgentSession(drain_timeout=bad)
    assert AgentSession().drain_timeout == 5.0


# start() makes the session current ---------------------------------------------------------


def test_start_makes_the_session_current_and_close_restores():
    contextvars.Context().run(_start_makes_current)


def _start_makes_current():
    outer = AgentSession()
    s = AgentSession()
    assert current_session() is None
    s.start()
    assert current_session() is s
    s.close()
    assert current_session() is None
    with outer:
        s2 = AgentSession()
        s2.start()
        assert current_session() is s2
        s2.close()
        assert current_session() is outer
    assert current_session() is None
    # closed out of order: the earlier session is not made current again once closed
    a, b = AgentSession(), AgentSession()
    a.start()
    b.start()
    a.close()
    assert current_session() is b
    b.close()
    assert current_session() is None


def test_started_session_is_found_by_timers_of_an_instrumented_client():
    contextvars.Context().run(_started_session_is_found)


def _started_session_is_found():
    # What instrument(client) does without a session: it looks up current_session().
    s = AgentSession()
    s.start()
    try:
        found = current_session()
        assert found is s
        with found.llm_generation(model="m"):
            pass
        assert s.usage.llm_requests == 1
    finally:
        s.close()
    assert current_session() is None
