"""Fuzz: thousands of malformed events through emit_metrics and a UsageCollector.

No exception escapes, every event is either counted or rejected, and summaries stay
finite and non-negative.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callmeter import AgentSession, metrics
from callmeter.model import validate

T0 = 1_790_000_000.0


class Weird:
    """An object whose comparisons, hash and repr all raise."""

    def __eq__(self, other):
        raise RuntimeError("eq")

    def __lt__(self, other):
        raise RuntimeError("lt")

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self):
        raise RuntimeError("hash")

    def __repr__(self):
        raise RuntimeError("repr")


def _deep(n: int) -> list:
    out: list = []
    for _ in range(n):
        out = [out]
    return out


WEIRD_VALUES = [
    None, math.nan, math.inf, -math.inf, -1, -1.0, -0.5, 1.5, 0, 0.0, 1, 3, 2**70, -(2**70),
    1e300, True, False, "", "x", "\udcff", b"\xff\xfe", Decimal("1.5"), Decimal("NaN"),
    Fraction(1, 3), [1], {"a": 1}, (1,), set(), object(), Weird(), _deep(200),
    metrics.Metadata(model_name=1), metrics.Metadata(model_name="m", model_provider="p"),
]  # fmt: skip

METRIC_TYPES = [
    metrics.LLMMetrics,
    metrics.ToolMetrics,
    metrics.STTMetrics,
    metrics.TTSMetrics,
    metrics.VADMetrics,
    metrics.EOUMetrics,
    metrics.RealtimeModelMetrics,
    metrics.TurnMetrics,
]

GOOD = {
    "timestamp": T0 + 1,
    "started_at": T0,
    "duration": 0.5,
    "end_of_utterance_delay": 0.2,
    "tool_name": "t",
}


def _event(cls, overrides: dict):
    kw = {k: v for k, v in GOOD.items() if k in cls.__struct_fields__}
    m = cls(**kw)
    for name, value in overrides.items():
        if name in cls.__struct_fields__:
            setattr(m, name, value)
    return m


def _assert_sane(u: metrics.UsageSummary) -> None:
    for name in u.__dataclass_fields__:
        value = getattr(u, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        assert type(value) in (int, float), (name, value)
        assert math.isfinite(value) and value >= 0, (name, value)
    for mu in u.by_model.values():
        for name in ("requests", "prompt_tokens", "completion_tokens", "duration",
                     "audio_duration", "characters_count"):  # fmt: skip
            value = getattr(mu, name)
            assert math.isfinite(value) and value >= 0, (name, value)
    for tu in u.by_tool.values():
        assert math.isfinite(tu.total_duration) and tu.total_duration >= 0
    assert u.cost.is_finite() and u.cost >= 0


def _push(events: list) -> None:
    session = AgentSession()
    usage = metrics.UsageCollector(max_metrics=100)
    direct = metrics.UsageCollector(keep_metrics=False)
    session.on("metrics_collected", lambda ev: usage.collect(ev.metrics))
    with session, session.turn():
        for m in events:
            session.emit_metrics(m)
            direct.collect(m)
    valid = sum(validate.check(m) is None for m in events)
    assert session.rejected_events == len(events) - valid
    assert direct.rejected_events == len(events) - valid
    for u in (session.usage, usage.get_summary(), direct.get_summary()):
        _assert_sane(u)
    session.latency  # noqa: B018  (must not raise)


def test_seeded_generator_thousands_of_malformed_events():
    rng = random.Random(8)
    fields = sorted({f for cls in METRIC_TYPES for f in cls.__struct_fields__})
    events: list = [None, 0, "x", object(), Weird(), metrics.Metadata()]
    for _ in range(4000):
        cls = rng.choice(METRIC_TYPES)
        overrides = {rng.choice(fields): rng.choice(WEIRD_VALUES) for _ in range(rng.randint(0, 3))}
        events.append(_event(cls, overrides))
    _push(events)
    assert sum(validate.check(m) is None for m in events) > 100  # some were good


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.sampled_from([v for v in WEIRD_VALUES if not isinstance(v, Weird)]),
)


@st.composite
def events(draw):
    cls = draw(st.sampled_from(METRIC_TYPES))
    names = [n for n in cls.__struct_fields__ if n not in ("breakdown",)]
    overrides = draw(st.dictionaries(st.sampled_from(names), numbers, max_size=4))
    return _event(cls, overrides)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=30))
def test_hypothesis_events_never_raise_and_totals_stay_sane(batch):
    _push(batch)
