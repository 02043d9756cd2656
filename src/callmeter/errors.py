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


class InvalidRecordError(CallmeterError, ValueError):
    """A record (one line of the wire format) failed to decode or validate.

    ``kind`` says why: ``malformed`` (not JSON, not UTF-8, too deeply nested),
    ``too_long`` (over the reader's line limit), ``unknown_event`` or ``unknown_metric``
    (written by a newer callmeter: skipped and counted), or ``invalid`` (a field is missing,
    of the wrong type or out of range). ``field`` is the JSON path when known and ``line``
    the 1-based line number when read from a file.
    """

    def __init__(
        self, message: str, *, kind: str, field: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field
        self.line = line


class SinkClosedError(CallmeterError, RuntimeError):
    """A session was attached to a sink that is already closed."""


class PriceFileError(CallmeterError, ValueError):
    """A price file (or price dict) is malformed.

    ``file``, ``line`` and ``field`` locate the problem when known (``line`` is 1-based).
    """

    def __init__(
        self, message: str, *, file: str, line: int | None = None, field: str | None = None
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}" + (f" (field {field!r})" if field else ""))
        self.file = file
        self.line = line
        self.field = field


class MetricsNotKeptError(CallmeterError):
    """``UsageCollector.metrics`` was read on a collector created with ``keep_metrics=False``."""


class SimServerError(CallmeterError):
    """The simulator could not start (e.g. the port is taken)."""
