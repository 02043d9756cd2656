"""The C recording path (SessionCore, CollectorCore, GenerationCore) against its
pure-Python reference (Recording, Collecting, PyLLMGeneration), in one process.

A pure-Python twin of AgentSession and UsageCollector is built from the same class bodies
without the C base, and both are driven through the same seeded scenarios: valid and
invalid events of every kind, odd objects, handlers that raise, return awaitables or
remove themselves, open turns, state replaced under the session's feet, and the
``llm_generation`` helper with every outcome. They must agree on everything observable
except the clocks' readings.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import math
import random
import re
import threading
import weakref

import msgspec
import pytest

from callmeter import AgentSession, metrics
from callmeter._native import speedups
from callmeter.metrics import UsageCollector
from callmeter.session import recording, timers
from callmeter.usage import collecting

pytestmark = pytest.mark.skipif(
    speedups is None, reason="callmeter._speedups is not built (pure-Python install)"
)


def _without_c_base(module_name: str, holder: object, base: str, reference: type) -> object:
    """A fresh copy of a module, executed with ``holder.<base>`` set to the reference."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = getattr(holder, base)
    setattr(holder, base, reference)
    try:
        spec.loader.exec_module(module)
    finally:
        setattr(holder, base, saved)
    return module


PySession = _without_c_base(
    "callmeter.session.agent_session", recording, "RecordingBase", recording.Recording
).AgentSession  # type: ignore[attr-defined]
PyCollector = _without_c_base(
    "callmeter.usage.collector", collecting, "CollectingBase", collecting.Collecting
).UsageCollector  # type: ignore[attr-defined]
T0 = 1.79e9
CLOCK_FIELDS = ("timestamp", "started_at", "duration", "ttft", "tokens_per_second")


@pytest.fixture
def pure_generations(monkeypatch):
    # PySession.llm_generation is the reference, which builds recording.LLMGeneration.
    monkeypatch.setattr(recording, "LLMGeneration", timers.PyLLMGeneration)
    monkeypatch.setattr(recording, "_new_generation", timers.PyLLMGeneration.__new__)


def test_the_twins_really_differ_only_in_the_c_base():
    assert issubclass(AgentSession, speedups.SessionCore)
    assert not issubclass(PySession, speedups.SessionCore)
    assert not issubclass(PyCollector, speedups.CollectorCore)
    assert not issubclass(timers.PyLLMGeneration, speedups.GenerationCore)
    assert PySession.emit_metrics is recording.Recording.emit_metrics


class StrSub(str):
    pass


class IntSub(int):
    pass


class LLMSub(metrics.LLMMetrics):
    pass


class Liar:
    """Claims to be an LLMMetrics."""

    __class__ = metrics.LLMMetrics  # type: ignore[assignment]
    timestamp = T0
    speech_id = "s1"


MD = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")


def _event(rng: random.Random, i: int) -> object:
    kind = rng.randrange(14)
    sid = rng.choice((None, "s1", "s2", "s3"))
    if kind <= 5:
        return metrics.LLMMetrics(
            timestamp=T0 + i, started_at=T0 + i, duration=rng.choice((0.5, 0, 2.0)),
            prompt_tokens=rng.choice((0, 10, 2**70)), completion_tokens=rng.choice((0, 5)),
            speech_id=sid, metadata=rng.choice((None, MD)),
        )  # fmt: skip
    if kind == 6:  # invalid in one field
        m = metrics.LLMMetrics(timestamp=T0 + i, started_at=T0 + i, duration=1.0, speech_id=sid)
        field, value = rng.choice(
            (("duration", math.nan), ("prompt_tokens", -1), ("label", StrSub("x")),
             ("prompt_tokens", IntSub(2)), ("speech_id", 3), ("timestamp", 1e12))
        )  # fmt: skip
        setattr(m, field, value)
        return m
    if kind == 7:
        return metrics.ToolMetrics(
            timestamp=T0 + i, started_at=T0 + i, duration=0.1, tool_name="t", speech_id=sid
        )
    if kind == 8:
        return metrics.STTMetrics(
            timestamp=T0 + i, started_at=T0 + i, duration=0.3, audio_duration=1.5, speech_id=sid
        )
    if kind == 9:
        return metrics.TTSMetrics(
            timestamp=T0 + i, started_at=T0 + i, duration=0.2, characters_count=9, speech_id=sid
        )
    if kind == 10:
        return LLMSub(timestamp=T0 + i, started_at=T0 + i, duration=0.5, speech_id=sid)
    if kind == 11:
        return metrics.LLMMetrics(timestamp=T0 + i, started_at=T0 + i, duration=0.5, speech_id=[1])  # type: ignore[arg-type]
    return rng.choice((None, 3, "x", Liar(), object(), b"\xff"))


def _handlers(rng: random.Random, received: list) -> list:
    """Handler sets, from the common case to the odd ones."""

    def plain(ev):
        received.append(ev)

    def raises(ev):
        received.append(ev)
        raise ValueError("handler bug")

    def cancels(ev):
        received.append(ev)
        raise asyncio.CancelledError

    async def later(ev):  # no running loop: dropped and counted
        received.append(ev)

    def awaitable(ev):
        received.append(ev)
        return later(ev)

    def returns(ev):
        received.append(ev)
        return 42

    return rng.choice(
        ([plain], [], [raises], [cancels], [awaitable], [returns], [plain, plain], [later],
         [plain, raises])
    )  # fmt: skip


def _strip(ev: object) -> object:
    if isinstance(ev, msgspec.Struct):
        return msgspec.to_builtins(ev, builtin_types=(bytes,))
    return ev


def _logs(caplog) -> list[str]:
    # The reason, without the event's repr (clock readings and addresses differ between
    # runs, and it is cut at a fixed length); pricing warns once per process about a
    # model it cannot price: not compared.
    return [
        re.sub(r"-?\d+\.\d+(e[-+]?\d+)?", "<real>", r.getMessage().split("): ")[0])
        for r in caplog.records
        if r.name != "callmeter.pricing"
    ]


def _observe(session, received: list) -> dict:
    u = session.usage
    return {
        "received": [_strip(ev) for ev in received],
        "rejected": session.rejected_events,
        "dropped": session.dropped_events,
        "pending": [_strip(m) for m in session._pending],
        "seq": session._next_seq(),
        "usage": (u.llm_requests, u.llm_prompt_tokens, u.tool_calls, u.stt_audio_duration,
                  u.tts_characters_count, u.cost),
    }  # fmt: skip


def _drive(cls, seed: int, caplog) -> tuple[dict, list[str]]:
    rng = random.Random(seed)
    received: list = []
    s = cls(session_id=f"x{seed}", agent_name=rng.choice((None, "a")), labels={"k": "v"})
    for h in _handlers(rng, received):
        s.on("metrics_collected", h)
    if rng.random() < 0.3:
        s.once("metrics_collected", lambda ev: received.append(("once", _strip(ev))))
    turns = []
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="callmeter"):
        for i in range(rng.randrange(1, 60)):
            if rng.random() < 0.08:
                t = s.turn(rng.choice(("s1", "s2")))
                t._enter()
                turns.append(t)
            s.emit_metrics(_event(rng, i))
        for t in turns:
            t._metrics = [_strip(m) for m in t._metrics]
        out = _observe(s, received)
        out["turns"] = [(t.speech_id, t._metrics) for t in turns]
    logs = [r.getMessage() for r in caplog.records if r.name != "callmeter.pricing"]
    return out, logs


@pytest.mark.parametrize("seed", range(120))
def test_c_emit_path_matches_the_python_reference(seed, caplog):
    c_out, c_logs = _drive(AgentSession, seed, caplog)
    py_out, py_logs = _drive(PySession, seed, caplog)
    assert c_out == py_out
    assert [line.split(" at 0x")[0] for line in c_logs] == [
        line.split(" at 0x")[0] for line in py_logs
    ]


def test_state_replaced_under_the_session_never_escapes(caplog):
    # Broken state takes the Python route, which logs "recording failed": never raises.
    for cls in (AgentSession, PySession):
        s = cls(session_id="x")
        s.on("metrics_collected", lambda ev: None)
        m = metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0)
        del s.labels
        s.emit_metrics(m)
        s.labels = None
        s._handlers = ["not", "a", "dict"]
        s.emit_metrics(m)
        s._handlers = {}
        s._pending = ()
        s.emit_metrics(m)
        s._pending = []
        s._open_turns = {"s": None}
        s.emit_metrics(m)
        s._open_turns = {}
        s.emit_metrics(m)
        assert len(s._pending) == 2, cls
    assert caplog.text.count("recording a metrics event failed") == 6  # 3 per class


def test_keyboard_interrupt_in_a_handler_propagates_from_both_paths():
    for cls in (AgentSession, PySession):
        s = cls(session_id="x")

        def stop(ev):
            raise KeyboardInterrupt

        s.on("metrics_collected", stop)
        with pytest.raises(KeyboardInterrupt):
            s.emit_metrics(metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0))


def test_the_c_event_is_an_ordinary_metrics_collected_event():
    s = AgentSession(session_id="x", agent_name="a", labels={"k": "v"})
    seen: list = []
    s.on("metrics_collected", seen.append)
    m = metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0)
    s.emit_metrics(m)
    ev = seen[0]
    built = metrics.MetricsCollectedEvent(
        session_id="x", seq=0, created_at=T0, agent_name="a", labels={"k": "v"}, metrics=m
    )
    assert ev == built and ev.metrics is m and ev.labels is s.labels
    assert msgspec.json.encode(ev) == msgspec.json.encode(built)
    assert gc.is_tracked(ev) == gc.is_tracked(built)
    ev.seq = 5  # an ordinary mutable struct
    assert msgspec.structs.replace(ev, seq=0) == built


def test_keyword_and_odd_calls_take_the_python_route():
    s = AgentSession(session_id="x")
    m = metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0)
    s.emit_metrics(metrics=m)
    assert s.usage.llm_requests == 1
    with pytest.raises(TypeError):
        s.emit_metrics()
    with pytest.raises(TypeError):
        s.emit_metrics(m, m)
    c = UsageCollector()
    c.collect(metrics=m)
    c(m)
    c(metrics=m)
    assert c.get_summary().llm_requests == 3
    with pytest.raises(TypeError):
        c.collect()


@pytest.mark.parametrize("seed", range(40))
def test_c_collect_matches_the_python_reference(seed, caplog):
    outs = []
    for cls in (UsageCollector, PyCollector):
        rng = random.Random(seed)
        c = cls(max_metrics=rng.choice((None, 5)))
        c._batch = rng.choice((1, 3, 1024))
        caplog.clear()
        for i in range(rng.randrange(1, 80)):
            if rng.random() < 0.05:
                c.collect(metrics.CloseEvent(session_id="x", created_at=T0, duration=60.0))
            elif rng.random() < 0.05:
                c.collect(metrics.CloseEvent(session_id="x", created_at=T0, duration=-1.0))
            else:
                c.collect(_event(rng, i))
        s = c.get_summary()
        outs.append(
            (msgspec.to_builtins(s), c.rejected_events, [_strip(m) for m in c.metrics],
             _logs(caplog))
        )  # fmt: skip
    assert outs[0] == outs[1]


# -- the llm_generation helper ----------------------------------------------------------


_PLAIN_ARGS = (
    ((), {}), (("gpt-4o", "openai"), {}), (("m",), {"label": "L", "request_id": "r"}),
    ((), {"model": "m", "speech_id": "s1"}), ((None, "p", "L"), {"speech_id": None}),
)  # fmt: skip
_ODD_ARGS = (
    ((None, None, StrSub("x")), {}), ((), {"model": StrSub("m")}), ((), {"provider": 3}),
    ((), {"nope": 1}), (("a", "b", "c", "d"), {}), (("a",), {"model": "b"}),
    ((), {"label": 5}), ((), {"speech_id": 7}),
)  # fmt: skip
_PLAIN_USAGE = (
    None, ((100, 20), {}), ((), {"prompt_tokens": 5, "completion_tokens": 7}),
    ((1, 2, 3), {"total_tokens": 10}), ((1,), {"reasoning_tokens": 4}),
    ((1,), {"cache_creation_tokens": 2, "input_audio_tokens": 3, "output_audio_tokens": 1}),
    ((2**80, 2**80), {}), ((0, 0, 0), {"reasoning_tokens": 0}), ((7,), {"total_tokens": 0}),
)  # fmt: skip
_ODD_USAGE = (
    ((-1,), {}), ((1.0,), {}), ((True,), {}), ((IntSub(3),), {}), ((1,), {"total_tokens": -2}),
    ((1,), {"reasoning_tokens": -1}), ((1, 2, 3, 4), {}), ((1,), {"prompt_tokens": 2}),
    ((1,), {"bogus": 2}), ((None,), {}), ((1,), {"total_tokens": 1.5}),
)  # fmt: skip


def _generation_script(rng: random.Random) -> dict:
    """Half plain (the C fast path), half with one or more odd parts (the reference)."""
    odd = rng.random() < 0.5

    def pick(plain, odd_values, p=0.3):
        return rng.choice(odd_values) if odd and rng.random() < p else rng.choice(plain)

    return {
        "args": pick(_PLAIN_ARGS, _ODD_ARGS),
        "usage": pick(_PLAIN_USAGE, _ODD_USAGE),
        "usage_twice": rng.random() < 0.2,
        "first": rng.choice((0, 1, 2)),
        "raise": pick((None,), (ValueError, asyncio.CancelledError, GeneratorExit)),
        "error": pick((None,), ("Boom: detail", 3)),
        "cancelled": pick((False,), (True, 1)),
        "ended_at": pick((None,), ("soon", "now")),
        "label_after": pick((None,), (5, StrSub("y"))),
        "speech_ctx": rng.choice((None, "ctx")),
        "exit_twice": rng.random() < 0.2,
    }


def _run_generation(session, script: dict) -> str | None:
    args, kwargs = script["args"]
    try:
        gen = session.llm_generation(*args, **kwargs)
    except Exception as e:
        return type(e).__name__
    try:
        with gen as g:
            if script["usage"] is not None:
                a, kw = script["usage"]
                try:
                    g.set_usage(*a, **kw)
                except TypeError as e:
                    return f"set_usage: {type(e).__name__}"
                if script["usage_twice"]:
                    g.set_usage(1, 1)
            for _ in range(script["first"]):
                g.first_token()
            if script["error"] is not None:
                g.error = script["error"]
            g.cancelled = script["cancelled"]
            if script["ended_at"] == "now":
                g.ended_at = timers._perf()
            elif script["ended_at"] == "soon":
                g.ended_at = "soon"
            if script["label_after"] is not None:
                g.label = script["label_after"]
            if script["raise"] is not None:
                raise script["raise"]()
        if script["exit_twice"]:
            gen.__exit__(None, None, None)
    except (ValueError, asyncio.CancelledError, GeneratorExit):
        pass
    return None


def _metric_shape(m: metrics.LLMMetrics) -> dict:
    md = m.metadata
    d = msgspec.to_builtins(msgspec.structs.replace(m, metadata=None))
    if md is not None:  # model names may be str subclasses: keep their types
        d["metadata"] = [(type(v).__name__, v) for v in (md.model_name, md.model_provider)]
    for f in CLOCK_FIELDS:
        d.pop(f, None)
    d["ttft_unset"] = m.ttft == -1.0
    d["tps_zero"] = m.tokens_per_second == 0.0
    d["times_ok"] = m.duration >= 0 and m.started_at <= m.timestamp
    return d


@pytest.mark.parametrize("seed", range(150))
def test_c_generation_matches_the_python_reference(seed, caplog, pure_generations):
    from callmeter.session.context import current_speech_id_var

    outs = []
    for cls in (AgentSession, PySession):
        rng = random.Random(seed)
        s = cls(session_id="x")
        seen: list = []
        s.on("metrics_collected", seen.append)
        caplog.clear()
        results = []
        for _ in range(6):
            script = _generation_script(rng)
            token = current_speech_id_var.set(script["speech_ctx"])
            try:
                results.append(_run_generation(s, script))
            finally:
                current_speech_id_var.reset(token)
        outs.append(
            ([_metric_shape(ev.metrics) for ev in seen], results, s.rejected_events,
             s.usage.llm_requests, _logs(caplog))
        )  # fmt: skip
    assert outs[0] == outs[1]


def test_generation_attributes_read_and_write_like_the_python_ones():
    s = AgentSession(session_id="x")
    g = s.llm_generation("m", "p", "L", request_id="r", speech_id="s")
    assert isinstance(g, timers.LLMGeneration) and isinstance(g, timers.PyLLMGeneration)
    assert (g.model, g.provider, g.label, g.request_id, g.speech_id) == ("m", "p", "L", "r", "s")
    assert (g.error, g.cancelled, g.ended_at, g._first, g._usage, g._done) == (
        None, False, None, None, None, False,
    )  # fmt: skip
    g.anything = 1  # instances keep a __dict__, as before
    assert g.anything == 1
    direct = timers.LLMGeneration(s, model="m")
    assert direct.model == "m" and direct.label == "" and direct._session is s
    with direct:
        direct.set_usage(3, 4)
    assert direct._usage == (3, 4, 0, 7) and direct._done
    assert s.usage.llm_requests == 1


def test_async_with_uses_the_same_path():
    s = AgentSession(session_id="x")
    seen: list = []
    s.on("metrics_collected", seen.append)

    async def main():
        async with s.llm_generation("m", "p") as g:
            g.first_token()
            g.set_usage(1, 2)
        with pytest.raises(ValueError):
            async with s.llm_generation("m", "p"):
                raise ValueError

    asyncio.run(main())
    assert [ev.metrics.error for ev in seen] == [None, "ValueError"]
    assert seen[0].metrics.completion_tokens == 2


# -- memory and threads ----------------------------------------------------------------


def test_a_finished_session_is_freed_without_the_garbage_collector():
    # No reference cycles: a call's session and collectors go as soon as they are dropped.
    gc.collect()
    gc.disable()
    try:
        s = AgentSession(session_id="x")
        u = UsageCollector(keep_metrics=False)
        s.on("metrics_collected", lambda ev, u=u: u.collect(ev.metrics))
        with s, s.turn("t1"):
            with s.llm_generation("m", "p") as g:
                g.set_usage(1, 2)
            with s.tool_call("lookup"):
                pass
            s.emit_metrics(metrics.STTMetrics(timestamp=T0, started_at=T0, duration=0.1))
        assert u.get_summary().llm_requests == 1 and s.usage.tool_calls == 1
        refs = [weakref.ref(s), weakref.ref(u), weakref.ref(s._collector)]
        del s, u, g
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()


def test_eight_threads_through_the_c_helper_count_exactly():
    s = AgentSession(session_id="x")
    u = UsageCollector(keep_metrics=False)
    s.on("metrics_collected", lambda ev: u.collect(ev.metrics))

    def work():
        for i in range(2000):
            with s.llm_generation("gpt-4o-mini", "openai", speech_id=f"s{i % 7}") as g:
                g.set_usage(3, 2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for summary in (s.usage, u.get_summary()):
        assert summary.llm_requests == 16_000
        assert summary.llm_prompt_tokens == 48_000
        assert summary.llm_completion_tokens == 32_000
    assert s._next_seq() == 16_000


def test_collector_state_of_another_type_takes_the_python_path():
    m = metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0)
    for cls in (UsageCollector, PyCollector):
        c = cls()
        c._batch = 2.0  # not an int: still compared as Python compares it
        c.collect(m)
        assert len(c._buf) == 1
        c.collect(m)
        assert c._buf == [] and c.get_summary().llm_requests == 2, cls


def test_the_c_methods_have_signatures():
    import inspect

    assert list(inspect.signature(AgentSession.emit_metrics).parameters) == ["self", "metrics"]
    assert list(inspect.signature(UsageCollector.collect).parameters) == ["self", "metrics"]
    params = inspect.signature(AgentSession.llm_generation).parameters
    assert list(params) == ["self", "model", "provider", "label", "request_id", "speech_id"]
    assert params["request_id"].kind is inspect.Parameter.KEYWORD_ONLY
    usage = inspect.signature(timers.LLMGeneration.set_usage).parameters
    assert list(usage)[:4] == ["self", "prompt_tokens", "completion_tokens", "prompt_cached_tokens"]
    assert AgentSession.emit_metrics.__doc__.startswith("Record a metrics event")


def test_copies_carry_the_state_kept_in_the_c_slots():
    import copy

    s = AgentSession(session_id="x", agent_name="a", labels={"k": "v"})
    c = copy.copy(s)
    assert (c.session_id, c.agent_name, c.labels, c._pending) == ("x", "a", {"k": "v"}, [])
    g = s.llm_generation("m", "p", speech_id="s1")
    g2 = copy.copy(g)
    assert (g2.model, g2.provider, g2.speech_id, g2._session) == ("m", "p", "s1", s)
    u = copy.copy(UsageCollector())
    u.collect(metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=1.0))
    assert u.get_summary().llm_requests == 1


def test_deep_recursion_from_handlers_does_not_crash(tmp_path):
    # A handler that emits again, to the recursion limit: the C path must stop as Python
    # does (RecursionError, logged), not overflow the C stack.
    import subprocess
    import sys

    program = tmp_path / "deep.py"
    program.write_text(
        "import sys, logging\n"
        "sys.setrecursionlimit(30000)\n"
        "logging.disable(logging.CRITICAL)\n"
        "from callmeter import AgentSession, metrics\n"
        "s = AgentSession(session_id='x')\n"
        "m = metrics.LLMMetrics(timestamp=1.79e9, started_at=1.79e9, duration=0.1)\n"
        "depth = [0]\n"
        "def again(ev):\n"
        "    depth[0] += 1\n"
        "    s.emit_metrics(m)\n"
        "s.on('metrics_collected', again)\n"
        "s.emit_metrics(m)\n"
        "print(depth[0])\n"
    )
    depths = {}
    for pure in ("0", "1"):
        proc = subprocess.run(
            [sys.executable, str(program)], capture_output=True, text=True, timeout=120,
            env={**__import__("os").environ, "CALLMETER_PURE_PYTHON": pure},
        )  # fmt: skip
        assert proc.returncode == 0, (pure, proc.returncode, proc.stderr[-2000:])
        depths[pure] = int(proc.stdout)
    assert depths["0"] > 1000 and depths["1"] > 1000
