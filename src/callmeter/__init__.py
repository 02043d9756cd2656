"""callmeter: what each AI agent call cost and where every second went."""

from . import metrics
from .errors import CallmeterError, InvalidArgumentError, InvalidMetricsError
from .metrics import CloseEvent, MetricsCollectedEvent, SessionStartedEvent, log_metrics
from .session import AgentSession, current_session, current_speech_id

__version__ = "0.1.0"

__all__ = [
    "AgentSession",
    "CallmeterError",
    "CloseEvent",
    "InvalidArgumentError",
    "InvalidMetricsError",
    "MetricsCollectedEvent",
    "SessionStartedEvent",
    "__version__",
    "current_session",
    "current_speech_id",
    "log_metrics",
    "metrics",
]
