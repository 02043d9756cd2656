"""The measuring stream: one wrapper for chat completions and responses, sync and async.

:func:`wrap_stream` routes an SDK ``Stream``/``AsyncStream`` through :func:`iterate` or
:func:`aiterate`: the same loop, sync and async, for both APIs; what an item of each API
means is in its :class:`_Kind` (read until the first token by ``first``, after it only
items with usage (chat) or a final event (responses) reach ``rest``). Per item after the
first token the measurement notes the arrival time and makes two C calls.

How a stream ends decides its outcome (see :mod:`.outcome`); whichever way comes first
ends it, once (see :mod:`.pending`):

- the iterator is exhausted: completed;
- the iterator raises: failed, or cancelled for a cancellation;
- ``close()`` (``with`` exit), the generator closed, the stream garbage-collected, or its
  session closing while the stream is unfinished: cancelled, ending at its last chunk.

The drivers never close or await the SDK's own iterator: after a stream is dropped,
asyncio finalizes each of the SDK's generators itself, as it does without measuring.
"""

from __future__ import annotations

import logging
import operator
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple

from ...session import AgentSession, LLMGeneration
from .outcome import end_cancelled, end_completed, end_failed
from .pending import OpenStreams, open_streams
from .usage import chat_usage, record_usage, responses_usage

__all__ = ["StreamMeter", "aiterate", "iterate", "wrap_stream"]

logger = logging.getLogger("callmeter.integrations.openai")
_perf = time.perf_counter

_SKIP, _PASS, _TOKEN = 0, 1, 2
"""What a per-item function says: hide the item, pass it on, pass it on (first token)."""

_TOKEN_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.output_audio_transcript.delta",
    }
)
_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


# --- what one item means ------------------------------------------------------------------


def _is_chat_token(chunk: Any) -> bool:
    try:
        choices = chunk.choices
        if not choices:
            return False
        delta = choices[0].delta
        return bool(delta.content or delta.tool_calls or getattr(delta, "refusal", None))
    except Exception:
        return False


def _chat_first(m: StreamMeter, chunk: Any) -> int:
    gen = m.gen
    if chunk.id:
        gen.request_id = chunk.id
    token = _is_chat_token(chunk)
    if token:
        gen.first_token()
    if chunk.usage is not None and not _chat_usage(m, chunk):
        return _SKIP
    return _TOKEN if token else _PASS


def _chat_usage(m: StreamMeter, chunk: Any) -> bool:
    """A chunk with usage: record it; False to hide the chunk (the usage-only chunk the
    caller did not ask for)."""
    record_usage(m.gen, chunk.usage, chat_usage)
    return not (m.hide_usage and not chunk.choices)


def _response_end(gen: LLMGeneration, event: Any) -> None:
    try:
        kind = event.type
        if kind == "error":
            gen.error = f"stream error: {getattr(event, 'code', None) or event.message}"
            return
        response = event.response
        if response.usage is not None:
            record_usage(gen, response.usage, responses_usage)
        if kind == "response.failed":
            error = getattr(response, "error", None)
            gen.error = f"response failed: {getattr(error, 'code', None) or 'unknown'}"
    except Exception:
        logger.exception("callmeter: reading a response event failed")


def _responses_first(m: StreamMeter, event: Any) -> int:
    kind = event.type
    if kind in _TOKEN_EVENTS:
        m.gen.first_token()
        return _TOKEN
    if kind == "response.created":
        m.gen.request_id = getattr(event.response, "id", None) or m.gen.request_id
    elif kind in _END_EVENTS:
        _response_end(m.gen, event)
    return _PASS


def _responses_end(m: StreamMeter, event: Any) -> bool:
    _response_end(m.gen, event)
    return True


class _Kind(NamedTuple):
    """How one API's items are read. Until the first token every item goes through
    ``first``; after it, ``rest`` only sees the items for which ``rare(key(item))`` is
    true (both C functions, so a plain token costs no Python call)."""

    first: Callable[[StreamMeter, Any], int]
    key: Callable[[Any], Any]
    rare: Callable[[Any], bool]
    rest: Callable[[StreamMeter, Any], bool]


_KINDS = {
    "chat": _Kind(_chat_first, operator.attrgetter("usage"), bool, _chat_usage),
    "responses": _Kind(
        _responses_first, operator.attrgetter("type"), _END_EVENTS.__contains__, _responses_end
    ),
}


# --- one stream's measurement -------------------------------------------------------------


class StreamMeter:
    """The measurement of one stream: its generation, the time of its last item, and how
    its API's items are read (``kind``: ``"chat"`` or ``"responses"``)."""

    __slots__ = ("__weakref__", "_finalizer", "_streams", "gen", "hide_usage", "kind", "last")

    def __init__(
        self, gen: LLMGeneration, kind: str, hide_usage: bool, streams: OpenStreams
    ) -> None:
        self.gen = gen
        self.hide_usage = hide_usage
        self.last = _perf()  # until an item arrives: the stream was handed over now
        self.kind = _KINDS[kind]
        self._streams = streams
        self._finalizer: weakref.finalize | None = None
        streams.add(self)

    def __repr__(self) -> str:
        return f"StreamMeter(model={self.gen.model!r}, provider={self.gen.provider!r})"

    def _claim(self) -> bool:
        if not self._streams.claim(self):
            return False
        finalizer = self._finalizer
        if finalizer is not None:
            finalizer.detach()
        return True

    def complete(self) -> None:
        """The iterator was exhausted."""
        if self._claim():
            self.gen.ended_at = self.last
            end_completed(self.gen)

    def cancel(self) -> None:
        """Closed, dropped or cut off by its session: cancelled, ending at the last item."""
        if self._claim():
            self.gen.ended_at = self.last
            end_cancelled(self.gen)

    def fail(self, exc: BaseException) -> None:
        """The iterator raised ``exc``."""
        if self._claim():
            end_failed(self.gen, exc)


def iterate(m: StreamMeter, it: Iterator[Any]) -> Iterator[Any]:
    """Measure a sync iterator of chunks or events, passing them on."""
    perf = _perf
    first, key, rare, rest = m.kind
    try:
        for item in it:
            m.last = perf()
            seen = first(m, item)
            if seen:
                yield item
                if seen == _TOKEN:
                    break
        for item in it:
            m.last = perf()
            if rare(key(item)) and not rest(m, item):
                continue
            yield item
    except GeneratorExit:
        m.cancel()
        raise
    except BaseException as exc:
        m.fail(exc)
        raise
    m.complete()


async def aiterate(m: StreamMeter, it: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Measure an async iterator of chunks or events, passing them on (as :func:`iterate`)."""
    perf = _perf
    first, key, rare, rest = m.kind
    try:
        async for item in it:
            m.last = perf()
            seen = first(m, item)
            if seen:
                yield item
                if seen == _TOKEN:
                    break
        async for item in it:
            m.last = perf()
            if rare(key(item)) and not rest(m, item):
                continue
            yield item
    except GeneratorExit:
        m.cancel()
        raise
    except BaseException as exc:
        m.fail(exc)
        raise
    m.complete()


def _request_id_header(stream: Any) -> str:
    try:
        return stream.response.headers.get("x-request-id") or ""
    except Exception:
        return ""


def wrap_stream(
    gen: LLMGeneration, stream: Any, kind: str, hide_usage: bool, session: AgentSession
) -> bool:
    """Route ``stream``'s iterator through a :class:`StreamMeter`. False if ``stream`` is
    not an SDK stream object this version knows (nothing is changed then)."""
    inner = getattr(stream, "_iterator", None)
    close = getattr(stream, "close", None)
    if inner is None or close is None:
        return False
    gen.request_id = _request_id_header(stream)
    m = StreamMeter(gen, kind, hide_usage, open_streams(session))
    if hasattr(inner, "__anext__"):
        stream._iterator = aiterate(m, inner)

        async def aclose() -> None:
            try:
                await close()
            finally:
                m.cancel()

        stream.close = aclose
    else:
        stream._iterator = iterate(m, inner)

        def sclose() -> None:
            try:
                close()
            finally:
                m.cancel()

        stream.close = sclose
    # a stream dropped before its first item never runs the driver's code
    finalizer = weakref.finalize(stream, m.cancel)
    finalizer.atexit = False
    m._finalizer = finalizer
    return True
