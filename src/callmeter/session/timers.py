"""Measurement helpers: context managers that time one request and emit one metrics event.

Each works as ``with`` and ``async with``. Durations come from ``time.perf_counter``
(monotonic); ``started_at``/``timestamp`` are wall clock. Every request ends in one of three
outcomes (docs/metrics.md): completed (``cancelled=False, error=None``), cancelled by the
caller (``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``, or
``cancelled`` set on the timer: ``cancelled=True, error=None``) or failed (any other
exception, or ``error`` set on the timer: ``cancelled=False``, ``error`` the exception type
name). The exception propagates unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._native import CState, speedups
from ..model.types import LLMMetrics, Metadata, STTMetrics, ToolMetrics, TTSMetrics
from .context import current_speech_id_var, current_tool_name_var

if TYPE_CHECKING:
    from .agent_session import AgentSession

logger = logging.getLogger("callmeter.session")
_perf = time.perf_counter
_wall = time.time
_current_speech_id = current_speech_id_var.get


@functools.lru_cache(maxsize=256)
def _metadata(model: str | None, provider: str | None) -> Metadata | None:
    # Shared (Metadata is frozen): collectors add up runs of the same object cheaply.
    if model is None and provider is None:
        return None
    return Metadata(model_name=model, model_provider=provider)


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_seconds(value: object) -> bool:
    return type(value) in (int, float) and 0 <= value < 1e9  # type: ignore[operator]


CANCELLED_BY_CALLER: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    GeneratorExit,
    KeyboardInterrupt,
)
"""Exceptions that mean the caller cancelled a request rather than the request failing."""


class _Timer:
    """Shared start/finish logic; subclasses build the metric in ``_build``."""

    _t0: float
    _wall0: float

    def __init__(self, session: AgentSession, speech_id: str | None) -> None:
        self._session = session
        self.speech_id = speech_id
        self._t0 = 0.0
        self._wall0 = 0.0
        self._done = False
        self.error: str | None = None
        """Set to ``"ExceptionType"`` or ``"ExceptionType: detail"`` to record a failure the
        block handled itself."""
        self.cancelled = False
        """Set to True to record that the caller cancelled the request (e.g. abandoned a
        stream) without an exception reaching the block."""
        self.ended_at: float | None = None
        """``time.perf_counter()`` value to end at instead of the moment the block exits
        (for work whose end was observed before it is recorded, e.g. a dropped stream)."""

    def _start(self) -> None:
        if self.speech_id is None:
            self.speech_id = current_speech_id_var.get()
        self._wall0 = _wall()
        self._t0 = _perf()

    def _finish(self, exc_type: type[BaseException] | None) -> None:
        if self._done:
            return
        self._done = True
        end = self.ended_at if self.ended_at is not None else _perf()
        try:
            metric = self._build(end, exc_type)
        except Exception:  # measurement must never break the agent
            logger.exception("callmeter: building a %s metric failed", type(self).__name__)
            self._session._rejects.add(1)  # e.g. ended_at set to something not a number
            return
        self._session.emit_metrics(metric)

    def _build(self, end: float, exc_type: type[BaseException] | None) -> Any:
        raise NotImplementedError

    def _outcome(self, exc_type: type[BaseException] | None) -> tuple[bool, str | None]:
        """(cancelled, error) by the three outcomes of docs/metrics.md."""
        if exc_type is None and self.error is None and not self.cancelled:
            return False, None
        if exc_type is not None:
            if issubclass(exc_type, CANCELLED_BY_CALLER):
                return True, None
            return False, self.error or exc_type.__name__
        if self.error is not None:
            return False, self.error
        return bool(self.cancelled), None

    def __enter__(self) -> Any:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc_type)

    async def __aenter__(self) -> Any:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc_type)


class LLMGeneration(_Timer):
    """Times one LLM request. Call :meth:`first_token` at the first token, :meth:`set_usage`
    with the provider's usage. ``tokens_per_second`` on the emitted metric is completion
    tokens over the time from the first token to the end (generation speed);
    ``LLMMetrics.tokens_per_second_overall`` gives LiveKit's completion tokens over duration.
    Without :meth:`set_usage` the metric says ``usage_reported=False``.
    """

    # Defaults on the class: __init__ sets only what the caller passed (the helper path
    # builds one of these per request). Instances shadow them when set.
    _t0 = 0.0
    _wall0 = 0.0
    _done = False
    _first: float | None = None
    _usage: tuple[int, int, int, int] | None = None
    _extra: tuple[Any, ...] | None = None
    error: str | None = None
    cancelled = False
    ended_at: float | None = None

    def __init__(
        self,
        session: AgentSession,
        *,
        model: str | None = None,
        provider: str | None = None,
        label: str = "",
        request_id: str = "",
        speech_id: str | None = None,
    ) -> None:
        # AgentSession.llm_generation sets the same attributes without calling this.
        self._session = session
        self.speech_id = speech_id
        self.model = model
        self.provider = provider
        self.label = label
        self.request_id = request_id

    def __enter__(self) -> LLMGeneration:
        if self.speech_id is None:
            self.speech_id = _current_speech_id()
        self._wall0 = _wall()
        self._t0 = _perf()
        return self

    async def __aenter__(self) -> LLMGeneration:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        # One function on purpose (it runs once per request): build the metric; when it
        # is valid by construction, record it without the full check.
        if self._done:
            return
        self._done = True
        end = self.ended_at
        if end is None:
            end = _perf()
        try:
            metric, checked = self._build_checked(end, exc_type)
        except Exception:  # measurement must never break the agent
            logger.exception("callmeter: building a %s metric failed", type(self).__name__)
            self._session._rejects.add(1)  # e.g. an unhashable model name set on the timer
            return
        if checked:
            self._session._record_checked(metric)
        else:
            self._session.emit_metrics(metric)

    _finish = __exit__

    def first_token(self) -> None:
        """Mark the first token (or tool-call delta); later calls are ignored."""
        if self._first is None:
            self._first = _perf()

    def set_usage(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        prompt_cached_tokens: int = 0,
        *,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
        input_audio_tokens: int = 0,
        output_audio_tokens: int = 0,
        total_tokens: int | None = None,
    ) -> None:
        """Record the token usage the provider reported.

        Counts must be non-negative ints. Invalid values are logged and the request is
        recorded as ``usage_reported=False`` (measuring never raises into the agent).
        """
        p, c, k = prompt_tokens, completion_tokens, prompt_cached_tokens
        ok = type(p) is int and type(c) is int and type(k) is int and p >= 0 and c >= 0 and k >= 0
        if total_tokens is None:
            total = p + c if ok else 0
        else:
            total = total_tokens
            ok = ok and _is_count(total)
        e, r = cache_creation_tokens, reasoning_tokens
        ia, oa = input_audio_tokens, output_audio_tokens
        extra: tuple[Any, ...] | None = None
        if (
            type(e) is int
            and type(r) is int
            and type(ia) is int
            and type(oa) is int
            and (e | r | ia | oa) >= 0
        ):
            if e or r or ia or oa:
                extra = (e, r, ia, oa)
        else:
            extra = (e, r, ia, oa)
            ok = False
        if not ok:
            logger.error(
                "callmeter: invalid token usage %r (counts must be non-negative ints); "
                "recorded as not reported",
                (p, c, k, *extra, total_tokens) if extra else (p, c, k, total_tokens),
            )
            self._usage = self._extra = None
            return
        self._usage = (p, c, k, total)
        self._extra = extra

    def _build_checked(
        self, end: float, exc_type: type[BaseException] | None
    ) -> tuple[LLMMetrics, bool]:
        """The metric, and whether it is valid by construction.

        Token counts were checked by :meth:`set_usage` and times come from the clocks, so
        only what the caller can set on the timer (label, request_id, speech_id, error,
        model, provider, ended_at) and the derived times are checked here, a few
        comparisons instead of the full check of :mod:`callmeter.model.validate`. When any
        of them fails, the metric goes through ``emit_metrics`` and its full check instead.
        """
        first = self._first
        usage = self._usage
        prompt, completion, cached, total = usage if usage is not None else (0, 0, 0, 0)
        t0 = self._t0
        duration = end - t0
        if first is None:
            ttft = -1.0
            tps = 0.0
        else:
            ttft = first - t0
            gen_time = end - first
            tps = completion / gen_time if gen_time > 0 else 0.0
        if exc_type is None and self.error is None and not self.cancelled:
            cancelled, error = False, None
        else:
            cancelled, error = self._outcome(exc_type)
        model, provider = self.model, self.provider
        label, request_id, speech_id = self.label, self.request_id, self.speech_id
        timestamp = _wall()
        # 15 keyword arguments at most: msgspec's fast path (16 or more take a slow one).
        m = LLMMetrics(
            timestamp=timestamp,
            started_at=self._wall0,
            duration=duration,
            label=label,
            request_id=request_id,
            ttft=ttft,
            cancelled=cancelled,
            prompt_tokens=prompt,
            completion_tokens=completion,
            prompt_cached_tokens=cached,
            total_tokens=total,
            tokens_per_second=tps,
            error=error,
            speech_id=speech_id,
            metadata=_metadata(model, provider),
        )
        if usage is None:
            m.usage_reported = False
        elif self._extra is not None:
            (
                m.cache_creation_tokens,
                m.reasoning_tokens,
                m.input_audio_tokens,
                m.output_audio_tokens,
            ) = self._extra
        checked = (
            type(label) is str
            and type(request_id) is str
            and (speech_id is None or type(speech_id) is str)
            and (error is None or type(error) is str)
            and (model is None or type(model) is str)
            and (provider is None or type(provider) is str)
            and type(duration) is float
            and 0.0 <= duration <= 1e9
            and (ttft == -1.0 or 0.0 <= ttft <= 1e9)
            and tps <= 1e9
            and 0.0 <= timestamp <= 1e11
            and 0.0 <= self._wall0 <= 1e11
        )
        return m, checked


PyLLMGeneration = LLMGeneration
"""The pure-Python LLMGeneration: the reference for the C one (see below)."""

if not TYPE_CHECKING and speedups is not None:

    class LLMGeneration(speedups.GenerationCore, PyLLMGeneration, CState):
        # The C base handles the common case of __enter__, first_token, set_usage and
        # __exit__, and calls PyLLMGeneration's methods for everything else.
        __doc__ = PyLLMGeneration.__doc__


class ToolCall(_Timer):
    """Times one tool call. An exception marks it failed (``success=False``, the exception's
    type name in ``error``) or cancelled (``success=False, cancelled=True``), and
    propagates."""

    def __init__(
        self,
        session: AgentSession,
        name: str,
        *,
        call_id: str | None = None,
        speech_id: str | None = None,
    ) -> None:
        super().__init__(session, speech_id)
        self.name = name
        self.call_id = call_id
        self._name_token: Any = None

    def _start(self) -> None:
        super()._start()
        self._name_token = current_tool_name_var.set(self.name)

    def _finish(self, exc_type: type[BaseException] | None) -> None:
        if self._name_token is not None:
            with contextlib.suppress(ValueError):  # left in another context than entered
                current_tool_name_var.reset(self._name_token)
            self._name_token = None
        super()._finish(exc_type)

    def _build(self, end: float, exc_type: type[BaseException] | None) -> ToolMetrics:
        cancelled, error = self._outcome(exc_type)
        return ToolMetrics(
            timestamp=_wall(),
            started_at=self._wall0,
            duration=end - self._t0,
            tool_name=self.name,
            call_id=self.call_id,
            success=not cancelled and error is None,
            cancelled=cancelled,
            error=error,
            speech_id=self.speech_id,
        )


class _SpeechTimer(_Timer):
    def __init__(
        self,
        session: AgentSession,
        *,
        model: str | None = None,
        provider: str | None = None,
        label: str = "",
        request_id: str = "",
        streamed: bool = False,
        speech_id: str | None = None,
    ) -> None:
        super().__init__(session, speech_id)
        self.model = model
        self.provider = provider
        self.label = label
        self.request_id = request_id
        self.streamed = streamed
        self._first: float | None = None

    def first_byte(self) -> None:
        """Mark the first result (transcript or audio byte); later calls are ignored."""
        if self._first is None:
            self._first = _perf()

    def _common(self, end: float, exc_type: type[BaseException] | None) -> dict[str, Any]:
        cancelled, error = self._outcome(exc_type)
        return {
            "timestamp": _wall(),
            "started_at": self._wall0,
            "duration": end - self._t0,
            "ttfb": self._first - self._t0 if self._first is not None else -1.0,
            "label": self.label,
            "request_id": self.request_id,
            "streamed": self.streamed,
            "cancelled": cancelled,
            "error": error,
            "speech_id": self.speech_id,
            "metadata": _metadata(self.model, self.provider),
        }


class STTRequest(_SpeechTimer):
    """Times one speech-to-text request; :meth:`set_usage` records the audio it consumed."""

    audio_duration = 0.0
    input_tokens = 0
    output_tokens = 0
    input_audio_tokens = 0

    def set_usage(
        self,
        audio_duration: float = 0.0,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        input_audio_tokens: int = 0,
    ) -> None:
        """Record billed usage: seconds of audio transcribed, and tokens where billed so.

        ``input_tokens`` counts every input token; ``input_audio_tokens`` is the audio part
        of them (billed at its own rate by token-billed models such as gpt-4o-transcribe).
        Invalid values (negative, not numbers) are logged and left out.
        """
        if not (
            _is_seconds(audio_duration)
            and _is_count(input_tokens)
            and _is_count(output_tokens)
            and _is_count(input_audio_tokens)
        ):
            logger.error(
                "callmeter: invalid STT usage left out: %r", (audio_duration, input_tokens)
            )
            return
        self.audio_duration = audio_duration
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.input_audio_tokens = input_audio_tokens

    def _build(self, end: float, exc_type: type[BaseException] | None) -> STTMetrics:
        return STTMetrics(
            audio_duration=self.audio_duration,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            input_audio_tokens=self.input_audio_tokens,
            total_tokens=self.input_tokens + self.output_tokens,
            **self._common(end, exc_type),
        )


class TTSRequest(_SpeechTimer):
    """Times one text-to-speech request; :meth:`set_usage` records characters and audio."""

    characters_count = 0
    audio_duration = 0.0
    input_tokens = 0
    output_tokens = 0
    segment_id: str | None = None

    def set_usage(
        self,
        characters_count: int = 0,
        audio_duration: float = 0.0,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Record billed usage: characters synthesized, seconds of audio produced, tokens.

        Invalid values (negative, not numbers) are logged and left out.
        """
        counts = (characters_count, input_tokens, output_tokens)
        if not (_is_seconds(audio_duration) and all(_is_count(c) for c in counts)):
            logger.error(
                "callmeter: invalid TTS usage left out: %r", (characters_count, audio_duration)
            )
            return
        self.characters_count = characters_count
        self.audio_duration = audio_duration
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens

    def _build(self, end: float, exc_type: type[BaseException] | None) -> TTSMetrics:
        return TTSMetrics(
            characters_count=self.characters_count,
            audio_duration=self.audio_duration,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            segment_id=self.segment_id,
            **self._common(end, exc_type),
        )
