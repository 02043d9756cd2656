"""``callmeter prices``: the rates callmeter charges for a model (or every table entry)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

KINDS = ("llm", "realtime", "stt", "tts", "call")


def prices(
    model: Annotated[
        str | None, typer.Argument(help="Model name as your metrics report it.")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="Provider, e.g. openai, deepgram.")
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Price override file(s) to apply (TOML)."),
    ] = None,
    list_: Annotated[
        bool,
        typer.Option(
            "--list", "-l", help="List every table entry (your files, then the bundled table)."
        ),
    ] = False,
    kind: Annotated[
        str | None,
        typer.Option("--kind", "-k", help="With --list: only llm, realtime, stt, tts or call."),
    ] = None,
) -> None:
    """Print what callmeter will charge for MODEL and where the price came from."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..errors import CallmeterError
    from ..pricing.prices import ENV_VAR, Prices, entry_rate_lines

    console = Console()
    if kind is not None and kind not in KINDS:
        print(f"callmeter prices: --kind must be one of {', '.join(KINDS)}", file=sys.stderr)
        raise typer.Exit(2)
    if not list_ and model is None:
        print("callmeter prices: give a MODEL, or --list", file=sys.stderr)
        raise typer.Exit(2)
    try:
        table = Prices(file or None)
    except CallmeterError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    if list_:
        out = Table(title=escape("price table entries" + (f" ({kind})" if kind else "")))
        for col in ("provider/model", "kind", "rates (USD)", "source", "read"):
            out.add_column(col)
        for prov, name, entry, src in table.entries(kind):
            rates = "; ".join(f"{r} {u}" for r, u in entry_rate_lines(entry))
            if entry.plan:
                rates += f" (plan {entry.plan})"
            out.add_row(
                *map(
                    escape,
                    (
                        f"{prov}/{name}",
                        entry.kind or "",
                        rates,
                        src.url or src.origin,
                        src.checked.isoformat() if src.checked else "",
                    ),
                )
            )
        console.print(out)
        if kind in (None, "llm", "realtime"):
            console.print(
                "LLM and realtime models not listed here are priced from genai-prices' "
                "snapshot: `callmeter prices MODEL` shows one.",
                highlight=False,
                markup=False,
            )
        return
    assert model is not None
    price = table.lookup(model, provider)
    name = f"{provider}/{model}" if provider else model
    if price is None:
        print(
            f"no price for {name}: usage of it is listed in UsageSummary.unpriced and the "
            f"call's cost is a lower bound; add it to a price file (--file, or ${ENV_VAR}), "
            "see docs/cost.md",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    out = Table(title=escape(f"{name} -> {price.matched}"), show_header=True)
    out.add_column("USD", justify="right")
    out.add_column("unit")
    for rate, unit in price.rate_lines():
        out.add_row(escape(rate), escape(unit))
    console.print(out)
    src = price.source
    console.print(f"source: {src.describe()}", highlight=False, markup=False)
    if src.notes:
        console.print(f"notes: {src.notes}", highlight=False, markup=False)
