"""Session events: what an AgentSession emits to its handlers, and what leaves a process.

Each event is also a *record*: its JSON form (``callmeter.records``) is the one wire
format of JSONL files, HTTP batches and the store. Every event carries the record
envelope: ``v`` (format version), ``event`` (the tag: which event it is), ``session_id``,
``seq`` (the session's counter: 0, 1, 2, ... with no gaps, so ``(session_id, seq)``
identifies a record and a gap reveals a lost one), ``created_at`` (wall clock, seconds
since the epoch), ``agent_name`` and ``labels``.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from .types import AgentMetrics, Seconds, Timestamp, TurnBreakdown, TurnMetrics

RECORD_VERSION = 1
"""Version of the record format written by this callmeter (the ``v`` field)."""

Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
"""A record's position in its session: 0, 1, 2, ... (a signed 64-bit integer for stores)."""
Version = Annotated[int, Meta(ge=1)]
"""The record format version (``v``)."""
Labels = dict[str, str]


class MetricsCollectedEvent(
    Struct, kw_only=True, gc=False, tag_field="event", tag="metrics_collected"
):
    """Emitted as ``metrics_collected`` for every metrics event a session measures or receives.

    ``created_at`` is wall-clock seconds since the epoch (the metric's ``timestamp``).
    """

    v: Version = RECORD_VERSION
    session_id: str
    seq: Seq = 0
    created_at: Timestamp
    agent_name: str | None = None
    labels: Labels | None = None
    metrics: AgentMetrics


class SessionStartedEvent(Struct, kw_only=True, tag_field="event", tag="session_started"):
    """Emitted as ``session_started`` when a session starts."""

    v: Version = RECORD_VERSION
    session_id: str
    seq: Seq = 0
    created_at: Timestamp
    agent_name: str | None = None
    labels: Labels | None = None


class CloseEvent(Struct, kw_only=True, tag_field="event", tag="close"):
    """Emitted as ``close`` when a session closes. ``duration`` is its wall-clock length."""

    v: Version = RECORD_VERSION
    session_id: str
    seq: Seq = 0
    created_at: Timestamp
    agent_name: str | None = None
    labels: Labels | None = None
    duration: Seconds
    error: str | None = None
    """The exception type name when the session's ``with`` block exited by exception."""


class BudgetExcess(Struct, kw_only=True):
    """One limit a turn went over: ``actual`` seconds against ``budget`` seconds."""

    name: str
    budget: Seconds
    actual: Seconds


class LatencyBudgetExceededEvent(
    Struct, kw_only=True, tag_field="event", tag="latency_budget_exceeded"
):
    """Emitted as ``latency_budget_exceeded`` when a turn goes over a latency budget."""

    v: Version = RECORD_VERSION
    session_id: str
    seq: Seq = 0
    created_at: Timestamp
    agent_name: str | None = None
    labels: Labels | None = None
    turn: TurnMetrics
    exceeded: list[BudgetExcess]

    @property
    def speech_id(self) -> str | None:
        """The turn's speech_id."""
        return self.turn.speech_id

    @property
    def breakdown(self) -> TurnBreakdown:
        """The turn's breakdown."""
        return self.turn.breakdown


Record = SessionStartedEvent | MetricsCollectedEvent | LatencyBudgetExceededEvent | CloseEvent
"""Any record: a session event, told apart by its ``event`` tag."""

RECORD_TYPES: tuple[type, ...] = (
    SessionStartedEvent,
    MetricsCollectedEvent,
    LatencyBudgetExceededEvent,
    CloseEvent,
)
RECORD_EVENTS: tuple[str, ...] = (
    "session_started",
    "metrics_collected",
    "latency_budget_exceeded",
    "close",
)
"""The session events that are records (what sinks receive), in tag order of RECORD_TYPES."""
