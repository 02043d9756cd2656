"""Measure ``openai`` SDK calls: one ``LLMMetrics`` per ``create()`` call.

``instrument(client)`` replaces ``client.chat.completions.create`` and
``client.responses.create`` on that client object only (instance attributes; the SDK's
classes are untouched) with measuring wrappers; :meth:`Instrumentation.uninstrument`
removes them again. Needs the ``openai`` extra.

What a metric means:

- ``duration``: from the ``create()`` call to the end of the response: for a stream,
  until its iterator is exhausted, closed or abandoned. The SDK's retries happen inside
  ``create()``, so one call is one metric whatever the attempts, and its duration
  includes them.
- ``ttft``: to the first content, refusal or tool-call delta of a stream; without
  streaming the first token reaches the caller with the whole response, so
  ``ttft`` equals the time to the response.
- tokens: from the provider's usage. For streamed chat completions the wrapper asks for
  ``stream_options={"include_usage": True}`` unless the caller set ``stream_options``
  and hides the extra usage-only chunk from the caller, so the stream looks as it
  would without instrumentation. No usage from the server: ``usage_reported=False``.
- errors: an exception from the SDK is recorded in ``error`` (``RateLimitError: HTTP
  429``, ``APITimeoutError``, ...) and re-raised unchanged. An abandoned or cancelled
  stream is emitted with ``cancelled=True``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import openai

from ...errors import InvalidArgumentError
from ...session import AgentSession, LLMGeneration, current_session

__all__ = [
    "Instrumentation",
    "infer_provider",
    "instrument",
    "is_instrumented",
    "measured",
    "uninstrument",
]

_perf = time.perf_counter
logger = logging.getLogger("callmeter.integrations.openai")

_PROVIDER_HOSTS = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure"),
    ("azure.com", "azure"),
    ("groq.com", "groq"),
    ("together.xyz", "together"),
    ("together.ai", "together"),
    ("deepseek.com", "deepseek"),
    ("mistral.ai", "mistral"),
    ("openrouter.ai", "openrouter"),
    ("fireworks.ai", "fireworks"),
    ("x.ai", "xai"),
    ("cerebras.ai", "cerebras"),
    ("perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "google"),
)
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
LOCAL_PROVIDER = "openai-compatible"
"""Provider name for a server that the base URL does not identify (e.g. vLLM on localhost)."""

_TOKEN_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.output_audio_transcript.delta",
    }
)
_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def infer_provider(base_url: object) -> str:
    """Provider name for an API base URL: ``openai``, ``azure``, ``groq``, ``together``, ...;
    ``ollama`` for localhost:11434; otherwise ``openai-compatible``."""
    try:
        parts = urlsplit(str(base_url))
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return LOCAL_PROVIDER
    for suffix, name in _PROVIDER_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return name
    if (host in _LOCAL_HOSTS or host.endswith(".local")) and port == 11434:
        return "ollama"
    return LOCAL_PROVIDER


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name}: HTTP {status}" if isinstance(status, int) else name


# --- bookkeeping shared by all wrappers --------------------------------------------------


def _begin(meter: _Meter, session: AgentSession, kwargs: dict[str, Any]) -> LLMGeneration:
    model = kwargs.get("model")
    gen = LLMGeneration(
        session, model=model if isinstance(model, str) else None, provider=meter.provider
    )
    gen.__enter__()
    return gen


def _end(gen: LLMGeneration) -> None:
    try:
        gen.__exit__(None, None, None)
    except Exception:  # measurement must never break the caller
        logger.exception("callmeter: finishing an OpenAI metric failed")


def _fail(gen: LLMGeneration, exc: BaseException) -> None:
    gen.ended_at = None  # a failure ends when it is raised, not at the last chunk
    try:
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
            gen.cancelled = True
        else:
            gen.error = _describe(exc)
            request_id = getattr(exc, "request_id", None)
            if request_id and not gen.request_id:
                gen.request_id = request_id
    except Exception:
        logger.exception("callmeter: recording an OpenAI error failed")
    _end(gen)


def _chat_usage(gen: LLMGeneration, usage: Any) -> None:
    try:
        details = getattr(usage, "prompt_tokens_details", None)
        out_details = getattr(usage, "completion_tokens_details", None)
        gen.set_usage(
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
            prompt_cached_tokens=(getattr(details, "cached_tokens", None) or 0),
            reasoning_tokens=(getattr(out_details, "reasoning_tokens", None) or 0),
            input_audio_tokens=(getattr(details, "audio_tokens", None) or 0),
            output_audio_tokens=(getattr(out_details, "audio_tokens", None) or 0),
            total_tokens=getattr(usage, "total_tokens", None),
        )
    except Exception:
        logger.exception("callmeter: reading chat completion usage failed")


def _responses_usage(gen: LLMGeneration, usage: Any) -> None:
    try:
        details = getattr(usage, "input_tokens_details", None)
        out_details = getattr(usage, "output_tokens_details", None)
        gen.set_usage(
            prompt_tokens=usage.input_tokens or 0,
            completion_tokens=usage.output_tokens or 0,
            prompt_cached_tokens=(getattr(details, "cached_tokens", None) or 0),
            reasoning_tokens=(getattr(out_details, "reasoning_tokens", None) or 0),
            total_tokens=getattr(usage, "total_tokens", None),
        )
    except Exception:
        logger.exception("callmeter: reading response usage failed")


def _finish_chat(gen: LLMGeneration, result: Any) -> None:
    try:
        gen.request_id = getattr(result, "id", None) or gen.request_id
        if getattr(result, "choices", None):
            gen.first_token()
        usage = getattr(result, "usage", None)
        if usage is not None:
            _chat_usage(gen, usage)
    except Exception:
        logger.exception("callmeter: reading a chat completion failed")
    _end(gen)


def _finish_response(gen: LLMGeneration, result: Any) -> None:
    try:
        gen.request_id = getattr(result, "id", None) or gen.request_id
        if getattr(result, "output", None):
            gen.first_token()
        usage = getattr(result, "usage", None)
        if usage is not None:
            _responses_usage(gen, usage)
        error = getattr(result, "error", None)
        if error is not None and getattr(result, "status", None) == "failed":
            gen.error = f"response failed: {getattr(error, 'code', error)}"
    except Exception:
        logger.exception("callmeter: reading a response failed")
    _end(gen)


def _response_event_end(gen: LLMGeneration, event: Any) -> None:
    try:
        kind = event.type
        if kind == "error":
            gen.error = f"stream error: {getattr(event, 'code', None) or event.message}"
            return
        response = event.response
        if response.usage is not None:
            _responses_usage(gen, response.usage)
        if kind == "response.failed":
            error = getattr(response, "error", None)
            gen.error = f"response failed: {getattr(error, 'code', None) or 'unknown'}"
    except Exception:
        logger.exception("callmeter: reading a response event failed")


def _is_chat_token(chunk: Any) -> bool:
    try:
        choices = chunk.choices
        if not choices:
            return False
        delta = choices[0].delta
        return bool(delta.content or delta.tool_calls or getattr(delta, "refusal", None))
    except Exception:
        return False


def _request_id_header(stream: Any) -> str:
    try:
        return stream.response.headers.get("x-request-id") or ""
    except Exception:
        return ""


# --- stream wrappers (the per-chunk hot path) ---------------------------------------------


def _chat_iter(gen: LLMGeneration, it: Iterator[Any], hide_usage: bool) -> Iterator[Any]:
    try:
        need_id = True
        for chunk in it:
            gen.ended_at = _perf()
            if need_id:
                need_id = False
                gen.request_id = chunk.id or gen.request_id
            if _is_chat_token(chunk):
                gen.first_token()
                if chunk.usage is not None:
                    _chat_usage(gen, chunk.usage)
                yield chunk
                break
            if chunk.usage is not None:
                _chat_usage(gen, chunk.usage)
                if hide_usage and not chunk.choices:
                    continue
            yield chunk
        for chunk in it:
            gen.ended_at = _perf()
            if chunk.usage is not None:
                _chat_usage(gen, chunk.usage)
                if hide_usage and not chunk.choices:
                    continue
            yield chunk
    except GeneratorExit:
        gen.cancelled = True
        _close(it)
        _end(gen)
        raise
    except BaseException as exc:
        _fail(gen, exc)
        raise
    _end(gen)


async def _chat_aiter(
    gen: LLMGeneration, it: AsyncIterator[Any], hide_usage: bool
) -> AsyncIterator[Any]:
    try:
        need_id = True
        async for chunk in it:
            gen.ended_at = _perf()
            if need_id:
                need_id = False
                gen.request_id = chunk.id or gen.request_id
            if _is_chat_token(chunk):
                gen.first_token()
                if chunk.usage is not None:
                    _chat_usage(gen, chunk.usage)
                yield chunk
                break
            if chunk.usage is not None:
                _chat_usage(gen, chunk.usage)
                if hide_usage and not chunk.choices:
                    continue
            yield chunk
        async for chunk in it:
            gen.ended_at = _perf()
            if chunk.usage is not None:
                _chat_usage(gen, chunk.usage)
                if hide_usage and not chunk.choices:
                    continue
            yield chunk
    except GeneratorExit:
        gen.cancelled = True
        await _aclose(it)
        _end(gen)
        raise
    except BaseException as exc:
        _fail(gen, exc)
        raise
    _end(gen)


def _responses_iter(gen: LLMGeneration, it: Iterator[Any]) -> Iterator[Any]:
    try:
        for event in it:
            gen.ended_at = _perf()
            kind = event.type
            if kind in _TOKEN_EVENTS:
                gen.first_token()
                yield event
                break
            if kind == "response.created":
                gen.request_id = getattr(event.response, "id", None) or gen.request_id
            elif kind in _END_EVENTS:
                _response_event_end(gen, event)
            yield event
        for event in it:
            gen.ended_at = _perf()
            if event.type in _END_EVENTS:
                _response_event_end(gen, event)
            yield event
    except GeneratorExit:
        gen.cancelled = True
        _close(it)
        _end(gen)
        raise
    except BaseException as exc:
        _fail(gen, exc)
        raise
    _end(gen)


async def _responses_aiter(gen: LLMGeneration, it: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for event in it:
            gen.ended_at = _perf()
            kind = event.type
            if kind in _TOKEN_EVENTS:
                gen.first_token()
                yield event
                break
            if kind == "response.created":
                gen.request_id = getattr(event.response, "id", None) or gen.request_id
            elif kind in _END_EVENTS:
                _response_event_end(gen, event)
            yield event
        async for event in it:
            gen.ended_at = _perf()
            if event.type in _END_EVENTS:
                _response_event_end(gen, event)
            yield event
    except GeneratorExit:
        gen.cancelled = True
        await _aclose(it)
        _end(gen)
        raise
    except BaseException as exc:
        _fail(gen, exc)
        raise
    _end(gen)


def _abandon(gen: LLMGeneration) -> None:
    """Emit ``gen`` as cancelled unless it was already emitted: a generation emits once,
    so after a normal end this changes nothing."""
    gen.cancelled = True
    _end(gen)


def _close(it: Any) -> None:
    try:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    except Exception:
        logger.debug("callmeter: closing the inner stream failed", exc_info=True)


async def _aclose(it: Any) -> None:
    try:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
    except Exception:
        logger.debug("callmeter: closing the inner stream failed", exc_info=True)


def _wrap_stream(gen: LLMGeneration, stream: Any, kind: str, hide_usage: bool) -> bool:
    """Route ``stream``'s iterator through a measuring generator. False if it is not an
    SDK stream object this version knows."""
    inner = getattr(stream, "_iterator", None)
    if inner is None:
        return False
    gen.request_id = _request_id_header(stream)
    is_async = hasattr(inner, "__anext__")
    if kind == "chat":
        wrapped: Any = (
            _chat_aiter(gen, inner, hide_usage) if is_async else _chat_iter(gen, inner, hide_usage)
        )
    else:
        wrapped = _responses_aiter(gen, inner) if is_async else _responses_iter(gen, inner)
    stream._iterator = wrapped
    gen.ended_at = _perf()  # until a chunk arrives: the stream was handed over now
    # a stream closed or dropped before its first chunk never runs the generator's code
    weakref.finalize(stream, _abandon, gen)
    original_close = stream.close
    if is_async:

        async def aclose() -> None:
            try:
                await original_close()
            finally:
                await wrapped.aclose()
                _abandon(gen)

        stream.close = aclose
    else:

        def close() -> None:
            try:
                original_close()
            finally:
                wrapped.close()
                _abandon(gen)

        stream.close = close
    return True


def _after(
    gen: LLMGeneration,
    result: Any,
    kind: str,
    hide: bool,
    kwargs: dict[str, Any],
    finish: Callable[[LLMGeneration, Any], None],
) -> Any:
    if kwargs.get("stream") is True:
        try:
            if _wrap_stream(gen, result, kind, hide):
                return result
        except Exception:
            logger.exception("callmeter: wrapping an OpenAI stream failed")
    finish(gen, result)
    return result


# --- create() wrappers --------------------------------------------------------------------


class _Meter:
    """Settings shared by the wrappers of one client."""

    __slots__ = ("include_usage", "provider", "session")

    def __init__(self, session: AgentSession | None, provider: str, include_usage: bool) -> None:
        self.session = session
        self.provider = provider
        self.include_usage = include_usage

    def prepare(self, kind: str, kwargs: dict[str, Any]) -> bool:
        """Ask for streamed usage where needed; True when the caller did not ask for it."""
        if kind != "chat" or not self.include_usage or kwargs.get("stream") is not True:
            return False
        options = kwargs.get("stream_options")
        if isinstance(options, dict):
            if "include_usage" in options:
                return False
            kwargs["stream_options"] = {**options, "include_usage": True}
        else:
            kwargs["stream_options"] = {"include_usage": True}
        return True

    def wrap(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        """A measuring version of a bound ``create`` method (sync or async)."""
        finish = _finish_chat if kind == "chat" else _finish_response
        meter = self

        if inspect.iscoroutinefunction(inspect.unwrap(original)) or inspect.iscoroutinefunction(
            original
        ):

            @functools.wraps(original)
            async def acreate(*args: Any, **kwargs: Any) -> Any:
                session = meter.session or current_session()
                if session is None:
                    return await original(*args, **kwargs)
                try:
                    hide = meter.prepare(kind, kwargs)
                    gen = _begin(meter, session, kwargs)
                except Exception:  # measuring must never stop the call
                    logger.exception("callmeter: starting an OpenAI metric failed")
                    return await original(*args, **kwargs)
                try:
                    result = await original(*args, **kwargs)
                except BaseException as exc:
                    _fail(gen, exc)
                    raise
                return _after(gen, result, kind, hide, kwargs, finish)

            return acreate

        @functools.wraps(original)
        def create(*args: Any, **kwargs: Any) -> Any:
            session = meter.session or current_session()
            if session is None:
                return original(*args, **kwargs)
            try:
                hide = meter.prepare(kind, kwargs)
                gen = _begin(meter, session, kwargs)
            except Exception:  # measuring must never stop the call
                logger.exception("callmeter: starting an OpenAI metric failed")
                return original(*args, **kwargs)
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                _fail(gen, exc)
                raise
            return _after(gen, result, kind, hide, kwargs, finish)

        return create


def _check_client(client: Any) -> None:
    chat = getattr(getattr(client, "chat", None), "completions", None)
    if chat is None or not callable(getattr(chat, "create", None)):
        raise InvalidArgumentError(
            f"expected an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}"
        )


def _check_session(session: object) -> None:
    if session is not None and not isinstance(session, AgentSession):
        raise InvalidArgumentError(
            f"session must be an AgentSession or None (the current session), got {session!r}"
        )


def _provider_of(client: Any, provider: str | None) -> str:
    if provider is not None:
        if not isinstance(provider, str) or not provider:
            raise InvalidArgumentError(f"provider must be a non-empty str, got {provider!r}")
        return provider
    if isinstance(client, openai.AzureOpenAI | openai.AsyncAzureOpenAI):
        return "azure"
    return infer_provider(getattr(client, "base_url", ""))


_MARK = "_callmeter_instrumentation"


def _handle_of(client: Any) -> Instrumentation | None:
    """The handle of an instrumented client, found on its wrapper (no global registry, so
    an instrumented client is garbage-collected like any other)."""
    try:
        wrapper = vars(client.chat.completions).get("create")
    except Exception:
        return None
    handle = getattr(wrapper, _MARK, None)
    return handle if isinstance(handle, Instrumentation) and handle.active else None


class Instrumentation:
    """Handle returned by :func:`instrument`; :meth:`uninstrument` restores the client."""

    def __init__(self, client: Any, meter: _Meter) -> None:
        self.client = client
        self._meter = meter
        self._patched: list[tuple[Any, bool, Any]] = []  # (resource, had own attr, old)

    @property
    def provider(self) -> str:
        """The provider name put on every metric."""
        return self._meter.provider

    @property
    def session(self) -> AgentSession | None:
        """The session metrics go to; None means the session current in the context."""
        return self._meter.session

    @property
    def active(self) -> bool:
        """True until :meth:`uninstrument`."""
        return bool(self._patched)

    def _patch(self, resource: Any, kind: str) -> None:
        own = vars(resource)
        had = "create" in own
        self._patched.append((resource, had, own.get("create")))
        wrapper = self._meter.wrap(resource.create, kind)
        setattr(wrapper, _MARK, self)
        resource.create = wrapper

    def uninstrument(self) -> None:
        """Remove the wrappers; the client is as it was before :func:`instrument`."""
        while self._patched:
            resource, had, old = self._patched.pop()
            if had:
                resource.create = old
            else:
                vars(resource).pop("create", None)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstrument()


def instrument(
    client: Any,
    session: AgentSession | None = None,
    *,
    provider: str | None = None,
    include_usage: bool = True,
) -> Instrumentation:
    """Measure every ``chat.completions.create`` and ``responses.create`` of ``client``.

    ``session=None`` sends each metric to the session current where ``create()`` is
    called (:func:`callmeter.current_session`), so one client can serve many concurrent
    calls; calls made outside any session are not measured. ``provider`` overrides the
    name inferred from the base URL. ``include_usage=False`` never adds
    ``stream_options`` (for servers that reject it). Returns a handle whose
    :meth:`~Instrumentation.uninstrument` (or ``with`` exit) restores the client.
    """
    _check_client(client)
    _check_session(session)
    if not isinstance(include_usage, bool):
        raise InvalidArgumentError(f"include_usage must be a bool, got {include_usage!r}")
    if _handle_of(client) is not None:
        raise InvalidArgumentError(
            "this client is already instrumented; call uninstrument() on it first"
        )
    handle = Instrumentation(client, _Meter(session, _provider_of(client, provider), include_usage))
    handle._patch(client.chat.completions, "chat")
    responses = getattr(client, "responses", None)
    if responses is not None and callable(getattr(responses, "create", None)):
        handle._patch(responses, "responses")
    return handle


def uninstrument(client: Any) -> bool:
    """Restore ``client`` if it is instrumented; True if it was."""
    handle = _handle_of(client)
    if handle is None:
        return False
    handle.uninstrument()
    return True


def is_instrumented(client: Any) -> bool:
    """True if :func:`instrument` wrapped ``client`` and it was not restored since."""
    return _handle_of(client) is not None


def measured(
    client: Any,
    session: AgentSession | None = None,
    *,
    api: str = "chat",
    provider: str | None = None,
    include_usage: bool = True,
) -> Callable[..., Any]:
    """A measuring version of ``client.chat.completions.create`` (``api="chat"``) or
    ``client.responses.create`` (``api="responses"``), leaving the client untouched."""
    _check_client(client)
    _check_session(session)
    if api == "chat":
        create = client.chat.completions.create
    elif api == "responses":
        create = client.responses.create
    else:
        raise InvalidArgumentError(f'api must be "chat" or "responses", got {api!r}')
    return _Meter(session, _provider_of(client, provider), include_usage).wrap(create, api)
