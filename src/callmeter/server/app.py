"""The FastAPI application: ingest, queries, health and the server's own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ..errors import InvalidArgumentError
from ..store import DEFAULT_TENANT, Store, queries
from .auth import Token, Tokens
from .body import BadBody, BodyTooLarge, Parsed, decode_body
from .dashboard import dashboard_router
from .writer import LATENCY_BUCKETS, QueueFull, Writer, WriterStopped

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("callmeter.server needs FastAPI: pip install 'callmeter[server]'") from exc

logger = logging.getLogger("callmeter.server")
_enc = msgspec.json.Encoder()


@dataclass(slots=True)
class Limits:
    """Ingest limits: body bytes (compressed and decompressed), records per batch, and the
    write queue in records (beyond it: 429 with ``Retry-After``)."""

    max_body: int = 16 * 1024 * 1024
    max_records: int = 10_000
    max_queue: int = 200_000
    retry_after: int = 1


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_enc.encode(body), status, headers, media_type="application/json")


def _time(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        return _iso_time(name, value)
    if not math.isfinite(t):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return t


def _iso_time(name: str, value: str) -> float:
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"{name} must be epoch seconds or an ISO 8601 time, got {value!r}"
        ) from None
    if d.tzinfo is None:
        raise InvalidArgumentError(f"{name} needs a time zone (e.g. Z), got {value!r}")
    return d.timestamp()


def _float(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return v


def _bool(name: str, value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    v = value.lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    raise InvalidArgumentError(f"{name} must be true or false, got {value!r}")


def create_app(store: Store, tokens: Tokens | None = None, limits: Limits | None = None) -> FastAPI:
    """The server's ASGI app on ``store``. With no tokens every request is the default
    tenant's (serve it on loopback only)."""
    tokens = tokens or Tokens()
    limits = limits or Limits()
    state: dict[str, Writer] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # prices and the code that reads them load now, not on the first batch
        await run_in_threadpool(store.warm_up)
        state["writer"] = Writer(store, max_queue=limits.max_queue)
        try:
            yield
        finally:
            await asyncio.to_thread(state["writer"].stop)

    app = FastAPI(title="callmeter", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.store = store

    @app.exception_handler(_HTTPError)
    async def _http_error(_req: Request, exc: _HTTPError) -> Response:
        return _json({"error": str(exc)}, exc.status, exc.headers)

    @app.exception_handler(InvalidArgumentError)
    async def _bad_argument(_req: Request, exc: InvalidArgumentError) -> Response:
        return _json({"error": str(exc)}, 400)

    def authorize(request: Request, scope: str) -> str:
        if not len(tokens):
            return DEFAULT_TENANT
        header = request.headers.get("authorization", "")
        kind, _, secret = header.partition(" ")
        token: Token | None = None
        if kind.lower() == "bearer" and secret.strip():
            token = tokens.lookup(secret.strip())
        if token is None:
            raise _HTTPError(401, "a valid bearer token is needed", {"WWW-Authenticate": "Bearer"})
        if scope not in token.scopes:
            raise _HTTPError(403, f"this token has no {scope!r} scope")
        return token.tenant

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            raise _HTTPError(413, f"the body is over {limits.max_body} bytes")
        buf = bytearray()
        try:
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limits.max_body:
                    raise _HTTPError(413, f"the body is over {limits.max_body} bytes")
        except ClientDisconnect:  # gone before the whole body came: nothing to store
            raise _HTTPError(400, "the client went away before the end of the body") from None
        return bytes(buf)

    @app.post("/v1/records")
    async def post_records(request: Request) -> Response:
        tenant = authorize(request, "ingest")
        data = await read_body(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        json_array = ctype == "application/json" or (ctype == "" and data.lstrip()[:1] == b"[")
        writer = state["writer"]
        if encoding not in ("gzip", "identity", ""):
            raise _HTTPError(415, f"unsupported Content-Encoding {encoding!r}: use gzip")

        def decode() -> Parsed:
            writer.wait_turn()
            return decode_body(
                data,
                gzipped=encoding == "gzip",
                max_body=limits.max_body,
                json_array=json_array,
                max_records=limits.max_records,
            )

        try:
            parsed = await run_in_threadpool(decode)
        except BodyTooLarge as exc:
            raise _HTTPError(413, str(exc)) from None
        except BadBody as exc:
            writer.stats.rejected += 1
            return _json({"accepted": 0, "duplicates": 0,
                          "rejected": [{"line": 1, "error": str(exc)}]}, 400)  # fmt: skip
        writer.stats.rejected += len(parsed.rejected)
        if not parsed.records:
            return _json({"accepted": 0, "duplicates": 0, "rejected": parsed.rejected}, 400)
        try:
            fut = writer.submit(tenant, parsed.records, parsed.bodies)
        except QueueFull as exc:
            raise _HTTPError(429, str(exc), {"Retry-After": str(limits.retry_after)}) from None
        except WriterStopped as exc:
            raise _HTTPError(503, str(exc), {"Retry-After": str(limits.retry_after)}) from None
        try:
            res = await asyncio.wrap_future(fut)
        except Exception as exc:
            logger.warning("callmeter: a batch was not stored: %s", exc)
            raise _HTTPError(
                503, "the store could not commit the batch: retry", {"Retry-After": "2"}
            ) from None
        body = {"accepted": res.accepted, "duplicates": res.duplicates,
                "rejected": parsed.rejected}  # fmt: skip
        return _json(body)

    @app.get("/v1/calls")
    async def list_calls(request: Request) -> Response:
        tenant = authorize(request, "read")
        p = request.query_params
        labels: dict[str, str] = {}
        for item in p.getlist("label"):
            k, sep, v = item.partition(":")
            if not sep or not k:
                raise InvalidArgumentError(f"label must be key:value, got {item!r}")
            labels[k] = v
        limit_s = p.get("limit", "50")
        if not limit_s.isdigit():
            raise InvalidArgumentError(f"limit must be a positive int, got {limit_s!r}")
        page = await run_in_threadpool(
            queries.list_calls,
            store,
            tenant,
            agent=p.get("agent") or None,
            labels=labels,
            since=_time("since", p.get("since")),
            until=_time("until", p.get("until")),
            min_cost=_float("min_cost", p.get("min_cost")),
            min_e2e_p95=_float("min_e2e_p95", p.get("min_e2e_p95")),
            has_errors=_bool("has_errors", p.get("has_errors")),
            sort=p.get("sort", "started"),
            order=p.get("order", "desc"),
            limit=int(limit_s),
            cursor=p.get("cursor") or None,
        )
        return _json({"calls": page.calls, "next_cursor": page.next_cursor})

    @app.get("/v1/calls/{session_id}")
    async def get_call(request: Request, session_id: str) -> Response:
        tenant = authorize(request, "read")
        call = await run_in_threadpool(queries.get_call, store, tenant, session_id)
        if call is None:
            raise _HTTPError(404, f"no call {session_id!r}")
        return _json(call)

    @app.get("/v1/stats")
    async def get_stats(request: Request) -> Response:
        tenant = authorize(request, "read")
        p = request.query_params
        until = _time("until", p.get("until"))
        until = time.time() if until is None else until
        since = _time("since", p.get("since"))
        since = until - 86_400 if since is None else since
        out = await run_in_threadpool(
            queries.stats,
            store,
            tenant,
            since=since,
            until=until,
            interval=p.get("interval", "1h"),
            group_by=p.get("group_by") or None,
        )
        return _json(out)

    @app.get("/health")
    async def health() -> Response:
        writer = state.get("writer")
        return _json({"status": "ok", "store": store.dialect,
                      "queue_depth": writer.depth if writer else 0})  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> Response:
        writer = state["writer"]
        return Response(render_metrics(writer), media_type="text/plain; version=0.0.4")

    app.include_router(dashboard_router(store, tokens))
    return app


def render_metrics(writer: Writer) -> str:
    """The server's ingest metrics in the Prometheus text format."""
    s = writer.stats
    lines = [
        "# HELP callmeter_ingest_records_total Records received, by outcome.",
        "# TYPE callmeter_ingest_records_total counter",
        f'callmeter_ingest_records_total{{outcome="accepted"}} {s.accepted}',
        f'callmeter_ingest_records_total{{outcome="duplicate"}} {s.duplicates}',
        f'callmeter_ingest_records_total{{outcome="rejected"}} {s.rejected}',
        "# HELP callmeter_ingest_batches_total Batches committed.",
        "# TYPE callmeter_ingest_batches_total counter",
        f"callmeter_ingest_batches_total {s.batches}",
        "# HELP callmeter_ingest_commits_total Transactions committed (a commit holds one or"
        " more batches).",
        "# TYPE callmeter_ingest_commits_total counter",
        f"callmeter_ingest_commits_total {s.commits}",
        "# HELP callmeter_ingest_commit_failures_total Transactions that failed.",
        "# TYPE callmeter_ingest_commit_failures_total counter",
        f"callmeter_ingest_commit_failures_total {s.commit_failures}",
        "# HELP callmeter_ingest_queue_full_total Batches refused with 429 (queue full).",
        "# TYPE callmeter_ingest_queue_full_total counter",
        f"callmeter_ingest_queue_full_total {s.refused_full}",
        "# HELP callmeter_ingest_queue_depth Records waiting to be committed.",
        "# TYPE callmeter_ingest_queue_depth gauge",
        f"callmeter_ingest_queue_depth {writer.depth}",
        "# HELP callmeter_ingest_batch_seconds Time from receiving a batch to its commit.",
        "# TYPE callmeter_ingest_batch_seconds histogram",
    ]
    for b, n in zip(LATENCY_BUCKETS, s.latency_buckets, strict=True):
        lines.append(f'callmeter_ingest_batch_seconds_bucket{{le="{b}"}} {n}')
    lines.append(f'callmeter_ingest_batch_seconds_bucket{{le="+Inf"}} {s.latency_count}')
    lines.append(f"callmeter_ingest_batch_seconds_sum {s.latency_sum}")
    lines.append(f"callmeter_ingest_batch_seconds_count {s.latency_count}")
    return "\n".join(lines) + "\n"
