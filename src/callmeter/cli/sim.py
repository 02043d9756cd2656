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
    ttft: Annotated[
        float | None, typer.Option(help="Seconds to the first token [default: 0.25].")
    ] = None,
    token_delay: Annotated[
        float | None, typer.Option(help="Seconds between tokens [default: 0.01].")
    ] = None,
    jitter: Annotated[
        float | None, typer.Option(help="Up to this many seconds of noise per delay [default: 0].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the jitter [default: 0].")] = None,
    tokens: Annotated[
        int | None, typer.Option(help="Length of placeholder replies, in tokens [default: 30].")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help='JSON file: latency fields plus "rules" and "script" (see docs/sim.md).'),
    ] = None,
) -> None:
    """Serve a SIMULATED OpenAI API (chat completions, responses) with scripted replies."""
    from ..errors import CallmeterError
    from ..sim import SimConfig
    from . import error

    try:
        from ..sim.server import SimServer, banner
    except ImportError as exc:
        error(f"callmeter sim needs the sim extra: pip install 'callmeter[sim]' ({exc})")
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
            sim_config = SimConfig(**{k: v for k, v in overrides.items() if v is not None})
    except (OSError, json.JSONDecodeError, TypeError, CallmeterError) as exc:
        error(f"invalid --config: {exc}")
        raise typer.Exit(2) from None

    async def serve() -> None:
        server = SimServer(sim_config, host=host, port=port)
        await server.start_async()
        typer.echo(banner(server.base_url, sim_config), err=True)
        typer.echo("Press Ctrl+C to stop.", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    try:
        asyncio.run(serve())
    except CallmeterError as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("callmeter-sim stopped.", err=True)
