"""Pathological price files fail fast with PriceFileError, and never break a session."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from callmeter import AgentSession
from callmeter.pricing import ENV_VAR, PriceFileError, Prices
from callmeter.pricing.prices import MAX_PRICE_FILE_BYTES


def deep_toml(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    return path


def deep_inline_table(tmp_path):
    path = tmp_path / "deep_table.toml"
    path.write_text("x = " + "{a = " * 20_000 + "1" + "}" * 20_000 + "\n")
    return path


def fifo(tmp_path):
    path = tmp_path / "prices.fifo"
    os.mkfifo(path)  # opening it for reading would block forever without a writer
    return path


def huge(tmp_path):
    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate(MAX_PRICE_FILE_BYTES + 1)  # sparse: costs no disk
    return path


CASES = {
    "deep array": (deep_toml, "nested too deeply|not valid TOML"),
    "deep inline table": (deep_inline_table, "nested too deeply|not valid TOML"),
    "fifo": (fifo, "not a regular file"),
    "/dev/zero": (lambda _: "/dev/zero", "not a regular file"),
    "huge": (huge, "too large"),
    "directory": (lambda p: p, "not a regular file"),
    "missing": (lambda p: p / "nope.toml", "cannot read"),
}


@pytest.mark.parametrize("case", CASES)
def test_explicit_price_file_raises_price_file_error(case, tmp_path):
    make, message = CASES[case]
    path = make(tmp_path)
    result: list[BaseException] = []

    def load() -> None:
        try:
            Prices(path, env=False)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"{case}: loading the price file hung"
    assert result and isinstance(result[0], PriceFileError), result
    assert str(path) in str(result[0])
    import re

    assert re.search(message, str(result[0])), str(result[0])


@pytest.mark.parametrize("case", CASES)
def test_bad_env_price_file_is_logged_and_ignored(case, tmp_path, monkeypatch, caplog):
    make, _ = CASES[case]
    monkeypatch.setenv(ENV_VAR, str(make(tmp_path)))
    with caplog.at_level(logging.ERROR, logger="callmeter.pricing"):
        session = AgentSession()  # must not raise
        with session, session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            gen.set_usage(prompt_tokens=1000, completion_tokens=100)
        assert session.usage.cost > 0  # the default prices still apply
    assert ENV_VAR in caplog.text
