"""``callmeter sim``: run callmeter-sim, the local OpenAI-compatible simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer


def sim(
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8787,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    ttft: Annotated[float, typer.Option(help="Seconds to the first token.")] = 0.25,
    token_delay: Annotated[float, typer.Option(help="Seconds between tokens.")] = 0.01,
    jitter: Annotated[
        float, typer.Option(help="Up to this many seconds of noise per delay.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the jitter.")] = 0,
    tokens: Annotated[int, typer.Option(help="Length of placeholder replies, in tokens.")] = 30,
    config: Annotated[
        Path | None,
        typer.Option(help='JSON file: latency fields plus "rules" and "script" (see docs/sim.md).'),
    ] = None,
) -> None:
    """Serve a SIMULATED OpenAI API (chat completions, responses) with scripted replies."""
    from rich.console import Console

    from ..errors import CallmeterError
    from ..sim import SimConfig

    console = Console(stderr=True)
    try:
        from ..sim.server import SimServer, banner
    except ImportError as exc:
        console.print(
            f"[red]callmeter sim needs the sim extra: pip install 'callmeter[sim]' ({exc})"
        )
        raise typer.Exit(2) from None
    overrides = {
        "ttft": ttft,
        "token_delay": token_delay,
        "jitter": jitter,
        "seed": seed,
        "tokens": tokens,
    }
    try:
        if config is not None:
            data = json.loads(config.read_text(encoding="utf-8"))
            sim_config = SimConfig.from_json(data, **overrides)
        else:
            sim_config = SimConfig(**overrides)
    except (OSError, json.JSONDecodeError, CallmeterError) as exc:
        console.print(f"[red]invalid --config: {exc}")
        raise typer.Exit(2) from None
    except TypeError as exc:
        console.print(f"[red]invalid --config: {exc}")
        raise typer.Exit(2) from None

    async def serve() -> None:
        server = SimServer(sim_config, host=host, port=port)
        await server.start_async()
        console.print(banner(server.base_url, sim_config))
        console.print("Press Ctrl+C to stop.")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    try:
        asyncio.run(serve())
    except CallmeterError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"{'callmeter-sim'} stopped.")


def register(app: typer.Typer) -> None:
    """Add the ``sim`` command to the CLI."""
    app.command("sim")(sim)
