"""The data model: metric types, session events and their JSON codec.

Pure data: this package imports nothing of callmeter but the leaf module
:mod:`callmeter.errors`.
"""

from .codec import decode, decode_list, encode, from_dict, to_dict
from .events import (
    BudgetExcess,
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    SessionStartedEvent,
)
from .types import (
    COMPONENTS,
    METRIC_TYPES,
    AgentMetrics,
    CachedTokenDetails,
    EOUMetrics,
    InputTokenDetails,
    LLMMetrics,
    LLMStepLatency,
    Metadata,
    OutputTokenDetails,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnBreakdown,
    TurnMetrics,
    TurnSegment,
    VADMetrics,
)

__all__ = [
    "COMPONENTS",
    "METRIC_TYPES",
    "AgentMetrics",
    "BudgetExcess",
    "CachedTokenDetails",
    "CloseEvent",
    "EOUMetrics",
    "InputTokenDetails",
    "LLMMetrics",
    "LLMStepLatency",
    "LatencyBudgetExceededEvent",
    "Metadata",
    "MetricsCollectedEvent",
    "OutputTokenDetails",
    "RealtimeModelMetrics",
    "STTMetrics",
    "SessionStartedEvent",
    "TTSMetrics",
    "ToolMetrics",
    "TurnBreakdown",
    "TurnMetrics",
    "TurnSegment",
    "VADMetrics",
    "decode",
    "decode_list",
    "encode",
    "from_dict",
    "to_dict",
]
