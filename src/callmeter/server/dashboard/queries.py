"""Queries the dashboard needs beyond :mod:`callmeter.store.queries`.

They read the store's tables through SQLAlchemy Core (the ``calls`` summary rows and their
side tables; the ``turns`` rows for TTS TTFB), never the raw records.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from ...store import Store, schema
from ...store.queries import call_summary

ACTIVE_STALE = 600.0
"""A call with no record for this many seconds is no longer shown as active."""
ACTIVE_MAX_AGE = 86_400.0
"""Calls that started longer ago than this are not looked at for "active now"."""
TTFB_CALLS = 2000
"""TTS TTFB over time is taken from the turns of at most this many calls (the latest)."""

_SUMMARY_COLUMNS = [c for c in schema.calls.c if c.name not in ("e2e_sketch", "ttft_sketch")]


def agents(store: Store, tenant: str) -> list[str]:
    """The agent names of ``tenant``'s calls, sorted."""
    c = schema.calls.c
    q = sa.select(c.agent_name).where(c.tenant == tenant, c.agent_name.is_not(None)).distinct()
    with store.read_engine.connect() as conn:
        return sorted(conn.execute(q).scalars())


def active_calls(
    store: Store, tenant: str, *, now: float, agent: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Calls not closed whose last record is under :data:`ACTIVE_STALE` seconds old,
    newest first (call summaries, as the API gives them)."""
    c = schema.calls.c
    q = (
        sa.select(*_SUMMARY_COLUMNS)
        .where(
            c.tenant == tenant,
            c.started_at >= now - ACTIVE_MAX_AGE,
            c.closed.is_(False),
            c.last_at >= now - ACTIVE_STALE,
        )
        .order_by(c.started_at.desc(), c.session_id.desc())
        .limit(limit)
    )
    if agent is not None:
        q = q.where(c.agent_name == agent)
    with store.read_engine.connect() as conn:
        return [call_summary(r) for r in conn.execute(q).mappings()]


def _range(q: Any, tenant: str, since: float, until: float, agent: str | None) -> Any:
    c = schema.calls.c
    q = q.where(c.tenant == tenant, c.started_at >= since, c.started_at < until)
    return q if agent is None else q.where(c.agent_name == agent)


def by_agent(
    store: Store, tenant: str, *, since: float, until: float, agent: str | None = None
) -> list[dict[str, Any]]:
    """Per agent over calls started in ``[since, until)``: calls, turns, cost, mean
    duration, worst e2e p95, errors, tool calls and tool errors; costliest first."""
    c = schema.calls.c
    cost = sa.func.sum(c.cost)
    q = sa.select(
        c.agent_name, sa.func.count(), sa.func.sum(c.turns), cost, sa.func.avg(c.duration),
        sa.func.max(c.e2e_p95), sa.func.sum(c.errors), sa.func.sum(c.tool_calls),
        sa.func.sum(c.tool_errors),
    )  # fmt: skip
    q = _range(q, tenant, since, until, agent).group_by(c.agent_name).order_by(cost.desc())
    keys = ("agent", "calls", "turns", "cost", "mean_duration", "max_e2e_p95", "errors",
            "tool_calls", "tool_errors")  # fmt: skip
    with store.read_engine.connect() as conn:
        rows = [dict(zip(keys, r, strict=True)) for r in conn.execute(q)]
    for r in rows:
        for k in ("calls", "turns", "errors", "tool_calls", "tool_errors"):
            r[k] = int(r[k] or 0)  # PostgreSQL sums integers as numeric
        r["cost"] = float(r["cost"] or 0.0)
    return rows


def by_model(
    store: Store, tenant: str, *, since: float, until: float, agent: str | None = None
) -> list[dict[str, Any]]:
    """Per kind, provider and model over calls started in ``[since, until)``: calls,
    requests, tokens, characters, audio seconds, errors and cost (None when a price is
    unknown for some of them); costliest first."""
    c, m = schema.calls.c, schema.call_models.c
    cost = sa.func.sum(m.cost)
    q = sa.select(
        m.kind, m.provider, m.model, sa.func.count(), sa.func.sum(m.requests),
        sa.func.sum(m.prompt_tokens), sa.func.sum(m.completion_tokens),
        sa.func.sum(m.characters), sa.func.sum(m.audio_duration), sa.func.sum(m.errors), cost,
        sa.func.count() - sa.func.count(m.cost),
    ).select_from(
        schema.calls.join(schema.call_models,
                          sa.and_(m.tenant == c.tenant, m.session_id == c.session_id))
    )  # fmt: skip
    q = _range(q, tenant, since, until, agent)
    q = q.group_by(m.kind, m.provider, m.model).order_by(sa.func.coalesce(cost, 0.0).desc())
    keys = ("kind", "provider", "model", "calls", "requests", "prompt_tokens",
            "completion_tokens", "characters", "audio_duration", "errors", "cost",
            "unpriced")  # fmt: skip
    with store.read_engine.connect() as conn:
        rows = [dict(zip(keys, r, strict=True)) for r in conn.execute(q)]
    for r in rows:
        for k in ("calls", "requests", "prompt_tokens", "completion_tokens", "characters",
                  "errors", "unpriced"):  # fmt: skip
            r[k] = int(r[k] or 0)
        r["audio_duration"] = float(r["audio_duration"] or 0.0)
        r["cost"] = None if r["unpriced"] or r["cost"] is None else float(r["cost"])
    return rows


def _tts_ttfb(store: Store) -> Any:
    col = schema.turns.c.breakdown
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return sa.cast(col, JSONB)["tts_ttfb"].as_float()
    return sa.type_coerce(col, sa.JSON)["tts_ttfb"].as_float()


def tts_ttfb_p50(
    store: Store,
    tenant: str,
    *,
    since: float,
    until: float,
    interval: int,
    agent: str | None = None,
) -> dict[float, float]:
    """Median TTS time to first byte of the turns that waited on it, per bucket start
    (turns of the latest :data:`TTFB_CALLS` calls started in ``[since, until)``)."""
    c, t = schema.calls.c, schema.turns.c
    latest = _range(sa.select(c.session_id), tenant, since, until, agent)
    latest = latest.order_by(c.started_at.desc()).limit(TTFB_CALLS).subquery()
    ttfb = _tts_ttfb(store)
    q = sa.select(t.started_at, ttfb).where(
        t.tenant == tenant, t.session_id.in_(sa.select(latest.c.session_id)), ttfb > 0
    )
    per: dict[float, list[float]] = {}
    with store.read_engine.connect() as conn:
        for started, v in conn.execute(q):
            if v is None or not math.isfinite(v):
                continue
            per.setdefault(math.floor(started / interval) * interval, []).append(float(v))
    out: dict[float, float] = {}
    for b, vals in per.items():
        vals.sort()
        out[float(b)] = vals[(len(vals) - 1) // 2]
    return out


LATENCY_CALLS = 2000
"""Latency percentiles over time merge the sketches of at most about this many calls: over
more, only the calls that started in every k-th minute (a systematic sample)."""


def series(
    store: Store,
    tenant: str,
    *,
    since: float,
    until: float,
    interval: int,
    agent: str | None = None,
) -> dict[str, Any]:
    """The overview's time series, per bucket start: calls started, calls active, cost
    (total and by kind), tool calls and errors (every call of the range), and e2e p50/p95
    and LLM TTFT p50 merged from the calls' sketches (1 % accuracy; sampled, see
    :data:`LATENCY_CALLS`). A call is active in every bucket from its start to its last
    record; calls that started over :data:`ACTIVE_MAX_AGE` before ``since`` are not counted.
    Returns ``{"buckets": {start: {...}}, "sample_every": k}``."""
    from ...store.sketch import Sketch

    c = schema.calls.c
    iv = int(interval)
    bucket = sa.cast(sa.func.floor(c.started_at / iv), sa.BigInteger).label("b")
    base = [c.tenant == tenant] + ([c.agent_name == agent] if agent is not None else [])
    in_range = [*base, c.started_at >= since, c.started_at < until]
    end = sa.func.coalesce(c.ended_at, c.last_at)
    sums = (
        sa.select(
            bucket, sa.func.count(), sa.func.sum(c.cost),
            *(sa.func.sum(getattr(c, f"cost_{k}")) for k in schema.COST_KINDS),
            sa.func.sum(c.tool_calls), sa.func.sum(c.tool_errors),
        )
        .where(*in_range)
        .group_by(bucket)
    )  # fmt: skip
    recent = [*base, c.started_at >= since - ACTIVE_MAX_AGE, c.started_at < until]
    end_bucket = sa.cast(sa.func.floor(end / iv), sa.BigInteger).label("b")
    ends = (
        sa.select(end_bucket, sa.func.count())
        .where(*recent, end >= since, end < until)
        .group_by(end_bucket)
    )
    before = sa.select(sa.func.count()).where(*recent, c.started_at < since, end >= since)
    out: dict[float, dict[str, Any]] = {}
    with store.read_engine.connect() as conn:
        starts: dict[int, int] = {}
        for b, n, cost, *rest in conn.execute(sums):
            kinds, (tools, tool_errors) = rest[:-2], rest[-2:]
            starts[int(b)] = int(n)
            tools, tool_errors = int(tools or 0), int(tool_errors or 0)
            out[float(b * iv)] = {
                "calls": int(n), "cost": float(cost or 0.0),
                "cost_by_kind": {k: float(v or 0.0)
                                 for k, v in zip(schema.COST_KINDS, kinds, strict=True)},
                "tool_calls": tools, "tool_errors": tool_errors,
                "tool_error_rate": tool_errors / tools if tools else None,
            }  # fmt: skip
        ended = {int(b): int(n) for b, n in conn.execute(ends)}
        active = int(conn.execute(before).scalar() or 0)
        total = sum(starts.values())
        k = max(1, math.ceil(total / LATENCY_CALLS))
        sk = sa.select(bucket, c.e2e_sketch, c.ttft_sketch).where(
            *in_range, sa.or_(c.e2e_sketch.is_not(None), c.ttft_sketch.is_not(None))
        )
        if k > 1:
            sk = sk.where(c.start_minute % k == 0)
        e2e: dict[int, Sketch] = {}
        ttft: dict[int, Sketch] = {}
        for b, e, t in conn.execute(sk):
            e2e.setdefault(b, Sketch()).merge_bytes(e)
            ttft.setdefault(b, Sketch()).merge_bytes(t)
    first, last = math.floor(since / iv), math.floor((until - 1e-9) / iv)
    for b in range(first, last + 1):
        active += starts.get(b, 0)
        d = out.setdefault(float(b * iv), {
            "calls": 0, "cost": 0.0, "cost_by_kind": {}, "tool_calls": 0, "tool_errors": 0,
            "tool_error_rate": None})  # fmt: skip
        d["active_calls"] = active
        es, ts = e2e.get(b), ttft.get(b)
        d["e2e_p50"] = es.quantile(0.5) if es else None
        d["e2e_p95"] = es.quantile(0.95) if es else None
        d["ttft_p50"] = ts.quantile(0.5) if ts else None
        active -= ended.get(b, 0)
    return {"buckets": out, "sample_every": k}
