"""Queries the dashboard needs beyond :mod:`callmeter.store.queries`.

They read the store's tables through SQLAlchemy Core (the hourly rollup for whole hours,
the ``calls`` summary rows and their side tables for the rest; the ``turns`` rows for TTS
TTFB), never the raw records.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from ...store import Store, schema
from ...store.queries import call_summary, first_last, stats
from ...store.rollup import ALL, HOUR, agent_key, decode_models, whole_hours

ACTIVE_STALE = 600.0
"""A call with no record for this many seconds is no longer shown as active."""
ACTIVE_MAX_AGE = 86_400.0
"""Calls that started longer ago than this are not looked at for "active now"."""
TTFB_CALLS = 1000
"""TTS TTFB over time is taken from the turns of about this many calls at most (a
systematic sample over the range, see :func:`tts_ttfb_p50`)."""

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


def _pieces(
    since: float, until: float, rollup: bool
) -> tuple[tuple[int, int] | None, list[tuple[float, float]]]:
    """The whole hours of ``[since, until)`` (rollup hour numbers, None when there are
    none or ``rollup`` is false) and the parts of an hour at either end (or the whole
    range), which are read from the call rows."""
    lo_h, hi_h = whole_hours(since, until)
    if not rollup or lo_h >= hi_h:
        return None, [(since, until)]
    edges = ([(since, float(lo_h))] if since < lo_h else []) + (
        [(float(hi_h), until)] if hi_h < until else []
    )
    return (lo_h // HOUR, hi_h // HOUR), edges


def _rollup_rows(
    tenant: str, hours: tuple[int, int], agent: str | None, per_agent: bool = True
) -> list[Any]:
    """The rollup rows of one agent, or of every agent (``per_agent``), or their sums."""
    t = schema.call_rollup.c
    if agent is not None:
        key = t.agent_key == agent_key(agent)
    else:
        key = t.agent_key != ALL if per_agent else t.agent_key == ALL
    return [t.tenant == tenant, t.hour >= hours[0], t.hour < hours[1], key]


_AGENT_SUMS = ("calls", "turns", "cost", "duration", "errors", "tool_calls", "tool_errors")


def by_agent(
    store: Store,
    tenant: str,
    *,
    since: float,
    until: float,
    agent: str | None = None,
    rollup: bool = True,
) -> list[dict[str, Any]]:
    """Per agent over calls started in ``[since, until)``: calls, turns, cost, mean
    duration, e2e p50 and p95 over all its turns (merged sketches), errors, tool calls and
    tool errors; costliest first. Whole hours come from the hourly rollup (``rollup=False``
    reads the call rows only; the answers are the same)."""
    from ...store.sketch import Sketch

    acc: dict[str, dict[str, Any]] = {}

    def cell(name: str | None) -> dict[str, Any]:
        d = acc.get(agent_key(name))
        if d is None:
            d = acc[agent_key(name)] = {"agent": name, **dict.fromkeys(_AGENT_SUMS, 0),
                                        "_e2e": Sketch()}  # fmt: skip
        return d

    hours, edges = _pieces(since, until, rollup)
    c, t = schema.calls.c, schema.call_rollup.c
    with store.read_engine.connect() as conn:
        if hours is not None:
            q = sa.select(t.agent_name, *(getattr(t, k) for k in _AGENT_SUMS), t.e2e_sketch)
            for name, *sums, e2e in conn.execute(q.where(*_rollup_rows(tenant, hours, agent))):
                if sums[0] <= 0:  # a row of calls that only ended in this hour
                    continue
                d = cell(name)
                for k, v in zip(_AGENT_SUMS, sums, strict=True):
                    d[k] += v
                if e2e:
                    d["_e2e"].merge_bytes(e2e)
        for lo, hi in edges:
            q = sa.select(c.agent_name, sa.func.count(),
                          *(sa.func.sum(getattr(c, k)) for k in _AGENT_SUMS[1:]))  # fmt: skip
            q = _range(q, tenant, lo, hi, agent).group_by(c.agent_name)
            for name, *sums in conn.execute(q):
                d = cell(name)
                for k, v in zip(_AGENT_SUMS, sums, strict=True):
                    d[k] += v or 0  # PostgreSQL sums integers as numeric
            q = _range(sa.select(c.agent_name, c.e2e_sketch), tenant, lo, hi, agent)
            for name, e2e in conn.execute(q.where(c.e2e_sketch.is_not(None))):
                cell(name)["_e2e"].merge_bytes(e2e)
    rows = []
    for d in acc.values():
        e2e = d.pop("_e2e")
        duration = float(d.pop("duration"))
        for k in ("calls", "turns", "errors", "tool_calls", "tool_errors"):
            d[k] = int(d[k])
        d["cost"] = float(d["cost"])
        d["mean_duration"] = duration / d["calls"] if d["calls"] else None
        d["e2e_p50"], d["e2e_p95"] = e2e.quantile(0.5), e2e.quantile(0.95)
        rows.append(d)
    rows.sort(key=lambda r: (-r["cost"], r["agent"] is None, r["agent"] or ""))
    return rows


def by_model(
    store: Store,
    tenant: str,
    *,
    since: float,
    until: float,
    agent: str | None = None,
    rollup: bool = True,
) -> list[dict[str, Any]]:
    """Per kind, provider and model over calls started in ``[since, until)``: calls, cost
    (of the calls with a price for it), ``unpriced`` (the calls without) and
    ``cost_complete``; costliest first. Whole hours come from the hourly rollup
    (``rollup=False`` reads the call rows only; the answers are the same)."""
    acc: dict[tuple[str, str, str], list[Any]] = {}  # cost, calls, unpriced

    def add(kind: str, provider: str, model: str, cost: float, n: int, unpriced: int) -> None:
        e = acc.setdefault((kind, provider, model), [0.0, 0, 0])
        e[0] += cost
        e[1] += n
        e[2] += unpriced

    hours, edges = _pieces(since, until, rollup)
    c, m, t = schema.calls.c, schema.call_models.c, schema.call_rollup.c
    with store.read_engine.connect() as conn:
        if hours is not None:
            q = sa.select(t.model_costs).where(*_rollup_rows(tenant, hours, agent, False))
            for data in conn.execute(q.where(t.model_costs.is_not(None))).scalars():
                for entry in decode_models(data):
                    add(*entry)
        for lo, hi in edges:
            q = sa.select(
                m.kind, m.provider, m.model, sa.func.sum(m.cost), sa.func.count(),
                sa.func.count() - sa.func.count(m.cost),
            ).select_from(
                schema.calls.join(schema.call_models,
                                  sa.and_(m.tenant == c.tenant, m.session_id == c.session_id))
            )  # fmt: skip
            q = _range(q, tenant, lo, hi, agent).group_by(m.kind, m.provider, m.model)
            for kind, provider, model, cost, n, unpriced in conn.execute(q):
                add(kind, provider, model, float(cost or 0.0), int(n), int(unpriced))
    rows = [
        {"kind": k, "provider": p, "model": md, "calls": n, "unpriced": u,
         "cost": float(cost), "cost_complete": not u}
        for (k, p, md), (cost, n, u) in acc.items()
        if n > 0
    ]  # fmt: skip
    rows.sort(key=lambda r: (-r["cost"], r["kind"], r["provider"], r["model"]))
    return rows


def _sampled(since: float, until: float, k: int) -> list[Any]:
    """Calls that started in every k-th minute; the bounds on the minute (implied by the
    start time's) let the planner read the minute index instead of every call's row."""
    m = schema.calls.c.start_minute
    return [m >= math.floor(since / 60), m <= math.floor(until / 60), m % k == 0]


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
) -> tuple[dict[float, float], int]:
    """Median TTS time to first byte of the turns that waited on it, per bucket start, and
    ``k``: over more than :data:`TTFB_CALLS` calls started in ``[since, until)``, only the
    turns of the calls that started in every k-th minute (a systematic sample over the
    whole range; the rollup has no TTS TTFB, the turn rows do). In buckets of whole hours
    ``k`` is at most the bucket's minutes, so that no bucket is left without a sample
    (over more than 60 times :data:`TTFB_CALLS` calls, more calls are read)."""
    c, t = schema.calls.c, schema.turns.c
    with store.read_engine.connect() as conn:
        total = conn.execute(_range(sa.select(sa.func.count()), tenant, since, until, agent))
        k = max(1, math.ceil(int(total.scalar() or 0) / TTFB_CALLS))
        if interval >= HOUR:  # every bucket of whole hours keeps some of its minutes
            k = min(k, int(interval) // 60)
        ids = _range(sa.select(c.session_id), tenant, since, until, agent)
        if k > 1:
            ids = ids.where(*_sampled(since, until, k))
        ttfb = _tts_ttfb(store)
        q = sa.select(t.started_at, ttfb).where(t.tenant == tenant, t.session_id.in_(ids),
                                                ttfb > 0)  # fmt: skip
        per: dict[float, list[float]] = {}
        for started, v in conn.execute(q):
            if v is None or not math.isfinite(v):
                continue
            per.setdefault(math.floor(started / interval) * interval, []).append(float(v))
    out: dict[float, float] = {}
    for b, vals in per.items():
        vals.sort()
        out[float(b)] = vals[(len(vals) - 1) // 2]
    return out, k


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
    rollup: bool = True,
) -> dict[str, Any]:
    """The overview's time series, per bucket start: calls started, calls active, cost
    (total and by kind), tool calls and errors (every call of the range), and e2e p50/p95
    and LLM TTFT p50 merged from the calls' sketches (1 % accuracy).

    Buckets of whole hours are the query layer's :func:`~callmeter.store.queries.stats`,
    which reads the hourly rollup (every call's sketch, no sampling; a call is active
    from its start to its end or last record). Narrower buckets read the call rows: the
    percentiles are then sampled over :data:`LATENCY_CALLS` calls, and calls that started
    over :data:`ACTIVE_MAX_AGE` before ``since`` are not counted as active.
    Returns ``{"buckets": {start: {...}}, "sample_every": k}``."""
    iv = int(interval)
    if rollup and iv % HOUR == 0:
        return _series_of_stats(store, tenant, since=since, until=until, iv=iv, agent=agent)
    from ...store.sketch import Sketch

    c = schema.calls.c
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
            sk = sk.where(*_sampled(since, until, k))
        e2e: dict[int, Sketch] = {}
        ttft: dict[int, Sketch] = {}
        for b, e, t in conn.execute(sk):
            e2e.setdefault(b, Sketch()).merge_bytes(e)
            ttft.setdefault(b, Sketch()).merge_bytes(t)
    first, last = first_last(since, until, iv)
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


def _series_of_stats(
    store: Store, tenant: str, *, since: float, until: float, iv: int, agent: str | None
) -> dict[str, Any]:
    got = stats(store, tenant, since=since, until=until, interval=iv, agent=agent)
    out: dict[float, dict[str, Any]] = {}
    for r in got["buckets"]:
        out[r["start"]] = {
            "calls": r["calls"], "active_calls": r["active_calls"], "cost": r["cost"] or 0.0,
            "cost_by_kind": {k: v or 0.0 for k, v in r["cost_by_kind"].items()},
            "tool_calls": r["tool_calls"], "tool_errors": r["tool_errors"],
            "tool_error_rate": r["tool_error_rate"], "e2e_p50": r["e2e_p50"],
            "e2e_p95": r["e2e_p95"], "ttft_p50": r["ttft_p50"],
        }  # fmt: skip
    first, last = first_last(since, until, iv)
    for b in range(first, last + 1):
        # stats leaves out the buckets with no call started nor active
        out.setdefault(float(b * iv), {
            "calls": 0, "active_calls": 0, "cost": 0.0, "cost_by_kind": {},
            "tool_calls": 0, "tool_errors": 0, "tool_error_rate": None,
            "e2e_p50": None, "e2e_p95": None, "ttft_p50": None})  # fmt: skip
    return {"buckets": out, "sample_every": 1}
