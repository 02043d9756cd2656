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
from .rollup import ALL, HOUR, agent_key, decode_models, whole_hours
from .sketch import Sketch
from .store import Store

SORTS: dict[str, Any] = {
    "started": schema.calls.c.started_at,
    "cost": schema.calls.c.cost,
    "e2e_p95": schema.E2E_P95_KEY,
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


def check_text(name: str, value: str | None) -> str | None:
    """``value`` (a filter), refused when it holds NUL: no stored string does (ingest
    refuses them), and PostgreSQL text cannot hold one."""
    if value is not None and "\x00" in value:
        raise InvalidArgumentError(f"{name} must not contain NUL (\\u0000)")
    return value


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
    check_text("cursor", sid)
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
    if check_text("agent", agent) is not None:
        q = q.where(c.agent_name == agent)
    if (v := _number("since", since)) is not None:
        q = q.where(c.started_at >= v)
    if (v := _number("until", until)) is not None:
        q = q.where(c.started_at < v)
    if (v := _number("min_cost", min_cost)) is not None:
        q = q.where(c.cost >= v)
    if (v := _number("min_e2e_p95", min_e2e_p95)) is not None:
        # on the sort key's index; calls without an e2e (key -1) never match
        q = q.where(v <= schema.E2E_P95_KEY, c.e2e_p95.is_not(None))
    if has_errors is True:
        q = q.where(c.errors > 0)
    elif has_errors is False:
        q = q.where(c.errors == 0)
    for k, v in (labels or {}).items():
        check_text("label", k)
        check_text("label", v)
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
    if "\x00" in session_id:  # no call has one (and PostgreSQL text cannot hold one)
        return None
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


INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "1d": 86_400}
"""Bucket widths of :func:`stats`."""
MAX_BUCKETS = 10_000
MIN_TIME = -62_135_596_800.0
"""0001-01-01T00:00Z: statistics start no earlier (hour numbers stay far inside 64 bits)."""
MAX_TIME = 253_402_300_800.0
"""10000-01-01T00:00Z: statistics end no later."""


def first_last(since: float, until: float, iv: int) -> tuple[int, int]:
    """The numbers of the first and last buckets of ``iv`` seconds of ``[since, until)``
    (a range ending on a boundary has no bucket starting at its end)."""
    return math.floor(since / iv), math.ceil(until / iv) - 1


def parse_interval(text: str) -> int:
    """Seconds of an interval such as ``1m``, ``5m``, ``1h`` or ``1d`` (1 minute to 1 day)."""
    if isinstance(text, str) and text in INTERVALS:
        return INTERVALS[text]
    if isinstance(text, str) and len(text) > 1 and text[:-1].isdigit() and text[-1] in "smhd":
        n = int(text[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[text[-1]]
        if 60 <= n <= 86_400 and n % 60 == 0:
            return n
    raise InvalidArgumentError(
        f"interval must be from 1m to 1d in whole minutes (e.g. 1m, 5m, 1h, 1d), got {text!r}"
    )


def _group_column(group_by: str | None) -> tuple[Any, list[Any], str | None]:
    """The grouping expression, the joins it needs, and the label key (for label:KEY)."""
    c = schema.calls.c
    if group_by is None:
        return None, [], None
    if group_by == "agent":
        return c.agent_name, [], None
    if group_by in ("model", "provider"):
        cm = schema.call_models.c
        col = cm.provider + "/" + cm.model if group_by == "model" else cm.provider
        return col, [schema.call_models], None
    if group_by.startswith("label:") and len(group_by) > 6:
        return schema.call_labels.c.value, [schema.call_labels], group_by[6:]
    raise InvalidArgumentError(
        f"group_by must be agent, model, provider or label:KEY, got {group_by!r}"
    )


def stats(
    store: Store,
    tenant: str,
    *,
    since: float,
    until: float,
    interval: str | int = "1h",
    group_by: str | None = None,
    agent: str | None = None,
    rollup: bool = True,
) -> dict[str, Any]:
    """Time buckets of ``tenant``'s calls between ``since`` and ``until`` (epoch seconds).

    Per bucket (and per group with ``group_by`` = ``agent``, ``model``, ``provider`` or
    ``label:KEY``): calls started, calls active, cost (total, by kind, and by model and by
    provider), e2e and TTFT p50/p95 merged from the calls' sketches (1 % accuracy), tool
    calls, tool errors and their rate, errors. A call belongs to the bucket it started in;
    it is active in every bucket it overlaps. Grouped by model or provider, cost is that
    model's or provider's share, and a call counts in each of its models' groups.

    ``agent`` keeps the calls of that agent only (None: every call).

    Ungrouped or grouped by agent, with an interval of whole hours and ``since``/``until``
    on whole hours, the answer comes from the hourly rollup (``rollup=False`` reads the
    call rows instead; the answers are the same).
    """
    iv = parse_interval(interval) if isinstance(interval, str) else int(interval)
    if not 60 <= iv <= 86_400:
        raise InvalidArgumentError(f"interval must be 60 to 86,400 seconds, got {iv}")
    check_text("agent", agent)
    check_text("group_by", group_by if isinstance(group_by, str) else None)
    lo, hi = _number("since", since), _number("until", until)
    if lo is None or hi is None or hi <= lo:
        raise InvalidArgumentError("since and until are needed, with since before until")
    if not (lo >= MIN_TIME and hi <= MAX_TIME):
        raise InvalidArgumentError(
            "since and until must be times from the year 1 to 9999 (epoch seconds), "
            f"got {lo!r} and {hi!r}"
        )
    first, last = first_last(lo, hi, iv)
    if last - first + 1 > MAX_BUCKETS:
        raise InvalidArgumentError(
            f"{last - first + 1} buckets is too many (at most {MAX_BUCKETS}): "
            "use a wider interval or a shorter range"
        )
    lo_h, hi_h = whole_hours(lo, hi)
    if rollup and group_by in (None, "agent") and iv % HOUR == 0 and lo_h < hi_h:
        # whole hours from the rollup; the parts of an hour at either end from the calls
        out, active0 = _rollup_cells(store, tenant, lo_h, hi_h, iv, group_by, agent)
        if lo < lo_h:
            edge, active0 = _call_cells(store, tenant, lo, lo_h, iv, group_by, agent)
            _merge_cells(out, edge)
        if hi_h < hi:
            _merge_cells(out, _call_cells(store, tenant, hi_h, hi, iv, group_by, agent)[0])
    else:
        out, active0 = _call_cells(store, tenant, lo, hi, iv, group_by, agent)
    buckets = _assemble(out, active0, first, last, iv, group_by)
    return {"interval": iv, "since": lo, "until": hi, "group_by": group_by, "buckets": buckets}


def _cell(out: dict[Any, dict[int, dict[str, Any]]], grp: Any, b: int) -> dict[str, Any]:
    per = out.setdefault(grp, {})
    d = per.get(b)
    if d is None:
        d = per[b] = {"calls": 0, "cost": 0.0, "cost_by_kind": {}, "cost_by_model": {},
                      "cost_by_provider": {}, "tool_calls": 0, "tool_errors": 0,
                      "errors": 0, "_e2e": Sketch(), "_ttft": Sketch(), "_start": 0,
                      "_end": 0}  # fmt: skip
    return d


def _merge_cells(
    into: dict[Any, dict[int, dict[str, Any]]], other: dict[Any, dict[int, dict[str, Any]]]
) -> None:
    for grp, per in other.items():
        for b, o in per.items():
            d = _cell(into, grp, b)
            for k in ("calls", "cost", "tool_calls", "tool_errors", "errors", "_start", "_end"):
                d[k] += o[k]
            for k in ("cost_by_kind", "cost_by_model", "cost_by_provider"):
                for name, v in o[k].items():
                    d[k][name] = d[k].get(name, 0.0) + v
            d["_e2e"].merge(o["_e2e"])
            d["_ttft"].merge(o["_ttft"])


def _rollup_cells(
    store: Store,
    tenant: str,
    lo: float,
    hi: float,
    iv: int,
    group_by: str | None,
    agent: str | None = None,
) -> tuple[dict[Any, dict[int, dict[str, Any]]], dict[Any, int]]:
    """Per group and bucket, the sums of the hourly rollup (since/until whole hours)."""
    t = schema.call_rollup.c
    lo_h, hi_h = int(lo) // HOUR, int(hi) // HOUR
    out: dict[Any, dict[int, dict[str, Any]]] = {}
    by_agent = group_by == "agent"
    if agent is not None:
        rows = t.agent_key == agent_key(agent)
    else:
        rows = t.agent_key != ALL if by_agent else t.agent_key == ALL
    cols = [t.hour, t.agent_name, t.calls, t.ends, t.tool_calls, t.tool_errors, t.errors,
            *(getattr(t, k) for k in schema.ROLLUP_SUMS), t.e2e_sketch, t.ttft_sketch,
            t.model_costs]  # fmt: skip
    q = sa.select(*cols).where(t.tenant == tenant, rows, t.hour >= lo_h, t.hour < hi_h)
    before = (
        sa.select(t.agent_key, t.agent_name, sa.func.sum(t.calls) - sa.func.sum(t.ends))
        .where(t.tenant == tenant, rows, t.hour < lo_h)
        .group_by(t.agent_key, t.agent_name)
    )
    active0: dict[Any, int] = {}
    kinds = schema.COST_KINDS
    with store.read_engine.connect() as conn:
        for hour, agent, calls, ends, tools, tool_errors, errors, cost, *rest in conn.execute(
            q
        ).all():
            d = _cell(out, agent if by_agent else None, hour * HOUR // iv)
            d["_end"] += ends
            if calls <= 0:
                continue
            d["calls"] += calls
            d["_start"] += calls
            d["cost"] += cost
            by_kind = d["cost_by_kind"]
            for k, v in zip(kinds, rest[:4], strict=True):
                by_kind[k] = by_kind.get(k, 0.0) + v
            d["tool_calls"] += tools
            d["tool_errors"] += tool_errors
            d["errors"] += errors
            e2e, ttft, models = rest[4:]
            if e2e:
                d["_e2e"].merge_bytes(e2e)
            if ttft:
                d["_ttft"].merge_bytes(ttft)
            if models:
                bm, bp = d["cost_by_model"], d["cost_by_provider"]
                for _kind, provider, model, mcost, n, unpriced in decode_models(models):
                    if n == unpriced:  # no call of it has a price (as in the call rows)
                        continue
                    key = f"{provider}/{model}"
                    bm[key] = bm.get(key, 0.0) + mcost
                    bp[provider] = bp.get(provider, 0.0) + mcost
        for _key, agent, n in conn.execute(before):
            grp = agent if by_agent else None
            active0[grp] = active0.get(grp, 0) + int(n or 0)
    return out, {g: n for g, n in active0.items() if n > 0}


def _call_cells(
    store: Store,
    tenant: str,
    lo: float,
    hi: float,
    iv: int,
    group_by: str | None,
    agent: str | None = None,
) -> tuple[dict[Any, dict[int, dict[str, Any]]], dict[Any, int]]:
    """Per group and bucket, the sums over the ``calls`` rows (any interval, any range)."""
    c = schema.calls.c
    gcol, joins, label_key = _group_column(group_by)
    bucket = sa.cast(sa.func.floor(c.started_at / iv), sa.BigInteger).label("b")
    end = sa.func.coalesce(c.ended_at, c.last_at)
    frm: Any = schema.calls
    where = [c.tenant == tenant] + ([c.agent_name == agent] if agent is not None else [])
    for t in joins:
        frm = frm.join(t, sa.and_(t.c.tenant == c.tenant, t.c.session_id == c.session_id))
    if label_key is not None:
        where.append(schema.call_labels.c.key == label_key)
    g = (gcol if gcol is not None else sa.literal(None)).label("g")
    model_cost = group_by in ("model", "provider")
    cost_col = schema.call_models.c.cost if model_cost else c.cost
    in_range = [*where, c.started_at >= lo, c.started_at < hi]
    sums = sa.select(
        bucket, g,
        sa.func.count(sa.distinct(c.session_id)),
        sa.func.sum(cost_col),
        *(sa.func.sum(getattr(c, f"cost_{k}")) for k in schema.COST_KINDS),
        sa.func.sum(c.tool_calls), sa.func.sum(c.tool_errors), sa.func.sum(c.errors),
    ).select_from(frm).where(*in_range).group_by(bucket, g)  # fmt: skip
    cm = schema.call_models.c
    by_model = (
        sa.select(bucket, g, cm.kind, cm.provider, cm.model, sa.func.sum(cm.cost))
        .select_from(
            frm if model_cost else frm.join(
                schema.call_models,
                sa.and_(cm.tenant == c.tenant, cm.session_id == c.session_id),
            )
        )
        .where(*in_range)
        .group_by(bucket, g, cm.kind, cm.provider, cm.model)
    )  # fmt: skip
    sketches = (
        sa.select(bucket, g, c.e2e_sketch, c.ttft_sketch)
        .select_from(frm)
        .where(*in_range, sa.or_(c.e2e_sketch.is_not(None), c.ttft_sketch.is_not(None)))
    )
    end_bucket = sa.cast(sa.func.floor(end / iv), sa.BigInteger).label("b")
    ends = (
        sa.select(end_bucket, g, sa.func.count(sa.distinct(c.session_id)))
        .select_from(frm)
        .where(*where, c.started_at < hi, end >= lo, end < hi)
        .group_by(end_bucket, g)
    )
    before = (
        sa.select(g, sa.func.count(sa.distinct(c.session_id)))
        .select_from(frm)
        .where(*where, c.started_at < lo, end >= lo)
        .group_by(g)
    )
    out: dict[Any, dict[int, dict[str, Any]]] = {}

    def cell(grp: Any, b: int) -> dict[str, Any]:
        return _cell(out, grp, b)

    with store.read_engine.connect() as conn:
        for b, grp, n, cost, *rest in conn.execute(sums):
            d = cell(grp, b)
            d["calls"] = n
            d["_start"] = n
            d["cost"] = float(cost or 0.0)
            kinds, (tools, tool_errors, errors) = rest[:4], rest[4:]
            if not model_cost:
                d["cost_by_kind"] = {k: float(v or 0.0) for k, v in zip(schema.COST_KINDS, kinds,
                                                                 strict=True)}  # fmt: skip
            # PostgreSQL sums integers as numeric (Decimal): back to int
            d["tool_calls"], d["tool_errors"] = int(tools or 0), int(tool_errors or 0)
            d["errors"] = int(errors or 0)
        for b, grp, kind, provider, model, cost in conn.execute(by_model):
            if cost is None:
                continue
            cost = float(cost)
            d = cell(grp, b)
            key = f"{provider}/{model}"
            d["cost_by_model"][key] = d["cost_by_model"].get(key, 0.0) + cost
            d["cost_by_provider"][provider] = d["cost_by_provider"].get(provider, 0.0) + cost
            if model_cost:
                d["cost_by_kind"][kind] = d["cost_by_kind"].get(kind, 0.0) + cost
        for b, grp, e2e, ttft in conn.execute(sketches):
            d = cell(grp, b)
            d["_e2e"].merge_bytes(e2e)
            d["_ttft"].merge_bytes(ttft)
        for b, grp, n in conn.execute(ends):
            cell(grp, b)["_end"] = n
        active0 = dict(conn.execute(before).all())
    return out, active0


def _assemble(
    out: dict[Any, dict[int, dict[str, Any]]],
    active0: dict[Any, int],
    first: int,
    last: int,
    iv: int,
    group_by: str | None,
) -> list[dict[str, Any]]:
    groups = set(out) | set(active0)
    buckets: list[dict[str, Any]] = []
    for grp in sorted(groups, key=lambda x: (x is None, str(x))):
        per = out.get(grp, {})
        active = active0.get(grp, 0)
        for b in range(first, last + 1):
            d = per.get(b)
            started, ended = (d["_start"], d["_end"]) if d else (0, 0)
            active += started
            if d is None and active == 0:
                continue
            d = d or _cell(out, grp, b)
            e2e, ttft = d.pop("_e2e"), d.pop("_ttft")
            d.pop("_start"), d.pop("_end")
            row = {"start": float(b * iv)}
            if group_by is not None:
                row["group"] = grp
            row.update(d)
            row["active_calls"] = active
            row["cost"] = _money(row["cost"])
            for k in ("cost_by_kind", "cost_by_model", "cost_by_provider"):
                row[k] = {name: _money(v) for name, v in sorted(row[k].items())}
            row["e2e_p50"], row["e2e_p95"] = e2e.quantile(0.5), e2e.quantile(0.95)
            row["ttft_p50"], row["ttft_p95"] = ttft.quantile(0.5), ttft.quantile(0.95)
            row["tool_error_rate"] = (
                row["tool_errors"] / row["tool_calls"] if row["tool_calls"] else None
            )
            buckets.append(row)
            active -= ended
    return buckets
