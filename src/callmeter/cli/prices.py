"""``callmeter prices MODEL``: the rates callmeter charges for a model and where they came from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def prices(
    model: Annotated[str, typer.Argument(help="Model name as your metrics report it.")],
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="Provider, e.g. openai, deepgram.")
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Price override file(s) to apply (TOML)."),
    ] = None,
) -> None:
    """Print what callmeter will charge for MODEL and where the price came from."""
    from rich.console import Console
    from rich.table import Table

    from ..errors import CallmeterError
    from ..pricing.prices import ENV_VAR, Prices

    console = Console()
    try:
        table = Prices(file or None)
    except CallmeterError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    price = table.lookup(model, provider)
    name = f"{provider}/{model}" if provider else model
    if price is None:
        console.print(
            f"[yellow]no price for {name}[/yellow]: usage of it is listed in "
            "UsageSummary.unpriced and the call's cost is a lower bound.\n"
            f"Add it to a price file (--file, or ${ENV_VAR}); see docs/cost.md.",
            highlight=False,
        )
        raise typer.Exit(1)
    out = Table(title=f"{name} -> {price.matched}", show_header=True)
    out.add_column("USD", justify="right")
    out.add_column("unit")
    for rate, unit in price.rate_lines():
        out.add_row(rate, unit)
    console.print(out)
    src = price.source
    console.print(f"source: {src.describe()}", highlight=False)
    if src.notes:
        console.print(f"notes: {src.notes}", highlight=False)
