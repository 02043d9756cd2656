"""Latency: turn breakdowns and budgets (:mod:`.turns`), percentiles across turns and calls
(:mod:`.summary`)."""

from .summary import SERIES, LatencyCollector, LatencySummary, Percentiles
from .turns import LatencyBudget, build_turn_metrics

__all__ = [
    "SERIES",
    "LatencyBudget",
    "LatencyCollector",
    "LatencySummary",
    "Percentiles",
    "build_turn_metrics",
]
