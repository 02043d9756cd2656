"""Serving a monitor: ``/health`` plus ``prometheus_client``'s metrics app, as WSGI, ASGI
or a small threaded HTTP server."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_asgi_app as _prom_asgi
from prometheus_client import make_wsgi_app as _prom_wsgi
from prometheus_client.exposition import ThreadingWSGIServer

from ...errors import InvalidArgumentError

if TYPE_CHECKING:
    from ._monitor import CallMonitor

HEALTH_PATH = "/health"


def _health(monitor: CallMonitor) -> tuple[int, bytes]:
    try:
        report = monitor.health_report()
    except Exception as e:  # a health probe must get an answer
        report = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    code = 200 if report["status"] == "ok" else 503
    return code, json.dumps(report).encode() + b"\n"


def make_wsgi_app(monitor: CallMonitor) -> Any:
    """WSGI app: ``GET /health`` answers 200 or 503 with a JSON body; any other path
    serves the metrics of the monitor's registry."""
    metrics = _prom_wsgi(monitor.registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            code, body = _health(monitor)
            status = "200 OK" if code == 200 else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        return metrics(environ, start_response)

    return app


def make_asgi_app(monitor: CallMonitor) -> Any:
    """ASGI app: ``GET /health`` answers 200 or 503; any other path serves the metrics."""
    metrics = _prom_asgi(monitor.registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "lifespan":  # served on its own by uvicorn & co.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") == "http" and scope.get("path") == HEALTH_PATH:
            code, body = _health(monitor)
            await send(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await metrics(scope, receive, send)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing per request."""


class MetricsServer:
    """A threaded HTTP server for a monitor's WSGI app; ``close()`` stops it."""

    def __init__(self, monitor: CallMonitor, port: int, addr: str) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be an int in 0-65535, got {port!r}")
        if not isinstance(addr, str):
            raise InvalidArgumentError(f"addr must be a host name or address, got {addr!r}")
        try:
            self._httpd = make_server(
                addr, port, make_wsgi_app(monitor), ThreadingWSGIServer, _QuietHandler
            )
        except OSError as e:
            raise InvalidArgumentError(f"cannot listen on {addr}:{port}: {e}") from e
        self.addr = addr
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="callmeter-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
