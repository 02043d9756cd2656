"""``callmeter store``: maintenance of the call store (retention)."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

store_app = typer.Typer(help="Maintain the call store.", no_args_is_help=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> float:
    """Seconds of an age such as ``90d``, ``12h``, ``2w`` or ``3600`` (seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise ValueError(f"--older-than must look like 90d, 12h, 2w or 3600, got {text!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)


@store_app.command()
def prune(
    older_than: Annotated[
        str, typer.Option(help="Delete calls that started longer ago: 90d, 12h...")
    ],
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL or SQLite path (default: $CALLMETER_DB or ./callmeter.db)."
        ),
    ] = None,
) -> None:
    """Delete calls older than --older-than, with their turns and records."""
    from ..errors import CallmeterError

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        print(f"callmeter store prune: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        from ..store import Store

        with Store(db, prices=False) as store:
            res = store.prune(age)
    except (CallmeterError, ImportError) as exc:
        print(f"callmeter store prune: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"pruned {res.calls} call(s) and {res.records} record(s) older than {older_than}")
