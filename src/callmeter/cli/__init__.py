"""The ``callmeter`` command line (typer). One module per command group.

Every command shares one error path (:func:`run`): a bad argument prints one line
``error: ...`` to stderr and exits 2; help texts are plain (no markup, so ``[openai]``
stays as written) and show defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

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
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print callmeter's version and exit.",
        ),
    ] = False,
) -> None:
    """What each AI agent call cost and where every second went."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


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


def error(message: str) -> None:
    """Print ``error: message`` as one line on stderr."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line with ``args`` (default ``sys.argv[1:]``); return the exit code.

    Usage errors (unknown option, bad value, missing argument) print one line to stderr
    and return 2; a :class:`~callmeter.errors.CallmeterError` that reaches here likewise.
    """
    from ..errors import CallmeterError

    try:
        rv = app(
            args=None if args is None else list(args),
            prog_name="callmeter",
            standalone_mode=False,
        )
    except typer.TyperException as exc:  # click's UsageError, BadParameter, ...
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(exc.format_message() + hint)
        return exc.exit_code
    except typer.Abort:
        error("aborted")
        return 1
    except CallmeterError as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


def main() -> NoReturn:
    """Entry point of the ``callmeter`` script."""
    sys.exit(run())
