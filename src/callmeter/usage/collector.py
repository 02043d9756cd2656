"""UsageCollector and UsageSummary: per-call totals from a stream of metrics events."""

from __future__ import annotations

import copy
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from msgspec.structs import astuple

from .._native import speedups
from ..errors import InvalidArgumentError, MetricsNotKeptError
from ..latency.summary import LatencyCollector, LatencySummary
from ..model import validate
from ..model.events import CloseEvent
from ..model.types import (
    AgentMetrics,
    EOUMetrics,
    LLMMetrics,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
)
from ..pricing.cost import DEFAULT_MAX_TURNS, Ledger, price_ledger
from ..pricing.ledger import LARGE_REQUEST_TOKENS, Amounts, vector_layout
from ..pricing.ledger import _vector as new_vector
from ..pricing.prices import PriceOverrides, Prices, check_call_charges, resolve_prices
from .collecting import CollectingBase
from .summary import ModelUsage, ToolUsage, UsageSummary, apply_cost, usage_from_ledger
from .timeline import IntervalUnion

UNKNOWN = "unknown"
_NO_RUN = object()
_CHECKS = validate.CHECKS
_last_valid = validate.last_valid
logger = logging.getLogger("callmeter.metrics")


_ADDED_FIELDS = (
    "requests",
    "prompt_tokens",
    "prompt_cached_tokens",
    "cache_creation_tokens",
    "completion_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "audio_duration",
    "characters_count",
    "duration",
    "usage_unreported",
    "errors",
)


# _speedups.c adds to the ledger's vectors by index: it relies on this layout.
assert vector_layout() == (0, 1, 2, 3, 4, 5, 6, 10, 13, 14, 15), "update _speedups.c"

_BILLABLE = (LLMMetrics, STTMetrics, TTSMetrics, RealtimeModelMetrics)
_QUEUED = frozenset((STTMetrics, TTSMetrics, RealtimeModelMetrics))  # added up by the ledger


class UsageCollector(CollectingBase):
    """Collects metrics events into a :class:`UsageSummary`.

    ``keep_metrics=True`` (the default) keeps the events in :attr:`metrics`; ``max_metrics``
    keeps only the newest N (older ones are counted in :attr:`dropped_metrics`). Totals are
    exact either way.

    ``collect`` validates the event (see :mod:`callmeter.model.validate`), then only appends
    it to a buffer; events are added up in batches of ``BATCH`` (and whenever a summary is
    read), which keeps the per-event cost low. An invalid event is left out as a whole,
    logged (rate-limited) and counted in :attr:`rejected_events`; ``collect`` and
    ``get_summary`` never raise. Any number of threads may feed one collector: appending
    is atomic, and a lock guards the batch arithmetic and every read.

    ``prices`` selects the pricing: a :class:`~callmeter.pricing.Prices`, override
    rates (a dict or TOML file path, on top of the defaults), ``None`` for the defaults
    (bundled speech table + genai-prices + ``$CALLMETER_PRICES``) or ``False`` for no cost.
    ``max_cost_turns`` bounds how many turns ``cost_by_turn`` keeps (the most recent).
    ``call_charges`` names call-level price entries (``"twilio/voice-inbound"``) charged
    per minute of the call's duration, which comes from a collected ``close`` event or
    :meth:`set_call_duration`.
    """

    BATCH = 1024

    def __init__(
        self,
        *,
        keep_metrics: bool = True,
        max_metrics: int | None = None,
        prices: Prices | PriceOverrides | bool | None = None,
        max_cost_turns: int = DEFAULT_MAX_TURNS,
        call_charges: list[str] | None = None,
    ) -> None:
        if max_metrics is not None and (
            isinstance(max_metrics, bool) or not isinstance(max_metrics, int) or max_metrics < 1
        ):
            raise InvalidArgumentError(
                f"max_metrics must be a positive int or None, got {max_metrics!r}"
            )
        self._keep = keep_metrics
        self._max_metrics = max_metrics
        if not isinstance(max_cost_turns, int) or max_cost_turns < 0:
            raise InvalidArgumentError(
                f"max_cost_turns must be a non-negative int, got {max_cost_turns!r}"
            )
        self._max_cost_turns = max_cost_turns
        self._prices = resolve_prices(prices)
        self._call_charges = check_call_charges(call_charges, "call_charges")
        self._lock = threading.Lock()
        self._batch = self.BATCH
        self._buf: list[AgentMetrics] = []  # appended to in place, never replaced
        self._rejects = validate.RejectLog(logger)
        self._rejected_billable = 0  # > 0: some usage was left out, the cost is a lower bound
        # Billable quantities, request counts, durations and errors per model are added
        # up by the ledger (once); these handlers add what only the collector keeps.
        # Functions, not bound methods: a dict of bound methods on self would be a
        # reference cycle, and every collector would wait for the garbage collector.
        cls = type(self)
        self._batch_handlers: dict[type, Callable[[Any, list[Any]], None]] = {
            ToolMetrics: cls._tool_batch,
            STTMetrics: cls._add_intervals,
            TTSMetrics: cls._add_intervals,
            EOUMetrics: cls._add_intervals,
            RealtimeModelMetrics: cls._add_intervals,
        }
        self.reset()

    def reset(self) -> None:
        """Forget everything collected so far."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        del self._buf[:]
        self._rejected_billable = 0
        self._tools: dict[str, ToolUsage] = {}
        self._timeline = IntervalUnion()
        self._metrics: deque[AgentMetrics] | list[AgentMetrics] = (
            deque(maxlen=self._max_metrics) if self._max_metrics else []
        )
        self._seen = 0
        rules = self._prices.billing_rule if self._prices is not None else None
        self._ledger = Ledger(rules, self._max_cost_turns)
        self._latency = LatencyCollector()

    @property
    def prices(self) -> Prices | None:
        """The prices this collector uses (None when pricing is off)."""
        return self._prices

    def note_rejected(self, metrics: object) -> None:
        """Note an event rejected before it reached this collector (by a session): if it
        was a billable kind, the cost becomes a lower bound."""
        if isinstance(metrics, _BILLABLE):
            self._rejected_billable += 1

    def _collect_close(self, event: CloseEvent) -> None:
        try:
            self.set_call_duration(event.duration)
        except Exception as exc:
            self._rejects.reject("UsageCollector", f"invalid close event ({exc})", event)

    @property
    def rejected_events(self) -> int:
        """Events :meth:`collect` left out because they were invalid."""
        return self._rejects.count

    @property
    def metrics(self) -> list[AgentMetrics]:
        """The collected events, oldest first (a copy)."""
        if not self._keep:
            raise MetricsNotKeptError(
                "this UsageCollector was created with keep_metrics=False; "
                "create it with keep_metrics=True (optionally max_metrics=N) to keep events"
            )
        with self._lock:
            self._flush_locked()
            return list(self._metrics)

    @property
    def dropped_metrics(self) -> int:
        """Events no longer in :attr:`metrics` because of ``max_metrics``."""
        with self._lock:
            self._flush_locked()
            return self._seen - len(self._metrics) if self._keep else 0

    def get_summary(self) -> UsageSummary:
        """A copy of the totals so far. Never raises (a failure is logged and the summary
        holds what could be added up)."""
        s = UsageSummary()
        try:
            with self._lock:
                self._flush_locked()
                self._summarize(s)
        except Exception:
            logger.exception("callmeter: computing a usage summary failed; figures incomplete")
            s.cost_complete = False
        return s

    def _summarize(self, s: UsageSummary) -> None:
        summary_keys: dict[tuple[str, str | None, str | None], str] = {}
        totals = self._ledger.model_totals()
        for model_key, v in totals.items():
            kind, provider, model = model_key
            mu = usage_from_ledger(ModelUsage(provider or UNKNOWN, model or UNKNOWN, kind), v)
            if kind == "llm" or kind == "realtime":
                s.llm_prompt_tokens += mu.prompt_tokens
                s.llm_prompt_cached_tokens += mu.prompt_cached_tokens
                s.llm_completion_tokens += mu.completion_tokens
                if kind == "llm":
                    s.llm_requests += mu.requests
                    s.llm_duration += mu.duration
                    s.llm_errors += mu.errors
                    s.llm_usage_unreported += mu.usage_unreported
            elif kind == "stt":
                s.stt_requests += mu.requests
                s.stt_audio_duration += mu.audio_duration
            elif kind == "tts":
                s.tts_requests += mu.requests
                s.tts_characters_count += mu.characters_count
                s.tts_audio_duration += mu.audio_duration
            key = f"{mu.provider}/{mu.model}"
            if key in s.by_model:  # the same model name measured as another kind
                key = f"{key}#{kind}"
            s.by_model[key] = mu
            summary_keys[model_key] = key
        for name, tu in self._tools.items():
            s.tool_calls += tu.calls
            s.tool_errors += tu.errors
            s.tool_duration += tu.total_duration
            s.by_tool[name] = copy.copy(tu)
        s.llm_and_tool_duration = s.llm_duration + s.tool_duration
        s.active_duration = self._timeline.total()
        if self._prices is not None:
            report = price_ledger(self._ledger, self._prices, self._call_charges)
            apply_cost(s, report, summary_keys, self._ledger.call_duration)
            if self._rejected_billable:
                s.cost_complete = False
                s.cost_notes.append(
                    f"{self._rejected_billable} invalid billable event(s) were rejected: "
                    "their usage is left out of the total"
                )
        else:
            s.cost_complete = False  # pricing disabled: cost is not known

    # batch aggregation ------------------------------------------------------------------

    def _flush(self) -> None:
        if self._buf:
            with self._lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        # Take the first n events; other threads only ever append after them.
        pending = self._buf
        n = len(pending)
        if not n:
            return
        buf = pending[:n]
        del pending[:n]
        if self._keep:
            self._metrics.extend(buf)
            self._seen += len(buf)
        try:
            llm, others = self._add_llm_events(buf)
        except Exception:
            # Events were validated on the way in, so this is a bug, not bad input.
            logger.exception("callmeter: adding up %d events failed; figures incomplete", n)
            self._rejects.add(n)
            return
        if llm:
            try:
                self._latency.collect_groups({LLMMetrics: llm})
            except Exception:
                logger.exception("callmeter: adding up latency failed; figures incomplete")
        if others:
            self._add_others(others)

    def _add_llm_events(self, buf: list[Any]) -> tuple[list[Any], list[Any]]:
        if speedups is None:
            return self._add_llm_events_py(buf)
        ledger = self._ledger
        timeline = self._timeline
        llm, others = speedups.add_llm_events(
            buf, _QUEUED, ledger, new_vector, ledger.part, ledger.keep_large, ledger.queue,
            Amounts, timeline._starts, timeline._ends, timeline._insert, LARGE_REQUEST_TOKENS,
        )  # fmt: skip
        if len(timeline._starts) > timeline._max:
            timeline._fold()
        return llm, others

    def _add_llm_events_py(self, buf: list[Any]) -> tuple[list[Any], list[Any]]:
        # The hot loop (_speedups.c has the same in C): every LLMMetrics of the batch is read
        # once (astuple) and added to the ledger (sums per run of one turn and one Metadata
        # object), to the interval union and to the latency series. Other events are
        # returned for _add_others.
        ledger = self._ledger
        part_of = ledger.part
        add_run = ledger.add_llm
        timeline = self._timeline
        starts, ends = timeline._starts, timeline._ends
        insert = timeline._insert
        llm_cls = LLMMetrics
        large = LARGE_REQUEST_TOKENS
        llm: list[Any] = []
        others: list[Any] = []
        keep = llm.append
        part: Any = None
        key: Any = None
        run_sid: Any = _NO_RUN
        run_md: Any = _NO_RUN
        requests = unreported = errors = 0
        prompt = cached = created = completion = audio_in = audio_out = 0
        duration = 0.0
        queue = ledger.queue
        for m in buf:
            if type(m) is not llm_cls:
                if type(m) in _QUEUED:  # in order: a turn dropped stays dropped
                    if part is not None:
                        add_run(part, key, requests, prompt, cached, created, completion,
                                audio_in, audio_out, unreported, duration, errors)  # fmt: skip
                        requests = unreported = errors = 0
                        prompt = cached = created = completion = audio_in = audio_out = 0
                        duration = 0.0
                        part = None
                        run_sid = run_md = _NO_RUN
                    queue(m)
                others.append(m)
                continue
            keep(m)
            (_, st, d, _, _, _, _, out, p, c, w, _, ai, ao, _, _, reported, err, sid, md) = astuple(
                m
            )
            if sid != run_sid or (md is not run_md and md != run_md):
                if part is not None:
                    add_run(part, key, requests, prompt, cached, created, completion,
                            audio_in, audio_out, unreported, duration, errors)  # fmt: skip
                    requests = unreported = errors = 0
                    prompt = cached = created = completion = audio_in = audio_out = 0
                    duration = 0.0
                run_sid, run_md = sid, md
                part = part_of(sid)
                key = (
                    ("llm", None, None) if md is None else ("llm", md.model_provider, md.model_name)
                )
            duration += d
            if err is not None:
                errors += 1
            if reported:
                requests += 1
                prompt += p
                cached += c
                completion += out
                if w or ai or ao:
                    created += w
                    audio_in += ai
                    audio_out += ao
                if p >= large or c + w > p or ai > p:  # priced on its own (see the ledger)
                    ledger.keep_large(part, key, Amounts(1, p, c, w, out, ai, ao))
            else:
                unreported += 1
            # the interval union, inline (see IntervalUnion.add_timed)
            end = st + d
            if ends and st > ends[-1]:
                starts.append(st)
                ends.append(end)
            elif ends and st >= starts[-1]:
                if end > ends[-1]:
                    ends[-1] = end
            else:
                insert(st, end)
        if part is not None:
            add_run(part, key, requests, prompt, cached, created, completion, audio_in,
                    audio_out, unreported, duration, errors)  # fmt: skip
        if len(starts) > timeline._max:
            timeline._fold()
        return llm, others

    def _add_others(self, buf: list[Any]) -> None:
        by_type: defaultdict[type, list[Any]] = defaultdict(list)
        for m in buf:
            by_type[m.__class__].append(m)
        handlers = self._batch_handlers
        dropped = False
        for cls, group in by_type.items():
            handler = handlers.get(cls)
            if handler is None:
                continue
            try:
                handler(self, group)
            except Exception:
                # Events were validated on the way in, so this is a bug, not bad input.
                # Retrying event by event could add part of the group twice: leave it out.
                logger.exception(
                    "callmeter: adding up %d %s events failed; left out", len(group), cls.__name__
                )
                self._rejects.add(len(group))
                by_type[cls] = []
                dropped = True
        if dropped:
            buf = [m for group in by_type.values() for m in group]
        try:  # (the ledger has them already: _add_llm_events queued them in order)
            self._latency.collect_groups(by_type)
        except Exception:
            logger.exception("callmeter: adding up cost or latency failed; figures incomplete")

    def set_call_duration(self, seconds: float | None) -> None:
        """Set the call's duration (seconds) that call-level charges are priced from.

        Collecting the session's ``close`` event does the same.
        """
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < float("inf")
        ):
            raise InvalidArgumentError(
                f"call duration must be a finite, non-negative number of seconds, got {seconds!r}"
            )
        with self._lock:
            self._flush_locked()
            self._ledger.set_call_duration(None if seconds is None else float(seconds))

    def get_latency_summary(self) -> LatencySummary:
        """Turn latency so far: e2e, LLM TTFT, TTS TTFB and tool percentiles, slowest turns."""
        with self._lock:
            self._flush_locked()
            return self._latency.get_summary()

    def _add_intervals(self, group: list[Any]) -> None:
        self._timeline.add_timed(group)

    def _tool_batch(self, group: list[ToolMetrics]) -> None:
        delta: dict[str, ToolUsage] = {}
        for m in group:
            name = m.tool_name
            if not isinstance(name, str):
                raise TypeError(f"tool_name must be a str, got {name!r}")
            tu = delta.get(name)
            if tu is None:
                tu = delta[name] = ToolUsage()
            duration = m.duration
            tu.calls += 1
            tu.total_duration += duration
            if duration > tu.max_duration:
                tu.max_duration = duration
            if not m.success and not m.cancelled:  # a cancelled call did not fail
                tu.errors += 1
        tools = self._tools
        for name, d in delta.items():
            tu = tools.get(name)
            if tu is None:
                tools[name] = d
                continue
            tu.calls += d.calls
            tu.errors += d.errors
            tu.total_duration += d.total_duration
            tu.max_duration = max(tu.max_duration, d.max_duration)
        self._add_intervals(group)
