"""CallMonitor: a sink that keeps Prometheus metrics of the calls it is attached to."""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from ...errors import InvalidArgumentError
from ...model.events import (
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    SessionStartedEvent,
)
from ...model.types import (
    COMPONENTS,
    LLMMetrics,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnMetrics,
)
from ...pricing import resolve_prices
from ...pricing.cost import LARGE_REQUEST_TOKENS, amounts_of, billing_rule
from ..sink import SinkBase
from ._aggregates import (
    CALL_BUCKETS,
    VOICE_BUCKETS,
    CappedLabels,
    HistogramFamily,
    ModelUsage,
    check_buckets,
    clean_label,
    valid_seconds,
)
from ._health import CPUSampler, HealthStatus

__all__ = ["CallMonitor"]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KIND = {LLMMetrics: "llm", STTMetrics: "stt", TTSMetrics: "tts", RealtimeModelMetrics: "realtime"}
_MAX_USAGE = 1000  # (kind, provider, model) entries kept for pricing; beyond, unpriced
_BATCH = 1024  # records folded at once on the emitting thread
_FORCE = 64 * _BATCH  # beyond this many waiting records, the emitting thread waits to fold


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


class CallMonitor(SinkBase):
    """Prometheus metrics of every attached session, aggregated in memory.

    ``receive`` appends the record to a buffer; records are folded into callmeter's own
    aggregates (bucket counts, sums, per-model usage) in batches of 1,024 on the emitting
    thread, and at every scrape. A custom ``prometheus_client`` collector renders the
    aggregates at scrape time, so no ``observe()`` runs per event. Scrapes are
    consistent: counters never go down, a histogram's ``_count`` is its ``+Inf`` bucket.

    ``namespace`` prefixes every metric name; ``const_labels`` (plus ``node_id`` and
    ``agent_name`` when given) go on every sample. Session ids are never labels. Tool
    names and models keep their own label value for the first ``max_tools`` /
    ``max_models`` distinct ones, then share ``other``. Costs come from ``prices`` (as
    for ``UsageCollector``; the default prices when None, no cost metric when False).

    Health: ``max_calls`` (None: no limit) and ``cpu_threshold`` (0-1) decide when
    :meth:`health` answers ``under load``; :meth:`load` is 0-1 for a LiveKit worker's
    ``load_fnc``. ``registry`` is where the collector registers (``prometheus_client``'s
    default registry when None).
    """

    def __init__(
        self,
        namespace: str = "callmeter",
        registry: CollectorRegistry | None = None,
        const_labels: Mapping[str, str] | None = None,
        *,
        node_id: str | None = None,
        agent_name: str | None = None,
        max_tools: int = 50,
        max_models: int = 50,
        max_calls: int | None = None,
        cpu_threshold: float = 0.9,
        latency_buckets: Sequence[float] = VOICE_BUCKETS,
        call_buckets: Sequence[float] = CALL_BUCKETS,
        prices: Any = None,
    ) -> None:
        if not isinstance(namespace, str) or not _NAME.match(namespace):
            raise InvalidArgumentError(
                f"namespace must match [a-zA-Z_][a-zA-Z0-9_]*, got {namespace!r}"
            )
        labels: dict[str, str] = {}
        if const_labels is not None:
            if not isinstance(const_labels, Mapping):
                raise InvalidArgumentError(
                    f"const_labels must be a dict of str to str, got {const_labels!r}"
                )
            labels.update(const_labels)
        if node_id is not None:
            labels["node_id"] = node_id
        if agent_name is not None:
            labels["agent_name"] = agent_name
        for k, v in labels.items():
            if not isinstance(k, str) or not _NAME.match(k) or k.startswith("__"):
                raise InvalidArgumentError(f"invalid label name {k!r}: use [a-zA-Z_][a-zA-Z0-9_]*")
            if not isinstance(v, str):
                raise InvalidArgumentError(f"label {k!r} must be a str, got {v!r}")
            if k in _OWN_LABELS:
                raise InvalidArgumentError(
                    f"constant label {k!r} clashes with a label callmeter sets; rename it"
                )
        if max_calls is not None:
            _positive_int("max_calls", max_calls)
        if (
            isinstance(cpu_threshold, bool)
            or not isinstance(cpu_threshold, int | float)
            or not 0.0 < cpu_threshold <= 1.0
        ):
            raise InvalidArgumentError(
                f"cpu_threshold must be a fraction in (0, 1], got {cpu_threshold!r}"
            )
        super().__init__()
        self.namespace = namespace
        self.const_labels = {k: clean_label(v) for k, v in labels.items()}
        self.max_calls = max_calls
        self.cpu_threshold = float(cpu_threshold)
        self._prices = resolve_prices(prices)
        self._tools = CappedLabels(_positive_int("max_tools", max_tools))
        self._models = CappedLabels(_positive_int("max_models", max_models))
        self._providers = CappedLabels(_positive_int("max_models", max_models))
        lat = check_buckets("latency_buckets", latency_buckets)
        self._lat = lat
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._cpu: CPUSampler | None = None
        self._sinks: list[tuple[str, Any]] = []
        self._seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._foreign_dropped: dict[str, int] = {}
        # aggregates (guarded by _lock)
        self._started = 0
        self._ended = {"ok": 0, "error": 0}
        self._call_duration = HistogramFamily(check_buckets("call_buckets", call_buckets))
        self._turn_e2e = HistogramFamily(lat)
        self._turn_part = HistogramFamily(lat)
        self._llm_ttft = HistogramFamily(lat)
        self._llm_duration = HistogramFamily(lat)
        self._tts_ttfb = HistogramFamily(lat)
        self._stt_duration = HistogramFamily(lat)
        self._tool_duration = HistogramFamily(lat)
        self._usage: dict[tuple[Any, ...], ModelUsage] = {}
        self._llm_slots: dict[Any, tuple[Any, Any, Any]] = {}
        self._tts_chars: dict[tuple[str, str], int] = {}
        self._stt_audio: dict[tuple[str, str], float] = {}
        self._over_budget = 0
        self._excesses: dict[str, int] = {}
        self._invalid = 0
        self._collector = _Collector(self)
        self.registry = REGISTRY if registry is None else registry
        try:
            self.registry.register(self._collector)
        except ValueError as e:
            raise InvalidArgumentError(
                f"cannot register the monitor's metrics ({e}); pass another registry= or "
                "namespace=, or close() the other monitor first"
            ) from None

    def __repr__(self) -> str:
        return f"CallMonitor(namespace={self.namespace!r})"

    # receiving -----------------------------------------------------------------------

    def receive(self, record: Any) -> None:
        """Buffer one record (folded in batches). Never raises, never blocks for long."""
        buf = self._pending
        buf.append(record)
        if len(buf) >= _BATCH:
            lock = self._lock
            if lock.acquire(blocking=len(buf) >= _FORCE):
                try:
                    self._fold()
                finally:
                    lock.release()

    def watch(self, sink: Any, name: str | None = None) -> Any:
        """Export ``sink.dropped`` (any sink) as ``dropped_records_total{source=name}``
        (``name`` defaults to the sink's class name). Returns the sink."""
        if not hasattr(sink, "dropped"):
            raise InvalidArgumentError(f"watch() needs a sink with .dropped, got {sink!r}")
        label = clean_label(name or type(sink).__name__)
        if label in ("monitor", "session"):
            raise InvalidArgumentError(f"sink name {label!r} is reserved; pass another name=")
        with self._lock:
            self._sinks.append((label, sink))
        return sink

    def _fold(self) -> None:
        """Fold waiting records into the aggregates (holding ``_lock``)."""
        buf = self._pending
        n = len(buf)
        if not n:
            return
        batch = buf[:n]
        del buf[:n]  # appends made meanwhile stay behind position n
        lat = self._lat
        models = self._models
        slots = self._llm_slots
        large = LARGE_REQUEST_TOKENS
        for record in batch:
            try:
                cls = record.__class__
                if cls is MetricsCollectedEvent:
                    m = record.metrics
                    # Fast path: a well-formed LLM event of a model seen before.
                    if m.__class__ is LLMMetrics:
                        slot = slots.get(m.metadata)
                        d = m.duration
                        p = m.prompt_tokens
                        o = m.completion_tokens
                        c = m.prompt_cached_tokens
                        if (
                            slot is not None
                            and d.__class__ is float
                            and 0.0 <= d <= 1e9
                            and m.usage_reported
                            and p.__class__ is o.__class__ is c.__class__ is int
                            and 0 <= c <= p < large
                            and o >= 0
                            and not (
                                m.cache_creation_tokens
                                or m.input_audio_tokens
                                or m.output_audio_tokens
                                or m.reasoning_tokens
                            )
                        ):
                            h, th, small = slot
                            h.counts[bisect_left(lat, d)] += 1
                            h.sum += d
                            t = m.ttft
                            if t.__class__ is float and 0.0 <= t <= 1e9:
                                th.counts[bisect_left(lat, t)] += 1
                                th.sum += t
                            small.requests += 1
                            small.input_tokens += p
                            small.output_tokens += o
                            if c:
                                small.cache_read_tokens += c
                            continue
                    self._fold_metric(m, lat, models)
                elif cls is SessionStartedEvent:
                    self._started += 1
                elif cls is CloseEvent:
                    self._ended["ok" if record.error is None else "error"] += 1
                    d = record.duration
                    if valid_seconds(d):
                        self._call_duration.child(()).observe(self._call_duration.bounds, d)
                elif cls is LatencyBudgetExceededEvent:
                    self._over_budget += 1
                    for ex in record.exceeded:
                        key = ex.name if ex.name in _LIMITS else "other"
                        self._excesses[key] = self._excesses.get(key, 0) + 1
                else:
                    self._drop(1, f"not a record: {cls.__name__}")
            except Exception as e:
                self._drop(1, f"cannot fold {type(record).__name__}: {type(e).__name__}: {e}")

    def _fold_metric(self, m: Any, lat: tuple[float, ...], models: CappedLabels) -> None:
        cls = m.__class__
        if cls is ToolMetrics:
            d = m.duration
            if not valid_seconds(d):
                self._invalid += 1
                return
            key = (self._tools(m.tool_name), "true" if m.success else "false")
            self._tool_duration.child(key).observe(lat, d)
            return
        if cls is TurnMetrics:
            self._fold_turn(m, lat)
            return
        kind = _KIND.get(cls)
        if kind is None:
            return  # VAD, EOU: their time is in the turn breakdown
        md = m.metadata
        provider, model = (md.model_provider, md.model_name) if md is not None else (None, None)
        label = (self._providers(provider), models(model))
        d = m.duration
        if not valid_seconds(d):
            self._invalid += 1
            return
        if cls is LLMMetrics:
            self._llm_duration.child(label).observe(lat, d)
            t = m.ttft
            if valid_seconds(t):
                self._llm_ttft.child(label).observe(lat, t)
        elif cls is TTSMetrics:
            t = m.ttfb
            if valid_seconds(t):
                self._tts_ttfb.child(label).observe(lat, t)
            chars = m.characters_count
            if chars.__class__ is int and chars > 0:
                self._tts_chars[label] = self._tts_chars.get(label, 0) + chars
        elif cls is STTMetrics:
            self._stt_duration.child(label).observe(lat, d)
            audio = m.audio_duration
            if valid_seconds(audio) and audio:
                self._stt_audio[label] = self._stt_audio.get(label, 0.0) + audio
        ukey = (kind, provider, model)
        usage = self._usage.get(ukey)
        if usage is None:
            if len(self._usage) >= _MAX_USAGE:  # bounded memory: no price for the rest
                ukey = (kind, provider, None)
                usage = self._usage.get(ukey)
            if usage is None:
                usage = self._usage[ukey] = ModelUsage(kind, provider, ukey[2])
        if cls is LLMMetrics and len(self._llm_slots) < _MAX_USAGE and ukey[2] == model:
            self._llm_slots[md] = (
                self._llm_duration.child(label),
                self._llm_ttft.child(label),
                usage.small,
            )
        speech = cls is STTMetrics or cls is TTSMetrics
        try:
            a = amounts_of(m, billing_rule(usage.lookup(self._prices)) if speech else None)
        except (TypeError, ValueError, OverflowError):
            a = None
            self._invalid += 1
        if a is None or not _consistent(a):
            if a is not None:
                self._invalid += 1
            usage.unpriced_requests += 1
            return
        usage.add(a, self._prices)
        if cls is LLMMetrics:
            r = m.reasoning_tokens
            if r.__class__ is int and r > 0:
                usage.reasoning += r

    def _fold_turn(self, m: TurnMetrics, lat: tuple[float, ...]) -> None:
        e2e = m.e2e_latency
        if valid_seconds(e2e):
            self._turn_e2e.child(()).observe(lat, e2e)
        b = m.breakdown
        part = self._turn_part
        for name in COMPONENTS:
            v = getattr(b, name)
            if v and valid_seconds(v):
                part.child((name,)).observe(lat, v)

    # health ----------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        """Attached sessions that started and have not closed."""
        return sum(1 for s in self.sessions if s.started and not s.closed)

    def cpu_utilisation(self) -> float:
        """Whole-machine CPU utilisation, 0-1 (psutil; at most one sample per 0.5 s)."""
        if self._cpu is None:
            self._cpu = CPUSampler()
        return self._cpu.utilisation()

    def load(self) -> float:
        """0-1, for a LiveKit worker's ``load_fnc``: the larger of CPU utilisation and
        active calls over ``max_calls``; 1.0 once stopped."""
        if self._stopped or self._closed:
            return 1.0
        value = self.cpu_utilisation()
        if self.max_calls is not None:
            value = max(value, self.active_calls / self.max_calls)
        return min(1.0, max(0.0, value))

    def health(self) -> HealthStatus:
        """``ok``, ``under load`` (CPU over ``cpu_threshold`` or active calls at
        ``max_calls``) or ``stopped`` (after :meth:`stop` or :meth:`close`)."""
        if self._stopped or self._closed:
            return HealthStatus.STOPPED
        if self.max_calls is not None and self.active_calls >= self.max_calls:
            return HealthStatus.UNDER_LOAD
        if self.cpu_utilisation() > self.cpu_threshold:
            return HealthStatus.UNDER_LOAD
        return HealthStatus.OK

    def health_report(self) -> dict[str, Any]:
        """What ``/health`` answers: status, active calls, max calls, CPU and load."""
        status = self.health()
        return {
            "status": status.value,
            "active_calls": self.active_calls,
            "max_calls": self.max_calls,
            "cpu": round(self.cpu_utilisation(), 4),
            "load": round(self.load(), 4),
        }

    def stop(self) -> None:
        """Mark the process as draining: :meth:`health` says ``stopped``, :meth:`load` 1.0.
        Metrics keep being collected and served."""
        self._stopped = True

    # serving ---------------------------------------------------------------------------

    def serve(self, port: int = 9464, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` (and every other path but ``/health``) and ``/health`` over
        HTTP on a background thread. ``port=0`` picks a free port. Returns the server:
        ``.port``, ``.url``, ``.close()``."""
        from ._http import MetricsServer

        return MetricsServer(self, port, addr)

    def wsgi_app(self) -> Any:
        """A WSGI app serving the metrics and ``/health``."""
        from ._http import make_wsgi_app

        return make_wsgi_app(self)

    def asgi_app(self) -> Any:
        """An ASGI app serving the metrics and ``/health``."""
        from ._http import make_asgi_app

        return make_asgi_app(self)

    def close(self) -> None:
        """Detach every session and unregister the metrics. Idempotent."""
        was_closed = self._closed
        super().close()
        if not was_closed:
            with contextlib.suppress(KeyError):
                self.registry.unregister(self._collector)

    # rendering -------------------------------------------------------------------------

    def _dropped_by_source(self) -> dict[str, int]:
        """Dropped records by source. Others' counts are added as deltas, so the counter
        never goes down, even when a session or a watched sink goes away."""
        totals = self._foreign_dropped
        watched = [("session", s) for s in self.sessions]
        watched += self._sinks
        for label, obj in watched:
            n = getattr(obj, "dropped", None)
            if n.__class__ is not int:
                continue
            try:
                prev = self._seen.get(obj, 0)
                if n > prev:
                    self._seen[obj] = n
            except TypeError:  # not weak-referenceable
                continue
            if n > prev:
                totals[label] = totals.get(label, 0) + n - prev
        out = {"monitor": self.dropped, "session": totals.get("session", 0)}
        for label, _ in self._sinks:
            out[label] = totals.get(label, 0)
        return out

    def _render(self) -> list[Any]:
        with self._lock:
            self._fold()
            return list(self._families())

    def _families(self) -> Iterator[Any]:
        ns = self.namespace
        cn = tuple(self.const_labels)
        cv = tuple(self.const_labels.values())

        def counter(name: str, doc: str, labels: tuple[str, ...], unit: str = "") -> Any:
            return CounterMetricFamily(f"{ns}_{name}", doc, labels=(*cn, *labels), unit=unit)

        def hist(name: str, doc: str, fam: HistogramFamily, labels: tuple[str, ...]) -> Any:
            m = HistogramMetricFamily(f"{ns}_{name}", doc, labels=(*cn, *labels), unit="seconds")
            for key, h in sorted(fam.children.items()):
                buckets, total = h.snapshot(fam.les)
                m.add_metric((*cv, *key), buckets, total)
            return m

        g = GaugeMetricFamily(f"{ns}_calls_active", "Calls in progress.", labels=cn)
        g.add_metric(cv, float(self.active_calls))
        yield g
        c = counter("calls_started", "Calls started.", ())
        c.add_metric(cv, float(self._started))
        yield c
        c = counter("calls_ended", "Calls ended, by outcome (ok or error).", ("outcome",))
        for outcome, n in self._ended.items():
            c.add_metric((*cv, outcome), float(n))
        yield c
        call = self._call_duration
        call.child(())
        yield hist("call_duration", "Call duration, start to close.", call, ())
        self._turn_e2e.child(())
        yield hist(
            "turn_e2e_latency",
            "Turn latency: user stopped speaking to agent started speaking.",
            self._turn_e2e,
            (),
        )
        yield hist(
            "turn_latency_component",
            "Seconds of each turn's wait by component (end_of_utterance, transcription, "
            "user_turn_completed, llm_ttft, llm_remainder, tool, tts_ttfb, other).",
            self._turn_part,
            ("component",),
        )
        pm = ("provider", "model")
        yield hist("llm_ttft", "LLM time to first token.", self._llm_ttft, pm)
        yield hist("llm_duration", "LLM request duration.", self._llm_duration, pm)
        yield hist("tts_ttfb", "TTS time to first audio byte.", self._tts_ttfb, pm)
        yield hist("stt_duration", "STT request duration.", self._stt_duration, pm)
        yield hist(
            "tool_duration",
            "Tool call duration, by tool and success (true or false).",
            self._tool_duration,
            ("tool", "success"),
        )
        tokens = counter(
            "tokens",
            "Tokens by provider, model and kind (input includes cached and audio input).",
            ("provider", "model", "kind"),
        )
        cost = counter(
            "cost", "Cost in USD by kind (llm, stt, tts, realtime) and model.", ("kind", "model"),
            unit="usd",
        )  # fmt: skip
        unpriced = counter(
            "unpriced_requests",
            "Requests with no price or no usage (their cost is missing from cost_usd).",
            ("kind", "model"),
        )
        tok: dict[tuple[str, str, str], int] = {}
        money: dict[tuple[str, str], Decimal] = {}
        missing: dict[tuple[str, str], int] = {}
        for u in self._usage.values():
            p, mo = self._providers(u.provider), self._models(u.model)
            if u.requests:
                for kind, n in u.tokens().items():
                    if n:
                        tok[(p, mo, kind)] = tok.get((p, mo, kind), 0) + n
            if self._prices is None:
                continue
            ck = (u.kind, mo)
            value = u.cost(self._prices) if u.requests else None
            if value is not None:
                money[ck] = money.get(ck, Decimal(0)) + value
            gone = u.unpriced_requests + (u.requests if value is None else 0)
            if gone:
                missing[ck] = missing.get(ck, 0) + gone
        for key, n in sorted(tok.items()):
            tokens.add_metric((*cv, *key), float(n))
        for key, v in sorted(money.items()):
            cost.add_metric((*cv, *key), float(v))
        for key, n in sorted(missing.items()):
            unpriced.add_metric((*cv, *key), float(n))
        yield tokens
        yield cost
        yield unpriced
        c = counter("tts_characters", "Characters sent to TTS.", pm)
        for key, n in sorted(self._tts_chars.items()):
            c.add_metric((*cv, *key), float(n))
        yield c
        c = counter("stt_audio", "Seconds of audio sent to STT.", pm, unit="seconds")
        for key, v in sorted(self._stt_audio.items()):
            c.add_metric((*cv, *key), v)
        yield c
        c = counter("turns_over_budget", "Turns that went over a latency budget.", ())
        c.add_metric(cv, float(self._over_budget))
        yield c
        c = counter("budget_excesses", "Latency budget limits exceeded, by limit.", ("limit",))
        for key, n in sorted(self._excesses.items()):
            c.add_metric((*cv, key), float(n))
        yield c
        c = counter(
            "dropped_records",
            "Records dropped: by this monitor, by sessions, by watched sinks (by name).",
            ("source",),
        )
        for key, n in self._dropped_by_source().items():
            c.add_metric((*cv, key), float(n))
        yield c
        c = counter(
            "invalid_values",
            "Metric values left out because they were not finite, non-negative numbers.",
            (),
        )
        c.add_metric(cv, float(self._invalid))
        yield c


_OWN_LABELS = frozenset(
    {"outcome", "component", "provider", "model", "kind", "tool", "success", "limit",
     "source", "le", "quantile"}
)  # fmt: skip
_LIMITS = frozenset({"e2e", *COMPONENTS})


def _consistent(a: Any) -> bool:
    """Token counts that price_amounts accepts: the parts never exceed what includes them."""
    i = a.input_tokens
    return (
        a.cache_read_tokens <= i
        and a.cache_write_tokens <= i
        and a.input_audio_tokens <= i
        and a.cache_audio_read_tokens <= min(a.cache_read_tokens, a.input_audio_tokens)
        and a.output_audio_tokens <= a.output_tokens
        and min(i, a.output_tokens, a.cache_read_tokens, a.characters) >= 0
        and a.audio_us >= 0
    )


class _Collector(Collector):
    """Renders a monitor's aggregates when the registry is scraped."""

    def __init__(self, monitor: CallMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterable[Any]:
        return self._monitor._render()

    def describe(self) -> Iterable[Any]:
        return self._monitor._render()
