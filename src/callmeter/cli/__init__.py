"""The ``callmeter`` command line (typer + rich). One module per command group."""

from __future__ import annotations

import typer

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


def main() -> None:
    """Entry point of the ``callmeter`` script."""
    app()


# commands defined in their own modules register themselves
from . import demo as _demo  # noqa: E402
from . import sim as _sim  # noqa: E402

_sim.register(app)
_demo.register(app)
