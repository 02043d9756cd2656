"""OpenTelemetry metrics and traces of calls: :class:`OTelExporter`, a sink.

Needs the ``otel`` extra: ``pip install 'callmeter[otel]'``.
"""

try:
    import opentelemetry.sdk  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "callmeter.export.otel needs opentelemetry-sdk: pip install 'callmeter[otel]'"
    ) from e

from ._exporter import OTelExporter
from ._semconv import DURATION_BUCKETS, SCHEMA_URL, SEMCONV_VERSION, TOKEN_BUCKETS

__all__ = ["DURATION_BUCKETS", "SCHEMA_URL", "SEMCONV_VERSION", "TOKEN_BUCKETS", "OTelExporter"]
