"""A call's summary row, updated with the records that arrive for it.

:func:`apply_records` adds a run of new records of one call to its ``calls`` row (a dict),
and returns the per-model usage and the turn rows they bring. Counts and sums add up
(the same totals :class:`~callmeter.usage.UsageCollector` gives); latency percentiles come
from the merged sketch; cost is priced per request with the store's prices (as callmeter
prices requests: tiered rates by each request's own input tokens), so costs add up too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..model.events import CloseEvent, LatencyBudgetExceededEvent, MetricsCollectedEvent, Record
from ..model.types import (
    LLMMetrics,
    Metadata,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnMetrics,
)
from ..pricing.cost import LARGE_REQUEST_TOKENS, _has_nonzero_rate, amounts_of, price_amounts
from .schema import COUNTS, SUMS
from .sketch import Sketch

_json = msgspec.json.Encoder()
UNKNOWN = "unknown"


def new_call(tenant: str, session_id: str, part_time: float) -> dict[str, Any]:
    """An empty ``calls`` row for a call first seen at ``part_time``."""
    row: dict[str, Any] = {
        "tenant": tenant,
        "session_id": session_id,
        "part_time": part_time,
        "agent_name": None,
        "labels": None,
        "started_at": part_time,
        "start_minute": math.floor(part_time / 60),
        "last_at": part_time,
        "ended_at": None,
        "duration": 0.0,
        "closed": False,
        "error": None,
        "cost_complete": True,
        "e2e_p50": None,
        "e2e_p95": None,
        "ttft_p50": None,
        "ttft_p95": None,
        "e2e_sketch": None,
        "ttft_sketch": None,
    }
    for name in COUNTS:
        row[name] = 0
    for name in SUMS:
        row[name] = 0.0
    return row


TURN_COLUMNS = (
    "tenant",
    "session_id",
    "seq",
    "speech_id",
    "started_at",
    "duration",
    "e2e_latency",
    "interrupted",
    "llm_requests",
    "tool_calls",
    "breakdown",
)
"""The ``turns`` columns, in the order of the tuples in :attr:`CallDelta.turns`."""


@dataclass(slots=True)
class CallDelta:
    """What a run of records adds beside the call row: model usage, turns (tuples in
    :data:`TURN_COLUMNS` order), new labels."""

    models: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    turns: list[tuple[Any, ...]] = field(default_factory=list)
    labels: dict[str, str] | None = None


class RequestPricer:
    """USD of one request, as callmeter prices them (each request on its own, tiered rates
    by its own input tokens), memoized by model and billable amounts. None: unknown (no
    price for the model, usage not reported, or nothing its price bills)."""

    MEMO = 100_000

    def __init__(self, prices: Any) -> None:
        self.prices = prices
        self._lookups: dict[tuple[str | None, str | None], Any] = {}
        self._memo: dict[tuple[Any, ...], float | None] = {}

    def cost(self, kind: str, md: Metadata | None, m: Any) -> float | None:
        """The cost of request ``m`` of ``kind`` by the model in ``md``."""
        if self.prices is None or md is None or not md.model_name:
            return None
        cls = m.__class__
        if cls is LLMMetrics:
            key: tuple[Any, ...] = (kind, md, m.usage_reported, m.prompt_tokens,
                   m.prompt_cached_tokens, m.cache_creation_tokens, m.completion_tokens,
                   m.input_audio_tokens, m.output_audio_tokens)  # fmt: skip
        elif cls is TTSMetrics:
            key = (kind, md, m.input_tokens, m.output_tokens, m.audio_duration,
                   m.characters_count)  # fmt: skip
        elif cls is STTMetrics:
            key = (kind, md, m.input_tokens, m.output_tokens, m.input_audio_tokens,
                   m.audio_duration)  # fmt: skip
        else:
            key = ()
        memo = self._memo
        if key and key in memo:
            return memo[key]
        a = amounts_of(m)
        if a is None:
            return None
        lk = (md.model_name, md.model_provider)
        if lk not in self._lookups:
            self._lookups[lk] = self.prices.lookup(md.model_name, md.model_provider)
        price = self._lookups[lk]
        out: float | None = None
        if price is not None:
            try:
                d = price_amounts(price, a, kind, base_tier=a.input_tokens < LARGE_REQUEST_TOKENS)
                out = float(d)
                if d == 0 and not a.is_empty() and _has_nonzero_rate(price):
                    out = None  # a request carrying nothing its price bills
            except Exception:
                out = None
        if key:
            if len(memo) >= self.MEMO:
                memo.clear()
            memo[key] = out
        return out


_KINDS = {LLMMetrics: "llm", STTMetrics: "stt", TTSMetrics: "tts", RealtimeModelMetrics: "realtime"}


# the summary columns apply_records adds to (read into locals, written back once)
_ADDED = ("records", "turns", "interrupted_turns", "llm_requests", "llm_prompt_tokens",
          "llm_cached_tokens", "llm_completion_tokens", "llm_errors", "tool_calls",
          "tool_errors", "stt_requests", "stt_errors", "tts_requests", "tts_characters",
          "tts_errors", "realtime_requests", "errors", "budget_breaches", "llm_duration",
          "tool_duration", "stt_audio_duration", "tts_audio_duration")  # fmt: skip


def apply_records(
    row: dict[str, Any], records: list[Record], pricer: RequestPricer, *, tenant: str
) -> CallDelta:
    """Add ``records`` (new, not yet stored, of this call) to ``row``; the side-table rows.

    Every sum is added in record order starting from the row's value, so the result is the
    same, to the bit, as adding the records one by one."""
    delta = CallDelta()
    models = delta.models
    turn_rows = delta.turns
    e2e: list[float] = []
    ttft: list[float] = []
    started = row["started_at"]
    last = row["last_at"]
    session_id = row["session_id"]
    cost_complete = row["cost_complete"]
    need_agent = row["agent_name"] is None
    need_labels = row["labels"] is None
    (n_records, turns, interrupted_turns, llm_requests, llm_prompt_tokens, llm_cached_tokens,
     llm_completion_tokens, llm_errors, tool_calls, tool_errors, stt_requests, stt_errors,
     tts_requests, tts_characters, tts_errors, realtime_requests, errors, budget_breaches,
     llm_duration, tool_duration, stt_audio_duration,
     tts_audio_duration) = [row[k] for k in _ADDED]  # fmt: skip
    costs = {"cost": row["cost"], "cost_llm": row["cost_llm"], "cost_stt": row["cost_stt"],
             "cost_tts": row["cost_tts"], "cost_realtime": row["cost_realtime"]}  # fmt: skip
    price = pricer.cost
    encode = _json.encode
    for r in records:
        created = r.created_at
        if created < started:
            started = created
        if created > last:
            last = created
        if need_agent and r.agent_name is not None:
            row["agent_name"] = r.agent_name
            need_agent = False
        if need_labels and r.labels:
            row["labels"] = encode(r.labels).decode()
            delta.labels = dict(r.labels)
            need_labels = False
        cls = r.__class__
        if cls is MetricsCollectedEvent:
            m = r.metrics
            mcls = m.__class__
            if mcls is ToolMetrics:
                if m.started_at < started:
                    started = m.started_at
                tool_calls += 1
                tool_duration += m.duration
                if not m.success:
                    tool_errors += 1
                    errors += 1
                continue
            if mcls is TurnMetrics:
                if m.started_at < started:
                    started = m.started_at
                turns += 1
                if m.e2e_latency < 0:
                    interrupted_turns += 1
                else:
                    e2e.append(m.e2e_latency)
                turn_rows.append(
                    (
                        tenant,
                        session_id,
                        r.seq,
                        m.speech_id,
                        m.started_at,
                        m.duration,
                        m.e2e_latency,
                        bool(m.interrupted),
                        m.llm_requests,
                        m.tool_calls,
                        encode(m.breakdown).decode(),
                    )
                )
                continue
            m_started = getattr(m, "started_at", None)
            if m_started is not None and m_started < started:
                started = m_started
            kind = _KINDS.get(mcls)
            if kind is None:
                continue
            md = m.metadata
            if md is None:
                provider = model = UNKNOWN
            else:
                provider = (md.model_provider or UNKNOWN)[:200]
                model = (md.model_name or UNKNOWN)[:200]
            mu = models.get((kind, provider, model))
            if mu is None:
                mu = models[(kind, provider, model)] = {
                    "tenant": tenant, "session_id": session_id, "kind": kind,
                    "provider": provider, "model": model, "requests": 0, "prompt_tokens": 0,
                    "completion_tokens": 0, "audio_duration": 0.0, "characters": 0,
                    "duration": 0.0, "errors": 0, "cost": None,
                }  # fmt: skip
            mu["requests"] += 1
            mu["duration"] += m.duration
            error = getattr(m, "error", None) is not None
            if error:
                mu["errors"] += 1
            if mcls is LLMMetrics:
                llm_requests += 1
                llm_duration += m.duration
                if error:
                    llm_errors += 1
                    errors += 1
                if m.ttft >= 0:
                    ttft.append(m.ttft)
                if m.usage_reported:
                    llm_prompt_tokens += m.prompt_tokens
                    llm_cached_tokens += m.prompt_cached_tokens
                    llm_completion_tokens += m.completion_tokens
                    mu["prompt_tokens"] += m.prompt_tokens
                    mu["completion_tokens"] += m.completion_tokens
            elif mcls is TTSMetrics:
                tts_requests += 1
                tts_characters += m.characters_count
                tts_audio_duration += m.audio_duration
                mu["characters"] += m.characters_count
                mu["audio_duration"] += m.audio_duration
                mu["prompt_tokens"] += m.input_tokens
                mu["completion_tokens"] += m.output_tokens
                if error:
                    tts_errors += 1
                    errors += 1
            elif mcls is STTMetrics:
                stt_requests += 1
                stt_audio_duration += m.audio_duration
                mu["audio_duration"] += m.audio_duration
                mu["prompt_tokens"] += m.input_tokens
                mu["completion_tokens"] += m.output_tokens
                if error:
                    stt_errors += 1
                    errors += 1
            else:  # realtime
                realtime_requests += 1
                llm_prompt_tokens += m.input_tokens
                llm_cached_tokens += m.input_token_details.cached_tokens
                llm_completion_tokens += m.output_tokens
                mu["prompt_tokens"] += m.input_tokens
                mu["completion_tokens"] += m.output_tokens
                if m.ttft >= 0:
                    ttft.append(m.ttft)
            cost = price(kind, md, m)
            if cost is None:
                cost_complete = False
            else:
                costs["cost_" + kind] += cost
                costs["cost"] += cost
                mu["cost"] = (mu["cost"] or 0.0) + cost
        elif cls is CloseEvent:
            row["closed"] = True
            row["ended_at"] = created
            row["duration"] = r.duration
            if r.error is not None:
                row["error"] = r.error
                errors += 1
        elif cls is LatencyBudgetExceededEvent:
            budget_breaches += 1
    n_records += len(records)
    row.update(zip(_ADDED, (n_records, turns, interrupted_turns, llm_requests,
        llm_prompt_tokens, llm_cached_tokens, llm_completion_tokens, llm_errors, tool_calls,
        tool_errors, stt_requests, stt_errors, tts_requests, tts_characters, tts_errors,
        realtime_requests, errors, budget_breaches, llm_duration, tool_duration,
        stt_audio_duration, tts_audio_duration), strict=True))  # fmt: skip
    row.update(costs)
    row["cost_complete"] = cost_complete
    row["started_at"] = started
    row["start_minute"] = math.floor(started / 60)
    row["last_at"] = last
    if not row["closed"]:
        row["duration"] = max(0.0, last - started)
    elif row["ended_at"] is not None and last > row["ended_at"]:
        row["ended_at"] = last  # a record after close (late metrics): the call ended later
    if e2e:
        row["e2e_sketch"], row["e2e_p50"], row["e2e_p95"] = _merge(row["e2e_sketch"], e2e)
    if ttft:
        row["ttft_sketch"], row["ttft_p50"], row["ttft_p95"] = _merge(row["ttft_sketch"], ttft)
    return delta


def _merge(data: bytes | None, values: list[float]) -> tuple[bytes, float | None, float | None]:
    sketch = Sketch.from_bytes(data)
    sketch.add(values)
    p50, p95 = sketch.quantiles(0.5, 0.95)
    return sketch.to_bytes(), p50, p95
