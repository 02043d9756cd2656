"""``callmeter report``: per-call summaries and turn waterfalls from a JSONL record file."""

from __future__ import annotations

import math
import os
import sys
from contextlib import nullcontext
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

PROGRESS_MIN_BYTES = 50 * 2**20
"""Files larger than this show progress on stderr when stderr is a terminal."""


class Sort(StrEnum):
    """Orders of ``--sort``."""

    recent = "recent"
    slowest = "slowest"
    costliest = "costliest"


def parse_when(value: str) -> float:
    """``--since``/``--until``: ISO 8601 (naive times are UTC) or epoch seconds."""
    text = value.strip()
    try:
        t = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is neither ISO 8601 (e.g. 2026-11-27T09:30:00Z) nor epoch seconds"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        t = dt.timestamp()
    if not math.isfinite(t):
        raise typer.BadParameter(f"{value!r} is not a finite time")
    return t


def report(
    path: Annotated[Path, typer.Argument(help="JSONL record file (as JSONLWriter writes).")],
    call: Annotated[
        list[str] | None,
        typer.Option("--call", metavar="ID", help="Only the call with this session_id (repeat)."),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", metavar="NAME", help="Only calls of this agent_name (repeat)."),
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(
            parser=parse_when,
            metavar="WHEN",
            help="Only calls that started at or after WHEN: ISO 8601 (UTC unless it says "
            "otherwise) or epoch seconds.",
        ),
    ] = None,
    until: Annotated[
        float | None,
        typer.Option(
            parser=parse_when, metavar="WHEN", help="Only calls that started before WHEN."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Only the first N calls in --sort order."),
    ] = None,
    sort: Annotated[
        Sort | None,
        typer.Option(
            help="Order calls by start (latest first), p90 turn latency or cost "
            "[default with --limit: recent; without: as the calls end in the file]."
        ),
    ] = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="Fleet totals and percentiles only, no calls.")
    ] = False,
    turns: Annotated[
        int, typer.Option(min=0, metavar="N", help="Waterfall rows per call (its first N turns).")
    ] = 40,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of text.")
    ] = False,
    prices: Annotated[
        Path | None,
        typer.Option(help="Price file (TOML, see docs/cost.md) on top of the default prices."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress on stderr [default: for files over 50 MiB when stderr is a terminal].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Per call: summary, turn latency waterfall, percentiles and the slowest turns; then
    the fleet. Reads the file once, in memory bounded by what is shown."""
    from ..errors import CallmeterError
    from ..report import HTMLWriter, JSONWriter, ReportOptions, TerminalWriter, scan
    from ..report.plain import Painter, skipped_lines, use_color
    from . import error

    try:
        options = ReportOptions(
            calls=call or None,
            agents=agent or None,
            since=since,
            until=until,
            limit=limit,
            sort=sort.value if sort is not None else None,
            max_turns=turns,
            keep_calls=not summary,
            prices=prices,
            cost_by_turn=as_json,
        )
    except CallmeterError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        error(f"cannot read {str(path)!r}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    show_progress = progress if progress is not None else (
        size > PROGRESS_MIN_BYTES and sys.stderr.isatty()
    )  # fmt: skip
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a non-UTF-8 terminal never raises
    json_writer = JSONWriter(sys.stdout.buffer, summary=summary) if as_json else None
    text_writer = None
    if json_writer is None:
        empty = "no call matches the filters" if options.filtered else "no calls in the file"
        painter = Painter(use_color(sys.stdout))
        text_writer = TerminalWriter(sys.stdout, painter, summary=summary, empty=empty)
    html_writer = HTMLWriter(summary=summary) if html is not None else None
    writers = [w for w in (json_writer, text_writer, html_writer) if w is not None]

    def on_call(_order: int, c: Any) -> None:
        for w in writers:
            w.call(c)

    with _progress(path, size) if show_progress else nullcontext() as on_progress:
        try:
            result = scan(path, options, on_call=on_call, progress=on_progress)
        except CallmeterError as exc:
            error(str(exc))
            raise typer.Exit(2) from None
    if json_writer is not None:
        json_writer.finish(result.fleet, result.stats, result.errors)
    if text_writer is not None:
        text_writer.finish(result.fleet)
    sys.stdout.flush()
    for line in skipped_lines(result.stats, result.errors):
        sys.stderr.write(line)
    if result.after_close:
        sys.stderr.write(
            f"left out {result.after_close} records read after their call's close record\n"
        )
    if html_writer is not None:
        try:
            out = html_writer.save(html, result.fleet, result.stats, result.errors)
        except CallmeterError as exc:
            error(str(exc))
            raise typer.Exit(2) from None
        typer.echo(f"HTML report: {out}", err=True)
    if result.stats.records == 0:
        what = "it is empty" if size == 0 else f"{result.stats.skipped_total} lines skipped"
        error(f"no valid record in {str(path)!r} ({what})")
        raise typer.Exit(1)


def _progress(path: Path, size: int) -> Any:
    """A context manager: rich progress on stderr; yields the ``progress`` callback."""
    from contextlib import contextmanager

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    @contextmanager
    def cm() -> Any:
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            redirect_stdout=False,
        )
        with bar:
            task = bar.add_task(escape(f"reading {path.name}"), total=size or None)
            yield lambda position, _total: bar.update(task, completed=position)

    return cm()
