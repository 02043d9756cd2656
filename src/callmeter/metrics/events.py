"""Session events: what an AgentSession emits to its handlers."""

from __future__ import annotations

from msgspec import Struct

from .types import AgentMetrics


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
