"""Differential tests of the C hot path (callmeter._speedups) against its Python reference.

Every test runs the C function and the pure-Python one on the same input and compares
the results exactly (types included). Skipped when the extension is not built.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from callmeter import _native
from callmeter.model import validate
from callmeter.model.types import (
    EOUMetrics,
    LLMMetrics,
    Metadata,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    VADMetrics,
)
from callmeter.pricing import ledger as ledger_mod
from callmeter.pricing.ledger import LARGE_REQUEST_TOKENS, Ledger
from callmeter.usage import collector as collector_mod
from callmeter.usage.collector import UsageCollector
from callmeter.usage.timeline import IntervalUnion

if _native.speedups is None:
    pytest.skip("callmeter._speedups is not built", allow_module_level=True)

speedups = _native.speedups
SRC = Path(__file__).resolve().parent.parent / "src"


class IntSub(int):
    pass


class FloatSub(float):
    pass


class StrSub(str):
    pass


# -- typed comparison ------------------------------------------------------------------


def typed(x: Any) -> Any:
    """x with every number tagged by its exact type (and floats by repr: -0.0 != 0.0)."""
    if isinstance(x, bool):
        return ("bool", x)
    if isinstance(x, int):
        return (type(x).__name__, x)
    if isinstance(x, float):
        return (type(x).__name__, repr(x))
    if isinstance(x, dict):
        return {typed(k): typed(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)([typed(v) for v in x])
    if hasattr(x, "__dataclass_fields__"):
        return (type(x).__name__, {k: typed(getattr(x, k)) for k in x.__dataclass_fields__})
    return x


def ledger_state(led: Ledger) -> Any:
    def part(p: Any) -> Any:
        return (
            typed(p.vectors),
            typed(p.large),
            typed(p.overflow),
            [id(m) for m in p.pending],
        )

    return (
        typed(led.totals),
        [(sid, part(p)) for sid, p in led.turns.items()],
        part(led.unattributed),
        part(led.dropped),
        led.dropped_turns,
        led.dropped_events,
    )


def collector_state(c: UsageCollector) -> Any:
    summary = c.get_summary()
    tl = c._timeline
    return (
        ledger_state(c._ledger),
        typed(tl._starts),
        typed(tl._ends),
        repr(tl._folded),
        c.rejected_events,
        repr(summary),
    )


def run_collector(events: list[Any], native: bool, **kw: Any) -> UsageCollector:
    saved = collector_mod.speedups
    collector_mod.speedups = speedups if native else None
    try:
        c = UsageCollector(**kw)
        for m in events:
            c.collect(m)
        c.get_summary()
        return c
    finally:
        collector_mod.speedups = saved


def assert_same(events: list[Any], **kw: Any) -> tuple[UsageCollector, UsageCollector]:
    c_native = run_collector(events, True, **kw)
    c_py = run_collector(events, False, **kw)
    assert collector_state(c_native) == collector_state(c_py)
    return c_native, c_py


# -- event generators ------------------------------------------------------------------

HUGE = [2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 7, 10**30]
COUNTS = [0, 1, 2, 7, 999, LARGE_REQUEST_TOKENS - 1, LARGE_REQUEST_TOKENS, *HUGE]
TIMES = [0, 0.0, -0.0, 1, 1.5, 5e-324, 1e9, 1e11, 2.0**30, 1_000_000_000]
DURS = [0, 0.0, -0.0, 1, 0.25, 3.0, 1e9, 1e-9, 5e-324]

MODELS = [
    None,
    Metadata(model_name="gpt-4o", model_provider="openai"),
    Metadata(model_name="gpt-4o-mini", model_provider="openai"),
    Metadata(model_name=None, model_provider="openai"),
    Metadata(model_name=StrSub("gpt-4o"), model_provider=StrSub("openai")),
    Metadata(),
]


def metadata(rng: random.Random) -> Metadata | None:
    md = rng.choice(MODELS)
    if md is not None and rng.random() < 0.3:  # equal, not identical
        md = Metadata(model_name=md.model_name, model_provider=md.model_provider)
    return md


def llm_event(rng: random.Random, sids: list[Any]) -> LLMMetrics:
    def count() -> int:
        r = rng.random()
        if r < 0.6:
            return rng.randrange(0, 2000)
        if r < 0.95:
            return rng.choice(COUNTS)
        return rng.randrange(0, 2**70)

    return LLMMetrics(
        timestamp=rng.choice(TIMES),
        started_at=rng.choice([*TIMES, rng.uniform(0, 100), rng.randrange(0, 100)]),
        duration=rng.choice([*DURS, rng.uniform(0, 5), rng.randrange(0, 5)]),
        ttft=rng.choice([-1.0, -1, 0, 0.5, 1e9]),
        tokens_per_second=rng.choice([0.0, 0, 12.5, 1e9]),
        completion_tokens=count(),
        prompt_tokens=count(),
        prompt_cached_tokens=count() if rng.random() < 0.5 else 0,
        cache_creation_tokens=count() if rng.random() < 0.3 else 0,
        input_audio_tokens=count() if rng.random() < 0.3 else 0,
        output_audio_tokens=count() if rng.random() < 0.3 else 0,
        reasoning_tokens=count() if rng.random() < 0.2 else 0,
        total_tokens=count(),
        usage_reported=rng.random() < 0.8,
        cancelled=rng.random() < 0.1,
        error=None if rng.random() < 0.8 else "boom",
        speech_id=rng.choice(sids),
        metadata=metadata(rng),
    )


def other_event(rng: random.Random, sids: list[Any]) -> Any:
    st = rng.choice([*TIMES, rng.uniform(0, 100)])
    d = rng.choice([*DURS, rng.uniform(0, 5)])
    sid = rng.choice(sids)
    md = metadata(rng)
    k = rng.randrange(7)
    if k == 0:
        return STTMetrics(
            timestamp=st, started_at=st, duration=d, audio_duration=rng.uniform(0, 10),
            input_tokens=rng.randrange(100), speech_id=sid, metadata=md,
        )  # fmt: skip
    if k == 1:
        return TTSMetrics(
            timestamp=st, started_at=st, duration=d, audio_duration=rng.uniform(0, 10),
            characters_count=rng.randrange(500), speech_id=sid, metadata=md,
        )  # fmt: skip
    if k == 2:
        return RealtimeModelMetrics(
            timestamp=st, started_at=st, duration=d, input_tokens=rng.randrange(100),
            output_tokens=rng.randrange(100), speech_id=sid, metadata=md,
        )  # fmt: skip
    if k == 3:
        return ToolMetrics(timestamp=st, started_at=st, duration=d, tool_name="t", speech_id=sid)
    if k == 4:
        return EOUMetrics(timestamp=st, started_at=st, end_of_utterance_delay=d, speech_id=sid)
    if k == 5:
        return VADMetrics(timestamp=st)
    return LLMMetrics(timestamp=st, started_at=st, duration=d, speech_id=sid, metadata=md)


def batch(rng: random.Random, n: int) -> list[Any]:
    sids = [None, "s1", "s2", "s3", *(f"t{i}" for i in range(rng.randrange(1, 6)))]
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            out.append(llm_event(rng, sids))
        else:
            out.append(other_event(rng, sids))
        if rng.random() < 0.3 and out[-1].__class__ is LLMMetrics:
            # runs: several events of one turn and model in a row
            for _ in range(rng.randrange(1, 5)):
                out.append(llm_event(rng, [out[-1].speech_id]))
    return out


# -- (a) the check ---------------------------------------------------------------------

FIELD_VALUES: dict[str, list[Any]] = {
    "timestamp": [
        0,
        0.0,
        -0.0,
        1e11,
        1e11 + 1,
        10**11,
        10**11 + 1,
        -1,
        -1.0,
        math.nan,
        math.inf,
        -math.inf,
        2**53 + 1,
        2**63,
        2**64,
        -(2**63),
        True,
        False,
        IntSub(1),
        FloatSub(1.0),
        "1",
        None,
        5e-324,
        -5e-324,
    ],
    "started_at": [
        0,
        1e11,
        1e11 * (1 + 2**-52),
        10**11 + 1,
        math.nan,
        -0.0,
        True,
        2**63,
        IntSub(0),
        FloatSub(0.0),
        -1,
    ],
    "duration": [
        0,
        1e9,
        1e9 + 1e-6,
        10**9,
        10**9 + 1,
        -1e-300,
        math.nan,
        math.inf,
        True,
        2**63,
        -(2**63),
        -(2**64),
        IntSub(1),
        FloatSub(1.0),
        None,
    ],
    "ttft": [
        -1,
        -1.0,
        -1.0000000000000002,
        -0.9999999999999999,
        0,
        -0.0,
        1e9,
        1e9 + 1,
        math.nan,
        -math.inf,
        True,
        IntSub(-1),
        FloatSub(-1.0),
        -2,
        2**63,
    ],
    "tokens_per_second": [0, 1e9, 10**9 + 1, -0.0, math.nan, True, FloatSub(1.0)],
    "completion_tokens": [
        0,
        1,
        -1,
        2**63 - 1,
        2**63,
        2**64,
        -(2**63),
        -(2**64),
        10**40,
        -(10**40),
        True,
        False,
        IntSub(1),
        1.0,
        0.0,
        None,
        "1",
    ],
    "prompt_tokens": [0, -1, 2**63, -(2**63) - 1, True, IntSub(3), 3.0],
    "prompt_cached_tokens": [-1, 2**64, True, 1.0],
    "cache_creation_tokens": [-1, 2**64, False, IntSub(0)],
    "reasoning_tokens": [-1, -(2**100), True],
    "input_audio_tokens": [-1, 2**70, True],
    "output_audio_tokens": [-1, 2**70, False],
    "total_tokens": [-1, 2**70, True, IntSub(0)],
    "cancelled": [True, False, 0, 1, None, "x"],
    "usage_reported": [True, False, 0, 1, None],
    "label": ["", "x", StrSub("x"), None, b"x", 1],
    "request_id": ["", StrSub(""), None, b""],
    "error": [None, "e", StrSub("e"), b"e", 0, False],
    "speech_id": [None, "s", StrSub("s"), b"s", 0, ["unhashable"], math.nan],
    "metadata": [
        None,
        Metadata(),
        Metadata(model_name="m", model_provider="p"),
        Metadata(model_name=StrSub("m"), model_provider=StrSub("p")),
        Metadata(model_name=1),  # type: ignore[arg-type]
        Metadata(model_provider=b"p"),  # type: ignore[arg-type]
        Metadata(model_name=math.nan),  # type: ignore[arg-type]
        {"model_name": "m"},
        "m",
        0,
    ],
}


def same_check(m: Any) -> None:
    c_res: Any
    py_res: Any
    try:
        c_res = speedups.llm_check(m)
    except Exception as exc:
        c_res = ("raised", type(exc))
    try:
        py_res = validate._llm(m)
    except Exception as exc:
        py_res = ("raised", type(exc))
    # The C check returns None (valid) or the Python check's own answer.
    assert c_res == py_res, (m, c_res, py_res)
    if c_res is None:
        assert py_res is None
        assert validate.check(m) is None


def base_event() -> LLMMetrics:
    return LLMMetrics(
        timestamp=1.0, started_at=1.0, duration=0.5, prompt_tokens=10, completion_tokens=5,
        speech_id="s", metadata=Metadata(model_name="m", model_provider="p"),
    )  # fmt: skip


def test_check_registered_is_the_c_one() -> None:
    assert validate.CHECKS[LLMMetrics] is speedups.llm_check


@pytest.mark.parametrize("field", sorted(FIELD_VALUES))
def test_check_each_field_edge_value(field: str) -> None:
    for value in FIELD_VALUES[field]:
        m = msgspec.structs.replace(base_event(), **{field: value})
        same_check(m)


def test_check_random_combinations() -> None:
    rng = random.Random(1234)
    names = sorted(FIELD_VALUES)
    for _ in range(3000):
        m = base_event()
        changes = {n: rng.choice(FIELD_VALUES[n]) for n in rng.sample(names, rng.randrange(1, 4))}
        same_check(msgspec.structs.replace(m, **changes))


def test_check_metadata_mutated_after_it_was_cached() -> None:
    md = Metadata(model_name="m")
    m = msgspec.structs.replace(base_event(), metadata=md)
    same_check(m)  # caches md as valid (by identity) in the Python check
    msgspec.structs.force_setattr(md, "model_name", 5)
    same_check(m)


def test_check_unset_slots_and_odd_objects() -> None:
    m = base_event()
    for name in LLMMetrics.__struct_fields__:
        blank = base_event()
        delattr(blank, name)  # an unset slot: C must not read it as valid
        same_check(blank)
    md = Metadata(model_name="m")
    msgspec.structs.force_setattr(md, "model_provider", StrSub("p"))
    same_check(msgspec.structs.replace(m, metadata=md))
    # a Metadata whose slot is unset
    md2 = Metadata(model_name="m")
    try:
        Metadata.__dict__["model_name"].__delete__(md2)
    except (AttributeError, TypeError):
        pass
    else:
        same_check(msgspec.structs.replace(m, metadata=md2))

    class Sub(LLMMetrics, tag="sub_llm"):
        pass

    class SubMd(Metadata):
        pass

    same_check(Sub(timestamp=1.0, started_at=1.0, duration=0.5))
    same_check(msgspec.structs.replace(m, metadata=SubMd(model_name="m")))
    for odd in (None, 0, "llm", STTMetrics(timestamp=1.0, started_at=1.0, duration=1.0)):
        same_check(odd)


# -- (b) the batch loop ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_collector_random_batches(seed: int) -> None:
    rng = random.Random(seed)
    events = batch(rng, rng.choice([1, 5, 50, 400, 1500]))
    kw: dict[str, Any] = {}
    if seed % 3 == 1:
        kw["max_cost_turns"] = rng.choice([0, 1, 2])  # turns dropped while adding
    if seed % 4 == 2:
        kw["prices"] = False
    c_native, _ = assert_same(events, **kw)
    assert c_native.rejected_events == 0  # every generated event is valid


def test_collector_many_small_flushes() -> None:
    # runs and intervals spanning several flushes (state kept between calls)
    rng = random.Random(99)
    events = batch(rng, 600)
    saved = UsageCollector.BATCH
    try:
        UsageCollector.BATCH = 7
        assert_same(events, max_cost_turns=3)
    finally:
        UsageCollector.BATCH = saved


def test_collector_sums_beyond_int64() -> None:
    md = Metadata(model_name="gpt-4o", model_provider="openai")
    events = []
    for p in (2**63 - 1, 1, 2**63, 2**64 - 1, 5, 10**25, 0, 2**62, 2**62):
        events.append(
            LLMMetrics(
                timestamp=1.0,
                started_at=1.0,
                duration=1,
                prompt_tokens=p,
                completion_tokens=p,
                prompt_cached_tokens=p // 2,
                cache_creation_tokens=p // 3,
                input_audio_tokens=p // 4,
                output_audio_tokens=p,
                speech_id="s",
                metadata=md,
            )
        )
    c_native, _ = assert_same(events)
    v = c_native._ledger.totals[("llm", "openai", "gpt-4o")]
    assert v[1] == sum(e.prompt_tokens for e in events)
    assert type(v[1]) is int and type(v[13]) is float and type(v[0]) is int


@pytest.mark.parametrize(
    ("p", "c", "w", "ai"),
    [
        (LARGE_REQUEST_TOKENS, 0, 0, 0),
        (LARGE_REQUEST_TOKENS - 1, 0, 0, 0),
        (10, 5, 5, 0),  # c + w == p: not large
        (10, 5, 6, 0),  # c + w > p
        (10, 0, 0, 11),
        (10, 0, 0, 10),
        (2**63 - 1, 2**62, 2**62, 0),  # c + w overflows int64 and is > p
        (2**63 - 1, 2**62, 2**62 - 1, 0),  # c + w == p
        (2**64, 2**64, 1, 0),
        (2**64, 0, 0, 2**64 + 1),
        (0, 0, 0, 0),
    ],
)
def test_large_request_bounds(p: int, c: int, w: int, ai: int) -> None:
    m = LLMMetrics(
        timestamp=1.0, started_at=1.0, duration=0.5, prompt_tokens=p, prompt_cached_tokens=c,
        cache_creation_tokens=w, input_audio_tokens=ai, speech_id="s",
    )  # fmt: skip
    c_native, _ = assert_same([m, msgspec.structs.replace(m, usage_reported=False)])
    expected = p >= LARGE_REQUEST_TOKENS or c + w > p or ai > p
    assert bool(c_native._ledger.turns["s"].large) == expected


def test_interval_union_types_and_order() -> None:
    # int and float times, touching/overlapping/out-of-order intervals
    cases = [(0, 1), (1, 1.0), (1, 0), (0.5, 2), (3, 1), (2, 0.5), (10**9, 10**9), (5.0, 0),
             (4, 1), (-0.0, 0.0), (0.0, -0.0), (3.5, 0.25), (1e11, 1e9), (99, 0)]  # fmt: skip
    events = [
        LLMMetrics(timestamp=1.0, started_at=st, duration=d, speech_id=None) for st, d in cases
    ]
    assert_same(events)
    for perm_seed in range(20):
        rng = random.Random(perm_seed)
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert_same(shuffled)


def test_runs_split_by_other_kinds_and_metadata_equality() -> None:
    a = Metadata(model_name="gpt", model_provider="openai")
    a2 = Metadata(model_name="gpt", model_provider="openai")  # equal, not identical
    b = Metadata(model_name=StrSub("gpt"), model_provider="openai")  # equal to a
    stt = STTMetrics(timestamp=1.0, started_at=1.0, duration=1.0, audio_duration=1.0,
                     speech_id="s")  # fmt: skip

    def llm(md: Any, sid: Any = "s", **kw: Any) -> LLMMetrics:
        return LLMMetrics(timestamp=1.0, started_at=2.0, duration=0.5, prompt_tokens=3,
                          speech_id=sid, metadata=md, **kw)  # fmt: skip

    events = [llm(a), llm(a2), llm(b), stt, llm(a), llm(None), llm(None, None), llm(a, None),
              stt, stt, llm(b, error="x"), llm(a, usage_reported=False), llm(a2, "t")]  # fmt: skip
    assert_same(events)
    assert_same(events, max_cost_turns=0)
    assert_same(events, max_cost_turns=1)


class RaisingLedger(Ledger):
    """A Ledger whose method ``name`` raises on its ``at``-th call."""

    def __init__(self, name: str, at: int) -> None:
        super().__init__()
        self._fail = (name, at)
        self._n = 0

    def _maybe(self, name: str) -> None:
        if name == self._fail[0]:
            self._n += 1
            if self._n == self._fail[1]:
                raise KeyError(f"{name} failed")

    def part(self, sid: Any) -> Any:
        self._maybe("part")
        return super().part(sid)

    def keep_large(self, *args: Any) -> None:
        self._maybe("keep_large")
        super().keep_large(*args)

    def queue(self, m: Any) -> None:
        self._maybe("queue")
        super().queue(m)


class RaisingList(list):  # type: ignore[type-arg]
    pass


def call_loop(c: UsageCollector, buf: list[Any], native: bool) -> Any:
    saved = collector_mod.speedups
    collector_mod.speedups = speedups if native else None
    try:
        llm, others = c._add_llm_events(list(buf))
        return ("ok", [id(m) for m in llm], [id(m) for m in others])
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    finally:
        collector_mod.speedups = saved


def callback_raising_states(name: str, at: int) -> list[Any]:
    original_vector = ledger_mod._vector
    rng = random.Random(7)
    events = batch(rng, 120)
    events.append(LLMMetrics(timestamp=1.0, started_at=1.0, duration=1.0, prompt_tokens=10**6))
    if True:
        states = []
        for native in (True, False):
            c = UsageCollector()
            c._ledger = led = RaisingLedger(name, at)

            def new_vector() -> list[Any]:
                led._maybe("new_vector")  # noqa: B023
                return original_vector()

            # the C loop takes the collector's new_vector, Ledger.add_llm the module's
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(collector_mod, "new_vector", new_vector)
                mp.setattr(ledger_mod, "_vector", new_vector)
                res = call_loop(c, events, native)
            states.append((res, ledger_state(c._ledger), typed(c._timeline._starts),
                           typed(c._timeline._ends)))  # fmt: skip
    return states


@pytest.mark.parametrize("name", ["part", "keep_large", "queue", "new_vector"])
@pytest.mark.parametrize("at", [1, 3, 5])
def test_callback_raising_leaves_same_state(name: str, at: int) -> None:
    states = callback_raising_states(name, at)
    assert states[0][0][0] == "raised"
    assert states[0] == states[1]


def test_insert_raising() -> None:
    events = [LLMMetrics(timestamp=1.0, started_at=st, duration=1.0) for st in (5.0, 1.0, 0.5)]

    class Boom(IntervalUnion):
        def _insert(self, st: Any, end: Any) -> None:
            raise ValueError("insert failed")

    states = []
    for native in (True, False):
        c = UsageCollector()
        c._timeline = Boom()
        res = call_loop(c, events, native)
        states.append((res, ledger_state(c._ledger), typed(c._timeline._starts)))
    assert states[0] == states[1]


def test_no_reference_leaks() -> None:
    md = Metadata(model_name="leak-model", model_provider="p")
    sid = "leak-sid-" + str(random.random())
    big = 2**70 + 3
    events = [
        LLMMetrics(
            timestamp=1.0,
            started_at=float(i),
            duration=0.5,
            prompt_tokens=big,
            prompt_cached_tokens=big + 1,
            speech_id=sid,
            metadata=md,
        )
        for i in range(5)
    ]
    events.insert(2, STTMetrics(timestamp=1.0, started_at=1.0, duration=1.0, speech_id=sid))
    watched = [md, sid, big, *events]

    def once(fail: str | None) -> None:
        led = Ledger() if fail is None else RaisingLedger(fail, 2)
        starts: list[Any] = []
        ends: list[Any] = []
        with contextlib.suppress(KeyError):
            speedups.add_llm_events(
                events, collector_mod._QUEUED, led, ledger_mod._vector, led.part,
                led.keep_large, led.queue, collector_mod.Amounts, starts, ends,
                lambda s, e: None, LARGE_REQUEST_TOKENS,
            )  # fmt: skip

    for fail in (None, "part", "keep_large", "queue"):
        once(fail)
        gc.collect()
        before = [sys.getrefcount(x) for x in watched]
        for _ in range(300):
            once(fail)
        gc.collect()
        assert [sys.getrefcount(x) for x in watched] == before, fail


def test_bad_arguments_raise_typed_errors() -> None:
    led = Ledger()
    args = [[], collector_mod._QUEUED, led, ledger_mod._vector, led.part, led.keep_large,
            led.queue, collector_mod.Amounts, [], [], lambda s, e: None,
            LARGE_REQUEST_TOKENS]  # fmt: skip
    assert speedups.add_llm_events(*args) == ([], [])
    for i, bad in ((0, ()), (8, ()), (9, None), (11, 2**64), (11, "x")):
        a = list(args)
        a[i] = bad
        with pytest.raises((TypeError, OverflowError)):
            speedups.add_llm_events(*a)
    with pytest.raises(TypeError):
        speedups.add_llm_events(*args[:-1])


# -- known divergences (bugs in _speedups.c at the time of writing) -----------------------


def _run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(SRC)},
    )  # fmt: skip


_MUTATING_COMPARE = """
    import os
    from callmeter.model.types import LLMMetrics, Metadata
    from callmeter.usage import collector as col
    from callmeter.usage.collector import UsageCollector

    victim = []
    class Name(str):  # a valid model name (str subclass) whose == runs code
        __hash__ = str.__hash__
        def __eq__(self, other):
            for m in victim:
                m.{field} = {value}
            victim.clear()
            junk = [float(i) + 0.5 for i in range(10)]
            return str.__eq__(self, other)

    def run(native):
        col.speedups = col.speedups if native else None
        c = UsageCollector(prices=False)
        a = LLMMetrics(timestamp=1.0, started_at=1.0, duration=0.5,
                       metadata=Metadata(model_name=Name("gpt")))
        b = LLMMetrics(timestamp=1.0, started_at=float("3.5"), duration=0.5,
                       metadata=Metadata(model_name=Name("gpt")))
        c.collect(a); c.collect(b); victim.append(b)
        c.get_summary()
        return (c.rejected_events, c._ledger.totals, c._timeline._starts, c._timeline._ends)

    print(run(True) == run(False))
"""


@pytest.mark.parametrize(("field", "value"), [("metadata", "None"), ("started_at", "7.25")])
def test_event_mutated_during_metadata_compare(field: str, value: str) -> None:
    # The Python loop reads every field once (astuple, owned references); the C loop
    # owns a reference to every field it read across `md != run_md` (Python code).
    proc = _run_isolated(_MUTATING_COMPARE.format(field=field, value=value))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"


class _LyingSTT(STTMetrics, tag="lying_stt"):
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        return STTMetrics


class _LyingLLM(LLMMetrics, tag="lying_llm"):
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        return LLMMetrics


def test_class_attribute_dispatch() -> None:
    # Both loops dispatch on type(), which __class__ cannot fake.
    md = Metadata(model_name="whisper-1", model_provider="openai")
    events = [
        _LyingSTT(timestamp=1.0, started_at=1.0, duration=0.5, audio_duration=2.0, metadata=md),
        _LyingLLM(timestamp=1.0, started_at=3.0, duration=0.5, prompt_tokens=10),
    ]
    assert_same(events)


def test_new_totals_vector_failing_leaves_nothing_added() -> None:
    # The second new_vector() call of a run's flush is the call totals' one: both loops
    # fetch (create) both vectors before adding to either, so when creating the totals
    # vector fails neither has the run (totals stay the sum of the parts).
    states = callback_raising_states("new_vector", 2)
    assert states[0] == states[1]


class _LyingInt(int):
    """An int subclass that `x.__class__ is int` would take for an int."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        return int

    def __float__(self) -> float:
        return 1000.0


def test_an_int_subclass_faking_its_class_is_rejected() -> None:
    # The checks compare type(), not __class__: an int subclass is not an int, however it
    # presents itself (else the C loop and `0.0 + d` could read different values).
    m = LLMMetrics(timestamp=1.0, started_at=1.0, duration=_LyingInt(2), prompt_tokens=3)
    assert validate.check(m) is not None
    assert validate.CHECKS[LLMMetrics](m) is not None
    assert validate._llm(m) is not None
    c = UsageCollector(prices=False)
    c.collect(m)
    assert c.rejected_events == 1 and c.get_summary().llm_duration == 0.0
