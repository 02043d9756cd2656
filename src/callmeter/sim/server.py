"""The simulator's HTTP server (aiohttp): OpenAI chat completions and responses, JSON and SSE.

Every response carries the header ``x-callmeter-simulator: 1`` and, in the body,
``system_fingerprint: "callmeter-sim"`` and a ``model`` prefixed with ``callmeter-sim:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from typing import Any

from aiohttp import web

from ..errors import SimServerError
from .script import SIM_NAME, Plan, SimConfig, responses_to_messages

logger = logging.getLogger("callmeter.sim")

_HEADERS = {"x-callmeter-simulator": "1", "server": SIM_NAME}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def banner(base_url: str, config: SimConfig) -> str:
    """The text the simulator prints on start: what it is and how it behaves."""
    return (
        f"{SIM_NAME}: a SIMULATED OpenAI-compatible server at {base_url}\n"
        "  Replies are scripted or rule-based placeholders, not written by a language model;\n"
        f"  latency is artificial: first token after {config.ttft:g} s, then one token every "
        f"{config.token_delay:g} s (jitter up to {config.jitter:g} s, seed {config.seed}).\n"
        "  Any API key is accepted."
    )


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class _Clock:
    """Sleeps until offsets from a fixed start (absolute deadlines, so delays do not drift)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()

    async def until(self, offset: float) -> None:
        delay = self.t0 + offset - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers={**_HEADERS, **(headers or {})},
    )


def _error(plan: Plan, request_id: str) -> web.Response:
    status = plan.status or 500
    message = plan.error_message or f"{SIM_NAME}: simulated HTTP {status} error"
    headers = {"x-request-id": request_id}
    if status == 429:
        headers["retry-after"] = "0"
    err_type = _ERROR_TYPES.get(status, "server_error")
    return _json(
        {"error": {"message": message, "type": err_type, "code": err_type, "param": None}},
        status=status,
        headers=headers,
    )


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"message": "request body is not JSON"}}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"message": "request body must be a JSON object"}}),
            content_type="application/json",
        )
    return body


class _SSE:
    """A streamed ``text/event-stream`` response."""

    def __init__(self, request: web.Request, request_id: str) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={
                **_HEADERS,
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "x-request-id": request_id,
            }
        )

    async def start(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, data: dict[str, Any], event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        await self.response.write(f"{head}data: {json.dumps(data)}\n\n".encode())

    async def done(self) -> None:
        await self.response.write(b"data: [DONE]\n\n")

    async def end(self) -> web.StreamResponse:
        await self.response.write_eof()
        return self.response


class SimApp:
    """The aiohttp application answering OpenAI requests from a :class:`SimConfig`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.app = web.Application()
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/responses", self._responses)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text=banner(f"{request.scheme}://{request.host}/v1", self.config) + "\n",
            headers=_HEADERS,
        )

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": SIM_NAME, "object": "model", "created": 0, "owned_by": SIM_NAME}
        return _json({"object": "list", "data": [model]})

    # chat completions -------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        clock = _Clock()
        body = await _body(request)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return _json({"error": {"message": "messages must be a list"}}, status=400)
        plan = self.config.choose(messages, body)
        request_id = _new_id("req_sim_")
        model = f"{SIM_NAME}:{body.get('model', '')}"
        cid = _new_id("chatcmpl-sim")
        created = int(time.time())
        if plan.status is not None:
            await clock.until(plan.delays[0])
            return _error(plan, request_id)
        usage = (
            {
                "prompt_tokens": plan.prompt_tokens,
                "completion_tokens": plan.completion_tokens,
                "total_tokens": plan.prompt_tokens + plan.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": plan.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": 0},
            }
            if plan.usage
            else None
        )
        finish = "tool_calls" if plan.tool_calls else "stop"
        base = {
            "id": cid,
            "created": created,
            "model": model,
            "system_fingerprint": SIM_NAME,
        }
        if not body.get("stream"):
            await clock.until(plan.delays[-1])
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(plan.text_tokens) if plan.text_tokens else None,
            }
            if plan.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "".join(pieces)},
                    }
                    for call_id, name, pieces in plan.tool_calls
                ]
            out = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": usage,
            }
            return _json(out, headers={"x-request-id": request_id})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sse = _SSE(request, request_id)
        chunk = {**base, "object": "chat.completion.chunk"}

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": d, "finish_reason": finish_reason, "logprobs": None}
            return {**chunk, "choices": [choice]}

        with contextlib.suppress(ConnectionResetError):
            await sse.start()
            await sse.send(delta({"role": "assistant", "content": ""}))
            i = 0
            for token in plan.text_tokens:
                if i == plan.fail_after:
                    message = plan.error_message or f"{SIM_NAME}: simulated failure mid-stream"
                    await sse.send({"error": {"message": message, "type": "server_error"}})
                    return await sse.end()
                await clock.until(plan.delays[i])
                await sse.send(delta({"content": token}))
                i += 1
            for index, (call_id, name, pieces) in enumerate(plan.tool_calls):
                await clock.until(plan.delays[i])
                i += 1
                head = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                await sse.send(delta({"tool_calls": [head]}))
                for piece in pieces:
                    await clock.until(plan.delays[i])
                    i += 1
                    call = {"index": index, "function": {"arguments": piece}}
                    await sse.send(delta({"tool_calls": [call]}))
            await clock.until(plan.delays[-1])
            await sse.send(delta({}, finish))
            if include_usage and usage is not None:
                await sse.send({**chunk, "choices": [], "usage": usage})
            await sse.done()
            return await sse.end()
        return sse.response

    # responses --------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        clock = _Clock()
        body = await _body(request)
        messages = responses_to_messages(body)
        plan = self.config.choose(messages, body)
        request_id = _new_id("req_sim_")
        if plan.status is not None:
            await clock.until(plan.delays[0])
            return _error(plan, request_id)
        rid = _new_id("resp_sim")
        msg_id = _new_id("msg_sim")
        text = "".join(plan.text_tokens)
        output: list[dict[str, Any]] = []
        if plan.text_tokens:
            output.append(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        fc_ids = [_new_id("fc_sim") for _ in plan.tool_calls]
        for fc_id, (call_id, name, pieces) in zip(fc_ids, plan.tool_calls, strict=True):
            output.append(
                {
                    "id": fc_id,
                    "type": "function_call",
                    "call_id": call_id,
                    "name": name,
                    "arguments": "".join(pieces),
                    "status": "completed",
                }
            )
        usage = (
            {
                "input_tokens": plan.prompt_tokens,
                "input_tokens_details": {"cached_tokens": plan.cached_tokens},
                "output_tokens": plan.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            }
            if plan.usage
            else None
        )
        resp: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "model": f"{SIM_NAME}:{body.get('model', '')}",
            "status": "completed",
            "output": output,
            "usage": usage,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "metadata": {"system_fingerprint": SIM_NAME},
        }
        if not body.get("stream"):
            await clock.until(plan.delays[-1])
            return _json(resp, headers={"x-request-id": request_id})

        sse = _SSE(request, request_id)
        seq = 0

        async def send(kind: str, **fields: Any) -> None:
            nonlocal seq
            await sse.send({"type": kind, "sequence_number": seq, **fields}, event=kind)
            seq += 1

        with contextlib.suppress(ConnectionResetError):
            await sse.start()
            pending = {**resp, "status": "in_progress", "output": [], "usage": None}
            await send("response.created", response=pending)
            i = 0
            index = 0
            if plan.text_tokens:
                item = {**output[0], "status": "in_progress", "content": []}
                await send("response.output_item.added", output_index=0, item=item)
                part = {"type": "output_text", "text": "", "annotations": []}
                where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
                await send("response.content_part.added", **where, part=part)
                for token in plan.text_tokens:
                    if i == plan.fail_after:
                        message = plan.error_message or f"{SIM_NAME}: simulated failure"
                        error = {"code": "server_error", "message": message}
                        failed = {**pending, "status": "failed", "error": error}
                        await send("response.failed", response=failed)
                        return await sse.end()
                    await clock.until(plan.delays[i])
                    i += 1
                    await send("response.output_text.delta", **where, delta=token, logprobs=[])
                await send("response.output_text.done", **where, text=text, logprobs=[])
                await send("response.content_part.done", **where, part={**part, "text": text})
                await send("response.output_item.done", output_index=0, item=output[0])
                index = 1
            for fc_id, (_call_id, _name, pieces) in zip(fc_ids, plan.tool_calls, strict=True):
                item = output[index]
                await clock.until(plan.delays[i])
                i += 1
                added = {**item, "arguments": "", "status": "in_progress"}
                await send("response.output_item.added", output_index=index, item=added)
                for piece in pieces:
                    await clock.until(plan.delays[i])
                    i += 1
                    await send(
                        "response.function_call_arguments.delta",
                        item_id=fc_id,
                        output_index=index,
                        delta=piece,
                    )
                await send(
                    "response.function_call_arguments.done",
                    item_id=fc_id,
                    output_index=index,
                    arguments=item["arguments"],
                )
                await send("response.output_item.done", output_index=index, item=item)
                index += 1
            await clock.until(plan.delays[-1])
            await send("response.completed", response=resp)
            return await sse.end()
        return sse.response


class SimServer:
    """Runs the simulator on its own event loop in a background thread.

    ``with SimServer(SimConfig(ttft=0.25)) as sim: OpenAI(base_url=sim.base_url, ...)``.
    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server (``http://host:port/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    async def start_async(self) -> None:
        """Start serving on the running event loop."""
        runner = web.AppRunner(
            SimApp(self.config).app, shutdown_timeout=0.5, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise SimServerError(
                f"cannot listen on {self.host}:{self.port}: {exc}; pick another --port"
            ) from None
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop_async(self) -> None:
        """Stop serving (started with :meth:`start_async`)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> SimServer:
        """Start serving in a background thread; returns once the port is open."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=SIM_NAME, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background server and wait for its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
