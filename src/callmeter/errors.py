"""Typed exceptions raised by callmeter at its boundaries."""

from __future__ import annotations


class CallmeterError(Exception):
    """Base class of every error callmeter raises on purpose."""


class InvalidMetricsError(CallmeterError, ValueError):
    """A metrics event failed validation while being decoded.

    ``field`` names the offending field (a JSON path such as ``$[3].duration``) when known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidArgumentError(CallmeterError, ValueError):
    """A callmeter API was called with an argument it cannot use."""
