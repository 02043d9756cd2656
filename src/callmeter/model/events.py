"""Session events: what an AgentSession emits to its handlers."""

from __future__ import annotations

from msgspec import Struct

from .types import AgentMetrics, TurnBreakdown, TurnMetrics


class MetricsCollectedEvent(Struct, gc=False):
    """Emitted as ``metrics_collected`` for every metrics event a session measures or receives.

    ``created_at`` is wall-clock seconds since the epoch.
    """

    metrics: AgentMetrics
    session_id: str
    created_at: float
    agent_name: str | None = None
    labels: dict[str, str] | None = None


class SessionStartedEvent(Struct, kw_only=True):
    """Emitted as ``session_started`` when a session starts."""

    session_id: str
    created_at: float
    agent_name: str | None = None
    labels: dict[str, str] | None = None


class CloseEvent(Struct, kw_only=True):
    """Emitted as ``close`` when a session closes. ``duration`` is its wall-clock length."""

    session_id: str
    created_at: float
    duration: float
    agent_name: str | None = None
    labels: dict[str, str] | None = None
    error: str | None = None
    """The exception type name when the session's ``with`` block exited by exception."""


class BudgetExcess(Struct, kw_only=True):
    """One limit a turn went over: ``actual`` seconds against ``budget`` seconds."""

    name: str
    budget: float
    actual: float


class LatencyBudgetExceededEvent(Struct, kw_only=True):
    """Emitted as ``latency_budget_exceeded`` when a turn goes over a latency budget."""

    session_id: str
    created_at: float
    turn: TurnMetrics
    exceeded: list[BudgetExcess]
    agent_name: str | None = None
    labels: dict[str, str] | None = None

    @property
    def speech_id(self) -> str | None:
        """The turn's speech_id."""
        return self.turn.speech_id

    @property
    def breakdown(self) -> TurnBreakdown:
        """The turn's breakdown."""
        return self.turn.breakdown
