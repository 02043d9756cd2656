"""``callmeter demo``: a measured store-support conversation and its call summary."""

from __future__ import annotations

import asyncio
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
) -> None:
    """Run a short multi-turn conversation with tool calls, measured, and print the summary.

    Offline by default: the LLM is callmeter-sim, started for the demo.
    """
    from ..demo import DemoOptions, run_demo
    from ..errors import CallmeterError

    try:
        options = DemoOptions(
            base_url=base_url,
            model=model,
            api_key=api_key,
            tool_latency=tool_latency,
            sim_ttft=sim_ttft,
            sim_token_delay=sim_token_delay,
        )
        asyncio.run(run_demo(options))
    except CallmeterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
