"""Price lookup: files, errors that point at file/line/field, the bundled table, the CLI."""

from __future__ import annotations

import datetime as dt
import logging
import tomllib
from decimal import Decimal
from importlib import resources

import pytest
from genai_prices import Usage, calc_price
from typer.testing import CliRunner

from callmeter.cli import app
from callmeter.errors import CallmeterError
from callmeter.metrics import Metadata
from callmeter.pricing.prices import (
    RATE_FIELDS,
    PriceFileError,
    Prices,
    bundled_entries,
    load_price_file,
)


def write(tmp_path, text: str):
    f = tmp_path / "my-prices.toml"
    f.write_text(text)
    return f


GOOD = """\
# negotiated rates
[deepgram."nova-3"]
audio_minute = 0.004
source = "contract"

[openai.'gpt-4.1']
input_mtok = 1.5
output_mtok = "6"
aliases = ["gpt-4.1-2025-04-14"]
"""


def test_price_file_loads_with_aliases_and_quoted_names(tmp_path):
    entries = load_price_file(write(tmp_path, GOOD))
    assert entries[("deepgram", "nova-3")].audio_minute == Decimal("0.004")
    assert entries[("openai", "gpt-4.1-2025-04-14")].output_mtok == Decimal("6")
    p = Prices(write(tmp_path, GOOD), env=False)
    assert p.lookup("GPT-4.1-2025-04-14", "OpenAI").entry.input_mtok == Decimal("1.5")


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        # TOML syntax error: tomllib reports the line
        ('[deepgram."nova-3"]\naudio_minute = \n', 2, None, "not valid TOML"),
        # unknown key, on line 4
        (
            '[deepgram."nova-3"]\naudio_minute = 0.004\n\naudio_minutes = 0.1\n',
            4,
            "deepgram.nova-3.audio_minutes",
            "unknown field",
        ),
        # a rate that is not a number
        (
            GOOD.replace('output_mtok = "6"', 'output_mtok = "six"'),
            8,
            "openai.gpt-4.1.output_mtok",
            "decimal",
        ),
        # negative rate
        (
            GOOD.replace("input_mtok = 1.5", "input_mtok = -1.5"),
            7,
            "openai.gpt-4.1.input_mtok",
            "non-negative",
        ),
        # no rate at all: points at the table header
        ('\n[acme.ears]\nsource = "x"\n', 2, "acme.ears", "no rate"),
        # provider that is not a table of models
        ("acme = 3\n", 1, "acme", "table of models"),
        # a model that is not a table of rates
        ("[acme]\nears = 0.1\n", 2, "acme.ears", "table of rates"),
    ],
)
def test_malformed_price_file_names_file_line_and_field(tmp_path, text, line, field, words):
    f = write(tmp_path, text)
    with pytest.raises(PriceFileError) as ei:
        Prices(f, env=False)
    e = ei.value
    assert isinstance(e, CallmeterError)
    assert e.file == str(f)
    assert e.line == line
    assert e.field == field
    assert f"{f}:{line}" in str(e)
    assert words in str(e)


def test_malformed_env_file_raises_for_explicit_prices(tmp_path, monkeypatch):
    f = write(tmp_path, "[acme.ears]\naudio_minute = 'free'\n")
    monkeypatch.setenv("CALLMETER_PRICES", str(f))
    with pytest.raises(PriceFileError, match=r"my-prices.toml:2: .*acme.ears.audio_minute"):
        Prices()


@pytest.mark.parametrize("bad", ["malformed", "missing", "binary"])
def test_bad_env_file_is_logged_once_and_the_defaults_are_used(tmp_path, monkeypatch, caplog, bad):
    """Measuring never raises into the agent's code because of the environment."""
    from callmeter import AgentSession
    from callmeter.metrics import STTMetrics, UsageCollector
    from callmeter.pricing import prices as pricing_mod

    if bad == "malformed":
        f = write(tmp_path, "[deepgram.\"nova-3\"]\naudio_minute = 'free'\n")
        where, field = f"{f}:2", "deepgram.nova-3.audio_minute"
    elif bad == "missing":
        f = tmp_path / "no-such-prices.toml"
        where, field = str(f), "cannot read price file"
    else:
        f = tmp_path / "binary.toml"
        f.write_bytes(b"\xff\xfe[deepgram]\n")
        where, field = str(f), "not UTF-8"
    monkeypatch.setenv("CALLMETER_PRICES", str(f))
    monkeypatch.setattr(pricing_mod, "_default", None)
    caplog.set_level(logging.ERROR, logger="callmeter.pricing")

    session = AgentSession()  # raised PriceFileError before
    c = UsageCollector()
    with_dict = UsageCollector(prices={"acme/ears": {"audio_minute": "0.06"}})
    for collector in (c, with_dict):
        collector(
            STTMetrics(
                timestamp=2.0,
                started_at=1.0,
                duration=1.0,
                audio_duration=60.0,
                metadata=Metadata(model_name="nova-3", model_provider="deepgram"),
            )
        )
        s = collector.get_summary()
        assert s.cost > 0 and s.cost_complete
        assert s.by_model["deepgram/nova-3"].price_source.startswith("callmeter speech table")
    for prices in (session.usage_prices, c.prices, with_dict.prices):
        assert isinstance(prices.env_error, PriceFileError)
        assert prices.env_error.file == str(f)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once, not per collector
    message = errors[0].getMessage()
    assert where in message and field in message and "CALLMETER_PRICES" in message

    # what is given in code still raises, naming file, line and field
    explicit = write(tmp_path, "[acme.ears]\naudio_minute = -1\n")
    with pytest.raises(PriceFileError) as ei:
        UsageCollector(prices=str(explicit))
    assert (ei.value.file, ei.value.line, ei.value.field) == (
        str(explicit),
        2,
        "acme.ears.audio_minute",
    )
    with pytest.raises(PriceFileError, match=r"acme.ears.per_minute"):
        UsageCollector(prices={"acme/ears": {"per_minute": 1}})


def test_missing_file_and_bad_dict():
    with pytest.raises(PriceFileError, match="cannot read price file"):
        Prices("/nonexistent/prices.toml", env=False)
    with pytest.raises(PriceFileError, match=r"<prices dict>.*acme.ears.per_minute"):
        Prices({"acme/ears": {"per_minute": 1}}, env=False)


def test_lookup_order_override_then_bundled_then_genai():
    p = Prices({"openai/tts-1": {"mchars": 10}}, env=False)
    assert p.lookup("tts-1", "openai").source.kind == "override"
    assert p.lookup("tts-1-hd", "openai").source.kind == "bundled"
    assert p.lookup("gpt-4o", "openai").source.kind == "genai-prices"
    assert p.lookup("no-such-model-xyz", "openai") is None
    nothing = Prices(env=False, bundled=False, genai=False)
    assert nothing.lookup("tts-1", "openai") is None


def test_provider_unknown_to_genai_prices_falls_back_to_the_model_name():
    p = Prices(env=False)
    r = p.lookup("gpt-4o-mini", "some-gateway")
    assert r is not None and r.matched == "openai/gpt-4o-mini"
    # ... but a provider genai-prices knows is respected
    assert p.lookup("gpt-4o-mini", "anthropic") is None
    # a model-only lookup also works for table entries
    assert p.lookup("nova-3").source.kind == "bundled"


def test_genai_prices_price_lines_match_the_snapshot():
    r = Prices(env=False).lookup("gemini-2.0-flash", "google")
    calc = calc_price(Usage(input_tokens=1), "gemini-2.0-flash", provider_id="google")
    assert (f"${calc.model_price.input_mtok}", "per 1M input tokens") in r.rate_lines()
    assert r.source.origin.startswith("genai-prices 0.")


def test_bundled_speech_table_is_complete_and_shipped():
    text = resources.files("callmeter.pricing").joinpath("data", "speech.toml").read_text()
    raw = tomllib.loads(text)
    entries = bundled_entries()
    providers = {p for p, _ in entries}
    for vendor in ("deepgram", "assemblyai", "openai", "elevenlabs", "cartesia", "azure", "google"):
        assert vendor in providers
    for model in (
        "nova-2",
        "nova-3",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
    ):
        assert any(m == model for _, m in entries), model
    for provider, models in raw.items():
        for model, e in models.items():
            where = f"{provider}/{model}"
            assert e["kind"] in ("stt", "tts", "call"), where
            assert e["source"].startswith("https://"), where
            assert isinstance(e["checked"], dt.date), where
            assert any(k in e for k in RATE_FIELDS), where


runner = CliRunner()


def test_cli_prices_llm_from_genai_prices():
    r = runner.invoke(app, ["prices", "gpt-4o-mini-2024-07-18", "--provider", "openai"])
    assert r.exit_code == 0, r.output
    assert "openai/gpt-4o-mini" in r.output
    assert "genai-prices" in r.output
    rate = calc_price(Usage(input_tokens=1), "gpt-4o-mini", provider_id="openai").model_price
    assert f"${rate.input_mtok}" in r.output and "per 1M input tokens" in r.output


def test_cli_prices_speech_from_bundled_table(monkeypatch):
    monkeypatch.delenv("CALLMETER_PRICES", raising=False)
    r = runner.invoke(app, ["prices", "nova-3", "-p", "deepgram"])
    assert r.exit_code == 0, r.output
    assert "per audio minute" in r.output
    assert "https://deepgram.com/pricing" in r.output
    assert "speech.toml" in r.output


def test_cli_prices_override_file_unknown_and_bad_file(tmp_path):
    f = write(tmp_path, GOOD)
    r = runner.invoke(app, ["prices", "nova-3", "-p", "deepgram", "--file", str(f)])
    assert r.exit_code == 0, r.output
    assert "$0.004" in r.output and "my-prices.toml" in r.output
    r = runner.invoke(app, ["prices", "no-such-model-xyz", "-p", "nowhere"])
    assert r.exit_code == 1 and "no price" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[acme.ears]\naudio_minute = -1\n")
    r = runner.invoke(app, ["prices", "ears", "--file", str(bad)])
    assert r.exit_code == 2
    assert "bad.toml:2" in r.output.replace("\n", "")
