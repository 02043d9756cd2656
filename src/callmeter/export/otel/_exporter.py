"""OTelExporter: a sink that turns records into OpenTelemetry metrics and spans."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ... import __version__
from ...errors import InvalidArgumentError
from ...model.events import (
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    SessionStartedEvent,
)
from ...model.types import (
    COMPONENTS,
    EOUMetrics,
    LLMMetrics,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnMetrics,
)
from ...pricing import resolve_prices
from ...pricing.cost import (
    LARGE_REQUEST_TOKENS,
    Amounts,
    amounts_of,
    billing_rule,
    price_amounts,
)
from ..sink import QueueSink
from . import _semconv as sc

__all__ = ["OTelExporter"]

OTHER = "other"


class CappedNames:
    """The first ``limit`` distinct names keep their value; later ones are ``other``."""

    __slots__ = ("_map", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._map: dict[str, str] = {}

    def __call__(self, name: Any) -> str:
        value = self._map.get(name)
        if value is None:
            if len(self._map) >= self.limit:
                return OTHER
            value = self._map[name] = str(name).encode("utf-8", "replace").decode()[:128]
        return value


_KIND = {LLMMetrics: "llm", STTMetrics: "stt", TTSMetrics: "tts", RealtimeModelMetrics: "realtime"}
_NS = 1_000_000_000
_MAX_OPEN_CALLS = 100_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


def _ok_seconds(x: Any) -> bool:
    return (x.__class__ is float or x.__class__ is int) and 0 <= x <= 1e9


def _ok_time(x: Any) -> bool:
    return (x.__class__ is float or x.__class__ is int) and 0 <= x <= 1e11


class _Call:
    """Span state of one session (touched by the worker thread only)."""

    __slots__ = ("ctx", "pending", "pending_n", "span", "start_ns", "started_at")

    def __init__(self, span: Any, started_at: float) -> None:
        self.span = span
        self.ctx = trace.set_span_in_context(span) if span is not None else None
        self.started_at = started_at
        self.start_ns = _ns(started_at)
        self.pending: dict[str, list[Any]] = {}
        self.pending_n = 0


class OTelExporter(QueueSink):
    """OpenTelemetry metrics and traces of every attached session.

    Uses the providers passed in, else the ones the application set globally
    (``opentelemetry.metrics.set_meter_provider``, ``trace.set_tracer_provider``).
    ``receive`` only appends to a bounded queue; a worker thread records the metrics and
    builds the spans every ``flush_interval`` seconds and when a session closes, so the
    agent never waits on the SDK. :meth:`flush` waits until everything received is
    recorded.

    Metrics: ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``,
    ``gen_ai.client.operation.time_to_first_chunk``, ``gen_ai.execute_tool.duration``,
    ``gen_ai.invoke_agent.duration`` with the GenAI attributes and recommended bucket
    boundaries, plus ``callmeter.turn.e2e_latency``, ``callmeter.turn.latency.component``,
    ``callmeter.tts.time_to_first_byte``, ``callmeter.stt.audio.duration``,
    ``callmeter.tts.characters``, ``callmeter.cost`` (USD, by ``callmeter.cost.kind`` and
    model) and ``callmeter.turn.budget_exceeded``. Session ids are never metric attributes.
    Tool names and models on metrics are capped at ``max_names`` distinct values each (then
    ``other``); spans carry the real ones.

    Traces: one ``invoke_agent {agent}`` span per call; ``turn`` spans under it; ``chat
    {model}``, ``execute_tool {name}``, ``stt`` and ``tts`` spans under their turn (or
    the call), each with the measured start and end times.
    """

    def __init__(
        self,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        *,
        prices: Any = None,
        max_names: int = 50,
        max_queue: int = 100_000,
        flush_interval: float = 0.2,
        max_pending_spans: int = 10_000,
    ) -> None:
        if meter_provider is None:
            meter_provider = otel_metrics.get_meter_provider()
        if tracer_provider is None:
            tracer_provider = trace.get_tracer_provider()
        if not callable(getattr(meter_provider, "get_meter", None)):
            raise InvalidArgumentError(
                f"meter_provider must be an OpenTelemetry MeterProvider, got {meter_provider!r}"
            )
        if not callable(getattr(tracer_provider, "get_tracer", None)):
            raise InvalidArgumentError(
                f"tracer_provider must be an OpenTelemetry TracerProvider, got {tracer_provider!r}"
            )
        for name, v in (("max_names", max_names), ("max_pending_spans", max_pending_spans)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
        self._prices = resolve_prices(prices)
        self._max_pending = max_pending_spans
        self._tools = CappedNames(max_names)
        self._models = CappedNames(max_names)
        meter = meter_provider.get_meter("callmeter", __version__, schema_url=sc.SCHEMA_URL)
        self._tracer = tracer_provider.get_tracer(
            "callmeter", __version__, schema_url=sc.SCHEMA_URL
        )
        dur = sc.DURATION_BUCKETS

        def hist(name: str, unit: str, doc: str, buckets: Any = dur) -> Any:
            return meter.create_histogram(
                name, unit=unit, description=doc, explicit_bucket_boundaries_advisory=buckets
            )

        self._op_duration = hist(sc.OPERATION_DURATION, "s", "GenAI operation duration.")
        self._tokens = hist(
            sc.TOKEN_USAGE, "{token}", "Number of input and output tokens used.", sc.TOKEN_BUCKETS
        )
        self._ttfc = hist(
            sc.TIME_TO_FIRST_CHUNK,
            "s",
            "Time to receive the first chunk, from the request to the first chunk.",
        )
        self._tool_duration = hist(sc.EXECUTE_TOOL_DURATION, "s", "Tool execution duration.")
        self._agent_duration = hist(
            sc.INVOKE_AGENT_DURATION, "s", "Agent invocation (call) duration."
        )
        self._turn_e2e = hist(
            sc.TURN_E2E_LATENCY, "s", "Turn latency: user stopped speaking to agent speaking."
        )
        self._turn_part = hist(
            sc.TURN_COMPONENT, "s", "Seconds of a turn's wait by callmeter.turn.component."
        )
        self._tts_ttfb = hist(sc.TTS_TTFB, "s", "TTS time to first audio byte.")
        self._stt_audio = meter.create_counter(
            sc.STT_AUDIO, unit="s", description="Seconds of audio sent to STT."
        )
        self._tts_chars = meter.create_counter(
            sc.TTS_CHARACTERS, unit="{character}", description="Characters sent to TTS."
        )
        self._cost = meter.create_counter(
            sc.COST, unit="USD", description="Cost in USD by callmeter.cost.kind and model."
        )
        self._budget = meter.create_counter(
            sc.BUDGET_EXCEEDED, unit="{turn}", description="Turns over a latency budget."
        )
        self._attrs: dict[tuple[Any, ...], dict[str, str]] = {}
        self._chat: dict[tuple[Any, Any], tuple[dict[str, str], ...]] = {}
        self._calls: dict[str, _Call] = {}
        super().__init__(
            max_queue=max_queue,
            batch_size=10_000,
            flush_interval=flush_interval,
            name="callmeter-otel",
        )

    def __repr__(self) -> str:
        return "OTelExporter()"

    # attributes, cached per key ----------------------------------------------------------

    def _model_attrs(self, op: str | None, md: Any, error: Any) -> dict[str, str]:
        key = (op, md, error)
        a = self._attrs.get(key)
        if a is None:
            a = {sc.OPERATION_NAME: op} if op else {}
            if md is not None:
                if md.model_provider:
                    a[sc.PROVIDER_NAME] = str(md.model_provider)
                if md.model_name:
                    a[sc.REQUEST_MODEL] = self._models(md.model_name)
            if error:
                a[sc.ERROR_TYPE] = str(error)[:128]
            if len(self._attrs) < 10_000:
                self._attrs[key] = a
        return a

    # the worker ------------------------------------------------------------------------

    def write_batch(self, records: list[Any]) -> None:
        """Record metrics and build spans for ``records`` (on the worker thread)."""
        spend: dict[tuple[str, Any, Any], Amounts] = {}
        audio: dict[Any, float] = {}
        chars: dict[Any, int] = {}
        for record in records:
            try:
                cls = record.__class__
                if cls is MetricsCollectedEvent:
                    self._metric(record, spend, audio, chars)
                elif cls is SessionStartedEvent:
                    self._call(record, record.created_at)
                elif cls is CloseEvent:
                    self._close(record)
                elif cls is LatencyBudgetExceededEvent:
                    self._budget.add(1)
                else:
                    self._drop(1, f"not a record: {cls.__name__}")
            except Exception as e:
                self._drop(1, f"cannot export {type(record).__name__}: {type(e).__name__}: {e}")
        try:
            self._add_counters(spend, audio, chars)
        except Exception as e:
            self._log.log("counters", 30, "callmeter: OTel counters failed: %s", e)

    def _metric(self, record: Any, spend: dict, audio: dict, chars: dict) -> None:
        m = record.metrics
        cls = m.__class__
        if cls is LLMMetrics or cls is RealtimeModelMetrics:
            md = m.metadata
            key = (md, getattr(m, "error", None))
            entry = self._chat.get(key)
            if entry is None:
                entry = self._chat_entry(key)
            attrs, tin, tout = entry
            d = m.duration
            if (d.__class__ is float or d.__class__ is int) and 0 <= d <= 1e9:
                self._op_duration.record(d, attrs)
            t = m.ttft
            if (t.__class__ is float or t.__class__ is int) and 0 <= t <= 1e9:
                self._ttfc.record(t, attrs)
            if cls is LLMMetrics:
                if m.usage_reported:
                    inp, out = m.prompt_tokens, m.completion_tokens
                else:
                    inp = out = None
            else:
                inp, out = m.input_tokens, m.output_tokens
            if inp.__class__ is int and inp >= 0:
                self._tokens.record(inp, tin)
            if out.__class__ is int and out >= 0:
                self._tokens.record(out, tout)
            if self._prices is not None:
                self._spend(spend, m, md)
        elif cls is ToolMetrics:
            d = m.duration
            if _ok_seconds(d):
                key = ("tool", m.tool_name, m.error)
                a = self._attrs.get(key)
                if a is None:
                    a = {sc.OPERATION_NAME: sc.EXECUTE_TOOL, sc.TOOL_NAME: self._tools(m.tool_name)}
                    if not m.success:
                        a[sc.ERROR_TYPE] = str(m.error or "error")[:128]
                    if len(self._attrs) < 10_000:
                        self._attrs[key] = a
                self._tool_duration.record(d, a)
        elif cls is TTSMetrics:
            md = m.metadata
            attrs = self._model_attrs(None, md, None)
            t = m.ttfb
            if _ok_seconds(t):
                self._tts_ttfb.record(t, attrs)
            n = m.characters_count
            if n.__class__ is int and n > 0:
                chars[md] = chars.get(md, 0) + n
            self._spend(spend, m, md)
        elif cls is STTMetrics:
            md = m.metadata
            a = m.audio_duration
            if _ok_seconds(a) and a:
                audio[md] = audio.get(md, 0.0) + a
            self._spend(spend, m, md)
        elif cls is TurnMetrics:
            e2e = m.e2e_latency
            if _ok_seconds(e2e):
                self._turn_e2e.record(e2e)
            b = m.breakdown
            for name in COMPONENTS:
                v = getattr(b, name)
                if v and _ok_seconds(v):
                    self._turn_part.record(v, {"callmeter.turn.component": name})
        # spans
        call = self._calls.get(record.session_id)
        if call is None:
            call = self._call(record, getattr(m, "started_at", record.created_at))
        if call.span is None or cls not in _SPAN_TYPES:
            return
        sid = getattr(m, "speech_id", None)
        if cls is TurnMetrics:
            self._turn_span(call, m, call.pending.pop(sid, []) if sid else [])
            if sid:
                call.pending_n = sum(len(v) for v in call.pending.values())
        elif sid:
            if call.pending_n >= self._max_pending:
                self._drop(1, f"more than {self._max_pending} spans wait for their turn")
                return
            call.pending.setdefault(sid, []).append(m)
            call.pending_n += 1
        else:
            self._span(call.ctx, m)

    def _chat_entry(self, key: tuple[Any, Any]) -> tuple[dict[str, str], ...]:
        attrs = self._model_attrs(sc.CHAT, key[0], key[1])
        entry = (attrs, {**attrs, sc.TOKEN_TYPE: "input"}, {**attrs, sc.TOKEN_TYPE: "output"})
        if len(self._chat) < 10_000:
            self._chat[key] = entry
        return entry

    def _spend(self, spend: dict, m: Any, md: Any) -> None:
        if self._prices is None:
            return
        rule = None
        if md is not None and md.model_name and m.__class__ in (STTMetrics, TTSMetrics):
            try:
                rule = billing_rule(self._prices.lookup(md.model_name, md.model_provider))
            except Exception:
                rule = None
        try:
            a = amounts_of(m, rule)
        except (TypeError, ValueError, OverflowError):
            return
        if a is None:
            return
        # Requests below the lowest tier start are priced together; a large one alone.
        single = id(m) if a.input_tokens >= LARGE_REQUEST_TOKENS else False
        key = (_KIND[m.__class__], md, single)
        acc = spend.get(key)
        if acc is None:
            spend[key] = a
        else:
            acc.add(a)

    def _add_counters(self, spend: dict, audio: dict, chars: dict) -> None:
        for md, seconds in audio.items():
            self._stt_audio.add(seconds, self._model_attrs(None, md, None))
        for md, n in chars.items():
            self._tts_chars.add(n, self._model_attrs(None, md, None))
        for (kind, md, single), a in spend.items():
            if md is None or not md.model_name:
                continue
            try:
                price = self._prices.lookup(md.model_name, md.model_provider)  # cached
            except Exception:
                price = None
            if price is None:
                continue
            try:
                usd = price_amounts(price, a, kind, base_tier=single is False)
            except Exception as e:
                self._log.log("price", 30, "callmeter: cannot price %s: %s", md.model_name, e)
                continue
            if usd > 0:
                attrs = {
                    "callmeter.cost.kind": kind,
                    sc.REQUEST_MODEL: self._models(md.model_name),
                }
                if md.model_provider:
                    attrs[sc.PROVIDER_NAME] = str(md.model_provider)
                self._cost.add(float(usd), attrs)

    # spans -----------------------------------------------------------------------------

    def _call(self, record: Any, started_at: float) -> _Call:
        call = self._calls.get(record.session_id)
        if call is not None:
            return call
        if len(self._calls) >= _MAX_OPEN_CALLS:  # sessions that never close: bounded memory
            self._drop(1, f"more than {_MAX_OPEN_CALLS} calls open: record left out of traces")
            return _Call(None, started_at)
        agent = record.agent_name or "agent"
        attrs = {
            sc.OPERATION_NAME: sc.INVOKE_AGENT,
            sc.AGENT_NAME: agent,
            sc.CONVERSATION_ID: record.session_id,
        }
        if record.labels:
            for k, v in record.labels.items():
                attrs[f"callmeter.label.{k}"] = v
        span = self._tracer.start_span(
            f"invoke_agent {agent}",
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=_ns(started_at),
        )
        if not span.is_recording():
            span = None
        call = self._calls[record.session_id] = _Call(span, started_at)
        return call

    def _close(self, record: CloseEvent) -> None:
        call = self._calls.pop(record.session_id, None)
        duration = record.duration
        attrs = {sc.OPERATION_NAME: sc.INVOKE_AGENT, sc.AGENT_NAME: record.agent_name or "agent"}
        if record.error:
            attrs[sc.ERROR_TYPE] = str(record.error)[:128]
        if _ok_seconds(duration):
            self._agent_duration.record(duration, attrs)
        if call is None or call.span is None:
            return
        for metrics in call.pending.values():  # their turn never ended: under the call
            for m in metrics:
                self._span(call.ctx, m)
        end = call.start_ns + _ns(duration) if _ok_seconds(duration) else _ns(record.created_at)
        if record.error:
            call.span.set_status(Status(StatusCode.ERROR, str(record.error)[:128]))
            call.span.set_attribute(sc.ERROR_TYPE, str(record.error)[:128])
        call.span.end(end_time=max(end, call.start_ns))

    def _turn_span(self, call: _Call, m: TurnMetrics, children: list[Any]) -> None:
        start = _ns(m.started_at)
        end = _ns(m.timestamp)
        timed = [c for c in children if _ok_time(c.started_at) and _ok_seconds(c.duration)]
        if len(timed) < len(children):
            self._drop(len(children) - len(timed), "metrics with no valid start or duration")
            children = timed
        for c in children:
            cs = _ns(c.started_at)
            start = min(start, cs)
            end = max(end, cs + _ns(c.duration))
        attrs: dict[str, Any] = {
            "callmeter.turn.speech_id": m.speech_id or "",
            "callmeter.turn.interrupted": bool(m.interrupted),
            "callmeter.turn.llm_requests": int(m.llm_requests),
            "callmeter.turn.tool_calls": int(m.tool_calls),
        }
        if _ok_seconds(m.e2e_latency):
            attrs["callmeter.turn.e2e_latency"] = float(m.e2e_latency)
        span = self._tracer.start_span(
            "turn", context=call.ctx, kind=SpanKind.INTERNAL, attributes=attrs, start_time=start
        )
        ctx = trace.set_span_in_context(span)
        for c in children:
            self._span(ctx, c)
        span.end(end_time=max(end, start))

    def _span(self, ctx: Any, m: Any) -> None:
        cls = m.__class__
        md = getattr(m, "metadata", None)
        model = md.model_name if md is not None else None
        provider = md.model_provider if md is not None else None
        attrs: dict[str, Any] = {}
        if provider:
            attrs[sc.PROVIDER_NAME] = provider
        if model:
            attrs[sc.REQUEST_MODEL] = model
        error = getattr(m, "error", None)
        kind = SpanKind.CLIENT
        if cls is LLMMetrics or cls is RealtimeModelMetrics:
            name = f"chat {model}" if model else "chat"
            attrs[sc.OPERATION_NAME] = sc.CHAT
            if cls is LLMMetrics:
                if m.usage_reported:
                    attrs[sc.INPUT_TOKENS] = m.prompt_tokens
                    attrs[sc.OUTPUT_TOKENS] = m.completion_tokens
                    if m.prompt_cached_tokens:
                        attrs[sc.CACHE_READ_TOKENS] = m.prompt_cached_tokens
                    if m.cache_creation_tokens:
                        attrs[sc.CACHE_CREATION_TOKENS] = m.cache_creation_tokens
                    if m.reasoning_tokens:
                        attrs[sc.REASONING_TOKENS] = m.reasoning_tokens
            else:
                attrs[sc.INPUT_TOKENS] = m.input_tokens
                attrs[sc.OUTPUT_TOKENS] = m.output_tokens
            if m.request_id:
                attrs[sc.RESPONSE_ID] = m.request_id
            if _ok_seconds(m.ttft):
                attrs[sc.TIME_TO_FIRST_CHUNK_ATTR] = float(m.ttft)
        elif cls is ToolMetrics:
            name = f"execute_tool {m.tool_name}"
            kind = SpanKind.INTERNAL
            attrs[sc.OPERATION_NAME] = sc.EXECUTE_TOOL
            attrs[sc.TOOL_NAME] = m.tool_name
            if m.call_id:
                attrs[sc.TOOL_CALL_ID] = m.call_id
            if not m.success:
                error = error or "error"
        elif cls is STTMetrics:
            name = "stt"
            attrs["callmeter.stt.audio_duration"] = float(m.audio_duration)
            if _ok_seconds(m.ttfb):
                attrs["callmeter.stt.ttfb"] = float(m.ttfb)
        elif cls is TTSMetrics:
            name = "tts"
            attrs["callmeter.tts.characters"] = int(m.characters_count)
            attrs["callmeter.tts.audio_duration"] = float(m.audio_duration)
            if _ok_seconds(m.ttfb):
                attrs["callmeter.tts.ttfb"] = float(m.ttfb)
        elif cls is EOUMetrics:
            name = "end_of_utterance"
            kind = SpanKind.INTERNAL
        else:
            return
        if error:
            attrs[sc.ERROR_TYPE] = str(error)[:128]
        duration = m.duration
        if not _ok_seconds(duration) or not _ok_time(m.started_at):
            self._drop(1, f"{cls.__name__} has no valid start or duration for a span")
            return
        start = _ns(m.started_at)
        span = self._tracer.start_span(
            name, context=ctx, kind=kind, attributes=attrs, start_time=start
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, str(error)[:128]))
        span.end(end_time=start + _ns(duration))

    def close_resources(self) -> None:
        """End the spans of calls that never closed (at the current time)."""
        now = time.time()
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if call.span is None:
                continue
            for metrics in call.pending.values():
                for m in metrics:
                    self._span(call.ctx, m)
            call.span.set_attribute("callmeter.call.unfinished", True)
            call.span.end(end_time=max(_ns(now), call.start_ns))


_SPAN_TYPES = frozenset(
    {LLMMetrics, RealtimeModelMetrics, ToolMetrics, STTMetrics, TTSMetrics, EOUMetrics, TurnMetrics}
)
