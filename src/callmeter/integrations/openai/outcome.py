"""The three outcomes of a request, and ending its ``LLMGeneration`` with one of them.

- completed: ``cancelled=False, error=None`` (or the error the response itself reported,
  e.g. ``response failed: server_error``);
- cancelled by the caller: ``asyncio.CancelledError``, ``GeneratorExit``,
  ``KeyboardInterrupt``, or a stream closed or abandoned before its end:
  ``cancelled=True, error=None``;
- failed: any other exception: ``cancelled=False, error="<ExceptionType>"``, with
  ``": HTTP <status>"`` when the exception carries a status code.

The integration sets ``gen.cancelled`` and ``gen.error`` itself and always ends the
generation without an exception, so the metric does not depend on how ``LLMGeneration``
reads an exception type.
"""

from __future__ import annotations

import asyncio
import logging

from ...session import LLMGeneration

__all__ = ["CANCELLATIONS", "describe", "end_cancelled", "end_completed", "end_failed"]

logger = logging.getLogger("callmeter.integrations.openai")

CANCELLATIONS = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)
"""Exceptions that mean the caller stopped the request (not a failure)."""


def describe(exc: BaseException) -> str:
    """``error`` text of a failure: the type name, plus ``HTTP <status>`` when known."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name}: HTTP {status}" if type(status) is int else name


def _end(gen: LLMGeneration) -> None:
    try:
        gen.__exit__(None, None, None)
    except Exception:  # measurement must never break the caller
        logger.exception("callmeter: finishing an OpenAI metric failed")


def end_completed(gen: LLMGeneration) -> None:
    """Emit ``gen`` as completed (keeping an error the response reported)."""
    gen.cancelled = False
    _end(gen)


def end_cancelled(gen: LLMGeneration) -> None:
    """Emit ``gen`` as cancelled by the caller, unless the response already reported an
    error (then it failed, whatever the caller did next)."""
    gen.cancelled = gen.error is None
    _end(gen)


def end_failed(gen: LLMGeneration, exc: BaseException) -> None:
    """Emit ``gen`` with the outcome ``exc`` means: cancelled for a cancellation, else
    failed. It ends now (when the exception is raised), not at the last chunk."""
    gen.ended_at = None
    if isinstance(exc, CANCELLATIONS):
        end_cancelled(gen)
        return
    try:
        gen.error = describe(exc)
        request_id = getattr(exc, "request_id", None)
        if request_id and isinstance(request_id, str) and not gen.request_id:
            gen.request_id = request_id
    except Exception:
        logger.exception("callmeter: recording an OpenAI error failed")
    gen.cancelled = False
    _end(gen)
