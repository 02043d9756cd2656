"""``callmeter report``: per-call summaries and turn waterfalls from a JSONL event file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..report import Report


def report(
    path: Annotated[Path, typer.Argument(help="JSONL file written by JSONLWriter.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summaries as JSON instead of tables.")
    ] = False,
    prices: Annotated[
        Path | None,
        typer.Option(help="Price file (TOML, see docs/cost.md) on top of the default prices."),
    ] = None,
) -> None:
    """Per call: summary, turn latency waterfall, percentiles and the slowest turns."""
    from rich.console import Console

    from ..errors import CallmeterError
    from ..report import load, render_terminal, write_html
    from ..report.terminal import print_errors

    err = Console(stderr=True)
    try:
        loaded = load(path, prices=prices)
    except CallmeterError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print_errors(loaded.errors, err)
        import msgspec

        data = msgspec.json.format(msgspec.json.encode(_as_json(loaded)), indent=2)
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.flush()
    else:
        render_terminal(loaded, Console())
    if html is not None:
        try:
            out = write_html(loaded, html)
        except CallmeterError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        err.print(f"HTML report: {out}", highlight=False)


def _as_json(loaded: Report) -> dict[str, object]:
    from ..latency.summary import LatencySummary

    calls = [
        {
            "session_id": c.session_id,
            "agent_name": c.agent_name,
            "labels": c.labels,
            "started_at": c.started_at,
            "duration": c.duration,
            "error": c.error,
            "events": c.events,
            "budget_exceeded": c.budget_exceeded,
            "usage": c.usage.to_dict(),
            "latency": c.latency.to_dict(),
        }
        for c in loaded.calls
    ]
    overall = LatencySummary.merge(c.latency for c in loaded.calls)
    return {
        "calls": calls,
        "all_calls": {"calls": len(calls), "latency": overall.to_dict()},
        "skipped_lines": [{"line": e.line, "message": e.message} for e in loaded.errors],
    }
