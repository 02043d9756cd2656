"""Measure a Pipecat pipeline into a callmeter session (the ``pipecat`` extra).

``CallmeterObserver(session=None)`` is a Pipecat observer: pass it to the pipeline worker
(``PipelineWorker(pipeline, observers=[observer], params=PipelineParams(enable_metrics=True,
enable_usage_metrics=True))``; the deprecated ``PipelineTask`` works too). From the frames
the pipeline pushes it measures:

- ``MetricsFrame``: LLM token usage, TTS characters and STT audio seconds, with the TTFB
  and processing time of the service that reported them. One ``LLMMetrics`` per LLM
  inference (``LLMFullResponseStartFrame`` ... ``LLMFullResponseEndFrame``).
- ``FunctionCallInProgressFrame`` ... ``FunctionCallResultFrame`` (or
  ``FunctionCallCancelFrame``): one ``ToolMetrics`` per ``tool_call_id``.
- ``UserStoppedSpeakingFrame`` ... ``BotStartedSpeakingFrame``: one callmeter turn per user
  turn, ended when the user speaks again or the pipeline ends.

Each frame counts once, however many hops it makes and whether or not it was broadcast as
two siblings. The observer never raises (Pipecat stops feeding an observer that raised):
a frame it cannot read is skipped with a debug log.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

try:
    from pipecat.frames import frames as pf
    from pipecat.metrics import metrics as pm
    from pipecat.observers.base_observer import BaseObserver, FramePushed
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "callmeter.integrations.pipecat needs Pipecat: pip install 'callmeter[pipecat]'"
    ) from exc

from ..errors import InvalidArgumentError
from ..metrics import LLMMetrics, Metadata, STTMetrics, ToolMetrics, TTSMetrics
from ..session import AgentSession, Turn

__all__ = ["CallmeterObserver"]

logger = logging.getLogger("callmeter.integrations.pipecat")

_MAX_SEEN = 8192  # frame ids remembered for de-duplication (bounded memory)
_MAX_CLOCK_SKEW = 3600.0  # seconds a frame timestamp may stray from the wall clock
_MAX_PENDING = 256
_MAX_ERROR_CHARS = 200


def _service_classes() -> tuple[tuple[type, str], ...]:
    classes: list[tuple[type, str]] = []
    for module, name, kind in (
        ("pipecat.services.llm_service", "LLMService", "llm"),
        ("pipecat.services.tts_service", "TTSService", "tts"),
        ("pipecat.services.stt_service", "STTService", "stt"),
    ):
        try:
            classes.append((getattr(__import__(module, fromlist=[name]), name), kind))
        except Exception:  # a Pipecat without that module: classify by usage instead
            logger.debug("callmeter: Pipecat has no %s.%s", module, name)
    return tuple(classes)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ValueError(f"not a token count: {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number of seconds: {value!r}")
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise ValueError(f"not a number of seconds: {value!r}")
    return float(value)


def _metadata(model: str | None, provider: str | None) -> Metadata | None:
    if not model and not provider:
        return None
    return Metadata(model_name=model or None, model_provider=provider)


def _provider(source: Any) -> str | None:
    """``openai`` for ``pipecat.services.openai.llm.OpenAILLMService``, and so on."""
    parts = type(source).__module__.split(".")
    if len(parts) > 2 and parts[:2] == ["pipecat", "services"]:
        return parts[2]
    return None


@dataclass
class _LLMRequest:
    started_at: float
    speech_id: str | None
    model: str | None = None
    ttft: float = -1.0
    processing: float | None = None
    usage: dict[str, int] | None = None


@dataclass
class _SpeechRequest:
    started_at: float
    speech_id: str | None
    model: str | None = None
    characters: int = 0
    ttfb: float = -1.0
    processing: float | None = None


@dataclass
class _Service:
    kind: str | None = None
    provider: str | None = None
    llm: _LLMRequest | None = None
    tts: _SpeechRequest | None = None
    stt_ttfb: float = -1.0
    pending: list[tuple[Any, float]] = field(default_factory=list)
    """TTFB/processing reports received before the service's kind was known."""


class _OpenTurn:
    """A callmeter turn entered in a context of its own (no context variable leaks into
    Pipecat's tasks)."""

    def __init__(self, session: AgentSession, user_stopped_at: float) -> None:
        self.ctx = contextvars.copy_context()
        self.turn: Turn = session.turn()
        self.ctx.run(self.turn.__enter__)
        self.turn.user_stopped_speaking(user_stopped_at)
        self.agent_started = False

    def end(self) -> None:
        if not self.agent_started:
            self.turn.interrupt()  # the user spoke again (or the call ended) first
        self.ctx.run(self.turn.__exit__, None, None, None)


def _usage(value: Any) -> dict[str, int]:
    prompt = _count(value.prompt_tokens)
    completion = _count(value.completion_tokens)
    total = _count(value.total_tokens)
    cache_read = _count(getattr(value, "cache_read_input_tokens", None))
    cache_write = _count(getattr(value, "cache_creation_input_tokens", None))
    caches = cache_read + cache_write
    # callmeter's prompt_tokens include cache reads and writes (OpenAI's convention).
    # Anthropic and Bedrock report prompt_tokens net of the cache and a gross total.
    if caches and total >= prompt + completion + caches:
        prompt += caches
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_cached_tokens": cache_read,
        "cache_creation_tokens": cache_write,
        "reasoning_tokens": _count(getattr(value, "reasoning_tokens", None)),
        "input_audio_tokens": _count(getattr(value, "input_audio_tokens", None)),
        "output_audio_tokens": _count(getattr(value, "output_audio_tokens", None)),
        "total_tokens": max(total, prompt + completion),
    }


def _add_usage(a: dict[str, int] | None, b: dict[str, int]) -> dict[str, int]:
    return b if a is None else {k: a[k] + b[k] for k in b}


class CallmeterObserver(BaseObserver):
    """A Pipecat observer that records the pipeline's metrics, tool calls and turns in
    :attr:`session` (a new callmeter :class:`~callmeter.AgentSession` when None).

    The session starts with the pipeline and is closed when the worker cleans its
    observers up (the pipeline ended or was cancelled), or by :meth:`close`.
    """

    def __init__(self, session: AgentSession | None = None, **kwargs: Any) -> None:
        if session is not None and not isinstance(session, AgentSession):
            raise InvalidArgumentError(f"session must be a callmeter AgentSession, got {session!r}")
        super().__init__(observe_every_push=False, **kwargs)
        self.session: AgentSession = session if session is not None else AgentSession()
        self._closed = False
        self._offset: float | None = None
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._services: dict[str, _Service] = {}
        self._classes = _service_classes()
        self._tools: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()
        self._tools_done: OrderedDict[str, None] = OrderedDict()
        self._turn: _OpenTurn | None = None
        self._bot_speaking = False

    # Pipecat hooks ---------------------------------------------------------------------

    async def on_push_frame(self, data: FramePushed) -> None:
        """Measure one pushed frame (Pipecat calls this once per frame). Never raises."""
        try:
            self._on_frame(data)
        except Exception:
            frame = getattr(data, "frame", None)
            logger.debug(
                "callmeter: skipped a Pipecat frame (%s)", type(frame).__name__, exc_info=True
            )

    async def on_pipeline_started(self) -> None:
        """Start the session (if it was not yet)."""
        if not self._closed:
            self.session.start()

    async def cleanup(self) -> None:
        """Close the session: Pipecat calls this when the worker finishes."""
        try:
            self.close()
        except Exception:
            logger.debug("callmeter: closing the Pipecat observer failed", exc_info=True)
        await super().cleanup()

    def close(self) -> None:
        """Emit what is still pending, end the open turn and close the session.
        Frames after this are ignored. A second call does nothing."""
        if self._closed:
            return
        try:
            for name, service in self._services.items():
                self._finish_llm(name, service, None)
                self._finish_tts(name, service)
            for call_id in list(self._tools):
                self._end_tool(call_id, time.time(), "cancelled")
            self._end_turn()
        finally:
            self._closed = True
            self.session.close()

    # frames ----------------------------------------------------------------------------

    def _first_time(self, frame: Any) -> bool:
        """True the first time ``frame`` (or its broadcast sibling) is seen."""
        frame_id = frame.id
        seen = self._seen
        if frame_id in seen:
            return False
        sibling = getattr(frame, "broadcast_sibling_id", None)
        if sibling is not None and sibling in seen:
            return False
        seen[frame_id] = None
        if len(seen) > _MAX_SEEN:
            seen.popitem(last=False)
        return True

    def _wall(self, data: FramePushed) -> float:
        """Wall-clock seconds of a push (``timestamp`` is pipeline-clock nanoseconds)."""
        ts = data.timestamp
        if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
            return time.time()
        if self._offset is None:
            clock_ns = 0
            try:
                clock_ns = data.source.get_clock().get_time()
            except Exception:
                logger.debug("callmeter: no Pipecat clock; mapping from the frame", exc_info=True)
            now = time.time()
            # both clocks read now when the source has one: the push may have been queued
            self._offset = now - (clock_ns if clock_ns > 0 else ts) / 1e9
        wall = self._offset + ts / 1e9
        now = time.time()
        if abs(wall - now) > _MAX_CLOCK_SKEW:  # a garbage timestamp: never an absurd duration
            return now
        return wall

    def _on_frame(self, data: FramePushed) -> None:
        if self._closed:
            return
        frame = data.frame
        if isinstance(frame, pf.MetricsFrame):
            if self._first_time(frame):
                self._metrics(data, frame)
            return
        if not isinstance(
            frame,
            pf.LLMFullResponseStartFrame
            | pf.LLMFullResponseEndFrame
            | pf.FunctionCallInProgressFrame
            | pf.FunctionCallResultFrame
            | pf.FunctionCallCancelFrame
            | pf.UserStartedSpeakingFrame
            | pf.UserStoppedSpeakingFrame
            | pf.BotStartedSpeakingFrame
            | pf.BotStoppedSpeakingFrame,
        ) or not self._first_time(frame):
            return
        if not self.session.started:
            self.session.start()
        at = self._wall(data)
        if isinstance(frame, pf.LLMFullResponseStartFrame):
            name = self._source_name(data)
            service = self._service(name, "llm")
            self._finish_llm(name, service, at)
            service.llm = _LLMRequest(started_at=at, speech_id=self._speech_id())
        elif isinstance(frame, pf.LLMFullResponseEndFrame):
            name = self._source_name(data)
            self._finish_llm(name, self._service(name, "llm"), at)
        elif isinstance(frame, pf.FunctionCallInProgressFrame):
            self._start_tool(frame, at)
        elif isinstance(frame, pf.FunctionCallResultFrame):
            error = frame.error
            if error is not None:
                error = str(error)[:_MAX_ERROR_CHARS] or "error"
            self._end_tool(frame.tool_call_id, at, error)
        elif isinstance(frame, pf.FunctionCallCancelFrame):
            self._end_tool(frame.tool_call_id, at, "cancelled")
        elif isinstance(frame, pf.UserStoppedSpeakingFrame):
            self._end_turn()
            self._turn = _OpenTurn(self.session, at)
        elif isinstance(frame, pf.UserStartedSpeakingFrame):
            if self._bot_speaking and self._turn is not None:
                self._turn.turn.interrupt()  # the user barged in
            self._end_turn()
        elif isinstance(frame, pf.BotStartedSpeakingFrame):
            self._bot_speaking = True
            if self._turn is not None:
                self._turn.turn.agent_started_speaking(at)
                self._turn.agent_started = True
        elif isinstance(frame, pf.BotStoppedSpeakingFrame):
            self._bot_speaking = False

    def _source_name(self, data: FramePushed) -> str:
        name = getattr(data.source, "name", None)
        if not isinstance(name, str):
            raise ValueError(f"frame source without a name: {data.source!r}")
        return name

    def _speech_id(self) -> str | None:
        return self._turn.turn.speech_id if self._turn is not None else None

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            for name, service in self._services.items():  # the turn's TTS requests first
                self._finish_tts(name, service)
            turn.end()

    def _service(self, name: str, kind: str | None = None, source: Any = None) -> _Service:
        service = self._services.get(name)
        if service is None:
            if len(self._services) >= _MAX_PENDING:
                raise ValueError("too many Pipecat services")
            service = self._services[name] = _Service()
        if source is not None and service.provider is None:
            service.provider = _provider(source)
        if service.kind is None:
            if source is not None:
                kind = next((k for cls, k in self._classes if isinstance(source, cls)), kind)
            if kind is not None:
                service.kind = kind
                pending, service.pending = service.pending, []
                for item, at in pending:
                    self._timing(name, service, item, at)
        return service

    # metrics ---------------------------------------------------------------------------

    def _metrics(self, data: FramePushed, frame: Any) -> None:
        items = frame.data
        if not isinstance(items, list | tuple):
            raise ValueError(f"MetricsFrame.data is not a list: {type(items).__name__}")
        if items and all(
            isinstance(d, pm.TTFBMetricsData | pm.ProcessingMetricsData) and d.value == 0
            for d in items
        ):
            return  # the worker's initial all-zero report
        if not self.session.started:
            self.session.start()
        at = self._wall(data)
        source = getattr(data, "source", None)
        for item in items:
            try:
                self._metrics_item(item, at, source)
            except Exception:
                logger.debug(
                    "callmeter: skipped Pipecat metrics (%s)", type(item).__name__, exc_info=True
                )

    def _metrics_item(self, item: Any, at: float, source: Any) -> None:
        name = item.processor
        if not isinstance(name, str):
            raise ValueError(f"metrics without a processor name: {item!r}")
        # the frame's source is the service that reported, unless it only passed it on
        if getattr(source, "name", None) != name:
            source = None
        model = item.model if isinstance(item.model, str) else None
        if isinstance(item, pm.LLMUsageMetricsData):
            usage = _usage(item.value)
            service = self._service(name, "llm", source)
            request = service.llm
            if request is not None:
                request.usage = _add_usage(request.usage, usage)
                request.model = model or request.model
            else:  # no inference frames around it: one request per usage report
                request = _LLMRequest(at, self._speech_id(), model, usage=usage)
                self._emit_llm(request, at, name, service.provider)
        elif isinstance(item, pm.TTSUsageMetricsData):
            characters = _count(item.value)
            service = self._service(name, "tts", source)
            request = service.tts
            if request is not None and request.characters == 0:  # opened by its TTFB
                request.characters = characters
                request.model = model or request.model
            else:
                self._finish_tts(name, service)
                service.tts = _SpeechRequest(
                    started_at=at, speech_id=self._speech_id(), model=model, characters=characters
                )
        elif isinstance(item, pm.STTUsageMetricsData):
            seconds = _seconds(item.value.audio_seconds)
            service = self._service(name, "stt", source)
            ttfb, service.stt_ttfb = service.stt_ttfb, -1.0
            self.session.emit_metrics(
                STTMetrics(
                    timestamp=at,
                    started_at=at,
                    duration=0.0,
                    audio_duration=seconds,
                    label=name,
                    ttfb=ttfb,
                    streamed=True,
                    speech_id=self._speech_id(),
                    metadata=_metadata(model, service.provider),
                )
            )
        elif isinstance(item, pm.TTFBMetricsData | pm.ProcessingMetricsData):
            _seconds(item.value)
            service = self._service(name, None, source)
            if service.kind is None:
                if len(service.pending) < _MAX_PENDING:
                    service.pending.append((item, at))
                return
            self._timing(name, service, item, at)
        else:
            logger.debug("callmeter: Pipecat %s not measured", type(item).__name__)

    def _timing(self, name: str, service: _Service, item: Any, at: float) -> None:
        """A TTFB or processing time, for the request of ``service`` it belongs to."""
        value = float(item.value)
        is_ttfb = isinstance(item, pm.TTFBMetricsData)
        model = item.model if isinstance(item.model, str) else None
        if service.kind == "llm":
            request = service.llm
            if request is None:
                return  # outside an inference: nothing to attach it to
            request.model = request.model or model
            if is_ttfb and request.ttft < 0:
                request.ttft = value
            elif not is_ttfb:
                request.processing = value
        elif service.kind == "tts":
            tts = service.tts
            if tts is None or (is_ttfb and tts.ttfb >= 0):
                self._finish_tts(name, service)
                tts = service.tts = _SpeechRequest(
                    started_at=at - value if is_ttfb else at, speech_id=self._speech_id()
                )
            tts.model = tts.model or model
            if is_ttfb:
                tts.ttfb = value
            else:
                tts.processing = value
        elif service.kind == "stt" and is_ttfb:
            service.stt_ttfb = value

    def _finish_llm(self, name: str, service: _Service, at: float | None) -> None:
        request, service.llm = service.llm, None
        if request is not None:
            self._emit_llm(request, at, name, service.provider)

    def _emit_llm(
        self, r: _LLMRequest, end: float | None, label: str, provider: str | None
    ) -> None:
        if end is None:  # no end frame: the processing time is the best measure
            end = r.started_at + (r.processing or 0.0)
        duration = max(0.0, end - r.started_at)
        usage = r.usage or {}
        completion = usage.get("completion_tokens", 0)
        gen_time = duration - r.ttft if r.ttft >= 0 else 0.0
        self.session.emit_metrics(
            LLMMetrics(
                timestamp=end,
                started_at=r.started_at,
                duration=duration,
                label=label,
                ttft=min(r.ttft, duration) if r.ttft >= 0 else -1.0,
                tokens_per_second=completion / gen_time if gen_time > 0 else 0.0,
                usage_reported=r.usage is not None,
                speech_id=r.speech_id,
                metadata=_metadata(r.model, provider),
                **usage,
            )
        )

    def _finish_tts(self, name: str, service: _Service) -> None:
        r, service.tts = service.tts, None
        if r is None:
            return
        duration = r.processing if r.processing is not None else max(r.ttfb, 0.0)
        self.session.emit_metrics(
            TTSMetrics(
                timestamp=r.started_at + duration,
                started_at=r.started_at,
                duration=duration,
                ttfb=r.ttfb,
                characters_count=r.characters,
                label=name,
                streamed=True,
                speech_id=r.speech_id,
                metadata=_metadata(r.model, service.provider),
            )
        )

    # tools -----------------------------------------------------------------------------

    def _start_tool(self, frame: Any, at: float) -> None:
        call_id, name = frame.tool_call_id, frame.function_name
        if not (isinstance(call_id, str) and isinstance(name, str) and name):
            raise ValueError("function call without tool_call_id or function_name")
        if call_id in self._tools or call_id in self._tools_done:
            return
        self._tools[call_id] = (name, at, self._speech_id())
        if len(self._tools) > _MAX_PENDING:
            self._tools.popitem(last=False)

    def _end_tool(self, call_id: Any, at: float, error: str | None) -> None:
        if not isinstance(call_id, str):
            return
        started = self._tools.pop(call_id, None)
        self._tools_done[call_id] = None  # a start seen after its end is not a new call
        if len(self._tools_done) > _MAX_SEEN:
            self._tools_done.popitem(last=False)
        if started is None:
            return  # its start was not seen (or it was already measured)
        name, started_at, speech_id = started
        self.session.emit_metrics(
            ToolMetrics(
                timestamp=at,
                started_at=started_at,
                duration=max(0.0, at - started_at),
                tool_name=name,
                call_id=call_id,
                success=error is None,
                error=error,
                speech_id=speech_id,
            )
        )
