"""The real openai SDK, sync and async, streaming and not, both APIs, against callmeter-sim."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from dataclasses import dataclass

import openai
import pytest

from callmeter import AgentSession, InvalidArgumentError, metrics
from callmeter.integrations.openai import (
    infer_provider,
    instrument,
    is_instrumented,
    measured,
    uninstrument,
)
from callmeter.sim import Reply, ToolCallSpec

MSGS = [{"role": "user", "content": "hi"}]
PROMPT_TOKENS = 4  # the simulator counts one word plus 3 per message


def _sync(sim: object, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0, **kw)


def _async(sim: object, **kw: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0, **kw)


EPS = 0.005  # clock granularity and rounding between the server's timer and ours


@dataclass
class Seen:
    """What the caller saw: the items, and when (seconds from the ``create()`` call) the
    first token reached it and the call ended. A metric can be no later than these, and
    the simulator makes it no earlier than its schedule: tight bounds on a loaded machine."""

    items: list
    first: float
    total: float


def _is_token(item: object) -> bool:
    if getattr(item, "object", None) == "chat.completion.chunk":
        delta = item.choices[0].delta if item.choices else None  # type: ignore[attr-defined]
        return bool(delta and (delta.content or delta.tool_calls))
    return getattr(item, "type", "").endswith(".delta")


def _call_sync(client: openai.OpenAI, api: str, stream: bool) -> Seen:
    t0 = time.perf_counter()
    first = None
    if api == "chat":
        result = client.chat.completions.create(model="m1", messages=MSGS, stream=stream)
    else:
        result = client.responses.create(model="m1", input="hi", stream=stream)
    items = []
    for item in result if stream else [result]:
        if first is None and (not stream or _is_token(item)):
            first = time.perf_counter() - t0
        items.append(item)
    total = time.perf_counter() - t0
    return Seen(items, total if first is None else first, total)


async def _call_async(client: openai.AsyncOpenAI, api: str, stream: bool) -> Seen:
    t0 = time.perf_counter()
    first = None
    if api == "chat":
        result = await client.chat.completions.create(model="m1", messages=MSGS, stream=stream)
    else:
        result = await client.responses.create(model="m1", input="hi", stream=stream)
    items = [result]
    if stream:
        items = []
        async for item in result:
            if first is None and _is_token(item):
                first = time.perf_counter() - t0
            items.append(item)
    total = time.perf_counter() - t0
    return Seen(items, total if first is None else first, total)


def _check_timing_and_usage(m: metrics.LLMMetrics, stream: bool, seen: Seen) -> None:
    # the simulator: first token at 0.25 s, then 30 tokens 10 ms apart
    assert 0.55 - EPS <= m.duration <= seen.total
    if stream:
        assert 0.25 - EPS <= m.ttft <= seen.first
    else:  # the first token arrives with the whole response
        assert m.ttft == pytest.approx(m.duration, abs=0.005)
    assert m.usage_reported
    assert m.completion_tokens == 30
    assert m.prompt_tokens == PROMPT_TOKENS
    assert m.total_tokens == 30 + PROMPT_TOKENS
    assert m.error is None and not m.cancelled
    assert m.metadata is not None
    assert m.metadata.model_name == "m1"
    assert m.metadata.model_provider == "openai-compatible"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_sync_client(sim, recorder, api, stream):
    client = _sync(sim)
    instrument(client, recorder.session)
    seen = _call_sync(client, api, stream)
    assert seen.items
    (m,) = recorder.llm
    _check_timing_and_usage(m, stream, seen)
    assert m.request_id.startswith("chatcmpl-sim" if api == "chat" else "resp_sim")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_async_client(sim, recorder, api, stream):
    client = _async(sim)
    instrument(client, recorder.session)
    seen = await _call_async(client, api, stream)
    assert seen.items
    (m,) = recorder.llm
    _check_timing_and_usage(m, stream, seen)
    await client.close()


def test_injected_usage_chunk_is_hidden_from_the_caller(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    chunks = list(client.chat.completions.create(model="m1", messages=MSGS, stream=True))
    assert sim.config.requests[-1]["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)  # the caller's `chunk.choices[0]` keeps working
    assert recorder.llm[0].completion_tokens == 30


def test_caller_asked_usage_sees_usage_chunk(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    chunks = list(
        client.chat.completions.create(
            model="m1", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert recorder.llm[0].completion_tokens == 30


def test_caller_refused_usage_means_unknown(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    list(
        client.chat.completions.create(
            model="m1", messages=MSGS, stream=True, stream_options={"include_usage": False}
        )
    )
    (m,) = recorder.llm
    assert not m.usage_reported


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_no_usage_from_server_is_unknown_not_zero(sim, recorder, api, stream):
    sim.config.script.append(Reply(usage=False))
    client = _sync(sim)
    instrument(client, recorder.session)
    _call_sync(client, api, stream)
    (m,) = recorder.llm
    assert m.usage_reported is False
    assert m.completion_tokens == 0
    summary = recorder.session.usage
    assert summary.llm_usage_unreported == 1
    assert summary.llm_completion_tokens == 0


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_tool_call_delta_is_the_first_token(sim, recorder, api):
    sim.config.script.append(
        Reply(tool_calls=[ToolCallSpec("a", {"x": 1}), ToolCallSpec("b", {"y": 2})])
    )
    client = _sync(sim)
    instrument(client, recorder.session)
    seen = _call_sync(client, api, True)
    (m,) = recorder.llm
    assert 0.25 - EPS <= m.ttft <= seen.first
    # name + 2 argument pieces per call, as the simulator tokenizes
    assert m.completion_tokens == 6


@pytest.mark.parametrize(
    ("status", "exc_type", "error"),
    [
        (500, openai.InternalServerError, "InternalServerError: HTTP 500"),
        (429, openai.RateLimitError, "RateLimitError: HTTP 429"),
    ],
)
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_http_errors_recorded_and_reraised(sim, recorder, api, status, exc_type, error):
    sim.config.script.append(Reply(status=status))
    client = _sync(sim)
    instrument(client, recorder.session)
    t0 = time.perf_counter()
    with pytest.raises(exc_type) as info:
        _call_sync(client, api, True)
    waited = time.perf_counter() - t0
    (m,) = recorder.llm
    assert m.error == error
    assert not m.cancelled
    assert m.request_id == info.value.request_id and m.request_id.startswith("req_sim_")
    # the simulator answers with the error after its 0.25 s ttft
    assert 0.25 - EPS <= m.duration <= waited
    assert recorder.session.usage.llm_errors == 1


async def test_async_error_is_the_sdk_exception(sim, recorder):
    sim.config.script.append(Reply(status=500))
    client = _async(sim)
    instrument(client, recorder.session)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m1", messages=MSGS)
    assert recorder.llm[0].error == "InternalServerError: HTTP 500"


def test_retries_are_one_metric_per_create_call(sim, recorder):
    sim.config.script.extend([Reply(status=500, ttft=0.0), Reply(status=429, ttft=0.0)])
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=2)
    instrument(client, recorder.session)
    client.chat.completions.create(model="m1", messages=MSGS)
    assert len(sim.config.requests) == 3
    (m,) = recorder.llm
    assert m.error is None
    assert m.completion_tokens == 30
    assert m.duration > 0.55  # includes the failed attempts and the SDK's backoff


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_timeout(sim, recorder, stream):
    sim.config.script.append(Reply(ttft=3.0))
    client = _sync(sim, timeout=0.3)
    instrument(client, recorder.session)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        _call_sync(client, "chat", stream)
    waited = time.perf_counter() - t0
    (m,) = recorder.llm
    assert m.error == "APITimeoutError"
    # httpx's timeout applies to each read, so the call may last a little over 0.3 s
    assert 0.3 <= m.duration <= waited


def test_connection_refused(recorder):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    instrument(client, recorder.session)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m1", messages=MSGS)
    (m,) = recorder.llm
    assert m.error == "APIConnectionError"
    assert not m.usage_reported


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_closed_stream_is_emitted_cancelled(sim, recorder, api):
    client = _sync(sim)
    instrument(client, recorder.session)
    t0 = time.perf_counter()
    if api == "chat":
        stream = client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    else:
        stream = client.responses.create(model="m1", input="hi", stream=True)
    first = None
    with stream:
        for i, item in enumerate(stream):
            if first is None and _is_token(item):
                first = time.perf_counter() - t0
            if i == 5:
                broke = time.perf_counter() - t0
                break
        time.sleep(0.1)  # closed a while after the last chunk it read
        assert recorder.llm == []
    (m,) = recorder.llm
    assert m.cancelled
    assert 0.25 - EPS <= m.ttft <= first
    assert m.duration <= broke  # ends at the last chunk read, not at close()
    assert not m.usage_reported


def test_dropped_stream_is_emitted_cancelled(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    t0 = time.perf_counter()
    stream = client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    next(iter(stream))
    read = time.perf_counter() - t0
    time.sleep(0.3)  # the caller holds on to the dropped stream a while before it is freed
    del stream
    gc.collect()
    (m,) = recorder.llm
    assert m.cancelled
    # the request ended at the last chunk the caller received, not when it was freed
    assert m.duration <= read


async def test_async_abandoned_stream(sim, recorder):
    client = _async(sim)
    instrument(client, recorder.session)
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
            break
    await stream.close()
    (m,) = recorder.llm
    assert m.cancelled
    assert 0.25 - EPS <= m.ttft <= first


async def test_cancelled_task_is_emitted_cancelled(sim, recorder):
    client = _async(sim)
    instrument(client, recorder.session)

    async def consume() -> None:
        async for _ in await client.chat.completions.create(model="m1", messages=MSGS, stream=True):
            pass

    t0 = time.perf_counter()
    task = asyncio.create_task(consume())
    await asyncio.sleep(0.35)
    cancelled_at = time.perf_counter() - t0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waited = time.perf_counter() - t0
    (m,) = recorder.llm
    assert m.cancelled and m.error is None
    assert cancelled_at - EPS <= m.duration <= waited  # ends when cancelled


async def test_current_session_from_context(sim):
    """One client instrumented with session=None serves two concurrent calls."""
    client = _async(sim)
    instrument(client)
    a, b = AgentSession(), AgentSession()

    async def call(session: AgentSession) -> str:
        async with session.turn() as turn:
            await client.chat.completions.create(model="m1", messages=MSGS)
            return turn.speech_id

    ids = await asyncio.gather(call(a), call(b))
    assert a.usage.llm_requests == 1 and b.usage.llm_requests == 1
    # outside any session: the call works and nothing is measured
    await client.chat.completions.create(model="m1", messages=MSGS)
    assert a.usage.llm_requests == 1 and b.usage.llm_requests == 1
    assert ids[0] != ids[1]


async def test_speech_id_follows_the_turn(sim, recorder):
    client = _async(sim)
    instrument(client)
    async with recorder.session.turn() as turn:
        await client.chat.completions.create(model="m1", messages=MSGS)
    assert recorder.llm[0].speech_id == turn.speech_id


def test_uninstrument_restores_the_client_exactly(sim, recorder):
    client = _sync(sim)
    resources = [client.chat.completions, client.responses]
    before = [dict(vars(r)) for r in resources]
    original = client.chat.completions.create
    handle = instrument(client, recorder.session)
    assert is_instrumented(client) and handle.active
    assert client.chat.completions.create != original
    with pytest.raises(InvalidArgumentError, match="already instrumented"):
        instrument(client, recorder.session)
    handle.uninstrument()
    assert [dict(vars(r)) for r in resources] == before
    assert client.chat.completions.create == original
    assert not is_instrumented(client) and not handle.active
    client.chat.completions.create(model="m1", messages=MSGS)
    assert recorder.llm == []
    # instrument again, restore by client
    instrument(client, recorder.session)
    assert uninstrument(client) is True
    assert uninstrument(client) is False
    assert [dict(vars(r)) for r in resources] == before


def test_instrument_as_context_manager(sim, recorder):
    client = _sync(sim)
    with instrument(client, recorder.session, provider="my-vllm"):
        client.chat.completions.create(model="m1", messages=MSGS)
    client.chat.completions.create(model="m1", messages=MSGS)
    (m,) = recorder.llm
    assert m.metadata.model_provider == "my-vllm"


def test_measured_leaves_client_untouched(sim, recorder):
    client = _sync(sim)
    create = measured(client, recorder.session)
    create(model="m1", messages=MSGS)
    assert "create" not in vars(client.chat.completions)
    assert len(recorder.llm) == 1


@pytest.mark.parametrize(
    "bad",
    [
        lambda sim: instrument(object()),
        lambda sim: instrument(_sync(sim), session="s"),
        lambda sim: instrument(_sync(sim), provider=""),
        lambda sim: instrument(_sync(sim), include_usage="yes"),
        lambda sim: measured(_sync(sim), api="embeddings"),
        lambda sim: instrument(None),
        lambda sim: instrument(_sync(sim), session=float("nan")),
        lambda sim: instrument(_sync(sim), provider=float("nan")),
        lambda sim: instrument(_sync(sim), provider=b"\xff\xfe"),
        lambda sim: instrument(_sync(sim), include_usage=None),
        lambda sim: measured(_sync(sim), api=None),
        lambda sim: measured(_sync(sim), include_usage=1),
        lambda sim: measured(None),
    ],
)
def test_bad_arguments_raise_typed_errors(sim, bad):
    with pytest.raises(InvalidArgumentError):
        bad(sim)


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://myres.openai.azure.com/openai", "azure"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.together.xyz/v1", "together"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("http://localhost:11434/v1", "ollama"),
        ("http://127.0.0.1:8000/v1", "openai-compatible"),
        ("http://localhost:8787/v1", "openai-compatible"),
        ("https://llm.internal.example/v1", "openai-compatible"),
        ("not a url", "openai-compatible"),
    ],
)
def test_infer_provider(url, provider):
    assert infer_provider(url) == provider


def test_provider_from_client_base_url():
    client = openai.OpenAI(base_url="https://api.groq.com/openai/v1", api_key="x")
    assert instrument(client).provider == "groq"
    uninstrument(client)
    azure = openai.AzureOpenAI(
        azure_endpoint="https://myres.openai.azure.com", api_key="x", api_version="2024-06-01"
    )
    assert instrument(azure).provider == "azure"
    uninstrument(azure)


def test_failing_metrics_handler_does_not_reach_the_caller(sim, recorder):
    @recorder.session.on("metrics_collected")
    def _boom(ev):
        raise RuntimeError("handler bug")

    client = _sync(sim)
    instrument(client, recorder.session)
    out = list(client.chat.completions.create(model="m1", messages=MSGS, stream=True))
    assert out and len(recorder.llm) == 1


def test_stream_closed_before_first_chunk(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    stream = client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    stream.close()
    (m,) = recorder.llm
    assert m.cancelled and m.ttft == -1.0
    stream = client.responses.create(model="m1", input="hi", stream=True)
    del stream
    gc.collect()
    assert len(recorder.llm) == 2 and recorder.llm[1].cancelled


def test_completed_stream_emits_once(sim, recorder):
    client = _sync(sim)
    instrument(client, recorder.session)
    with client.chat.completions.create(model="m1", messages=MSGS, stream=True) as stream:
        for _ in stream:
            pass
    del stream
    gc.collect()
    (m,) = recorder.llm
    assert not m.cancelled and m.completion_tokens == 30


def test_chat_stream_failing_midway(sim, recorder):
    sim.config.script.append(Reply(fail_after=5))
    client = _sync(sim)
    instrument(client, recorder.session)
    got = []
    t0 = time.perf_counter()
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in client.chat.completions.create(model="m1", messages=MSGS, stream=True):
            got.append((chunk, time.perf_counter() - t0))
    assert len(got) == 6  # role chunk + 5 tokens reached the caller
    (m,) = recorder.llm
    assert m.error == "APIError" and not m.usage_reported and not m.cancelled
    assert 0.25 - EPS <= m.ttft <= got[1][1]


async def test_responses_stream_failed_event(sim, recorder):
    sim.config.script.append(Reply(fail_after=3))
    client = _async(sim)
    instrument(client, recorder.session)
    events = [e async for e in await client.responses.create(model="m1", input="hi", stream=True)]
    assert events[-1].type == "response.failed"  # the SDK passes it on without raising
    (m,) = recorder.llm
    assert m.error == "response failed: server_error"
    assert not m.cancelled


def test_instrumented_client_can_be_garbage_collected(sim):
    import weakref

    client = _sync(sim)
    instrument(client)
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None


def test_usage_in_the_first_token_chunk_is_read(recorder):
    """A server that sends one chunk carrying both the content and the usage."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    chunk = {
        "id": "chatcmpl-one", "object": "chat.completion.chunk", "created": 0, "model": "m1",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi!"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }  # fmt: skip

    class OneChunk(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            body = f"data: {_json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), OneChunk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="k", max_retries=0
        )
        instrument(client, recorder.session)
        stream = client.chat.completions.create(model="m1", messages=MSGS, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hi!"
    finally:
        server.shutdown()
    (m,) = recorder.llm
    assert m.usage_reported and (m.prompt_tokens, m.completion_tokens) == (10, 3)


def test_public_names():
    import callmeter.agent
    import callmeter.integrations.openai as integration

    names = {
        "instrument", "uninstrument", "is_instrumented", "measured", "Instrumentation",
        "infer_provider", "run_turn", "tool", "Tool", "ToolResult", "TurnResult",
    }  # fmt: skip
    assert names <= set(integration.__all__)
    assert all(callable(getattr(integration, n)) for n in names)
    assert callmeter.agent.run_turn is integration.run_turn
    assert callmeter.agent.Tool is integration.Tool
