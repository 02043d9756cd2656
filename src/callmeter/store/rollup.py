"""The hourly rollup: per tenant, hour and agent, what ``GET /v1/stats`` and the dashboard
need.

A call contributes to the row of the hour it started in, of its agent and of all agents
(``calls``, cost in total, by kind and by model, tool calls and errors, errors, turns,
duration, and its e2e and TTFT sketch bins) and, with ``ends``, to the rows of the hour it
ended in (or of its last record while open), for the active-calls count. Ingest keeps the
rollup up to date in the same transaction: for every call a batch changes it subtracts the
call's old contribution and adds its new one (counts, sums and sketch bins all add up, so
this is exact, and a call whose start moves to an earlier hour or that gets its agent name
late moves rows correctly). Prune subtracts the calls it deletes. The dashboard reads it
too (its by-agent and by-model tables, and its charts in buckets of whole hours).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import schema
from .sketch import Sketch

HOUR = schema.ROLLUP_SECONDS
ModelCost = tuple[str, str, str, float | None]
"""(kind, provider, model, cost) of one call's usage of one model."""

_enc = msgspec.msgpack.Encoder()
_models_dec = msgspec.msgpack.Decoder(list[tuple[str, str, str, float, int, int]])
SNAPSHOT = ("agent_name", "started_at", "ended_at", "last_at", *schema.ROLLUP_SUMS,
            "tool_calls", "tool_errors", "errors", *schema.ROLLUP_TOTALS, "e2e_sketch",
            "ttft_sketch")  # fmt: skip
"""The ``calls`` columns a call's rollup contribution depends on."""


_COUNTS = (*schema.ROLLUP_COUNTS, "turns")
_SUMS = (*schema.ROLLUP_SUMS, "duration")

ALL = "*"
"""The ``agent_key`` of the rows that sum every agent (ungrouped statistics read them)."""


def whole_hours(since: float, until: float) -> tuple[int, int]:
    """The first and the last hour boundary (epoch seconds) inside ``[since, until]``: the
    part of the range the rollup can answer (none when the first is not below the last)."""
    return math.ceil(since / HOUR) * HOUR, math.floor(until / HOUR) * HOUR


def agent_key(agent: str | None) -> str:
    """The rollup key of an agent name (None and "" stay distinct, and neither is ALL)."""
    return "" if agent is None else "=" + agent


class _Cell:
    __slots__ = ("agent", "counts", "e2e", "models", "sums", "ttft")

    def __init__(self, agent: str | None) -> None:
        self.agent = agent
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.e2e = Sketch()
        self.ttft = Sketch()
        self.models: dict[tuple[str, str, str], list[Any]] = {}


def _add_sketch(into: Sketch, data: bytes | None, sign: int) -> None:
    if not data:
        return
    s = Sketch.from_bytes(data)
    into.zeros += sign * s.zeros
    bins = into.bins
    for k, n in s.bins.items():
        bins[k] = bins.get(k, 0) + sign * n


class RollupDelta:
    """Changes to rollup rows of one tenant, accumulated, then written by :meth:`write`."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, str], _Cell] = {}

    def _cell(self, hour: int, key: str, agent: str | None) -> _Cell:
        c = self.cells.get((hour, key))
        if c is None:
            c = self.cells[(hour, key)] = _Cell(agent)
        return c

    def add(self, call: Mapping[str, Any], models: Iterable[ModelCost], sign: int = 1) -> None:
        """Add (``sign`` 1) or subtract (-1) the contribution of a call (a ``calls`` row or
        a :data:`SNAPSHOT` of one) whose per-model costs are ``models``: to its agent's rows
        and to the rows of all agents (:data:`ALL`)."""
        agent = call["agent_name"]
        hour = math.floor(call["started_at"] / HOUR)
        end_at = call["ended_at"] if call["ended_at"] is not None else call["last_at"]
        end_hour = math.floor(end_at / HOUR)
        models = list(models)
        for key, name in ((agent_key(agent), agent), (ALL, None)):
            self._cell(end_hour, key, name).counts["ends"] += sign
            start = self._cell(hour, key, name)
            counts, sums = start.counts, start.sums
            counts["calls"] += sign
            for col in ("tool_calls", "tool_errors", "errors", "turns"):
                counts[col] += sign * call[col]
            for col in _SUMS:
                sums[col] += sign * call[col]
            _add_sketch(start.e2e, call["e2e_sketch"], sign)
            _add_sketch(start.ttft, call["ttft_sketch"], sign)
            for kind, provider, model, cost in models:
                m = start.models.setdefault((kind, provider, model), [0.0, 0, 0])
                if cost is None:  # no price: counted, so the table can say the cost is unknown
                    m[2] += sign
                else:
                    m[0] += sign * cost
                m[1] += sign

    def write(self, conn: Connection, tenant: str, *, lock: bool = False) -> None:
        """Apply the accumulated changes to ``tenant``'s rollup rows (``lock``: SELECT ...
        FOR UPDATE, for PostgreSQL)."""
        if not self.cells:
            return
        t = schema.call_rollup
        keys = sorted(self.cells)
        old: dict[tuple[int, str], dict[str, Any]] = {}
        for i in range(0, len(keys), 400):
            q = sa.select(t).where(
                t.c.tenant == tenant, sa.tuple_(t.c.hour, t.c.agent_key).in_(keys[i : i + 400])
            )
            if lock:
                q = q.with_for_update()
            for row in conn.execute(q).mappings():
                old[(row["hour"], row["agent_key"])] = dict(row)
        inserts, updates, deletes = [], [], []
        for key in keys:
            cell = self.cells[key]
            row = old.get(key)
            fresh = row is None
            if fresh:
                row = {"tenant": tenant, "hour": key[0], "agent_key": key[1],
                       "agent_name": cell.agent, "e2e_sketch": None, "ttft_sketch": None,
                       "model_costs": None}  # fmt: skip
                row.update(dict.fromkeys(_COUNTS, 0))
                row.update(dict.fromkeys(_SUMS, 0.0))
            for name, n in cell.counts.items():
                row[name] += n
            for name, v in cell.sums.items():
                row[name] += v
            row["e2e_sketch"] = _merged_sketch(row["e2e_sketch"], cell.e2e)
            row["ttft_sketch"] = _merged_sketch(row["ttft_sketch"], cell.ttft)
            row["model_costs"] = _merged_models(row["model_costs"], cell.models)
            if row["calls"] <= 0 and row["ends"] <= 0:
                if not fresh:
                    deletes.append(key)
            elif fresh:
                inserts.append(row)
            else:
                updates.append(row)
        if inserts:
            conn.execute(t.insert(), inserts)
        if updates:
            vals = [*_COUNTS, *_SUMS, "e2e_sketch", "ttft_sketch", "model_costs"]
            stmt = (
                t.update()
                .where(
                    t.c.tenant == sa.bindparam("b_tenant"),
                    t.c.hour == sa.bindparam("b_hour"),
                    t.c.agent_key == sa.bindparam("b_agent_key"),
                )
                .values({v: sa.bindparam(v) for v in vals})
            )
            conn.execute(
                stmt,
                [{"b_tenant": tenant, "b_hour": u["hour"], "b_agent_key": u["agent_key"]}
                 | {v: u[v] for v in vals} for u in updates],
            )  # fmt: skip
        for i in range(0, len(deletes), 400):
            conn.execute(
                t.delete().where(
                    t.c.tenant == tenant,
                    sa.tuple_(t.c.hour, t.c.agent_key).in_(deletes[i : i + 400]),
                )
            )


def _merged_sketch(data: bytes | None, diff: Sketch) -> bytes | None:
    if not diff.bins and not diff.zeros:
        return data
    s = Sketch.from_bytes(data)
    s.zeros += diff.zeros
    bins = s.bins
    for k, n in diff.bins.items():
        v = bins.get(k, 0) + n
        if v:
            bins[k] = v
        else:
            bins.pop(k, None)
    return s.to_bytes() if s.bins or s.zeros else None


def decode_models(data: bytes | None) -> list[tuple[str, str, str, float, int, int]]:
    """A rollup row's ``model_costs`` (format of migration 0003): (kind, provider, model,
    cost of the calls with a price, calls, calls without a price)."""
    return _models_dec.decode(data) if data else []


def _merged_models(data: bytes | None, diff: dict[tuple[str, str, str], list[Any]]) -> bytes | None:
    if not diff:
        return data
    cur = {(k, p, m): [c, n, u] for k, p, m, c, n, u in decode_models(data)}
    for key, (cost, n, unpriced) in diff.items():
        e = cur.setdefault(key, [0.0, 0, 0])
        e[0] += cost
        e[1] += n
        e[2] += unpriced
        if e[1] <= 0:
            del cur[key]
    if not cur:
        return None
    return _enc.encode([(*k, c, n, u) for k, (c, n, u) in sorted(cur.items())])


def call_models_of(
    conn: Connection, tenant: str, session_ids: list[str]
) -> dict[str, list[ModelCost]]:
    """The per-model costs of these calls, from ``call_models``."""
    cm = schema.call_models
    out: dict[str, list[ModelCost]] = {}
    for i in range(0, len(session_ids), 400):
        q = sa.select(cm.c.session_id, cm.c.kind, cm.c.provider, cm.c.model, cm.c.cost).where(
            cm.c.tenant == tenant, cm.c.session_id.in_(session_ids[i : i + 400])
        )
        for sid, kind, provider, model, cost in conn.execute(q):
            out.setdefault(sid, []).append((kind, provider, model, cost))
    return out


def rebuild(conn: Connection) -> None:
    """Build the rollup from scratch from ``calls`` and ``call_models`` (every tenant)."""
    c = schema.calls
    conn.execute(schema.call_rollup.delete())
    tenants = [t for (t,) in conn.execute(sa.select(c.c.tenant).distinct())]
    cols = [c.c.session_id, *(getattr(c.c, name) for name in SNAPSHOT)]
    for tenant in tenants:
        delta = RollupDelta()
        rows = list(conn.execute(sa.select(*cols).where(c.c.tenant == tenant)).mappings())
        models = call_models_of(conn, tenant, [r["session_id"] for r in rows])
        for row in rows:
            delta.add(row, models.get(row["session_id"], ()))
        delta.write(conn, tenant)
