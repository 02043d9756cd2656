"""Prometheus metrics of calls: :class:`CallMonitor`, a sink rendered at scrape time.

Needs the ``prometheus`` extra: ``pip install 'callmeter[prometheus]'``.
"""

try:
    import prometheus_client  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "callmeter.export.prometheus needs prometheus-client: pip install 'callmeter[prometheus]'"
    ) from e

from ._aggregates import CALL_BUCKETS, OTHER, VOICE_BUCKETS
from ._health import HealthStatus
from ._http import MetricsServer
from ._monitor import CallMonitor

__all__ = ["CALL_BUCKETS", "OTHER", "VOICE_BUCKETS", "CallMonitor", "HealthStatus", "MetricsServer"]
