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
