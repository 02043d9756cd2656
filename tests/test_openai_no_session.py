"""``instrument(client)`` with no current session: the call goes through unmeasured and
the first such call of each client logs one warning that says how to fix it."""

from __future__ import annotations

import logging
import threading

import openai
import pytest

from callmeter import AgentSession
from callmeter.integrations.openai import instrument, measured

MSGS = [{"role": "user", "content": "hi"}]
LOGGER = "callmeter.integrations.openai"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


@pytest.fixture
def fast_sim(sim):
    sim.config.ttft = 0.0
    sim.config.token_delay = 0.0
    return sim


def test_warns_once_per_client(fast_sim, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = openai.OpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    out = client.chat.completions.create(model="m1", messages=MSGS)
    assert out.choices[0].message.content  # the call itself works
    (message,) = _warnings(caplog)
    assert "no current session" in message and "not measured" in message
    assert "with session:" in message and "async with session:" in message
    assert "session=" in message
    assert "OpenAI at http://127.0.0.1" in message  # which client
    # the second unmeasured call, of either API, says nothing
    client.chat.completions.create(model="m1", messages=MSGS)
    list(client.responses.create(model="m1", input="hi", stream=True))
    assert len(_warnings(caplog)) == 1
    # another client warns for itself
    other = openai.OpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    instrument(other)
    other.responses.create(model="m1", input="hi")
    assert len(_warnings(caplog)) == 2
    assert "responses.create()" in _warnings(caplog)[1]


def test_eight_threads_at_once_warn_once(fast_sim, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = openai.OpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait()
            client.chat.completions.create(model="m1", messages=MSGS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(fast_sim.config.requests) == 8
    assert len(_warnings(caplog)) == 1


async def test_async_client_warns_once(fast_sim, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = openai.AsyncOpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    await client.chat.completions.create(model="m1", messages=MSGS)
    stream = await client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    chunks = [c async for c in stream]
    assert len(_warnings(caplog)) == 1
    # unmeasured: the request is exactly the caller's (no stream_options added)
    assert "stream_options" not in fast_sim.config.requests[-1]
    assert chunks[-1].choices
    await client.close()


async def test_no_warning_when_measured(fast_sim, caplog):
    """A current session, a pinned session, or ``measured()`` with a session: no warning."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    session = AgentSession(prices=False)
    client = openai.AsyncOpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    handle = instrument(client)
    async with session:
        await client.chat.completions.create(model="m1", messages=MSGS)
    handle.uninstrument()
    with instrument(client, session):
        await client.chat.completions.create(model="m1", messages=MSGS)  # after close: pinned
    create = measured(client, session)
    await create(model="m1", messages=MSGS)
    assert _warnings(caplog) == []
    assert session.usage.llm_requests == 3
    await client.close()


def test_started_but_not_current_session(fast_sim, caplog):
    """``session.start()`` alone: measured if it makes the session current, else the
    warning; never silent, whichever way ``start()`` behaves."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    session = AgentSession(prices=False)
    client = openai.OpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    session.start()
    try:
        client.chat.completions.create(model="m1", messages=MSGS)
    finally:
        session.close()
    measured_calls = session.usage.llm_requests
    assert (measured_calls, len(_warnings(caplog))) in ((1, 0), (0, 1))


def test_measured_without_session_warns_once(fast_sim, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = openai.OpenAI(base_url=fast_sim.base_url, api_key="sim", max_retries=0)
    create = measured(client, api="responses")
    create(model="m1", input="hi")
    create(model="m1", input="hi")
    assert len(_warnings(caplog)) == 1
