"""Completed, cancelled, failed: the same three outcomes from every path of the OpenAI
integration, against callmeter-sim (the real SDK; KeyboardInterrupt comes from a real
httpx2 transport wrapped around the SDK's default one)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx2
import openai
import pytest

from callmeter import metrics
from callmeter.integrations.openai import instrument
from callmeter.integrations.openai.outcome import describe
from callmeter.sim import Reply

MSGS = [{"role": "user", "content": "hi"}]


def _outcome(m: metrics.LLMMetrics) -> tuple[bool, str | None]:
    return (m.cancelled, m.error)


def _create_sync(client: openai.OpenAI, api: str, stream: bool) -> object:
    if api == "chat":
        return client.chat.completions.create(model="m1", messages=MSGS, stream=stream)
    return client.responses.create(model="m1", input="hi", stream=stream)


async def _create_async(client: openai.AsyncOpenAI, api: str, stream: bool) -> object:
    if api == "chat":
        return await client.chat.completions.create(model="m1", messages=MSGS, stream=stream)
    return await client.responses.create(model="m1", input="hi", stream=stream)


async def _consume(client: openai.AsyncOpenAI, api: str, stream: bool) -> None:
    result = await _create_async(client, api, stream)
    if stream:
        async for _ in result:  # type: ignore[attr-defined]
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- completed ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_completed(sim, recorder, api, stream):
    sim.config.ttft = 0.0
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client, recorder.session)
    await _consume(client, api, stream)
    (m,) = recorder.llm
    assert _outcome(m) == (False, None)
    assert m.usage_reported and m.completion_tokens == 30
    await client.close()


# --- failed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "exc_type", "error"),
    [
        ("429", openai.RateLimitError, "RateLimitError: HTTP 429"),
        ("500", openai.InternalServerError, "InternalServerError: HTTP 500"),
        ("timeout", openai.APITimeoutError, "APITimeoutError"),
        ("refused", openai.APIConnectionError, "APIConnectionError"),
    ],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_failed(sim, recorder, api, stream, case, exc_type, error):
    base_url, timeout = sim.base_url, 5.0
    if case in ("429", "500"):
        sim.config.script.append(Reply(status=int(case), ttft=0.0))
    elif case == "timeout":
        sim.config.script.append(Reply(ttft=2.0))
        timeout = 0.2
    else:
        base_url = f"http://127.0.0.1:{_free_port()}/v1"
    client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=timeout)
    instrument(client, recorder.session)
    with pytest.raises(exc_type):
        await _consume(client, api, stream)
    (m,) = recorder.llm
    assert _outcome(m) == (False, error)
    assert recorder.session.usage.llm_errors == 1
    await client.close()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_failed_mid_stream(sim, recorder, api):
    """Chat: the SDK raises APIError for the error payload. Responses: the server's
    ``response.failed`` event; a caller who stops right after it does not turn the
    failure into a cancellation."""
    sim.config.ttft = 0.0
    sim.config.script.append(Reply(fail_after=3))
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client, recorder.session)
    stream = _create_sync(client, api, True)
    if api == "chat":
        with pytest.raises(openai.APIError):
            list(stream)  # type: ignore[call-overload]
        expected = (False, "APIError")
    else:
        with stream:  # type: ignore[attr-defined]
            for event in stream:  # type: ignore[attr-defined]
                if event.type == "response.failed":
                    break
        expected = (False, "response failed: server_error")
    (m,) = recorder.llm
    assert _outcome(m) == expected
    client.close()


def test_describe():
    assert describe(ValueError("x")) == "ValueError"
    exc = ValueError()
    exc.status_code = 503  # type: ignore[attr-defined]
    assert describe(exc) == "ValueError: HTTP 503"
    exc.status_code = "503"  # type: ignore[attr-defined]  # not an int: no detail
    assert describe(exc) == "ValueError"


# --- cancelled ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_cancelled_task(sim, recorder, api, stream):
    """asyncio.CancelledError while waiting for the response or in the middle of the stream."""
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client, recorder.session)
    first = asyncio.Event()

    async def consume() -> None:
        result = await _create_async(client, api, stream)
        async for _ in result:  # type: ignore[attr-defined]
            first.set()

    task = asyncio.create_task(consume())
    if stream:
        await first.wait()  # cancelled mid-stream
    else:
        while not sim.config.requests:  # the server has the request; the task waits for it
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (m,) = recorder.llm
    assert _outcome(m) == (True, None)
    await client.close()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_closed_stream(sim, recorder, api):
    """A stream closed (``with`` exit) before its end: cancelled, at its last chunk."""
    sim.config.ttft = 0.0
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client, recorder.session)
    with _create_sync(client, api, True) as stream:  # type: ignore[attr-defined]
        for i, _ in enumerate(stream):
            if i == 5:
                break
    (m,) = recorder.llm
    assert _outcome(m) == (True, None)
    client.close()


class _Interrupting(httpx2.BaseTransport):
    """The SDK's own transport, but KeyboardInterrupt is raised after ``after`` parts of
    the response body (``after=None``: as the response arrives, inside ``create()``)."""

    def __init__(self, after: int | None) -> None:
        self.inner = httpx2.HTTPTransport()
        self.after = after

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        if self.after is None:
            response.close()
            raise KeyboardInterrupt
        after, body = self.after, response.stream

        class Body(httpx2.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for i, part in enumerate(body):  # type: ignore[arg-type]
                    if i == after:
                        raise KeyboardInterrupt
                    yield part

            def close(self) -> None:
                body.close()  # type: ignore[attr-defined]

        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=Body(),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("after", [None, 3], ids=["in-create", "mid-stream"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_keyboard_interrupt(sim, recorder, api, after):
    sim.config.ttft = 0.0
    http = httpx2.Client(transport=_Interrupting(after))
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0, http_client=http)
    instrument(client, recorder.session)
    with pytest.raises(KeyboardInterrupt):
        list(_create_sync(client, api, True))  # type: ignore[call-overload]
    (m,) = recorder.llm
    assert _outcome(m) == (True, None)
    client.close()
