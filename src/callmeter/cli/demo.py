"""``callmeter demo``: a measured store-support conversation and its call summary."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer


def demo(
    base_url: Annotated[
        str | None,
        typer.Option(
            envvar="OPENAI_BASE_URL",
            help="Use this OpenAI-compatible endpoint instead of the built-in simulator "
            "(for OpenAI itself: https://api.openai.com/v1).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(envvar="OPENAI_MODEL", help="Model name (real endpoint).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="API key for --base-url (default: $OPENAI_API_KEY)."),
    ] = None,
    tool_latency: Annotated[
        float, typer.Option(help="Seconds each tool waits, standing in for a remote backend.")
    ] = 0.3,
    sim_ttft: Annotated[float, typer.Option(help="Simulator: seconds to first token.")] = 0.25,
    sim_token_delay: Annotated[float, typer.Option(help="Simulator: seconds per token.")] = 0.01,
    out: Annotated[
        Path, typer.Option(help="Folder for the events (calls.jsonl) and report.html.")
    ] = Path("out/demo"),
) -> None:
    """Run a short multi-turn conversation with tool calls, measured, and print the summary.

    Offline by default: the LLM is callmeter-sim, started for the demo. Every event is
    written to OUT/calls.jsonl; the demo ends with `callmeter report` of that file and
    writes OUT/report.html.
    """
    from ..demo import SIM_PRICES, DemoOptions, run_demo
    from ..errors import CallmeterError
    from ..export.jsonl import JSONLWriter
    from ..report import load, render_terminal, write_html
    from . import error

    try:
        options = DemoOptions(
            base_url=base_url,
            model=model,
            api_key=api_key,
            tool_latency=tool_latency,
            sim_ttft=sim_ttft,
            sim_token_delay=sim_token_delay,
        )
        out.mkdir(parents=True, exist_ok=True)
        jsonl = out / "calls.jsonl"
        jsonl.unlink(missing_ok=True)
        with JSONLWriter(jsonl) as writer:
            asyncio.run(run_demo(options, hooks=[writer.attach]))
        typer.echo(f"── callmeter report {jsonl} ──")
        report = render_terminal(load(jsonl, prices=SIM_PRICES if options.simulated else None))
        html = write_html(report, out / "report.html")
        typer.echo(f"\nEvents: {jsonl}\nHTML report: {html.resolve()}")
        try:
            from ..server.dashboard import dashboard_command, demo_store
        except ImportError:
            typer.echo("Dashboard: install the server extra (pip install 'callmeter[server]')")
        else:
            db = out / "calls.db"
            demo_store(jsonl, db, prices=SIM_PRICES if options.simulated else None)
            typer.echo(f"Stored in {db}; open the dashboard on it with:\n  {dashboard_command(db)}")
    except (CallmeterError, OSError) as exc:
        error(str(exc))
        raise typer.Exit(2) from None
