"""A call's summary row, updated with the records that arrive for it.

:func:`apply_records` adds a run of new records of one call to its ``calls`` row (a dict),
and returns the per-model usage and the turn rows they bring. Counts and sums add up;
latency percentiles come from the merged sketch; cost is priced per request with the
store's prices, so the cost of a batch adds to the cost of the call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..model.events import CloseEvent, LatencyBudgetExceededEvent, MetricsCollectedEvent, Record
from ..model.types import LLMMetrics, RealtimeModelMetrics, TurnMetrics
from ..usage.collector import UsageCollector
from .schema import COST_KINDS, COUNTS, SUMS
from .sketch import Sketch

_json = msgspec.json.Encoder()


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


@dataclass(slots=True)
class CallDelta:
    """What a run of records adds beside the call row: model usage, turns, new labels."""

    models: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    turns: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] | None = None


def apply_records(
    row: dict[str, Any], records: list[Record], prices: Any, *, tenant: str
) -> CallDelta:
    """Add ``records`` (new, not yet stored, of this call) to ``row``; the side-table rows."""
    delta = CallDelta()
    usage = UsageCollector(keep_metrics=False, prices=prices if prices is not None else False)
    e2e: list[float] = []
    ttft: list[float] = []
    started = row["started_at"]
    last = row["last_at"]
    session_id = row["session_id"]
    for r in records:
        created = r.created_at
        started = min(started, created)
        last = max(last, created)
        if row["agent_name"] is None and r.agent_name is not None:
            row["agent_name"] = r.agent_name
        if row["labels"] is None and r.labels:
            row["labels"] = _json.encode(r.labels).decode()
            delta.labels = dict(r.labels)
        cls = r.__class__
        if cls is MetricsCollectedEvent:
            m = r.metrics
            usage.collect(m)
            m_started = getattr(m, "started_at", None)
            if m_started is not None:
                started = min(started, m_started)
            mcls = m.__class__
            if mcls is LLMMetrics or mcls is RealtimeModelMetrics:
                if m.ttft >= 0:
                    ttft.append(m.ttft)
            elif mcls is TurnMetrics:
                row["turns"] += 1
                if m.e2e_latency < 0:
                    row["interrupted_turns"] += 1
                else:
                    e2e.append(m.e2e_latency)
                delta.turns.append(
                    {
                        "tenant": tenant,
                        "session_id": session_id,
                        "seq": r.seq,
                        "speech_id": m.speech_id,
                        "started_at": m.started_at,
                        "duration": m.duration,
                        "e2e_latency": m.e2e_latency,
                        "interrupted": bool(m.interrupted),
                        "llm_requests": m.llm_requests,
                        "tool_calls": m.tool_calls,
                        "breakdown": _json.encode(m.breakdown).decode(),
                    }
                )
        elif cls is CloseEvent:
            row["closed"] = True
            row["ended_at"] = created
            row["duration"] = r.duration
            if r.error is not None:
                row["error"] = r.error
                row["errors"] += 1
        elif cls is LatencyBudgetExceededEvent:
            row["budget_breaches"] += 1
    row["records"] += len(records)
    row["started_at"] = started
    row["start_minute"] = math.floor(started / 60)
    row["last_at"] = last
    if not row["closed"]:
        row["duration"] = max(0.0, last - started)
    elif row["ended_at"] is not None and last > row["ended_at"]:
        row["ended_at"] = last  # a record after close (late metrics): the call ended later
    _add_usage(row, usage, delta, tenant)
    if e2e:
        row["e2e_sketch"], row["e2e_p50"], row["e2e_p95"] = _merge(row["e2e_sketch"], e2e)
    if ttft:
        row["ttft_sketch"], row["ttft_p50"], row["ttft_p95"] = _merge(row["ttft_sketch"], ttft)
    return delta


def _merge(data: bytes | None, values: list[float]) -> tuple[bytes, float | None, float | None]:
    sketch = Sketch.from_bytes(data)
    sketch.add(values)
    return sketch.to_bytes(), sketch.quantile(0.5), sketch.quantile(0.95)


def _add_usage(row: dict[str, Any], usage: UsageCollector, delta: CallDelta, tenant: str) -> None:
    s = usage.get_summary()
    row["llm_requests"] += s.llm_requests
    row["llm_prompt_tokens"] += s.llm_prompt_tokens
    row["llm_cached_tokens"] += s.llm_prompt_cached_tokens
    row["llm_completion_tokens"] += s.llm_completion_tokens
    row["llm_duration"] += s.llm_duration
    row["llm_errors"] += s.llm_errors
    row["tool_calls"] += s.tool_calls
    row["tool_errors"] += s.tool_errors
    row["tool_duration"] += s.tool_duration
    row["stt_requests"] += s.stt_requests
    row["stt_audio_duration"] += s.stt_audio_duration
    row["tts_requests"] += s.tts_requests
    row["tts_characters"] += s.tts_characters_count
    row["tts_audio_duration"] += s.tts_audio_duration
    errors = s.llm_errors + s.tool_errors
    for mu in s.by_model.values():
        kind = mu.kind
        if kind == "stt":
            row["stt_errors"] += mu.errors
            errors += mu.errors
        elif kind == "tts":
            row["tts_errors"] += mu.errors
            errors += mu.errors
        elif kind == "realtime":
            row["realtime_requests"] += mu.requests
        cost = float(mu.cost) if mu.cost is not None else None
        if cost is not None and kind in COST_KINDS:
            row[f"cost_{kind}"] += cost
        provider, model = mu.provider[:200], mu.model[:200]
        key = (kind, provider, model)
        delta.models[key] = {
            "tenant": tenant,
            "session_id": row["session_id"],
            "kind": kind,
            "provider": provider,
            "model": model,
            "requests": mu.requests,
            "prompt_tokens": mu.prompt_tokens,
            "completion_tokens": mu.completion_tokens,
            "audio_duration": mu.audio_duration,
            "characters": mu.characters_count,
            "duration": mu.duration,
            "errors": mu.errors,
            "cost": cost,
        }
    row["errors"] += errors
    row["cost"] += float(s.cost)
    if s.by_model and not s.cost_complete:
        row["cost_complete"] = False
