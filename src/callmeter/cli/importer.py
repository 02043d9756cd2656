"""``callmeter import``: load JSONL record files into the store, idempotently."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

BATCH = 5000


def import_(
    files: Annotated[list[Path], typer.Argument(help="JSONL record files (JSONLWriter output).")],
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL or SQLite path (default: $CALLMETER_DB or ./callmeter.db)."
        ),
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant the records belong to.")] = "default",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Load JSONL files into the store. Records already stored are skipped (counted as
    duplicates), so importing a file twice changes nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ..errors import CallmeterError
    from ..records import RecordReader

    for f in files:
        if not f.is_file():
            print(f"callmeter import: {str(f)!r} is not a readable file", file=sys.stderr)
            raise typer.Exit(2)
    if not tenant:
        print("callmeter import: --tenant must not be empty", file=sys.stderr)
        raise typer.Exit(2)
    try:
        from ..store import Store

        store = Store(db)
    except (CallmeterError, ImportError) as exc:
        print(f"callmeter import: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    totals = {"accepted": 0, "duplicates": 0, "invalid": 0, "skipped": 0}
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, disable=quiet or not console.is_terminal,
    )  # fmt: skip
    try:
        with progress:
            for f in files:
                reader = RecordReader(f)
                task = progress.add_task(f.name, total=f.stat().st_size)
                batch = []
                for record in reader:
                    batch.append(record)
                    if len(batch) >= BATCH:
                        _store(store, batch, tenant, totals)
                        batch = []
                        progress.update(task, completed=reader.position)
                if batch:
                    _store(store, batch, tenant, totals)
                progress.update(task, completed=reader.position)
                totals["skipped"] += reader.stats.skipped_total
                for e in reader.errors[:5]:
                    console.print(f"{f}:{e.line}: skipped ({e.kind}): {e.message}",
                                  highlight=False, markup=False)  # fmt: skip
                if not quiet and not console.is_terminal:
                    print(f"{f}: {reader.stats.records} record(s) read", file=sys.stderr)
    except CallmeterError as exc:
        print(f"callmeter import: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    finally:
        store.close()
    print(
        f"imported {totals['accepted']} record(s); {totals['duplicates']} already stored, "
        f"{totals['skipped'] + totals['invalid']} invalid line(s) skipped"
    )


def _store(store: object, batch: list, tenant: str, totals: dict[str, int]) -> None:
    res = store.ingest(batch, tenant=tenant)  # type: ignore[attr-defined]
    totals["accepted"] += res.accepted
    totals["duplicates"] += res.duplicates
    totals["invalid"] += res.invalid
