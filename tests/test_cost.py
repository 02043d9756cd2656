"""Cost of a call: genai-prices for LLMs, the bundled speech table, overrides, turns."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from callmeter.metrics import (
    CachedTokenDetails,
    InputTokenDetails,
    LLMMetrics,
    Metadata,
    OutputTokenDetails,
    RealtimeModelMetrics,
    STTMetrics,
    TTSMetrics,
    UsageCollector,
)
from callmeter.pricing.cost import format_usd
from callmeter.pricing.prices import Prices

T0 = 1_790_000_000.0


def llm(model: str, provider: str | None, speech_id: str | None = None, **kw) -> LLMMetrics:
    return LLMMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=1.0,
        speech_id=speech_id,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def stt(model: str, provider: str, audio: float, speech_id: str | None = None, **kw) -> STTMetrics:
    return STTMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        audio_duration=audio,
        speech_id=speech_id,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def tts(model: str, provider: str, chars: int, speech_id: str | None = None, **kw) -> TTSMetrics:
    return TTSMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        characters_count=chars,
        speech_id=speech_id,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def offline_prices(overrides=None) -> Prices:
    """Defaults without $CALLMETER_PRICES, so the developer's environment cannot leak in."""
    return Prices(overrides, env=False)


# (model, provider, requests as (prompt, cached, cache_write, completion))
LLM_CASES = [
    ("gpt-4o-mini", "openai", [(1200, 512, 0, 150), (3400, 3072, 0, 80)]),
    ("claude-sonnet-4-5", "anthropic", [(5000, 4000, 600, 300), (900, 0, 0, 40)]),
    ("gemini-2.0-flash", "google", [(2048, 1024, 0, 256), (100, 0, 0, 10)]),
    ("gpt-4o-mini-2024-07-18", "openai", [(1000, 0, 0, 1000)]),
]


@pytest.mark.parametrize(("model", "provider", "reqs"), LLM_CASES)
def test_llm_cost_equals_genai_prices_calc_price(model, provider, reqs):
    c = UsageCollector(prices=offline_prices())
    expected = Decimal(0)
    for prompt, cached, write, completion in reqs:
        c(
            llm(
                model,
                provider,
                prompt_tokens=prompt,
                prompt_cached_tokens=cached,
                cache_creation_tokens=write,
                completion_tokens=completion,
            )
        )
        usage = Usage(
            input_tokens=prompt,
            cache_read_tokens=cached,
            cache_write_tokens=write,
            output_tokens=completion,
        )
        expected += calc_price(usage, model, provider_id=provider).total_price
    s = c.get_summary()
    assert expected > 0
    assert s.by_model[f"{provider}/{model}"].cost == expected
    assert s.cost == expected
    assert s.cost_complete and not s.cost_is_lower_bound and s.unpriced == []
    assert "genai-prices" in s.by_model[f"{provider}/{model}"].price_source


def test_cached_tokens_are_billed_at_the_cached_rate():
    prices = offline_prices()
    mp = prices.lookup("gpt-4o-mini", "openai").genai[1].get_prices(_now())
    assert mp.cache_read_mtok < mp.input_mtok
    c = UsageCollector(prices=prices)
    c(llm("gpt-4o-mini", "openai", prompt_tokens=10_000, prompt_cached_tokens=8_000))
    # OpenAI's prompt_tokens include the cached ones: 2,000 at the input rate, 8,000 cached.
    expected = (2_000 * mp.input_mtok + 8_000 * mp.cache_read_mtok) / 1_000_000
    assert c.get_summary().cost == expected
    uncached = UsageCollector(prices=prices)
    uncached(llm("gpt-4o-mini", "openai", prompt_tokens=10_000))
    assert uncached.get_summary().cost == 10_000 * mp.input_mtok / 1_000_000 > expected


def _now():
    import datetime as dt

    return dt.datetime.now(tz=dt.UTC)


def test_dated_snapshot_resolves_like_genai_prices():
    prices = offline_prices()
    dated = prices.lookup("gpt-4o-mini-2024-07-18", "openai")
    ours = calc_price(Usage(input_tokens=1, output_tokens=1), "gpt-4o-mini-2024-07-18")
    assert dated.matched == f"{ours.provider.id}/{ours.model.id}" == "openai/gpt-4o-mini"


def test_tiered_prices_apply_per_request_not_to_the_call_total():
    # Two 150k-token requests: each is below the 200k tier, their sum is above it.
    c = UsageCollector(prices=offline_prices())
    for _ in range(2):
        c(llm("claude-sonnet-4-5", "anthropic", prompt_tokens=150_000, completion_tokens=1_000))
    one = calc_price(
        Usage(input_tokens=150_000, output_tokens=1_000),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    both = calc_price(
        Usage(input_tokens=300_000, output_tokens=2_000),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    assert both > 2 * one  # the snapshot really has a tier here
    assert c.get_summary().cost == 2 * one


@pytest.mark.parametrize(
    ("model", "provider", "reqs"),
    [
        # 8 x 30k input tokens: each below the 200k tier, together above it
        ("claude-sonnet-4-5", "anthropic", [(30_000, 0, 100)] * 8),
        # gemini-1.5-pro's tier starts at 128k; mixed sizes and cached tokens
        ("gemini-1.5-pro", "google", [(31_000, 20_000, 50), (12_000, 0, 700)] * 5),
    ],
)
def test_many_small_requests_are_priced_per_request_not_by_their_sum(model, provider, reqs):
    c = UsageCollector(prices=offline_prices())
    expected = Decimal(0)
    for prompt, cached, completion in reqs:
        c(
            llm(
                model,
                provider,
                speech_id="t1",
                prompt_tokens=prompt,
                prompt_cached_tokens=cached,
                completion_tokens=completion,
            )
        )
        usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
        expected += calc_price(usage, model, provider_id=provider).total_price
    summed = calc_price(
        Usage(
            input_tokens=sum(r[0] for r in reqs),
            cache_read_tokens=sum(r[1] for r in reqs),
            output_tokens=sum(r[2] for r in reqs),
        ),
        model,
        provider_id=provider,
    ).total_price
    assert summed > expected  # the sum really crosses a tier
    s = c.get_summary()
    assert s.cost == expected
    assert s.by_model[f"{provider}/{model}"].cost == expected
    assert s.cost_by_turn == {"t1": expected}
    assert s.cost_complete


def test_large_requests_beyond_the_cap_are_priced_together_not_at_the_base_rate(monkeypatch):
    """Past MAX_LARGE_REQUESTS, large requests are added up with each other (an upper bound
    on their tier), never folded into the small requests priced at base-tier rates."""
    from callmeter.pricing import ledger

    monkeypatch.setattr(ledger, "MAX_LARGE_REQUESTS", 1)
    model, provider = "claude-sonnet-4-5", "anthropic"
    c = UsageCollector(prices=offline_prices())
    for _ in range(3):
        c(llm(model, provider, speech_id="t", prompt_tokens=150_000, completion_tokens=1_000))
    c(llm(model, provider, speech_id="t", prompt_tokens=1_000, completion_tokens=10))

    def price(i: int, o: int) -> Decimal:
        usage = Usage(input_tokens=i, output_tokens=o)
        return calc_price(usage, model, provider_id=provider).total_price

    expected = price(150_000, 1_000) + price(300_000, 2_000) + price(1_000, 10)
    assert expected > 3 * price(150_000, 1_000) + price(1_000, 10)
    s = c.get_summary()
    assert s.cost == expected
    assert s.cost_by_turn == {"t": expected}


def test_realtime_audio_tokens_equal_genai_prices():
    m = RealtimeModelMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=1.0,
        input_tokens=3_000,
        output_tokens=900,
        input_token_details=InputTokenDetails(
            audio_tokens=2_000,
            text_tokens=1_000,
            cached_tokens=1_200,
            cached_tokens_details=CachedTokenDetails(audio_tokens=800, text_tokens=400),
        ),
        output_token_details=OutputTokenDetails(audio_tokens=700, text_tokens=200),
        metadata=Metadata(model_name="gpt-4o-realtime-preview", model_provider="openai"),
    )
    c = UsageCollector(prices=offline_prices())
    c(m)
    expected = calc_price(
        Usage(
            input_tokens=3_000,
            cache_read_tokens=1_200,
            input_audio_tokens=2_000,
            cache_audio_read_tokens=800,
            output_tokens=900,
            output_audio_tokens=700,
        ),
        "gpt-4o-realtime-preview",
        provider_id="openai",
    ).total_price
    assert c.get_summary().cost == expected > 0


def test_stt_per_minute_and_tts_per_character_from_the_bundled_table():
    prices = offline_prices()
    nova = prices.lookup("nova-3", "deepgram")
    tts1 = prices.lookup("tts-1", "openai")
    assert nova.source.kind == tts1.source.kind == "bundled"
    c = UsageCollector(prices=prices)
    c(stt("nova-3", "deepgram", 45.0))
    c(stt("nova-3", "deepgram", 45.0))
    c(tts("tts-1", "openai", 1234))
    s = c.get_summary()
    assert s.by_model["deepgram/nova-3"].cost == nova.entry.audio_minute * Decimal("1.5")
    assert s.by_model["openai/tts-1"].cost == tts1.entry.mchars * 1234 / 1_000_000
    assert s.cost == s.by_model["deepgram/nova-3"].cost + s.by_model["openai/tts-1"].cost
    assert "deepgram.com" in s.by_model["deepgram/nova-3"].price_source


def test_speech_arithmetic_with_rates_given_in_code():
    prices = offline_prices(
        {
            "acme/ears": {"audio_minute": "0.01"},
            "acme/voice": {"mchars": "20", "request": "0.001"},
        }
    )
    c = UsageCollector(prices=prices)
    c(stt("ears", "acme", 90.0))
    c(stt("ears", "acme", 0.5))
    c(tts("voice", "acme", 500))
    c(tts("voice", "acme", 250))
    s = c.get_summary()
    # 90.5 s at $0.01/min = $0.0150833...: a non-terminating decimal, rounded to 1e-12 USD
    assert s.by_model["acme/ears"].cost == Decimal("0.015083333333")
    assert s.by_model["acme/voice"].cost == Decimal("0.015") + Decimal("0.002")


def test_token_billed_speech_models():
    prices = offline_prices()
    c = UsageCollector(prices=prices)
    c(tts("gpt-4o-mini-tts", "openai", 300, input_tokens=80, output_tokens=2_000))
    c(
        stt(
            "gpt-4o-transcribe",
            "openai",
            12.0,
            input_tokens=150,
            input_audio_tokens=120,
            output_tokens=40,
        )
    )
    s = c.get_summary()
    e = prices.lookup("gpt-4o-mini-tts", "openai").entry
    assert (
        s.by_model["openai/gpt-4o-mini-tts"].cost
        == (80 * e.input_mtok + 2_000 * e.output_audio_mtok) / 1_000_000
    )
    t = prices.lookup("gpt-4o-transcribe", "openai").entry
    assert (
        s.by_model["openai/gpt-4o-transcribe"].cost
        == (30 * t.input_mtok + 120 * t.input_audio_mtok + 40 * t.output_mtok) / 1_000_000
    )
    # Our table agrees with genai-prices for the same usage.
    assert (
        s.by_model["openai/gpt-4o-transcribe"].cost
        == calc_price(
            Usage(input_tokens=150, input_audio_tokens=120, output_tokens=40),
            "gpt-4o-transcribe",
            provider_id="openai",
        ).total_price
    )


def test_token_billed_model_without_token_usage_is_unpriced_not_zero(caplog):
    c = UsageCollector(prices=offline_prices())
    c(stt("gpt-4o-mini-transcribe", "openai", 30.0))  # audio only: tokens unknown
    s = c.get_summary()
    assert s.unpriced == ["openai/gpt-4o-mini-transcribe"]
    assert s.by_model["openai/gpt-4o-mini-transcribe"].cost is None
    assert not s.cost_complete


def test_speech_request_without_a_billed_quantity_makes_the_total_a_lower_bound(caplog):
    """A TTS price per audio minute cannot price a request that reports only characters:
    that request must not be billed as $0 just because others of the model are priced."""
    caplog.set_level(logging.WARNING, logger="callmeter.pricing")
    name = f"voice-{uuid.uuid4().hex[:8]}"
    prices = offline_prices({f"acme/{name}": {"kind": "tts", "audio_minute": "0.30"}})
    md = Metadata(model_name=name, model_provider="acme")

    def request(audio: float, chars: int, sid: str) -> TTSMetrics:
        return TTSMetrics(
            timestamp=T0 + 1,
            started_at=T0,
            duration=1.0,
            audio_duration=audio,
            characters_count=chars,
            speech_id=sid,
            metadata=md,
        )

    c = UsageCollector(prices=prices)
    c(request(60.0, 900, "a"))
    c(request(0.0, 0, "a"))  # nothing synthesized: nothing to bill, not unknown
    s = c.get_summary()
    assert s.cost == Decimal("0.30") and s.cost_complete and s.unpriced == []
    assert not any(name in r.getMessage() for r in caplog.records)

    c(request(0.0, 900, "b"))  # audio length not reported
    c(request(0.0, 900, "b"))
    s = c.get_summary()
    assert s.cost == Decimal("0.30")  # what is known ...
    assert not s.cost_complete and s.cost_is_lower_bound  # ... is a lower bound
    assert s.unpriced == [f"acme/{name}"]
    assert s.by_model[f"acme/{name}"].cost == Decimal("0.30")
    assert s.cost_by_turn == {"a": Decimal("0.30"), "b": Decimal(0)}
    assert s.unbilled_requests == {f"acme/{name}": 2}
    assert s.partial_turns == ["b"]
    warnings = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1 and "2 request(s)" in warnings[0] and "lower bound" in warnings[0]

    # a price per character bills the same requests: complete again
    both = offline_prices({f"acme/{name}": {"audio_minute": "0.30", "mchars": "30"}})
    c = UsageCollector(prices=both)
    c(request(60.0, 900, "a"))
    c(request(0.0, 900, "b"))
    s = c.get_summary()
    assert s.cost_complete and s.unpriced == []
    assert s.cost == Decimal("0.30") + 2 * Decimal("0.027")


def test_override_replaces_bundled_and_genai_prices():
    prices = offline_prices(
        {
            "deepgram": {"nova-3": {"audio_minute": 0.004, "source": "contract 2026-10"}},
            "openai/gpt-4o-mini": {"input_mtok": "0.10", "output_mtok": "0.40"},
        }
    )
    c = UsageCollector(prices=prices)
    c(stt("nova-3", "deepgram", 60.0))
    c(llm("gpt-4o-mini", "openai", prompt_tokens=1_000_000, completion_tokens=500_000))
    s = c.get_summary()
    assert s.by_model["deepgram/nova-3"].cost == Decimal("0.004")
    # No cache_read_mtok in the override: cached tokens would bill at input_mtok.
    assert s.by_model["openai/gpt-4o-mini"].cost == Decimal("0.30")
    assert prices.lookup("nova-3", "deepgram").source.kind == "override"
    assert "contract 2026-10" in s.by_model["deepgram/nova-3"].price_source


def test_override_file_and_env_var(tmp_path, monkeypatch):
    f = tmp_path / "prices.toml"
    f.write_text('[deepgram."nova-3"]\naudio_minute = 0.002\n')
    c = UsageCollector(prices=str(f))
    c(stt("nova-3", "deepgram", 60.0))
    assert c.get_summary().cost == Decimal("0.002")

    monkeypatch.setenv("CALLMETER_PRICES", str(f))
    c = UsageCollector()  # default pricing picks the env var up
    c(stt("nova-3", "deepgram", 30.0))
    s = c.get_summary()
    assert s.cost == Decimal("0.001")
    assert str(f) in s.by_model["deepgram/nova-3"].price_source
    monkeypatch.delenv("CALLMETER_PRICES")
    c = UsageCollector()
    c(stt("nova-3", "deepgram", 30.0))
    assert c.get_summary().by_model["deepgram/nova-3"].price_source.startswith("callmeter")


def test_unknown_model_is_unpriced_with_one_warning(caplog):
    model = f"mystery-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.WARNING, logger="callmeter.pricing")
    for _ in range(2):
        c = UsageCollector(prices=offline_prices())
        c(llm("gpt-4o-mini", "openai", prompt_tokens=1000, completion_tokens=10))
        c(llm(model, "nowhere", prompt_tokens=1000, completion_tokens=10))
        s = c.get_summary()
        s = c.get_summary()
        assert s.unpriced == [f"nowhere/{model}"]
        assert s.by_model[f"nowhere/{model}"].cost is None
        assert s.cost == s.by_model["openai/gpt-4o-mini"].cost > 0
        assert s.cost_is_lower_bound
        assert format_usd(s.cost, lower_bound=s.cost_is_lower_bound).startswith("≥ $")
    warnings = [r for r in caplog.records if model in r.getMessage()]
    assert len(warnings) == 1
    assert "lower bound" in warnings[0].getMessage()


def test_unreported_usage_makes_the_total_a_lower_bound():
    c = UsageCollector(prices=offline_prices())
    c(llm("gpt-4o-mini", "openai", prompt_tokens=1000, completion_tokens=10))
    c(llm("gpt-4o-mini", "openai", usage_reported=False))
    s = c.get_summary()
    assert s.unpriced == [] and s.cost > 0 and not s.cost_complete


def test_cost_per_turn_bounded_to_the_most_recent_turns():
    prices = offline_prices({"acme/ears": {"audio_minute": "0.06"}})
    c = UsageCollector(prices=prices, max_cost_turns=2)
    for i in range(3):
        c(stt("ears", "acme", 10.0 * (i + 1), speech_id=f"turn-{i}"))
    s = c.get_summary()
    assert list(s.cost_by_turn) == ["turn-1", "turn-2"]
    assert s.cost_by_turn == {"turn-1": Decimal("0.02"), "turn-2": Decimal("0.03")}
    assert s.cost == Decimal("0.06")  # the call total keeps every turn


def test_turn_costs_add_up_to_the_call():
    c = UsageCollector(prices=offline_prices())
    c(stt("nova-3", "deepgram", 3.2, speech_id="a"))
    c(llm("gpt-4o-mini", "openai", speech_id="a", prompt_tokens=900, completion_tokens=30))
    c(tts("tts-1", "openai", 140, speech_id="a"))
    c(stt("nova-3", "deepgram", 2.1, speech_id="b"))
    c(llm("gpt-4o-mini", "openai", speech_id="b", prompt_tokens=1300, prompt_cached_tokens=768))
    s = c.get_summary()
    assert set(s.cost_by_turn) == {"a", "b"}
    # the call is priced as the sum of its turns: equal to the last digit
    assert sum(s.cost_by_turn.values()) == s.cost and s.cost_unattributed == 0
    assert s.cost > 0


def test_pricing_disabled_says_cost_unknown():
    c = UsageCollector(prices=False)
    c(llm("gpt-4o-mini", "openai", prompt_tokens=1000))
    s = c.get_summary()
    assert s.cost == 0 and not s.cost_complete


def test_summary_to_dict_is_json_and_exact():
    c = UsageCollector(prices=offline_prices({"acme/ears": {"audio_minute": "0.0123456789"}}))
    c(stt("ears", "acme", 60.0, speech_id="t"))
    d = json.loads(json.dumps(c.get_summary().to_dict()))
    assert d["cost"] == "0.0123456789"
    assert d["by_model"]["acme/ears"]["cost"] == "0.0123456789"
    assert d["cost_by_turn"] == {"t": "0.0123456789"}
    assert format_usd(Decimal("0.0123456789")) == "$0.0123"


def test_import_is_light_and_pricing_works_offline(tmp_path):
    """No network: sockets are disabled before callmeter is imported."""
    code = textwrap.dedent(
        """
        import socket, sys
        def _no_net(*a, **k):
            raise OSError("network disabled in this test")
        socket.socket.connect = _no_net
        socket.create_connection = _no_net
        import callmeter
        from callmeter.metrics import LLMMetrics, Metadata, STTMetrics, UsageCollector
        assert "genai_prices" not in sys.modules, "import callmeter must not load genai-prices"
        c = UsageCollector()
        c(LLMMetrics(timestamp=2.0, started_at=1.0, duration=1.0, prompt_tokens=1000,
                     completion_tokens=100,
                     metadata=Metadata(model_name="gpt-4o-mini", model_provider="openai")))
        assert "genai_prices" not in sys.modules, "collecting must not load genai-prices"
        c(STTMetrics(timestamp=2.0, started_at=1.0, duration=1.0, audio_duration=60.0,
                     metadata=Metadata(model_name="nova-3", model_provider="deepgram")))
        s = c.get_summary()
        assert s.cost_complete and s.cost > 0, s
        print(s.cost)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "CALLMETER_PRICES"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert Decimal(out.stdout.strip()) > 0


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4.1", "openai"),
        ("gpt-4o-mini", "openai"),
        ("gemini-2.0-flash", "google"),
        ("claude-3-5-haiku-latest", "anthropic"),
        ("llama-3.3-70b-versatile", "groq"),
        ("gpt-4o-realtime-preview", "openai"),
    ],
)
def test_flat_rate_fast_path_matches_genai_prices(model, provider):
    """Flat genai-prices rates are applied by callmeter's own arithmetic (fast for many
    turns); both paths must give genai-prices' own answer."""
    import dataclasses

    from callmeter.pricing.cost import Amounts, price_amounts

    r = offline_prices().lookup(model, provider)
    slow = dataclasses.replace(r, linear=None)
    for a in (
        Amounts(1, 5_000, 1_024, 0, 700),
        Amounts(3, 12_345, 0, 0, 999, input_audio_tokens=4_000, output_audio_tokens=500),
        Amounts(2, 9_000, 3_000, 0, 10, input_audio_tokens=2_000, cache_audio_read_tokens=1_000),
    ):
        usage = {
            "input_tokens": a.input_tokens,
            "cache_read_tokens": a.cache_read_tokens,
            "output_tokens": a.output_tokens,
            "input_audio_tokens": a.input_audio_tokens,
            "output_audio_tokens": a.output_audio_tokens,
            "cache_audio_read_tokens": a.cache_audio_read_tokens,
        }
        expected = calc_price(
            Usage(**{k: v for k, v in usage.items() if v}), model, provider_id=provider
        ).total_price
        assert price_amounts(slow, a, "llm") == expected
        assert price_amounts(r, a, "llm") == expected


async def test_agent_session_usage_is_priced_per_turn(monkeypatch):
    """The session's own summary is priced with the defaults, per turn via speech_id."""
    from callmeter import AgentSession

    monkeypatch.delenv("CALLMETER_PRICES", raising=False)
    session = AgentSession()
    async with session:
        for prompt in (1200, 1500):
            async with session.turn():
                with session.stt_request(model="nova-3", provider="deepgram") as req:
                    req.set_usage(audio_duration=2.5)
                with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                    gen.set_usage(prompt_tokens=prompt, completion_tokens=40)
                with session.tts_request(model="tts-1", provider="openai") as req:
                    req.set_usage(characters_count=120)
    s = session.usage
    assert s.cost_complete and s.unpriced == []
    assert len(s.cost_by_turn) == 2
    llm = sum(
        calc_price(
            Usage(input_tokens=p, output_tokens=40), "gpt-4o-mini", provider_id="openai"
        ).total_price
        for p in (1200, 1500)
    )
    assert s.by_model["openai/gpt-4o-mini"].cost == llm
    assert abs(sum(s.cost_by_turn.values()) - s.cost) <= Decimal("1e-11")
    assert s.cost == llm + s.by_model["deepgram/nova-3"].cost + s.by_model["openai/tts-1"].cost


def test_inconsistent_token_counts_are_unpriced_not_mispriced(caplog):
    """Anthropic-style usage (input excluding cache reads) must not be billed silently."""
    caplog.set_level(logging.WARNING, logger="callmeter.pricing")
    model = "gpt-4.1"
    c = UsageCollector(prices=offline_prices())
    c(llm(model, "openai", prompt_tokens=100, prompt_cached_tokens=5_000, completion_tokens=5))
    s = c.get_summary()
    assert s.unpriced == [f"openai/{model}"] and not s.cost_complete
    assert any("prompt_tokens must include cached" in r.getMessage() for r in caplog.records)


def test_two_models_of_one_kind_are_priced_separately():
    """A call that switches STT (or TTS) vendor mid-call bills each at its own rate."""
    prices = offline_prices({"acme/a": {"audio_minute": "0.01"}, "acme/b": {"audio_minute": "1"}})
    c = UsageCollector(prices=prices)
    c(stt("a", "acme", 60.0))
    c(stt("b", "acme", 60.0))
    c(tts("tts-1", "openai", 1000))
    c(tts("tts-1-hd", "openai", 1000))
    s = c.get_summary()
    assert s.by_model["acme/a"].cost == Decimal("0.01")
    assert s.by_model["acme/b"].cost == Decimal("1")
    assert s.by_model["openai/tts-1"].cost < s.by_model["openai/tts-1-hd"].cost


def test_genai_prices_tiers_start_above_the_large_request_threshold():
    """Requests below LARGE_REQUEST_TOKENS are priced in aggregate; that is exact only if
    no tier of the installed snapshot starts below it."""
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import ModelPrice, TieredPrices

    from callmeter.pricing.cost import LARGE_REQUEST_TOKENS

    starts = set()
    for provider in get_snapshot().providers:
        for model in provider.models:
            prices = model.prices if isinstance(model.prices, list) else [model.prices]
            for p in prices:
                mp = p if isinstance(p, ModelPrice) else p.prices
                for v in vars(mp).values():
                    if isinstance(v, TieredPrices):
                        starts.update(t.start for t in v.tiers)
    assert starts and min(starts) >= LARGE_REQUEST_TOKENS
