"""The data model: metric types, events, UsageCollector and UsageSummary.

This package imports nothing else of callmeter's: it is pure data and arithmetic.
"""

from .codec import decode, decode_list, encode, from_dict, to_dict
from .events import CloseEvent, MetricsCollectedEvent, SessionStartedEvent
from .latency import LatencyCollector, LatencySummary, Percentiles
from .log import log_metrics
from .pricing import PriceFileError, Prices
from .timeline import IntervalUnion, merge_intervals, union_duration
from .turns import (
    BudgetExcess,
    LatencyBudget,
    LatencyBudgetExceededEvent,
    build_turn_metrics,
)
from .types import (
    COMPONENTS,
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
from .usage import MetricsNotKeptError, ModelUsage, ToolUsage, UsageCollector, UsageSummary

__all__ = [
    "COMPONENTS",
    "AgentMetrics",
    "BudgetExcess",
    "CachedTokenDetails",
    "CloseEvent",
    "EOUMetrics",
    "InputTokenDetails",
    "IntervalUnion",
    "LLMMetrics",
    "LLMStepLatency",
    "LatencyBudget",
    "LatencyBudgetExceededEvent",
    "LatencyCollector",
    "LatencySummary",
    "Metadata",
    "MetricsCollectedEvent",
    "MetricsNotKeptError",
    "ModelUsage",
    "OutputTokenDetails",
    "Percentiles",
    "PriceFileError",
    "Prices",
    "RealtimeModelMetrics",
    "STTMetrics",
    "SessionStartedEvent",
    "TTSMetrics",
    "ToolMetrics",
    "ToolUsage",
    "TurnBreakdown",
    "TurnMetrics",
    "TurnSegment",
    "UsageCollector",
    "UsageSummary",
    "VADMetrics",
    "build_turn_metrics",
    "decode",
    "decode_list",
    "encode",
    "from_dict",
    "log_metrics",
    "merge_intervals",
    "to_dict",
    "union_duration",
]
