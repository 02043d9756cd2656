"""The public face of the data model: metric types, events, UsageCollector, UsageSummary.

Everything here is defined in its own package and re-exported: the types and codec in
:mod:`callmeter.model`, aggregation in :mod:`callmeter.usage`, prices and cost in
:mod:`callmeter.pricing`, turns and percentiles in :mod:`callmeter.latency`.
"""

from ..latency.summary import LatencyCollector, LatencySummary, Percentiles
from ..latency.turns import LatencyBudget, build_turn_metrics
from ..model.codec import decode, decode_list, encode, from_dict, to_dict
from ..model.events import (
    BudgetExcess,
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    SessionStartedEvent,
)
from ..model.types import (
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
from ..pricing.prices import PriceFileError, Prices
from ..usage.collector import (
    MetricsNotKeptError,
    ModelUsage,
    ToolUsage,
    UsageCollector,
    UsageSummary,
)
from ..usage.timeline import IntervalUnion, merge_intervals, union_duration
from .log import log_metrics

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
