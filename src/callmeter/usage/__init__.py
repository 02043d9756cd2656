"""Usage aggregation: a stream of metrics events into a call's totals."""

from .collector import MetricsNotKeptError, UsageCollector
from .summary import ModelUsage, ToolUsage, UsageSummary
from .timeline import IntervalUnion, merge_intervals, union_duration

__all__ = [
    "IntervalUnion",
    "MetricsNotKeptError",
    "ModelUsage",
    "ToolUsage",
    "UsageCollector",
    "UsageSummary",
    "merge_intervals",
    "union_duration",
]
