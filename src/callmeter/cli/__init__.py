"""The ``callmeter`` command line (typer + rich). One module per command group."""

from __future__ import annotations

import typer

from .demo import demo
from .importer import import_
from .prices import prices
from .report import report
from .serve import serve
from .sim import sim
from .store import store_app

app = typer.Typer(
    name="callmeter",
    help="What each AI agent call cost and where every second went.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """What each AI agent call cost and where every second went."""


@app.command()
def version() -> None:
    """Print callmeter's version."""
    from .. import __version__

    typer.echo(__version__)


app.command()(demo)
app.command()(report)
app.command()(prices)
app.command()(sim)
app.command()(serve)
app.command(name="import")(import_)
app.add_typer(store_app, name="store")


def main() -> None:
    """Entry point of the ``callmeter`` script."""
    app()
