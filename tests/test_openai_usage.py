"""Usage translation: the SDK's own usage objects to callmeter's token fields."""

from __future__ import annotations

import logging

import pytest
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from callmeter.integrations.openai.usage import chat_usage, record_usage, responses_usage
from callmeter.session import LLMGeneration


def test_chat_usage_with_every_detail():
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "prompt_tokens_details": {
                "cached_tokens": 64,
                "cache_write_tokens": 20,
                "audio_tokens": 7,
            },
            "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 5},
        }
    )
    assert chat_usage(usage) == {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "prompt_cached_tokens": 64,
        "cache_creation_tokens": 20,
        "reasoning_tokens": 12,
        "input_audio_tokens": 7,
        "output_audio_tokens": 5,
        "total_tokens": 140,
    }


def test_chat_usage_without_details():
    usage = CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    fields = chat_usage(usage)
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (3, 2)
    assert fields["prompt_cached_tokens"] == fields["cache_creation_tokens"] == 0
    assert fields["reasoning_tokens"] == 0
    assert fields["input_audio_tokens"] == fields["output_audio_tokens"] == 0


def test_responses_usage():
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 30},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 8},
            "total_tokens": 70,
        }
    )
    assert responses_usage(usage) == {
        "prompt_tokens": 50,
        "completion_tokens": 20,
        "prompt_cached_tokens": 10,
        "cache_creation_tokens": 30,
        "reasoning_tokens": 8,
        "total_tokens": 70,
    }


def _recorded(recorder, usage, translate):
    gen = LLMGeneration(recorder.session, model="m", provider="p")
    with gen:
        record_usage(gen, usage, translate)
    return recorder.llm[-1]


def test_recorded_on_the_metric(recorder):
    usage = CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    m = _recorded(recorder, usage, chat_usage)
    assert m.usage_reported and (m.prompt_tokens, m.completion_tokens, m.total_tokens) == (3, 2, 5)


@pytest.mark.parametrize(
    "usage",
    [
        CompletionUsage.model_construct(prompt_tokens=-1, completion_tokens=2, total_tokens=1),
        CompletionUsage.model_construct(prompt_tokens=float("nan"), completion_tokens=2),
        CompletionUsage.model_construct(prompt_tokens="3", completion_tokens=2),
        CompletionUsage.model_construct(prompt_tokens=2.5, completion_tokens=2),
        None,
        object(),
    ],
    ids=["negative", "nan", "str", "float", "none", "object"],
)
def test_invalid_usage_is_unreported_and_logged(recorder, caplog, usage):
    """Whatever a server sends, measuring never raises: the usage is unknown instead."""
    caplog.set_level(logging.ERROR)
    m = _recorded(recorder, usage, chat_usage)
    assert not m.usage_reported and m.completion_tokens == 0
    assert caplog.records  # said once, with what was wrong


def test_huge_counts_are_kept(recorder):
    big = 10**15
    usage = CompletionUsage(prompt_tokens=big, completion_tokens=big, total_tokens=2 * big)
    m = _recorded(recorder, usage, chat_usage)
    assert m.prompt_tokens == big and m.total_tokens == 2 * big
