"""``callmeter serve``: the ingest and query server on the store (FastAPI + uvicorn)."""

from __future__ import annotations

import gc
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_PORT = 8900  # not 8787: that is `callmeter sim`


def _fail(message: str) -> None:
    print(f"callmeter serve: {message}", file=sys.stderr)
    raise typer.Exit(2)


def is_loopback(host: str) -> bool:
    """True when ``host`` names only the local machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL or SQLite path (default: $CALLMETER_DB or ./callmeter.db)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = DEFAULT_PORT,
    tokens: Annotated[
        Path | None,
        typer.Option(help="Tokens file: TOKEN:TENANT:SCOPES per line (else $CALLMETER_TOKENS)."),
    ] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body, bytes.")] = 16 << 20,
    max_records: Annotated[int, typer.Option(help="Most records in one batch.")] = 10_000,
    max_queue: Annotated[int, typer.Option(help="Most records waiting for a commit.")] = 200_000,
) -> None:
    """Serve the ingest API (POST /v1/records) and the query API on the store."""
    from ..errors import CallmeterError

    if not 0 <= port <= 65535:
        _fail(f"--port must be 0..65535, got {port}")
    for name, v in (("--max-body", max_body), ("--max-records", max_records),
                    ("--max-queue", max_queue)):  # fmt: skip
        if v < 1:
            _fail(f"{name} must be positive, got {v}")
    try:
        import uvicorn

        from ..server import Limits, Tokens, create_app
        from ..store import Store
    except ImportError as exc:
        _fail(f"{exc} (pip install 'callmeter[server]')")
    try:
        toks = Tokens.load(tokens)
    except CallmeterError as exc:
        _fail(str(exc))
    if not len(toks) and not is_loopback(host):
        _fail(
            f"refusing to listen on {host} without tokens: set $CALLMETER_TOKENS or --tokens "
            "(TOKEN:TENANT:SCOPES), or listen on 127.0.0.1"
        )
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it a keep-alive response waits ~40 ms on the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        store = Store(db)
    except CallmeterError as exc:
        sock.close()
        _fail(str(exc))
    app = create_app(
        store, toks, Limits(max_body=max_body, max_records=max_records, max_queue=max_queue)
    )
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"callmeter serving on http://{shown}:{bound} (store: {_describe(store.url)})")
    if not len(toks):
        print("no tokens configured: listening on loopback only, every request is tenant 'default'")
    else:
        print(f"{len(toks)} token(s) configured")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    # this process is the server's: what is loaded by now (prices included) lives as long
    # as it, so keep it out of the garbage collector's full passes during ingest
    store.warm_up()
    gc.collect()
    gc.freeze()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def _describe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
