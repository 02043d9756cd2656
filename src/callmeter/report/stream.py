"""One pass over a record file: each call is summarised when it ends and handed over.

Memory is bounded by what is shown, not by the file: per open call a
``UsageCollector(keep_metrics=False)`` (which also collects latency) and the first
``max_turns`` turns for the waterfall; with ``limit`` only the top N finished calls are
kept (a heap); the fleet totals are fixed-size. A call is final at its ``close`` record;
calls without one are finalised at the end of the file.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import InvalidArgumentError
from ..latency.turns import build_turn_metrics
from ..model.events import (
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    SessionStartedEvent,
)
from ..model.types import AgentMetrics, TurnMetrics
from ..pricing.prices import resolve_prices
from ..records import DEFAULT_MAX_LINE_BYTES, LineError, ReadStats, RecordReader
from ..usage.collector import UsageCollector
from .calls import Call
from .fleet import Fleet

SORTS: tuple[str, ...] = ("recent", "slowest", "costliest")
"""Orders for ``limit``: latest start first, highest p90 turn latency first, highest cost
first."""
DEFAULT_MAX_TURNS = 40
"""Turns per call kept for the waterfall by default (the first ones; the rest are counted)."""
MAX_PENDING = 20_000
"""Metrics per call buffered to rebuild turns when a file has no ``TurnMetrics``."""
PROGRESS_EVERY = 8192
"""Records between two progress callbacks."""


@dataclass(slots=True)
class ReportOptions:
    """What to report.

    ``calls``/``agents`` keep only those session ids / agent names; ``since``/``until``
    (epoch seconds) keep calls that started in ``[since, until)``. ``limit`` keeps the top
    N calls by ``sort`` (one of :data:`SORTS`; default ``recent``); ``sort`` alone orders
    every call. ``max_turns`` bounds the turns kept per call for the waterfall (None: all).
    ``keep_calls=False`` adds calls to the fleet totals only. ``prices`` as
    ``UsageCollector(prices=...)``; ``cost_by_turn`` fills ``usage.cost_by_turn`` (pricing
    each turn costs about as much as reading its records, so it is off by default).
    """

    calls: Collection[str] | None = None
    agents: Collection[str] | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    sort: str | None = None
    max_turns: int | None = DEFAULT_MAX_TURNS
    keep_calls: bool = True
    prices: Any = None
    cost_by_turn: bool = False
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    def __post_init__(self) -> None:
        for name in ("limit", "max_turns"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InvalidArgumentError(f"{name} must be a non-negative int, got {v!r}")
        if self.sort is not None and self.sort not in SORTS:
            raise InvalidArgumentError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}")
        for name in ("since", "until"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            ):
                raise InvalidArgumentError(f"{name} must be epoch seconds, got {v!r}")
        if self.calls is not None:
            self.calls = frozenset(self.calls)
        if self.agents is not None:
            self.agents = frozenset(self.agents)

    @property
    def filtered(self) -> bool:
        """True when some filter is set."""
        return bool(
            self.calls is not None
            or self.agents is not None
            or self.since is not None
            or self.until is not None
        )


@dataclass(slots=True)
class ScanResult:
    """What a scan read: line statistics, the first skipped lines and the fleet totals."""

    stats: ReadStats
    errors: list[LineError]
    fleet: Fleet
    size: int | None = None
    """The file's size in bytes, when known."""
    calls: int = 0
    """Calls that passed the filters."""
    filtered_out: int = field(default=0)
    """Records of calls left out by the filters."""
    after_close: int = field(default=0)
    """Records read after their call's ``close`` record (left out: the call was reported)."""


class _Open:
    """A call whose ``close`` has not been read yet."""

    __slots__ = (
        "budget_exceeded",
        "collector",
        "duration",
        "error",
        "events",
        "has_turns",
        "order",
        "pending",
        "pending_n",
        "rec",
        "started_at",
        "turns",
        "turns_seen",
    )

    def __init__(self, order: int, rec: Any, collector: UsageCollector) -> None:
        self.order = order
        self.rec = rec  # the latest record: its envelope carries agent_name and labels
        self.started_at: float = rec.created_at
        self.collector = collector
        self.duration: float | None = None
        self.error: str | None = None
        self.events = 0
        self.budget_exceeded = 0
        self.turns: list[TurnMetrics] = []
        self.turns_seen = 0
        self.has_turns = False
        self.pending: dict[str, list[AgentMetrics]] | None = {}
        self.pending_n = 0


CLOSED_REMEMBERED = 100_000
"""How many closed calls' ids a scan remembers to recognise records read after a close."""


def _rebuild_turns(pending: dict[str, list[AgentMetrics]]) -> list[TurnMetrics]:
    """Turns from metrics grouped by speech_id (files recorded without ``session.turn()``)."""
    turns = []
    for sid, ms in pending.items():
        timed = [m for m in ms if hasattr(m, "started_at") and hasattr(m, "duration")]
        if not timed:
            continue
        end = max(m.started_at + m.duration for m in timed)
        turns.append(
            build_turn_metrics(
                ms,
                turn_started_at=min(m.started_at for m in timed),
                ended_at=end,
                speech_id=sid,
                timestamp=end,
            )
        )
    return turns


def _sort_key(sort: str) -> Callable[[Call], Any]:
    if sort == "slowest":
        return lambda c: (c.latency.e2e_latency.p90, c.latency.e2e_latency.max)
    if sort == "costliest":
        return lambda c: c.usage.cost
    return lambda c: c.started_at or 0.0


def scan(
    source: str | os.PathLike[str] | BinaryIO,
    options: ReportOptions | None = None,
    on_call: Callable[[int, Call], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> ScanResult:
    """Read a record file once; call ``on_call(order, call)`` for each reported call.

    ``order`` is the call's position of first appearance. Calls arrive as they end (their
    ``close`` record), calls without one at the end of the file; with ``sort``/``limit``
    they arrive at the end, best first. ``progress(bytes_read, file_size)`` is called every
    :data:`PROGRESS_EVERY` records and at the end. Bad lines are skipped and counted.
    """
    opts = options or ReportOptions()
    resolved = resolve_prices(opts.prices)
    prices: Any = False if resolved is None else resolved
    reader = RecordReader(source, max_line_bytes=opts.max_line_bytes, max_errors=100)
    fleet = Fleet()
    result = ScanResult(stats=reader.stats, errors=reader.errors, fleet=fleet)
    max_turns = opts.max_turns if opts.keep_calls else 0
    ranked = opts.keep_calls and (opts.sort is not None or opts.limit is not None)
    key = _sort_key(opts.sort or "recent")
    top: list[tuple[Any, int, Call]] = []  # a min-heap of the best `limit` calls
    limit = opts.limit

    def finish(c: _Open) -> None:
        collector = c.collector
        if not c.has_turns and c.pending:
            for turn in _rebuild_turns(c.pending):
                collector.collect(turn)
                c.turns_seen += 1
                if max_turns is None or len(c.turns) < max_turns:
                    c.turns.append(turn)
        if c.duration is not None:
            collector.set_call_duration(c.duration)  # prices call-level charges, if any
        rec = c.rec
        call = Call(
            session_id=rec.session_id,
            agent_name=rec.agent_name,
            labels=rec.labels,
            started_at=c.started_at,
            duration=c.duration,
            error=c.error,
            events=c.events,
            budget_exceeded=c.budget_exceeded,
            turns=c.turns,
            turns_total=c.turns_seen,
            usage=collector.get_summary(),
            latency=collector.get_latency_summary(),
        )
        fleet.add(call)
        result.calls += 1
        # per-call values were merged into the fleet; the percentiles stay on the summary
        call.latency._values = {}
        call.latency._sketches = {}
        if not opts.keep_calls:
            return
        if ranked:
            item = (key(call), -c.order, call)
            if limit is None or len(top) < limit:
                heapq.heappush(top, item)
            elif limit > 0 and item[:2] > top[0][:2]:
                heapq.heapreplace(top, item)
        elif on_call is not None:
            on_call(c.order, call)

    calls = opts.calls
    agents = opts.agents
    since, until = opts.since, opts.until
    timed = since is not None or until is not None
    cost_turns: dict[str, Any] = {} if opts.cost_by_turn else {"max_cost_turns": 0}
    open_calls: dict[str, _Open] = {}
    # ids of the last CLOSED_REMEMBERED closed calls: a late record of one is left out and
    # counted instead of starting a second entry for the same call
    closed: dict[str, None] = {}
    excluded: set[str] = set()  # open calls left out by the time filter
    order = 0
    n = 0
    for rec in reader:
        n += 1
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(reader.position, reader.size)
        sid = rec.session_id
        if calls is not None and sid not in calls:
            result.filtered_out += 1
            continue
        if agents is not None and rec.agent_name not in agents:
            result.filtered_out += 1
            continue
        kind = type(rec)
        c = open_calls.get(sid)
        if c is None:
            if sid in closed:
                result.after_close += 1
                continue
            if timed:
                if sid in excluded:
                    result.filtered_out += 1
                    if kind is CloseEvent:
                        excluded.discard(sid)
                    continue
                start = rec.created_at
                if (since is not None and start < since) or (until is not None and start >= until):
                    result.filtered_out += 1
                    if kind is not CloseEvent:
                        excluded.add(sid)
                    continue
            c = open_calls[sid] = _Open(
                order, rec, UsageCollector(keep_metrics=False, prices=prices, **cost_turns)
            )
            order += 1
        c.events += 1
        c.rec = rec
        if kind is MetricsCollectedEvent:
            m = rec.metrics
            c.collector.collect(m)
            if type(m) is TurnMetrics:
                c.turns_seen += 1
                if max_turns is None or len(c.turns) < max_turns:
                    c.turns.append(m)
                if not c.has_turns:
                    c.has_turns = True
                    c.pending = None
            elif c.pending is not None:
                speech_id = getattr(m, "speech_id", None)
                if speech_id is not None:
                    if c.pending_n >= MAX_PENDING:
                        c.pending = None  # too many to rebuild turns from: give up, bounded
                    else:
                        c.pending.setdefault(speech_id, []).append(m)
                        c.pending_n += 1
        elif kind is SessionStartedEvent:
            c.started_at = rec.created_at
        elif kind is CloseEvent:
            c.duration = rec.duration
            c.error = rec.error
            del open_calls[sid]
            closed[sid] = None
            if len(closed) > CLOSED_REMEMBERED:
                del closed[next(iter(closed))]
            finish(c)
        elif kind is LatencyBudgetExceededEvent:
            c.budget_exceeded += 1
    for c in open_calls.values():
        finish(c)
    result.size = reader.size
    if progress is not None:
        progress(reader.position, reader.size)
    if ranked and on_call is not None:
        for _, neg_order, call in sorted(top, key=lambda it: it[:2], reverse=True):
            on_call(-neg_order, call)
    return result
