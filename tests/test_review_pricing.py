"""Adversarial tests of pricing: turn eviction at its bounds, bad call durations, duplicate
call charges, the caller's decimal context, malformed events, and the call total as the sum
of its parts under long random event streams."""

from __future__ import annotations

import decimal
import logging
import random
from decimal import Decimal

import pytest

from callmeter.metrics import LLMMetrics, Metadata, STTMetrics, TTSMetrics, UsageCollector
from callmeter.model.events import CloseEvent
from callmeter.pricing.prices import Prices

T0 = 1_790_000_000.0


def prices(overrides=None, **kw) -> Prices:
    return Prices(overrides, env=False, **kw)


def stt(audio, sid=None, model="nova-3", provider="deepgram", **kw) -> STTMetrics:
    return STTMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        audio_duration=audio,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def tts(chars, sid=None, model="tts-1", provider="openai", **kw) -> TTSMetrics:
    return TTSMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        characters_count=chars,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def llm(sid=None, model="gpt-4o-mini", provider="openai", **kw) -> LLMMetrics:
    return LLMMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=1.0,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def close(duration) -> CloseEvent:
    return CloseEvent(session_id="s", seq=1, created_at=T0, duration=duration)


def assert_parts_add_up(s) -> None:
    assert s.cost == sum(s.cost_by_turn.values()) + s.cost_unattributed + s.cost_dropped_turns
    assert s.cost == sum(s.cost_by_kind.values())
    assert s.cost == sum(mu.cost for mu in s.by_model.values() if mu.cost is not None)


# ------------------------------------------------------------------ turn eviction


def test_max_cost_turns_zero_keeps_the_cost_of_every_turn():
    """max_cost_turns=0 keeps no turn listed, but their usage is still in the call."""
    c = UsageCollector(prices=prices(), max_cost_turns=0)
    for i in range(3):
        c(stt(60.0, sid=f"t{i}"))
    s = c.get_summary()
    assert s.cost_by_turn == {} and s.dropped_turns == 3
    assert s.cost == s.cost_dropped_turns == Decimal("0.0144")  # 3 min at $0.0048
    assert s.by_model["deepgram/nova-3"].billed_audio_duration == 180.0
    assert_parts_add_up(s)


# ------------------------------------------------------------------ call duration


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -100.0, None, "60"])
def test_a_malformed_close_event_does_not_break_or_negate_the_call_charges(bad, caplog):
    caplog.set_level(logging.ERROR, logger="callmeter.pricing")
    c = UsageCollector(prices=prices(), call_charges=["twilio/voice-inbound"])
    c(close(bad))
    s = c.get_summary()  # must not raise
    assert s.cost == 0 and not s.cost_complete and s.call_duration is None
    assert any("call duration unknown" in n for n in s.cost_notes)
    c(close(61.0))  # a good close event still counts
    s = c.get_summary()
    assert s.cost == Decimal("0.017") and s.cost_complete


# ------------------------------------------------------------------ call charges


def test_the_same_call_charge_named_twice_is_charged_once(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[callmeter]\ncall_charges = ["Twilio/Voice-Inbound"]\n')
    c = UsageCollector(
        prices=Prices(f, env=False),
        call_charges=["twilio/voice-inbound", " twilio/voice-inbound", "TWILIO/voice-inbound"],
    )
    c.set_call_duration(60.0)
    s = c.get_summary()
    assert s.cost == s.cost_by_kind["call"] == Decimal("0.0085")
    assert [k for k, mu in s.by_model.items() if mu.kind == "call"] == ["Twilio/Voice-Inbound"]
    assert_parts_add_up(s)


# ------------------------------------------------------------------ decimal context


def test_costs_do_not_depend_on_the_callers_decimal_context():
    def summary():
        c = UsageCollector(prices=prices(), call_charges=["twilio/voice-inbound"])
        c(stt(3.2, sid="t1"))
        c(stt(7.7, sid="t2"))
        c(llm(sid="t2", prompt_tokens=1234, completion_tokens=56))
        c.set_call_duration(95.0)
        return c.get_summary()

    expected = summary()
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_FLOOR
        ctx.traps[decimal.Inexact] = True
        got = summary()
    assert got.cost == expected.cost and got.cost_by_turn == expected.cost_by_turn
    assert got.cost_complete and expected.cost_complete


# ------------------------------------------------------------------ malformed events


@pytest.mark.parametrize("audio", [float("nan"), float("inf"), -1.0])
def test_a_speech_event_left_out_makes_the_total_a_lower_bound(audio, caplog):
    c = UsageCollector(prices=prices())
    c(stt(60.0, sid="t1"))
    c(stt(audio, sid="t1"))
    s = c.get_summary()
    assert s.cost == Decimal("0.0048")  # the good request
    assert not s.cost_complete and s.cost_is_lower_bound
    assert any("left out" in n for n in s.cost_notes)


def test_a_request_that_breaks_the_token_convention_is_unpriced_whatever_else_is_in_its_turn():
    """More cached tokens than prompt tokens in one request must not be hidden by another
    request of the same turn (or by how many turns are kept)."""
    model = "gpt-4.1"
    for max_turns in (0, 1, 1000):
        c = UsageCollector(prices=prices(), max_cost_turns=max_turns)
        c(llm("t1", model, prompt_tokens=10_000, completion_tokens=5))
        c(llm("t1", model, prompt_tokens=100, prompt_cached_tokens=5_000, completion_tokens=5))
        s = c.get_summary()
        assert s.unpriced == [f"openai/{model}"] and not s.cost_complete, max_turns


# ------------------------------------------------------------------ random streams

MODELS = [
    ("stt", "deepgram", "nova-3"),
    ("stt", "groq", "whisper-large-v3"),
    ("stt", "aws", "transcribe"),
    ("tts", "Deepgram", "aura-2-thalia-en"),
    ("tts", "cartesia", "sonic-3"),
    ("tts", "acme", "unknown-voice"),
    ("llm", "openai", "gpt-4o-mini"),
    ("llm", "x", "nope"),
]


def random_events(rng: random.Random, n: int) -> list:
    out = []
    for i in range(n):
        kind, prov, model = rng.choice(MODELS)
        r = rng.random()
        sid = None if r < 0.1 else f"t{rng.randrange(40)}" if r < 0.3 else f"t{i // 7}"
        if kind == "stt":
            audio = rng.choice([0.0, 0.5, 3.3, 15.0, 61.7, rng.random() * 100])
            out.append(stt(audio, sid, model, prov))
        elif kind == "tts":
            out.append(tts(rng.randrange(0, 500), sid, model, prov))
        else:
            p = rng.choice([10, 1000, 40_000])
            out.append(
                llm(
                    sid,
                    model,
                    prov,
                    prompt_tokens=p,
                    prompt_cached_tokens=rng.randrange(0, p + 1),
                    completion_tokens=rng.randrange(0, 2000),
                    usage_reported=rng.random() > 0.05,
                )
            )
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_add_up_and_agree_with_an_unbounded_collector(seed):
    rng = random.Random(seed)
    events = random_events(rng, 3000)
    p = prices()
    bounded = UsageCollector(
        prices=p, max_cost_turns=[0, 1, 3, 50][seed % 4], call_charges=["twilio/voice-inbound"]
    )
    full = UsageCollector(prices=p, max_cost_turns=100_000, call_charges=["twilio/voice-inbound"])
    for i, e in enumerate(events):
        bounded(e)
        full(e)
        if i % 997 == 0:
            assert_parts_add_up(bounded.get_summary())
    bounded.set_call_duration(123.4)
    full.set_call_duration(123.4)
    b, f = bounded.get_summary(), full.get_summary()
    assert_parts_add_up(b)
    assert_parts_add_up(f)
    # per-minute amounts are rounded per part (docs/cost.md), so parts may differ by pico-USD
    assert abs(b.cost - f.cost) < Decimal("1e-9")
    assert b.cost_complete == f.cost_complete and sorted(b.unpriced) == sorted(f.unpriced)
    assert b.stt_audio_duration == pytest.approx(f.stt_audio_duration)
    assert b.llm_prompt_tokens == f.llm_prompt_tokens


# ------------------------------------------------------------------ threads


def _feed_from_threads(target, threads: int = 8, per_thread: int = 5000) -> None:
    import sys
    import threading

    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            target(stt(1.0, sid=f"t{i}-{j // 50}"))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(old)


def test_eight_threads_feeding_one_collector_keep_exact_totals():
    c = UsageCollector(prices=prices(), keep_metrics=False, max_cost_turns=50)
    _feed_from_threads(c.collect)
    s = c.get_summary()
    assert s.stt_requests == 40_000 and s.stt_audio_duration == 40_000.0
    assert s.cost == Decimal("3.2")  # 40,000 s at $0.0048 per minute
    assert_parts_add_up(s)


def test_eight_threads_emitting_into_one_session_keep_exact_totals():
    from callmeter import AgentSession

    session = AgentSession(prices=prices())
    _feed_from_threads(session.emit_metrics)
    s = session.usage
    assert s.stt_requests == 40_000 and s.stt_audio_duration == 40_000.0
    assert s.cost == Decimal("3.2")
    assert_parts_add_up(s)


# ------------------------------------------------------------------ price data and arguments


def test_plan_rates_given_as_floats_in_a_dict_are_accepted_like_the_entry_rates():
    p = prices(
        {"acme/voice": {"kind": "tts", "mchars": 25.5, "plans": {"pro": {"mchars": 20.5}}}},
        plans={"acme": "pro"},
    )
    assert p.lookup("voice", "acme").entry.mchars == Decimal("20.5")


def test_a_bad_billing_rule_names_seconds_not_usd():
    from callmeter.pricing import PriceFileError

    with pytest.raises(PriceFileError, match="non-negative number of seconds"):
        prices({"acme/x": {"audio_minute": 1, "min_seconds": -1}})


@pytest.mark.parametrize("bad", [123, object(), b"p.toml", 1.5])
def test_prices_of_a_wrong_type_raise_a_typed_error(bad):
    from callmeter.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="price overrides must be"):
        UsageCollector(prices=bad)


def test_a_call_charge_whose_rate_overflows_is_unpriced_not_raised():
    c = UsageCollector(
        prices=prices({"acme/hosting": {"kind": "call", "call_minute": "1e999999"}}),
        call_charges=["acme/hosting"],
    )
    c.set_call_duration(60.0)
    s = c.get_summary()  # must not raise
    assert s.cost == 0 and not s.cost_complete and "acme/hosting" in s.unpriced


def test_many_distinct_model_names_keep_memory_bounded():
    from callmeter.pricing import cost
    from callmeter.pricing.prices import MAX_CACHED_NAMES

    p = prices(genai=False)
    for i in range(MAX_CACHED_NAMES + 100):
        c = UsageCollector(prices=p)
        c(stt(1.0, model=f"random-model-{i}", provider="acme"))
        c.get_summary()
    assert len(p._cache) <= MAX_CACHED_NAMES and len(p._table_cache) <= MAX_CACHED_NAMES
    assert len(cost._warned) <= cost._MAX_WARNED
    assert p.lookup("nova-3", "deepgram") is not None  # lookups still answer
