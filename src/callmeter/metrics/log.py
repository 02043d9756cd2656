"""Logging metrics events as one structured line each."""

from __future__ import annotations

import logging

from ..model.types import AgentMetrics

_default_logger = logging.getLogger("callmeter.metrics")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"
    return str(value)


def log_metrics(metrics: AgentMetrics, logger: logging.Logger | None = None) -> None:
    """Log one line for ``metrics``: its type, then ``key=value`` for every set field.

    The fields are also attached to the log record as ``extra={"metrics": {...}}`` for
    structured handlers.
    """
    logger = logger or _default_logger
    if not logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {}
    for name in metrics.__struct_fields__:
        value = getattr(metrics, name)
        if value is None or value == "":
            continue
        if name == "metadata":
            if value.model_provider:
                fields["provider"] = value.model_provider
            if value.model_name:
                fields["model"] = value.model_name
            continue
        fields[name] = value
    text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
    logger.info("%s %s", metrics.type, text, extra={"metrics": {"type": metrics.type, **fields}})
