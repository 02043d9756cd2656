"""The dashboard's routes: overview, calls, call detail, live (server-sent events), login."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec

from ...errors import InvalidArgumentError
from ...store import DEFAULT_TENANT, Store
from ...store import queries as sq
from ..auth import Tokens
from . import pages
from . import queries as dq

try:
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the dashboard needs FastAPI: pip install 'callmeter[server]'") from exc

COOKIE = "callmeter_token"
RANGES = {"1h": 3600, "1d": 86_400, "7d": 7 * 86_400}
INTERVALS = (60, 300, 900, 3600, 21_600, 86_400)
MAX_POINTS = 200
HOURLY_FROM = 6 * 3600
"""Ranges longer than this are drawn in buckets of whole hours (read from the rollup)."""
PAGE_SIZE = 50
TOP_CALLS = 5
LIVE_POLL = 0.5
"""Seconds between two looks at the store for the live page's event stream."""
LIVE_STREAM_MAX = 60.0
"""An event stream ends after this many seconds (the browser reconnects at once), so a
stopping server never waits on an open stream for long."""
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}  # fmt: skip
_enc = msgspec.json.Encoder()
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="callmeter-dashboard")


def _static_files() -> dict[str, tuple[bytes, str]]:
    out = {}
    for f in resources.files(__package__).joinpath("static").iterdir():
        ext = f.name[f.name.rfind(".") :]
        if f.is_file() and ext in STATIC_TYPES:
            out[f.name] = (f.read_bytes(), STATIC_TYPES[ext])
    return out


def parse_time(name: str, value: str | None) -> float | None:
    """Epoch seconds from a form value: ``2026-01-31T12:00`` (a ``datetime-local`` field,
    read as UTC), an ISO time with a zone, or epoch seconds. None when blank."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    try:
        t = float(v)
    except ValueError:
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                f"{name} must be a date and time such as 2026-01-31T12:00 (UTC), got {v!r}"
            ) from None
        return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(t):
        raise InvalidArgumentError(f"{name} must be a finite time, got {v!r}")
    return t


def parse_number(name: str, value: str | None) -> float | None:
    """A finite, non-negative number from a form value; None when blank."""
    if value is None or not value.strip():
        return None
    try:
        v = float(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def pick_interval(span: float) -> int:
    """The narrowest bucket width that draws ``span`` seconds in at most 200 points, of
    whole hours when the span is over :data:`HOURLY_FROM` (a day: 24 buckets of 1 h)."""
    for iv in INTERVALS:
        if span / iv <= MAX_POINTS and (iv % 3600 == 0 or span <= HOURLY_FROM):
            return iv
    return INTERVALS[-1]


def time_range(params: Mapping[str, str], now: float) -> tuple[float, float]:
    """``(since, until)`` of the overview's range: 1h, 1d, 7d (ending now) or custom."""
    rng = params.get("range") or "1d"
    if rng in RANGES:
        return now - RANGES[rng], now
    if rng != "custom":
        raise InvalidArgumentError(f"range must be 1h, 1d, 7d or custom, got {rng!r}")
    since, until = parse_time("from", params.get("since")), parse_time("to", params.get("until"))
    if since is None or until is None:
        raise InvalidArgumentError("a custom range needs both a start and an end")
    if until <= since:
        raise InvalidArgumentError("the end of the range must come after its start")
    if not (since >= sq.MIN_TIME and until <= sq.MAX_TIME):
        raise InvalidArgumentError("the range must lie between the years 1 and 9999")
    if (until - since) / INTERVALS[-1] > sq.MAX_BUCKETS:
        raise InvalidArgumentError("the range is too long: at most 10,000 days")
    return since, until


def overview_data(
    store: Store, tenant: str, params: Mapping[str, str], now: float
) -> dict[str, Any]:
    """Everything the overview page shows, from the query layer and the dashboard's queries."""
    since, until = time_range(params, now)
    agent = sq.check_text("agent", params.get("agent") or None)
    iv = pick_interval(until - since)
    if iv % 3600 == 0:
        # buckets of whole hours: the range widens to whole buckets, so that every number
        # of the page comes from the hourly rollup (the call rows of a part of an hour at
        # either end would also need a scan of every older call for the active count)
        since, until = math.floor(since / iv) * iv, math.ceil(until / iv) * iv
    rng = {"since": since, "until": until}
    top = {**rng, "agent": agent, "limit": TOP_CALLS}
    # independent reads, run side by side (SQLite and PostgreSQL drivers release the GIL)
    jobs = {
        "series": _pool.submit(dq.series, store, tenant, interval=iv, agent=agent, **rng),
        "by_model": _pool.submit(dq.by_model, store, tenant, agent=agent, **rng),
        "ttfb": _pool.submit(dq.tts_ttfb_p50, store, tenant, interval=iv, agent=agent, **rng),
        "by_agent": _pool.submit(dq.by_agent, store, tenant, agent=agent, **rng),
        "costliest": _pool.submit(sq.list_calls, store, tenant, sort="cost", **top),
        "slowest": _pool.submit(sq.list_calls, store, tenant, sort="e2e_p95", **top),
    }
    got = {k: f.result() for k, f in jobs.items()}
    ser, (ttfb, ttfb_every), by_agent = got["series"], got["ttfb"], got["by_agent"]
    first, last = sq.first_last(since, until, iv)
    xs = [float(k * iv) for k in range(first, last + 1)]
    buckets = []
    for x in xs:
        b = ser["buckets"][x]
        kinds = b["cost_by_kind"]
        kinds["call"] = max(b["cost"] - sum(kinds.values()), 0.0)
        buckets.append(b)
    return {
        "since": since, "until": until, "interval": iv, "xs": xs, "buckets": buckets,
        "sample_every": ser["sample_every"], "ttfb_sample_every": ttfb_every,
        "tts_ttfb": [ttfb.get(x) for x in xs],
        "totals": {k: sum(r[k] for r in by_agent) for k in ("calls", "cost", "turns", "errors")},
        "by_agent": by_agent,
        "by_model": got["by_model"],
        "costliest": got["costliest"].calls,
        "slowest": got["slowest"].calls,
    }  # fmt: skip


def calls_data(store: Store, tenant: str, params: Mapping[str, str]) -> dict[str, Any]:
    """One page of the calls table for the filters in ``params``."""
    labels = {}
    if label := (params.get("label") or "").strip():
        k, sep, v = label.partition(":")
        if not sep or not k.strip():
            raise InvalidArgumentError(f"label must be key:value, got {label!r}")
        labels[k.strip()] = v.strip()
    errs = params.get("has_errors") or ""
    if errs not in ("", "true", "false"):
        raise InvalidArgumentError(f"errors must be true or false, got {errs!r}")
    page = sq.list_calls(
        store,
        tenant,
        agent=params.get("agent") or None,
        labels=labels,
        since=parse_time("started from", params.get("since")),
        until=parse_time("started before", params.get("until")),
        min_cost=parse_number("min cost", params.get("min_cost")),
        min_e2e_p95=parse_number("min e2e p95", params.get("min_e2e_p95")),
        has_errors=None if not errs else errs == "true",
        sort=params.get("sort") or "started",
        order=params.get("order") or "desc",
        limit=PAGE_SIZE,
        cursor=params.get("cursor") or None,
    )
    return {"calls": page.calls, "next_cursor": page.next_cursor}


def _safe_next(url: str | None) -> str:
    if not url or not url.startswith("/") or url.startswith(("//", "/\\")):
        return "/"
    return url


def dashboard_router(store: Store, tokens: Tokens | None = None) -> APIRouter:
    """The dashboard's routes on ``store``. With tokens, a read token entered once at
    ``/login`` is kept in a secure, HTTP-only cookie; with none, there is no login."""
    tokens = tokens or Tokens()
    router = APIRouter(include_in_schema=False)
    static = _static_files()
    agents_cache: dict[str, tuple[float, list[str]]] = {}

    def tenant_of(request: Request) -> str | None:
        if not len(tokens):
            return DEFAULT_TENANT
        secret = request.cookies.get(COOKIE, "")
        tok = tokens.lookup(secret) if secret else None
        return tok.tenant if tok is not None and "read" in tok.scopes else None

    def html(title: str, body: str, active: str, status: int = 200) -> HTMLResponse:
        page = pages.layout(title, body, active=active, logout=bool(len(tokens)))
        return HTMLResponse(page, status, HEADERS)

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303, HEADERS)

    def agents(tenant: str) -> list[str]:
        hit = agents_cache.get(tenant)
        if hit and time.monotonic() - hit[0] < 10:
            return hit[1]
        names = dq.agents(store, tenant)
        agents_cache[tenant] = (time.monotonic(), names)
        return names

    @router.get("/static/{name}")
    async def static_file(name: str) -> Response:
        f = static.get(name)
        if f is None:
            return Response("not found", 404, media_type="text/plain")
        return Response(
            f[0],
            media_type=f[1],
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/")
    async def overview(request: Request) -> Response:
        tenant = tenant_of(request)
        if tenant is None:
            return to_login(request)
        params = dict(request.query_params)
        ctx: dict[str, Any] = {"params": params}
        status = 200
        try:
            ctx["agents"] = await run_in_threadpool(agents, tenant)
            ctx.update(await run_in_threadpool(overview_data, store, tenant, params, time.time()))
        except InvalidArgumentError as exc:
            ctx["error"], status = str(exc), 400
        return html("Overview", pages.overview(ctx), "overview", status)

    @router.get("/calls")
    async def calls(request: Request) -> Response:
        tenant = tenant_of(request)
        if tenant is None:
            return to_login(request)
        params = dict(request.query_params)
        ctx: dict[str, Any] = {"params": params}
        status = 200
        try:
            ctx["agents"] = await run_in_threadpool(agents, tenant)
            ctx.update(await run_in_threadpool(calls_data, store, tenant, params))
        except InvalidArgumentError as exc:
            ctx["error"], status = str(exc), 400
        return html("Calls", pages.calls(ctx), "calls", status)

    @router.get("/calls/{session_id:path}")
    async def call(request: Request, session_id: str) -> Response:
        tenant = tenant_of(request)
        as_json = request.query_params.get("format") == "json"
        if tenant is None:
            if as_json:
                return Response(_enc.encode({"error": "log in with a read token"}), 401,
                                media_type="application/json")  # fmt: skip
            return to_login(request)
        detail = await run_in_threadpool(sq.get_call, store, tenant, session_id)
        if detail is None:
            msg = f"no call {session_id!r}"
            if as_json:
                return Response(_enc.encode({"error": msg}), 404, media_type="application/json")
            return html("Call not found", pages.error_box(msg), "calls", 404)
        if as_json:
            return Response(_enc.encode(detail), media_type="application/json",
                            headers={"Cache-Control": "no-store"})  # fmt: skip
        return html(f"Call {session_id}", pages.call(detail), "calls")

    @router.get("/live")
    async def live(request: Request) -> Response:
        tenant = tenant_of(request)
        if tenant is None:
            return to_login(request)
        now_calls = await run_in_threadpool(dq.active_calls, store, tenant, now=time.time())
        return html("Live", pages.live(now_calls), "live")

    @router.get("/live/events")
    async def live_events(request: Request) -> Response:
        tenant = tenant_of(request)
        if tenant is None:
            return Response("log in with a read token", 401, media_type="text/plain")

        async def events() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            last = None
            end = time.monotonic() + LIVE_STREAM_MAX
            quiet = 0.0
            while time.monotonic() < end and not await request.is_disconnected():
                now_calls = await run_in_threadpool(dq.active_calls, store, tenant, now=time.time())
                data = pages.live_event(now_calls)
                if data != last:
                    last, quiet = data, 0.0
                    yield f"event: calls\ndata: {data}\n\n"
                elif quiet >= 15:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(LIVE_POLL)
                quiet += LIVE_POLL

        return StreamingResponse(
            events(), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        if not len(tokens):
            return RedirectResponse(nxt, 303)
        return html("Log in", pages.login(nxt), "")

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not len(tokens):
            return RedirectResponse("/", 303)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 8192:
                return html("Log in", pages.login("/", "The form is too large."), "", 413)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        secret = (form.get("token") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or ["/"])[0])
        tok = tokens.lookup(secret) if secret else None
        if tok is None or "read" not in tok.scopes:
            msg = "That token is not a valid read token."
            return html("Log in", pages.login(nxt, msg), "", 401)
        resp = RedirectResponse(nxt, 303, {"Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, secret, max_age=30 * 86_400, path="/", secure=True,
                        httponly=True, samesite="strict")  # fmt: skip
        return resp

    @router.post("/logout")
    async def logout() -> Response:
        resp = RedirectResponse("/login", 303, {"Cache-Control": "no-store"})
        resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return resp

    return router
