"""Queries of the store: lists of calls, one call in detail, statistics over time.

Every query takes a tenant and sees only that tenant's calls. Lists and statistics read
the ``calls`` row summaries (and their side tables), never the records.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa

from ..errors import InvalidArgumentError
from . import schema
from .store import Store

SORTS: dict[str, Any] = {
    "started": schema.calls.c.started_at,
    "cost": schema.calls.c.cost,
    "e2e_p95": sa.func.coalesce(schema.calls.c.e2e_p95, -1.0),
    "duration": schema.calls.c.duration,
}
"""Sort keys of :func:`list_calls`."""
MAX_LIMIT = 1000
_json_dec = msgspec.json.Decoder()
_cursor_dec = msgspec.json.Decoder(tuple[str, str, float, str])
_enc = msgspec.json.Encoder()


@dataclass(slots=True)
class CallPage:
    """One page of calls, and the cursor of the next page (None on the last page)."""

    calls: list[dict[str, Any]]
    next_cursor: str | None


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _money(v: float | None) -> float | None:
    return None if v is None else round(v, 9)


def call_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``calls`` row as the API's call summary (plain builtins)."""
    return {
        "session_id": row["session_id"],
        "agent_name": row["agent_name"],
        "labels": _json_dec.decode(row["labels"]) if row["labels"] else {},
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "last_record_at": row["last_at"],
        "duration": row["duration"],
        "closed": bool(row["closed"]),
        "error": row["error"],
        "records": row["records"],
        "turns": row["turns"],
        "interrupted_turns": row["interrupted_turns"],
        "cost": _money(row["cost"]),
        "cost_complete": bool(row["cost_complete"]),
        "cost_by_kind": {k: _money(row[f"cost_{k}"]) for k in schema.COST_KINDS},
        "e2e_p50": row["e2e_p50"],
        "e2e_p95": row["e2e_p95"],
        "ttft_p50": row["ttft_p50"],
        "ttft_p95": row["ttft_p95"],
        "errors": row["errors"],
        "budget_breaches": row["budget_breaches"],
        "llm": {
            "requests": row["llm_requests"],
            "prompt_tokens": row["llm_prompt_tokens"],
            "prompt_cached_tokens": row["llm_cached_tokens"],
            "completion_tokens": row["llm_completion_tokens"],
            "duration": row["llm_duration"],
            "errors": row["llm_errors"],
        },
        "tool": {
            "calls": row["tool_calls"],
            "errors": row["tool_errors"],
            "duration": row["tool_duration"],
        },
        "stt": {
            "requests": row["stt_requests"],
            "audio_duration": row["stt_audio_duration"],
            "errors": row["stt_errors"],
        },
        "tts": {
            "requests": row["tts_requests"],
            "characters": row["tts_characters"],
            "audio_duration": row["tts_audio_duration"],
            "errors": row["tts_errors"],
        },
        "realtime": {"requests": row["realtime_requests"]},
    }


_LIST_COLUMNS = [c for c in schema.calls.c if c.name not in ("e2e_sketch", "ttft_sketch")]


def _encode_cursor(sort: str, order: str, value: float, session_id: str) -> str:
    raw = _enc.encode((sort, order, value, session_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, order: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c_sort, c_order, value, sid = _cursor_dec.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidArgumentError("cursor is not one this server returned") from None
    if (c_sort, c_order) != (sort, order):
        raise InvalidArgumentError("cursor belongs to another sort order: start again")
    return value, sid


def list_calls(
    store: Store,
    tenant: str,
    *,
    agent: str | None = None,
    labels: Mapping[str, str] | None = None,
    since: float | None = None,
    until: float | None = None,
    min_cost: float | None = None,
    min_e2e_p95: float | None = None,
    has_errors: bool | None = None,
    sort: str = "started",
    order: str = "desc",
    limit: int = 50,
    cursor: str | None = None,
) -> CallPage:
    """Calls of ``tenant`` that match every filter, sorted by ``sort``, a page at a time.

    ``since``/``until`` bound the start time (epoch seconds, ``until`` exclusive);
    ``labels`` must all match; ``has_errors`` True keeps calls with at least one error
    (False: none). Pass the returned ``next_cursor`` back to get the next page.
    """
    if sort not in SORTS:
        raise InvalidArgumentError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if order not in ("asc", "desc"):
        raise InvalidArgumentError(f"order must be asc or desc, got {order!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    c = schema.calls.c
    key = SORTS[sort]
    q = sa.select(*_LIST_COLUMNS, key.label("_key")).where(c.tenant == tenant)
    if agent is not None:
        q = q.where(c.agent_name == agent)
    if (v := _number("since", since)) is not None:
        q = q.where(c.started_at >= v)
    if (v := _number("until", until)) is not None:
        q = q.where(c.started_at < v)
    if (v := _number("min_cost", min_cost)) is not None:
        q = q.where(c.cost >= v)
    if (v := _number("min_e2e_p95", min_e2e_p95)) is not None:
        q = q.where(c.e2e_p95 >= v)
    if has_errors is True:
        q = q.where(c.errors > 0)
    elif has_errors is False:
        q = q.where(c.errors == 0)
    for k, v in (labels or {}).items():
        lt = schema.call_labels.c
        q = q.where(
            sa.exists().where(
                lt.tenant == c.tenant, lt.session_id == c.session_id, lt.key == k, lt.value == v
            )
        )
    if cursor:
        value, sid = _decode_cursor(cursor, sort, order)
        if order == "desc":
            q = q.where(sa.or_(key < value, sa.and_(key == value, c.session_id < sid)))
        else:
            q = q.where(sa.or_(key > value, sa.and_(key == value, c.session_id > sid)))
    if order == "desc":
        q = q.order_by(key.desc(), c.session_id.desc())
    else:
        q = q.order_by(key.asc(), c.session_id.asc())
    q = q.limit(limit + 1)
    with store.read_engine.connect() as conn:
        rows = list(conn.execute(q).mappings())
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = _encode_cursor(sort, order, float(last["_key"]), last["session_id"])
    return CallPage([call_summary(r) for r in rows], nxt)


def get_call(
    store: Store, tenant: str, session_id: str, *, max_records: int = 10_000
) -> dict[str, Any] | None:
    """One call in detail: ``call`` (its summary), ``models`` (usage per model), ``turns``
    (with their breakdowns), ``tool_calls`` and ``records`` (the first ``max_records``).
    None when ``tenant`` has no such call."""
    c = schema.calls
    with store.read_engine.connect() as conn:
        row = (
            conn.execute(sa.select(c).where(c.c.tenant == tenant, c.c.session_id == session_id))
            .mappings()
            .first()
        )
        if row is None:
            return None
        out: dict[str, Any] = {"call": call_summary(row)}
        cm = schema.call_models
        out["models"] = [
            {k: (_money(v) if k == "cost" else v) for k, v in m.items()
             if k not in ("tenant", "session_id")}
            for m in conn.execute(
                sa.select(cm)
                .where(cm.c.tenant == tenant, cm.c.session_id == session_id)
                .order_by(cm.c.kind, cm.c.provider, cm.c.model)
            ).mappings()
        ]  # fmt: skip
        t = schema.turns
        out["turns"] = [
            {
                "seq": r["seq"],
                "speech_id": r["speech_id"],
                "started_at": r["started_at"],
                "duration": r["duration"],
                "e2e_latency": r["e2e_latency"],
                "interrupted": bool(r["interrupted"]),
                "llm_requests": r["llm_requests"],
                "tool_calls": r["tool_calls"],
                "breakdown": _json_dec.decode(r["breakdown"]),
            }
            for r in conn.execute(
                sa.select(t)
                .where(t.c.tenant == tenant, t.c.session_id == session_id)
                .order_by(t.c.seq)
            ).mappings()
        ]
        rt = schema.records
        bodies = conn.execute(
            sa.select(rt.c.body)
            .where(rt.c.tenant == tenant, rt.c.session_id == session_id)
            .order_by(rt.c.seq)
            .limit(max_records)
        ).scalars()
        records = [_json_dec.decode(b) for b in bodies]
    out["tool_calls"] = [
        r["metrics"]
        for r in records
        if r.get("event") == "metrics_collected" and r["metrics"].get("type") == "tool_metrics"
    ]
    out["records"] = records
    out["records_truncated"] = len(records) < row["records"]
    return out
