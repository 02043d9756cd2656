"""Billing rules of speech and calls: per-request minimums and increments, audio tokens,
call-level charges, plans, name normalisation, and a call total that is the sum of its parts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import tomllib
from decimal import Decimal
from importlib import resources

import pytest
from genai_prices import Usage, calc_price
from typer.testing import CliRunner

from callmeter import AgentSession
from callmeter.cli import app
from callmeter.errors import InvalidArgumentError
from callmeter.metrics import LLMMetrics, Metadata, STTMetrics, TTSMetrics, UsageCollector
from callmeter.model.events import CloseEvent
from callmeter.pricing.cost import to_money
from callmeter.pricing.names import bundled_names
from callmeter.pricing.prices import PriceFileError, Prices, bundled_entries

T0 = 1_790_000_000.0


def stt(model, provider, audio, sid=None, **kw) -> STTMetrics:
    return STTMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        audio_duration=audio,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def tts(model, provider, chars, sid=None, **kw) -> TTSMetrics:
    return TTSMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.5,
        characters_count=chars,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def llm(model, provider, sid=None, **kw) -> LLMMetrics:
    return LLMMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=1.0,
        speech_id=sid,
        metadata=Metadata(model_name=model, model_provider=provider),
        **kw,
    )


def prices(overrides=None, **kw) -> Prices:
    return Prices(overrides, env=False, **kw)


def assert_parts_add_up(s) -> None:
    """The call total is exactly the sum of its turns, the unattributed part and the
    dropped turns; and of its kinds; and of its priced models."""
    assert s.cost == sum(s.cost_by_turn.values()) + s.cost_unattributed + s.cost_dropped_turns
    assert s.cost == sum(s.cost_by_kind.values())
    assert s.cost == sum(mu.cost for mu in s.by_model.values() if mu.cost is not None)


# ------------------------------------------------------------------ per-request rules


def test_per_request_minimum_applies_to_each_request_and_the_call_agrees_with_its_turns():
    """Groq whisper bills at least 10 s per request: ten 2-second requests bill 100 s."""
    c = UsageCollector(prices=prices())
    for i in range(10):
        c(stt("whisper-large-v3", "groq", 2.0, sid=f"t{i}"))
    s = c.get_summary()
    per_turn = to_money(Decimal("0.111") / 3600 * 10)
    assert per_turn == Decimal("0.000308333333")
    assert s.cost_by_turn == {f"t{i}": per_turn for i in range(10)}
    assert s.cost == 10 * per_turn == Decimal("0.00308333333")
    mu = s.by_model["groq/whisper-large-v3"]
    assert mu.audio_duration == 20.0 and mu.billed_audio_duration == 100.0
    assert s.cost_complete and s.cost_by_kind == {"stt": s.cost}
    assert_parts_add_up(s)


def test_minimum_is_not_billed_for_a_request_without_audio_and_long_requests_bill_as_is():
    c = UsageCollector(prices=prices())
    c(stt("whisper-large-v3", "groq", 0.0))
    c(stt("whisper-large-v3", "groq", 25.5))
    s = c.get_summary()
    assert s.by_model["groq/whisper-large-v3"].billed_audio_duration == 25.5
    assert s.cost == to_money(Decimal("0.00185") * Decimal("25.5") / 60)


@pytest.mark.parametrize(
    ("audio", "billed"),
    [(0.2, 15), (14.999, 15), (15.0, 15), (15.2, 16), (61.000001, 62), (3600.0, 3600)],
)
def test_rounding_to_a_billing_increment_after_the_minimum(audio, billed):
    """AWS Transcribe: per second, 15-second minimum per request."""
    c = UsageCollector(prices=prices())
    c(stt("unknown", "Amazon Transcribe", audio, sid="t"))
    s = c.get_summary()
    assert s.by_model["Amazon Transcribe/unknown"].billed_audio_duration == billed
    assert s.cost == to_money(Decimal("0.024") * billed / 60)
    assert s.cost_by_turn == {"t": s.cost}


def test_billing_rules_from_an_override_and_on_tts_audio():
    p = prices(
        {
            "acme/ears": {"kind": "stt", "audio_minute": "0.06", "increment_seconds": 15},
            "acme/voice": {"kind": "tts", "audio_minute": "0.6", "min_seconds": "1.5"},
        }
    )
    c = UsageCollector(prices=p)
    c(stt("ears", "acme", 16.0, sid="a"))  # -> 30 s
    c(stt("ears", "acme", 15.0, sid="b"))  # -> 15 s
    c(tts("voice", "acme", 10, sid="a", audio_duration=0.4))  # -> 1.5 s
    s = c.get_summary()
    assert s.by_model["acme/ears"].cost == Decimal("0.045")
    assert s.by_model["acme/voice"].cost == Decimal("0.015")
    assert s.cost_by_turn == {"a": Decimal("0.045"), "b": Decimal("0.015")}
    assert_parts_add_up(s)


@pytest.mark.parametrize(
    ("rule", "value", "words"),
    [
        ("increment_seconds", 0, "positive"),
        ("increment_seconds", -5, "positive"),
        ("min_seconds", -1, "non-negative"),
        ("min_seconds", "ten", "decimal"),
    ],
)
def test_bad_billing_rule_in_a_price_file_names_the_field(tmp_path, rule, value, words):
    f = tmp_path / "p.toml"
    v = f'"{value}"' if isinstance(value, str) else value
    f.write_text(f"[acme.ears]\naudio_minute = 0.01\n{rule} = {v}\n")
    with pytest.raises(PriceFileError) as ei:
        Prices(f, env=False)
    assert ei.value.line == 3 and ei.value.field == f"acme.ears.{rule}"
    assert words in str(ei.value).lower()


# ------------------------------------------------------------------ token-billed speech


async def test_stt_audio_tokens_are_billed_at_the_audio_rate():
    """1,000 audio input tokens + 200 output tokens of gpt-4o-transcribe cost $0.008."""
    session = AgentSession(prices=prices())
    async with session, session.turn():
        with session.stt_request(model="gpt-4o-transcribe", provider="openai") as req:
            req.set_usage(3.0, input_tokens=1_000, input_audio_tokens=1_000, output_tokens=200)
    s = session.usage
    assert s.cost == Decimal("0.008") == s.by_model["openai/gpt-4o-transcribe"].cost
    expected = calc_price(
        Usage(input_tokens=1_000, input_audio_tokens=1_000, output_tokens=200),
        "gpt-4o-transcribe",
        provider_id="openai",
    ).total_price
    assert s.cost == expected
    assert s.cost_complete and s.cost_notes == []
    assert list(s.cost_by_turn.values()) == [Decimal("0.008")]


def test_input_tokens_without_the_audio_split_make_the_total_a_lower_bound(caplog, monkeypatch):
    from callmeter.pricing import cost

    monkeypatch.setattr(cost, "_warned", set())  # the warning is once per process
    caplog.set_level(logging.WARNING, logger="callmeter.pricing")
    c = UsageCollector(prices=prices())
    c(stt("gpt-4o-mini-transcribe", "openai", 3.0, sid="t", input_tokens=1_000, output_tokens=200))
    s = c.get_summary()
    # billed at the text rate: what is known, and a lower bound
    assert s.cost == (1_000 * Decimal("1.25") + 200 * Decimal("5")) / 1_000_000
    assert not s.cost_complete and s.cost_is_lower_bound
    assert s.partial_turns == ["t"]
    assert any("input audio tokens" in n for n in s.cost_notes)
    assert any("input_audio_tokens" in r.getMessage() for r in caplog.records)


def test_tts_output_tokens_are_audio_tokens():
    c = UsageCollector(prices=prices())
    c(tts("gpt-4o-mini-tts", "openai", 300, input_tokens=80, output_tokens=2_000))
    s = c.get_summary()
    assert s.cost == (80 * Decimal("0.60") + 2_000 * Decimal("12")) / 1_000_000
    ours = calc_price(
        Usage(input_tokens=80, output_tokens=2_000), "gpt-4o-mini-tts", provider_id="openai"
    ).total_price
    assert s.cost == ours
    assert s.by_model["openai/gpt-4o-mini-tts"].output_audio_tokens == 2_000


def test_invalid_stt_token_usage_is_left_out_not_raised(caplog):
    session = AgentSession(prices=prices())
    with session, session.stt_request(model="gpt-4o-transcribe", provider="openai") as req:
        req.set_usage(1.0, input_tokens=10, input_audio_tokens=-3)
    assert session.usage.cost == 0 and session.usage.stt_requests == 1


# ------------------------------------------------------------------ call-level charges


def test_call_minutes_are_their_own_kind_and_rounded_to_the_minute():
    c = UsageCollector(prices=prices(), call_charges=["twilio/voice-inbound"])
    c(stt("nova-3", "deepgram", 30.0, sid="t"))
    c.set_call_duration(61.0)  # Twilio bills started minutes: 2
    s = c.get_summary()
    assert s.cost_by_kind["call"] == Decimal("0.017")
    stt_cost = to_money(Decimal("0.0048") / 2)
    assert s.cost_by_kind == {"stt": stt_cost, "call": Decimal("0.017")}
    assert s.cost == stt_cost + Decimal("0.017")
    call = s.by_model["twilio/voice-inbound"]
    assert call.kind == "call" and call.cost == Decimal("0.017") and call.duration == 61.0
    assert "twilio.com" in call.price_source
    assert s.cost_unattributed == Decimal("0.017") and s.call_duration == 61.0
    assert_parts_add_up(s)
    d = c.get_summary().to_dict()
    assert d["cost_by_kind"] == {"stt": "0.0024", "call": "0.017"}


def test_call_duration_from_the_close_event_and_hosting_from_a_price_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(
        '[callmeter]\ncall_charges = ["acme/hosting", "telnyx/voice-outbound"]\n\n'
        '[acme.hosting]\nkind = "call"\ncall_minute = 0.01\n'
    )
    c = UsageCollector(prices=Prices(f, env=False))
    c(CloseEvent(session_id="s", seq=3, created_at=T0, duration=90.0))
    s = c.get_summary()
    hosting = Decimal("0.015")  # per second: 1.5 minutes
    telnyx = 2 * Decimal("0.007")  # per started minute
    assert s.by_model["acme/hosting"].cost == hosting
    assert s.cost_by_kind == {"call": hosting + telnyx} and s.cost == hosting + telnyx
    assert s.cost_complete


def test_call_charges_without_a_duration_or_a_price_make_the_total_a_lower_bound():
    c = UsageCollector(prices=prices(), call_charges=["twilio/voice-outbound", "acme/nothing"])
    c(llm("gpt-4o-mini", "openai", prompt_tokens=100, completion_tokens=10))
    s = c.get_summary()
    assert not s.cost_complete
    assert "call" not in s.cost_by_kind
    assert s.unpriced == ["acme/nothing"]
    assert any("call duration unknown" in n for n in s.cost_notes)
    assert s.by_model["twilio/voice-outbound"].cost is None


async def test_agent_session_call_charges_use_the_session_duration():
    session = AgentSession(prices=prices(), call_charges=["telnyx/voice-inbound"])
    async with session:
        with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            gen.set_usage(prompt_tokens=100, completion_tokens=10)
    s = session.usage
    assert s.call_duration == session.duration > 0
    assert s.cost_by_kind["call"] == Decimal("0.0055")  # one started minute
    assert s.cost == s.cost_by_kind["call"] + s.cost_by_kind["llm"]
    assert s.cost_complete


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "60", True])
def test_set_call_duration_rejects_bad_values(bad):
    c = UsageCollector()
    with pytest.raises(InvalidArgumentError, match="call duration"):
        c.set_call_duration(bad)


@pytest.mark.parametrize("bad", ["twilio", [3], ["no-slash"], [None]])
def test_bad_call_charges_raise(bad):
    with pytest.raises(InvalidArgumentError, match="provider/model"):
        UsageCollector(call_charges=bad)
    with pytest.raises(InvalidArgumentError):
        Prices(env=False, call_charges=bad)


def test_bad_settings_table_names_the_field(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[callmeter]\ncall_charge = []\n")
    with pytest.raises(PriceFileError) as ei:
        Prices(f, env=False)
    assert ei.value.field == "callmeter.call_charge" and ei.value.line == 2


# ------------------------------------------------------------------ the call is its parts


def test_call_total_is_the_sum_of_turns_unattributed_and_dropped_turns():
    c = UsageCollector(prices=prices(), max_cost_turns=2, call_charges=["twilio/voice-inbound"])
    for i in range(5):
        sid = f"t{i}"
        c(stt("nova-3", "deepgram", 1.7 + i / 3, sid=sid))
        c(llm("gpt-4o-mini", "openai", sid, prompt_tokens=900 + i, completion_tokens=31))
        c(tts("aura-2-thalia-en", "Deepgram", 97 + i, sid=sid))
    c(stt("whisper-large-v3-turbo", "api.groq.com", 0.7))  # no turn
    c.set_call_duration(200.0)
    s = c.get_summary()
    assert list(s.cost_by_turn) == ["t3", "t4"]
    assert s.dropped_turns == 3 and s.cost_dropped_turns > 0
    assert s.cost_unattributed > Decimal("0.028")  # the call minutes and the groq request
    assert set(s.cost_by_kind) == {"stt", "llm", "tts", "call"}
    assert s.cost_complete and s.unpriced == []
    assert_parts_add_up(s)
    d = json.loads(json.dumps(s.to_dict()))
    assert Decimal(d["cost"]) == s.cost
    assert Decimal(d["cost_dropped_turns"]) == s.cost_dropped_turns
    assert {k: Decimal(v) for k, v in d["cost_by_kind"].items()} == s.cost_by_kind


def test_malformed_speech_event_is_left_out_and_the_rest_priced(caplog):
    caplog.set_level(logging.ERROR)
    c = UsageCollector(prices=prices())
    c(stt("nova-3", "deepgram", 60.0, sid="t"))
    c(stt("nova-3", "deepgram", math.nan, sid="t"))  # construction does not validate
    c(stt("nova-3", "deepgram", 1.0, sid="t", input_tokens=None))
    s = c.get_summary()
    assert s.cost == Decimal("0.0048") == s.cost_by_turn["t"]
    assert s.by_model["deepgram/nova-3"].audio_duration == 60.0
    assert c.rejected_events == 2  # each bad event rejected whole, before any total


def test_huge_audio_duration_is_exact():
    c = UsageCollector(prices=prices())
    c(stt("nova-3", "deepgram", 1e9))
    assert c.get_summary().cost == Decimal("0.0048") * Decimal("1e9") / 60


def test_eight_threads_share_one_prices_object():
    p = prices()
    results: list = []

    def run(i: int) -> None:
        c = UsageCollector(prices=p, call_charges=["twilio/voice-inbound"])
        for j in range(200):
            c(stt("whisper-large-v3", "groq", 2.0, sid=f"t{j % 7}"))
            c(tts("aura-2-luna-en", "Deepgram", 50, sid=f"t{j % 7}"))
        c.set_call_duration(120.0)
        results.append(c.get_summary().cost)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1 and results[0] > 0


# ------------------------------------------------------------------ plans and names


def test_plan_tiers_default_to_the_cheapest_self_serve_plan_and_can_be_picked(tmp_path):
    default = prices().lookup("sonic-3", "cartesia")
    assert default.entry.plan == "pro" and default.entry.mchars == Decimal("50.00")
    scale = prices(plans={"cartesia": "scale"}).lookup("sonic-3", "cartesia")
    assert scale.entry.plan == "scale" and scale.entry.mchars == Decimal("37.4")
    assert "plan 'scale'" in scale.source.describe()
    f = tmp_path / "p.toml"
    f.write_text('[callmeter]\nplans = { "cartesia/sonic-3" = "scale" }\n')
    c = UsageCollector(prices=Prices(f, env=False))
    c(tts("sonic-3.6", "Cartesia", 1_000_000))
    assert c.get_summary().cost == Decimal("37.4")


def test_unknown_plan_keeps_the_default_rates_and_logs(caplog):
    caplog.set_level(logging.ERROR, logger="callmeter.pricing")
    r = prices(plans={"cartesia": "platinum"}).lookup("sonic-2", "cartesia")
    assert r.entry.mchars == Decimal("50.00")
    assert any("platinum" in rec.getMessage() for rec in caplog.records)


def test_every_plugin_name_in_the_name_table_is_priced_as_recorded():
    p = prices()
    names = bundled_names()
    assert len(names.reported) >= 40
    plugins = {r["source"].split()[0] for r in names.reported}
    assert {"livekit-plugins-deepgram", "pipecat-ai", "livekit-plugins-aws"} <= plugins
    table = bundled_entries()
    for r in names.reported:
        price = p.lookup(r["model"], r["provider"])
        where = f"{r['provider']}/{r['model']} ({r['source']})"
        assert price is not None, where
        assert price.matched == r["priced"], where
        prov, model = r["priced"].split("/")
        assert (prov, model) in table, where


def test_deepgram_voice_names_are_priced_as_aura():
    c = UsageCollector(prices=prices())
    c(tts("aura-2-thalia-en", "Deepgram", 1_000))
    c(tts("aura-luna-en", "deepgram", 1_000))
    s = c.get_summary()
    assert s.by_model["Deepgram/aura-2-thalia-en"].cost == Decimal("0.03")
    assert s.by_model["deepgram/aura-luna-en"].cost == Decimal("0.015")
    assert s.cost_complete


# ------------------------------------------------------------------ the bundled table


def test_every_bundled_entry_has_a_source_url_and_a_read_date():
    text = resources.files("callmeter.pricing").joinpath("data", "speech.toml").read_text()
    raw = tomllib.loads(text)
    n = 0
    for provider, models in raw.items():
        for model, e in models.items():
            where = f"{provider}/{model}"
            assert e["source"].startswith("https://"), where
            assert isinstance(e["checked"], dt.date), where
            assert e["kind"] in ("stt", "tts", "call"), where
            # entered from the list price, never claimed as live-read
            assert "live check" in e["notes"] or "genai-prices" in e["notes"], where
            n += 1
    assert n >= 40
    for vendor in (
        "rime",
        "playht",
        "speechmatics",
        "gladia",
        "lmnt",
        "aws",
        "twilio",
        "telnyx",
        "groq",
    ):
        assert vendor in raw, vendor


def test_issue_rates():
    p = prices()

    def rate(model, provider, field):
        return getattr(p.lookup(model, provider).entry, field)

    assert rate("nova-3", "deepgram", "audio_minute") == Decimal("0.0048")
    assert rate("nova-3-prerecorded", "deepgram", "audio_minute") == Decimal("0.0043")
    assert rate("universal", "assemblyai", "audio_minute") * 60 == Decimal("0.15")
    assert rate("neural-tts", "azure", "mchars") == Decimal("16")
    assert rate("sonic-2", "cartesia", "mchars") >= Decimal("37.4")


runner = CliRunner()


def test_cli_prices_list_by_kind(monkeypatch):
    monkeypatch.delenv("CALLMETER_PRICES", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    r = runner.invoke(app, ["prices", "--list", "--kind", "stt"])
    assert r.exit_code == 0, r.output
    assert "deepgram/nova-3" in r.output and "https://deepgram.com/pricing" in r.output
    assert "twilio" not in r.output and "aura-2" not in r.output
    r = runner.invoke(app, ["prices", "--list", "--kind", "call"])
    assert "twilio/voice-inbound" in r.output and "per minute of the call" in r.output
    r = runner.invoke(app, ["prices", "--list"])
    assert "cartesia/sonic-3" in r.output and "plan pro" in r.output


def test_cli_prices_bad_kind_and_no_model():
    r = runner.invoke(app, ["prices", "--list", "--kind", "video"])
    assert r.exit_code == 2 and "--kind must be one of" in r.output
    r = runner.invoke(app, ["prices"])
    assert r.exit_code == 2 and "MODEL" in r.output


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            "[acme.v]\nmchars = 10\nplans.scale = { per_char = 1 }\n",
            "acme.v.plans.scale.per_char",
            "unknown rate",
        ),
        (
            "[acme.v]\nmchars = 10\nplans.scale = { mchars = -1 }\n",
            "acme.v.plans.scale.mchars",
            "non-negative",
        ),
        ("[acme.v]\nmchars = 10\nplans = 3\n", "acme.v.plans", "table of plans"),
        (
            "[acme.v]\nmchars = 10\nplans.scale = { mchars = { x = 1 } }\n",
            "acme.v.plans.scale.mchars",
            "non-negative",
        ),
        ("[callmeter]\nplans = { cartesia = 3 }\n", "callmeter.plans", "plan name"),
        ('[callmeter]\ncall_charges = "twilio/voice-inbound"\n', "callmeter.call_charges", "list"),
        ("callmeter = 1\n", "callmeter", "must be a table"),
    ],
)
def test_malformed_plans_and_settings_name_the_field(tmp_path, text, field, words):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PriceFileError) as ei:
        Prices(f, env=False)
    assert ei.value.field == field and words in str(ei.value)


@pytest.mark.parametrize("bad", [["cartesia"], {"cartesia": 3}, "scale"])
def test_bad_plans_argument_raises(bad):
    with pytest.raises(InvalidArgumentError, match="plans"):
        Prices(env=False, plans=bad)


def test_a_collector_subscribed_to_close_gets_the_call_duration():
    usage = UsageCollector(prices=prices(), call_charges=["twilio/voice-inbound"])
    session = AgentSession(prices=prices())
    session.on("metrics_collected", lambda ev: usage.collect(ev.metrics))
    session.on("close", usage.collect)
    with session, session.tts_request(model="aura-2-thalia-en", provider="Deepgram") as req:
        req.set_usage(characters_count=1_000)
    s = usage.get_summary()
    assert s.call_duration == session.duration
    assert s.cost_by_kind == {"tts": Decimal("0.03"), "call": Decimal("0.0085")}
    assert s.cost_complete


def test_docs_list_every_bundled_entry_with_its_source_and_date():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "cost.md").read_text()
    raw = tomllib.loads(
        resources.files("callmeter.pricing").joinpath("data", "speech.toml").read_text()
    )
    for provider, models in raw.items():
        for model, e in models.items():
            row = next(
                (line for line in doc.splitlines() if line.startswith(f"| `{provider}/{model}`")),
                None,
            )
            assert row is not None, f"{provider}/{model} missing from docs/cost.md"
            assert e["source"] in row and str(e["checked"]) in row, row
