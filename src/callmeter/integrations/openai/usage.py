"""Usage translation: the SDK's usage objects to the fields of ``LLMGeneration.set_usage``.

Chat completions report ``prompt_tokens``/``completion_tokens`` with
``prompt_tokens_details``/``completion_tokens_details``; the Responses API reports
``input_tokens``/``output_tokens`` with ``input_tokens_details``/``output_tokens_details``.
Both count cached and cache-write tokens inside the prompt (input) tokens, as
``LLMMetrics`` does: ``cached_tokens`` becomes ``prompt_cached_tokens`` and
``cache_write_tokens`` becomes ``cache_creation_tokens``.
Missing or ``None`` detail counts are 0; invalid counts are left to ``set_usage``, which
records the request as ``usage_reported=False``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ...session import LLMGeneration

__all__ = ["chat_usage", "record_usage", "responses_usage"]

logger = logging.getLogger("callmeter.integrations.openai")


def chat_usage(usage: Any) -> dict[str, Any]:
    """``set_usage`` keyword arguments from a chat completion's ``CompletionUsage``."""
    details = getattr(usage, "prompt_tokens_details", None)
    out_details = getattr(usage, "completion_tokens_details", None)
    return {
        "prompt_tokens": usage.prompt_tokens or 0,
        "completion_tokens": usage.completion_tokens or 0,
        "prompt_cached_tokens": getattr(details, "cached_tokens", None) or 0,
        "cache_creation_tokens": getattr(details, "cache_write_tokens", None) or 0,
        "reasoning_tokens": getattr(out_details, "reasoning_tokens", None) or 0,
        "input_audio_tokens": getattr(details, "audio_tokens", None) or 0,
        "output_audio_tokens": getattr(out_details, "audio_tokens", None) or 0,
        "total_tokens": getattr(usage, "total_tokens", None),
    }


def responses_usage(usage: Any) -> dict[str, Any]:
    """``set_usage`` keyword arguments from a response's ``ResponseUsage``."""
    details = getattr(usage, "input_tokens_details", None)
    out_details = getattr(usage, "output_tokens_details", None)
    return {
        "prompt_tokens": usage.input_tokens or 0,
        "completion_tokens": usage.output_tokens or 0,
        "prompt_cached_tokens": getattr(details, "cached_tokens", None) or 0,
        "cache_creation_tokens": getattr(details, "cache_write_tokens", None) or 0,
        "reasoning_tokens": getattr(out_details, "reasoning_tokens", None) or 0,
        "total_tokens": getattr(usage, "total_tokens", None),
    }


def record_usage(
    gen: LLMGeneration, usage: Any, translate: Callable[[Any], dict[str, Any]]
) -> None:
    """Put ``usage`` (translated by ``translate``) on ``gen``. Never raises."""
    try:
        gen.set_usage(**translate(usage))
    except Exception:
        logger.exception("callmeter: reading OpenAI usage %r failed", usage)
