"""The optional C hot path (callmeter._speedups) against its pure-Python reference.

Each C function has a Python counterpart that stays the reference: the LLMMetrics check
(validate._llm) and the collector's batch loop (UsageCollector._add_llm_events_py with
Ledger.add_llm). These tests feed both the same seeded, adversarial inputs and require
the same answers, to the type of every number.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest

from callmeter import AgentSession, metrics
from callmeter._native import speedups
from callmeter.model import validate
from callmeter.usage import collector as collector_module

pytestmark = pytest.mark.skipif(
    speedups is None, reason="callmeter._speedups is not built (pure-Python install)"
)

LLM = metrics.LLMMetrics
MD = [
    None,
    metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai"),
    metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai"),  # equal, not same
    metrics.Metadata(model_name="claude", model_provider=None),
]


class StrSub(str):
    pass


class IntSub(int):
    pass


class FloatSub(float):
    pass


_ODD_REALS = [
    0, 0.0, -0.0, 1, 0.5, -1, -1.0, -0.5, 1e9, 1e9 + 1, 1e11, 1e11 + 1, 1e11 * 1.0000001,
    2**53 + 1, 2**63, 2**64, -(2**63), math.nan, math.inf, -math.inf, True, False,
    IntSub(3), FloatSub(0.25), "1", None, 10**30, -(10**30), 99_999_999_999,
]  # fmt: skip
_ODD_COUNTS = [
    0, 1, 100, 31_999, 32_000, 2**62, 2**63 - 1, 2**63, 2**64 + 5, 10**40, -1, -(2**63),
    -(2**64), True, False, 1.0, IntSub(4), "3", None, math.nan,
]  # fmt: skip
_ODD_STR = ["", "openai.LLM", StrSub("x"), None, 3, b"x", "é\udcff"]
_REAL_FIELDS = ("timestamp", "started_at", "duration", "ttft", "tokens_per_second")
_COUNT_FIELDS = (
    "completion_tokens", "prompt_tokens", "prompt_cached_tokens", "cache_creation_tokens",
    "reasoning_tokens", "input_audio_tokens", "output_audio_tokens", "total_tokens",
)  # fmt: skip


def _valid(rng: random.Random, i: int) -> LLM:
    return LLM(
        timestamp=1.79e9 + i,
        started_at=1.79e9 + i * rng.choice((0.3, 1.0, 2.5)),
        duration=rng.choice((0.5, 0, 2, 1e9, 0.0)),
        label="openai.LLM",
        request_id=f"r{i}",
        ttft=rng.choice((-1.0, -1, 0.2, 0)),
        prompt_tokens=rng.choice((0, 100, 40_000)),
        completion_tokens=rng.choice((0, 20)),
        speech_id=rng.choice((None, "s1", "s2")),
        metadata=rng.choice(MD),
    )


def _mutate(rng: random.Random, m: LLM) -> LLM:
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        if kind == 0:
            setattr(m, rng.choice(_REAL_FIELDS), rng.choice(_ODD_REALS))
        elif kind == 1:
            setattr(m, rng.choice(_COUNT_FIELDS), rng.choice(_ODD_COUNTS))
        elif kind == 2:
            setattr(
                m, rng.choice(("label", "request_id", "error", "speech_id")), rng.choice(_ODD_STR)
            )
        elif kind == 3:
            setattr(
                m,
                rng.choice(("cancelled", "usage_reported")),
                rng.choice((True, False, 0, 1, None)),
            )
        elif kind == 4:
            m.metadata = rng.choice(
                (
                    None,
                    "gpt",
                    metrics.Metadata(model_name=StrSub("m"), model_provider="p"),
                    metrics.Metadata(model_name=3, model_provider="p"),  # type: ignore[arg-type]
                    metrics.Metadata(model_name=None, model_provider=b"p"),  # type: ignore[arg-type]
                )
            )
        else:
            m.metadata = MD[1]
    return m


@pytest.mark.parametrize("seed", range(4))
def test_c_check_accepts_exactly_what_the_python_check_accepts(seed):
    rng = random.Random(seed)
    c_check = validate.CHECKS[LLM]
    accepted = rejected = 0
    for i in range(3000):
        m = _valid(rng, i)
        if rng.random() < 0.7:
            m = _mutate(rng, m)
        expected = validate._llm(m)
        assert c_check(m) == expected, (m, expected)
        if expected is None:
            accepted += 1
        else:
            rejected += 1
    assert accepted > 300 and rejected > 300  # both sides really exercised


def test_c_check_refuses_odd_objects_like_the_python_check():
    for name in ("duration", "metadata", "prompt_tokens"):
        m = LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0)
        delattr(m, name)  # an empty slot
        with pytest.raises(AttributeError):  # from the Python check (callers catch it)
            validate.CHECKS[LLM](m)
        assert validate.check(m) is not None
        c = metrics.UsageCollector()
        c.collect(m)
        assert c.rejected_events == 1 and c.get_summary().llm_requests == 0
    with pytest.raises(TypeError):  # not an LLMMetrics: the Python check says
        speedups.llm_check(object())


def _events(rng: random.Random, n: int) -> list:
    out: list = []
    t = 1.79e9
    for _ in range(n):
        t += rng.choice((0.1, 1.0, 3.0))
        r = rng.random()
        sid = rng.choice((None, "s1", "s1", "s2", "s3"))
        if r < 0.75:
            st = t - rng.choice((0.0, 5.0, 50.0)) if rng.random() < 0.2 else t
            if rng.random() < 0.15:
                st = int(st)  # ints where floats are expected (allowed)
            big = rng.random() < 0.05
            out.append(
                LLM(
                    timestamp=t,
                    started_at=st,
                    duration=rng.choice((0.5, 1, 0.0, 2.25)),
                    prompt_tokens=rng.choice((100, 31_999, 32_000, 2**63 + 7 if big else 5)),
                    completion_tokens=rng.choice((20, 0, 2**62 if big else 3)),
                    prompt_cached_tokens=rng.choice((0, 50, 200)),
                    cache_creation_tokens=rng.choice((0, 0, 7)),
                    input_audio_tokens=rng.choice((0, 0, 9, 1000)),
                    output_audio_tokens=rng.choice((0, 0, 4)),
                    usage_reported=rng.random() > 0.1,
                    error=rng.choice((None, None, "Timeout")),
                    speech_id=sid,
                    metadata=rng.choice(MD),
                )
            )
        elif r < 0.85:
            out.append(
                metrics.TTSMetrics(
                    timestamp=t, started_at=t - 0.3, duration=0.3, characters_count=40,
                    audio_duration=1.5, speech_id=sid, metadata=MD[1],
                )
            )  # fmt: skip
        elif r < 0.93:
            out.append(
                metrics.STTMetrics(
                    timestamp=t, started_at=t - 1, duration=0.2, audio_duration=1.0,
                    speech_id=sid, metadata=MD[3],
                )
            )  # fmt: skip
        else:
            out.append(
                metrics.ToolMetrics(
                    timestamp=t, started_at=t - 0.2, duration=0.2, tool_name="lookup", speech_id=sid
                )
            )
    return out


def _typed(xs: list) -> list:
    return [(type(x).__name__, x) for x in xs]


def _state(c: metrics.UsageCollector) -> dict:
    summary = repr(c.get_summary())  # adds up what is buffered
    ledger = c._ledger
    parts = {sid: p for sid, p in ledger.turns.items()}
    parts["<unattributed>"] = ledger.unattributed
    parts["<dropped>"] = ledger.dropped
    return {
        "totals": {k: _typed(v) for k, v in ledger.totals.items()},
        "vectors": {sid: {k: _typed(v) for k, v in p.vectors.items()} for sid, p in parts.items()},
        "large": {
            sid: {k: [repr(a) for a in v] for k, v in p.large.items()} for sid, p in parts.items()
        },
        "pending": {sid: [id(m) for m in p.pending] for sid, p in parts.items()},
        "version": ledger.version,
        "starts": _typed(c._timeline._starts),
        "ends": _typed(c._timeline._ends),
        "folded": c._timeline._folded,
        "summary": summary,
        "latency": repr(c.get_latency_summary()),
    }


def _fed(events: list, pure: bool, batch: int, monkeypatch, max_cost_turns: int = 1000) -> dict:
    with monkeypatch.context() as mp:
        if pure:
            mp.setattr(collector_module, "speedups", None)
        c = metrics.UsageCollector(keep_metrics=False, max_cost_turns=max_cost_turns)
        c._batch = batch
        for m in events:
            c.collect(m)
        state = _state(c)
    return state


@pytest.mark.parametrize("seed", range(6))
def test_c_batch_loop_gives_the_python_results_exactly(seed, monkeypatch):
    rng = random.Random(seed)
    events = _events(rng, 2500)
    batch = rng.choice((7, 64, 1024))
    turns = rng.choice((1000, 2, 0))
    c_state = _fed(events, pure=False, batch=batch, monkeypatch=monkeypatch, max_cost_turns=turns)
    py_state = _fed(events, pure=True, batch=batch, monkeypatch=monkeypatch, max_cost_turns=turns)
    assert c_state == py_state


def test_huge_token_counts_add_up_past_int64(monkeypatch):
    events = [
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, prompt_tokens=2**63 - 1,
            completion_tokens=2**63 - 1, speech_id="s", metadata=MD[1]),
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, prompt_tokens=2**63 - 1,
            completion_tokens=2**70, speech_id="s", metadata=MD[1]),
    ]  # fmt: skip
    c_state = _fed(events, pure=False, batch=1024, monkeypatch=monkeypatch)
    assert c_state == _fed(events, pure=True, batch=1024, monkeypatch=monkeypatch)
    (totals,) = c_state["totals"].values()
    assert totals[1] == ("int", 2 * (2**63 - 1))
    assert totals[4] == ("int", 2**63 - 1 + 2**70)


def test_a_failing_ledger_callback_is_logged_and_counted_not_raised(caplog):
    c = metrics.UsageCollector(keep_metrics=False)
    c._ledger.turns = None  # Ledger.part, called back from C, raises AttributeError
    c.collect(LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, speech_id="s"))
    summary = c.get_summary()  # never raises
    assert summary.llm_requests == 0
    assert c.rejected_events == 1
    assert "adding up 1 events failed" in caplog.text


def test_session_usage_is_the_same_without_the_extension(tmp_path):
    # The same program, run with and without CALLMETER_PURE_PYTHON: identical summaries.
    program = tmp_path / "p.py"
    program.write_text(
        "import random\n"
        "from callmeter import AgentSession, metrics\n"
        "from callmeter._native import speedups\n"
        "rng = random.Random(5)\n"
        "s = AgentSession(session_id='x')\n"
        "md = metrics.Metadata(model_name='gpt-4o-mini', model_provider='openai')\n"
        "for i in range(3000):\n"
        "    s.emit_metrics(metrics.LLMMetrics(timestamp=1.79e9 + i, started_at=1.79e9 + i,\n"
        "        duration=rng.random(), prompt_tokens=rng.randrange(50_000),\n"
        "        completion_tokens=rng.randrange(500), speech_id=f's{i // 7}', metadata=md))\n"
        "    with s.llm_generation('gpt-4o', 'openai', speech_id=f's{i // 7}') as g:\n"
        "        g.set_usage(prompt_tokens=i, completion_tokens=3)\n"
        "print(speedups is not None)\n"
        "u = s.usage\n"
        "print(u.llm_requests, u.llm_prompt_tokens, u.llm_completion_tokens, u.cost,\n"
        "      u.cost_by_turn)\n"
    )
    runs = {}
    for pure in ("0", "1"):
        env = {**os.environ, "CALLMETER_PURE_PYTHON": pure}
        out = subprocess.run(
            [sys.executable, str(program)], capture_output=True, text=True, env=env, check=True
        ).stdout.splitlines()
        runs[pure] = out
    assert runs["0"][0] == "True" and runs["1"][0] == "False"
    assert runs["0"][1] == runs["1"][1]
    assert runs["0"][1].startswith("6000 ")


def test_emit_path_rejects_what_the_python_check_rejects():
    s = AgentSession(session_id="x")
    seen: list = []
    s.on("metrics_collected", lambda ev: seen.append(ev.metrics))
    bad = [
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=math.nan),
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, prompt_tokens=-1),
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, label=StrSub("x")),
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, ttft=-0.5),
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, cancelled=1),  # type: ignore[arg-type]
        LLM(timestamp=1.79e9, started_at=1.79e9, duration=1.0, prompt_tokens=IntSub(2)),
        LLM(timestamp=1e11 + 1, started_at=1.79e9, duration=1.0),
    ]
    for m in bad:
        s.emit_metrics(m)
    assert seen == []
    assert s.rejected_events == len(bad)
    assert s.usage.llm_requests == 0


def test_the_python_reference_still_passes_the_event_path_suites():
    # `make test` runs the C path; the pure-Python path (no compiler, or
    # CALLMETER_PURE_PYTHON=1) must stay correct too: run the event-path suites on it.
    suites = ["tests/test_event_path.py", "tests/test_usage.py", "tests/test_validation.py"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "CALLMETER_PURE_PYTHON": "1"}
    probe = "from callmeter._native import speedups; print(speedups)"
    off = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert off.stdout.strip() == "None"  # the suites below really run the Python path
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
        capture_output=True, text=True, env=env, cwd=root, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
