"""The report as JSON, streamed: each call is written as it ends, the fleet at the end.

Shape: ``{"calls": [...], "all_calls": {...}, "skipped": {kind: count}, "skipped_lines":
[{"line", "kind", "message"}, ...]}`` (``skipped_lines``: the first few only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

import msgspec

from ..records import LineError, ReadStats
from .calls import Call
from .fleet import Fleet

_encode = msgspec.json.Encoder().encode


def call_dict(call: Call) -> dict[str, Any]:
    """One call's summary as plain builtins."""
    return {
        "session_id": call.session_id,
        "agent_name": call.agent_name,
        "labels": call.labels,
        "started_at": call.started_at,
        "duration": call.duration,
        "closed": call.closed,
        "error": call.error,
        "events": call.events,
        "budget_exceeded": call.budget_exceeded,
        "turns_total": call.turns_total,
        "usage": call.usage.to_dict(),
        "latency": call.latency.to_dict(),
    }


def _pretty(obj: Any, indent: int) -> bytes:
    text = msgspec.json.format(_encode(obj), indent=2)
    return text.replace(b"\n", b"\n" + b" " * indent)


class JSONWriter:
    """Writes the JSON report to a binary stream as calls arrive."""

    def __init__(self, out: BinaryIO, *, summary: bool = False) -> None:
        self.out = out
        self.summary = summary
        self.calls = 0
        out.write(b'{\n  "calls": [')

    def call(self, call: Call) -> None:
        """Write one call."""
        if self.summary:
            return
        self.out.write(b",\n    " if self.calls else b"\n    ")
        self.out.write(_pretty(call_dict(call), 4))
        self.calls += 1

    def finish(self, fleet: Fleet, stats: ReadStats, errors: Sequence[LineError]) -> None:
        """Write the fleet totals and the skipped lines, and close the document."""
        out = self.out
        out.write(b"\n  ],\n" if self.calls else b"],\n")
        out.write(b'  "all_calls": ' + _pretty(fleet.to_dict(), 2) + b",\n")
        out.write(b'  "skipped": ' + _encode(dict(stats.skipped)) + b",\n")
        lines = [{"line": e.line, "kind": e.kind, "message": e.message} for e in errors]
        out.write(b'  "skipped_lines": ' + _pretty(lines, 2) + b"\n}\n")
        out.flush()
