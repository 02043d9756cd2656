"""The terminal report: plain lines written as calls end (no layout engine on the big path)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .calls import Call, Report
from .fleet import Fleet
from .plain import Painter, call_lines, fleet_lines, legend, skipped_lines, use_color

if TYPE_CHECKING:
    from rich.console import Console

    from .stream import ScanResult


class TerminalWriter:
    """Writes each call's report as it arrives, then the legend and the fleet section.

    ``summary=True`` writes the fleet section only.
    """

    def __init__(
        self,
        out: TextIO,
        painter: Painter,
        *,
        summary: bool = False,
        empty: str = "no calls in the file",
    ) -> None:
        self.out = out
        self.painter = painter
        self.summary = summary
        self.empty = empty
        self.calls = 0

    def call(self, call: Call) -> None:
        """Write one call."""
        if self.summary:
            return
        self.calls += 1
        self.out.write("".join(call_lines(call, self.painter)))

    def finish(self, fleet: Fleet) -> None:
        """Write the legend and (for several calls, or ``summary``) the fleet section."""
        p = self.painter
        if self.calls:
            self.out.write(legend(p))
        if self.summary or fleet.totals.calls > 1:
            self.out.write("".join(fleet_lines(fleet, p)))
        if not fleet.totals.calls:
            self.out.write(self.empty + "\n")
        self.out.flush()


def _target(console: Console | TextIO | None) -> tuple[TextIO, Painter]:
    if console is None:
        return sys.stdout, Painter(use_color(sys.stdout))
    if hasattr(console, "color_system") and hasattr(console, "file"):
        return console.file, Painter(console.color_system is not None)  # a rich Console
    return console, Painter(use_color(console))  # type: ignore[arg-type]


def render_terminal(
    source: str | os.PathLike[str] | Report | Sequence[Call],
    console: Console | TextIO | None = None,
) -> Report:
    """Print the report of a JSONL file (or of loaded calls) to ``console``.

    ``console`` is a text stream or a rich ``Console`` (its file and colour setting are
    used); default stdout, coloured when it is a terminal and ``$NO_COLOR`` is unset. A file
    is read in one pass and each call printed as it ends: the returned :class:`Report` then
    holds the statistics, skipped lines and fleet totals, not the calls.
    """
    out, painter = _target(console)
    writer = TerminalWriter(out, painter)
    if isinstance(source, str | os.PathLike):
        from .stream import scan

        result: ScanResult = scan(source, on_call=lambda _order, call: writer.call(call))
        report = Report(
            calls=[],
            errors=result.errors,
            lines=result.stats.lines + result.stats.blank,
            stats=result.stats,
            fleet=result.fleet,
        )
    else:
        report = source if isinstance(source, Report) else Report(calls=list(source))
        for call in report.calls:
            writer.call(call)
    fleet = report.fleet
    if fleet is None:
        fleet = Fleet()
        for call in report.calls:
            fleet.add(call)
    writer.finish(fleet)
    out.write("".join(skipped_lines(report.stats, report.errors)))
    out.flush()
    return report
