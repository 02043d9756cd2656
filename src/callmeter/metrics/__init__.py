"""The data model: metric types, events, UsageCollector and UsageSummary.

This package imports nothing else of callmeter's: it is pure data and arithmetic.
"""

from .codec import decode, decode_list, encode, from_dict, to_dict
from .events import CloseEvent, MetricsCollectedEvent, SessionStartedEvent
from .log import log_metrics
from .pricing import PriceFileError, Prices
from .timeline import IntervalUnion, merge_intervals, union_duration
from .types import (
    AgentMetrics,
    CachedTokenDetails,
    EOUMetrics,
    InputTokenDetails,
    LLMMetrics,
    Metadata,
    OutputTokenDetails,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    VADMetrics,
)
from .usage import MetricsNotKeptError, ModelUsage, ToolUsage, UsageCollector, UsageSummary

__all__ = [
    "AgentMetrics",
    "CachedTokenDetails",
    "CloseEvent",
    "EOUMetrics",
    "InputTokenDetails",
    "IntervalUnion",
    "LLMMetrics",
    "Metadata",
    "MetricsCollectedEvent",
    "MetricsNotKeptError",
    "ModelUsage",
    "OutputTokenDetails",
    "PriceFileError",
    "Prices",
    "RealtimeModelMetrics",
    "STTMetrics",
    "SessionStartedEvent",
    "TTSMetrics",
    "ToolMetrics",
    "ToolUsage",
    "UsageCollector",
    "UsageSummary",
    "VADMetrics",
    "decode",
    "decode_list",
    "encode",
    "from_dict",
    "log_metrics",
    "merge_intervals",
    "to_dict",
    "union_duration",
]
