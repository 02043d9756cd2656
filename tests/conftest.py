"""Shared fixtures: callmeter-sim on loopback, and a session whose metrics are kept."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from callmeter import AgentSession, MetricsCollectedEvent, metrics

TTFT = 0.25
TOKEN_DELAY = 0.01
TOKENS = 30


def _warm_up(base_url: str) -> None:
    """First use of each SDK code path builds pydantic models (hundreds of ms); do it once
    so that timing assertions measure the network and not the SDK's warm-up."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)
    msgs = [{"role": "user", "content": "warm up"}]
    client.chat.completions.create(model="warm", messages=msgs)
    list(client.chat.completions.create(model="warm", messages=msgs, stream=True))
    client.responses.create(model="warm", input="warm up")
    list(client.responses.create(model="warm", input="warm up", stream=True))

    async def warm_async() -> None:
        aclient = openai.AsyncOpenAI(base_url=base_url, api_key="sim", max_retries=0)
        await aclient.chat.completions.create(model="warm", messages=msgs)
        async for _ in await aclient.chat.completions.create(
            model="warm", messages=msgs, stream=True
        ):
            pass
        async for _ in await aclient.responses.create(model="warm", input="w", stream=True):
            pass
        await aclient.close()

    asyncio.run(warm_async())
    client.close()


@pytest.fixture(scope="session")
def sim_server() -> Iterator[object]:
    """One simulator for the whole test run, on a free port of 127.0.0.1."""
    from callmeter.sim import SimConfig, SimServer

    server = SimServer(SimConfig(ttft=0.0, token_delay=0.0)).start()
    _warm_up(server.base_url)
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: object) -> object:
    """The simulator, reset to 250 ms to first token and 30 tokens at 10 ms each."""
    config = sim_server.config  # type: ignore[attr-defined]
    config.ttft = TTFT
    config.token_delay = TOKEN_DELAY
    config.tokens = TOKENS
    config.jitter = 0.0
    config.script.clear()
    config.rules.clear()
    config.requests.clear()
    # collect garbage left by earlier tests now, not during a timed request
    gc.collect()
    return sim_server


@dataclass
class Recorder:
    """A session plus every metrics event it emitted."""

    session: AgentSession
    events: list[metrics.AgentMetrics] = field(default_factory=list)

    def of_type(self, kind: type) -> list:
        return [m for m in self.events if isinstance(m, kind)]

    @property
    def llm(self) -> list[metrics.LLMMetrics]:
        return self.of_type(metrics.LLMMetrics)

    @property
    def tools(self) -> list[metrics.ToolMetrics]:
        return self.of_type(metrics.ToolMetrics)


@pytest.fixture
def recorder() -> Recorder:
    """An AgentSession that records its metrics events in ``recorder.events``."""
    rec = Recorder(AgentSession(agent_name="test"))

    @rec.session.on("metrics_collected")
    def _on(ev: MetricsCollectedEvent) -> None:
        rec.events.append(ev.metrics)

    return rec


@pytest.fixture(autouse=True)
def _no_current_session():
    """Each test starts with no current session: ``session.start()`` makes a session current
    in its context, and a test that never closes one must not leak it into the next."""
    from callmeter.session.context import current_session_var

    token = current_session_var.set(None)
    yield
    with contextlib.suppress(ValueError):  # reset in another context than set
        current_session_var.reset(token)
