"""Streams of an instrumented client: abandoned, closed, cut off by their session.

Every stream ends in exactly one ``LLMMetrics``, recorded while its session is open, and
leaves nothing in the logs. The real openai SDK against callmeter-sim on loopback;
``gc.collect()`` drops abandoned streams deterministically.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import openai
import pytest

from callmeter import AgentSession, MetricsCollectedEvent, metrics
from callmeter.integrations.openai import instrument

MSGS = [{"role": "user", "content": "hi"}]
N_STREAMS = 30


def _fast(sim: object) -> None:
    sim.config.ttft = 0.0  # type: ignore[attr-defined]
    sim.config.token_delay = 0.001  # type: ignore[attr-defined]


class Watched:
    """A session recording each LLMMetrics with whether the session was closed then."""

    def __init__(self, session: AgentSession | None = None) -> None:
        self.session = session or AgentSession(prices=False)
        self.seen: list[tuple[metrics.LLMMetrics, bool]] = []
        self.session.on("metrics_collected", self._on)

    def _on(self, ev: MetricsCollectedEvent) -> None:
        if isinstance(ev.metrics, metrics.LLMMetrics):
            self.seen.append((ev.metrics, self.session.closed))

    @property
    def llm(self) -> list[metrics.LLMMetrics]:
        return [m for m, _ in self.seen]

    @property
    def inside(self) -> list[metrics.LLMMetrics]:
        """Metrics recorded while the session was open."""
        return [m for m, closed in self.seen if not closed]


ClosingSession = AgentSession  # close() emits ``closing`` before its duration is fixed


class NoClosingSession(AgentSession):
    """A session that never emits ``closing`` (as an older callmeter): the fallback path."""

    def emit(self, event: str, *args: object) -> None:
        if event != "closing":
            super().emit(event, *args)


def _open_sync(client: openai.OpenAI, api: str) -> object:
    if api == "chat":
        return client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    return client.responses.create(model="m1", input="hi", stream=True)


async def _open_async(client: openai.AsyncOpenAI, api: str) -> object:
    if api == "chat":
        return await client.chat.completions.create(model="m1", messages=MSGS, stream=True)
    return await client.responses.create(model="m1", input="hi", stream=True)


def _abandon_sync(client: openai.OpenAI, api: str) -> None:
    stream = _open_sync(client, api)
    for i, _ in enumerate(stream):  # type: ignore[call-overload]
        if i == 5:  # past the first token of either API
            break  # and drop the stream


async def _abandon_async(client: openai.AsyncOpenAI, api: str) -> None:
    stream = await _open_async(client, api)
    i = 0
    async for _ in stream:  # type: ignore[attr-defined]
        i += 1
        if i == 5:  # past the first token of either API
            break  # and drop the stream


async def _settle() -> None:
    """Let the tasks asyncio started to finalize dropped generators run to their end, then
    collect them (a task whose exception nobody retrieved reports it when freed)."""
    me = asyncio.current_task()
    for _ in range(10_000):
        if not [t for t in asyncio.all_tasks() if t is not me]:
            break
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)


class Noise:
    """Everything logged at WARNING or above, and every call of the running loop's
    exception handler (where asyncio reports 'Task exception was never retrieved')."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.handled: list[str] = []
        caplog.set_level(logging.DEBUG)

    def watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.handled.append(str(ctx["message"])))

    def __call__(self) -> list[str]:
        records = self.caplog.records
        logged = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.WARNING]
        never = [r.getMessage() for r in records if "never retrieved" in r.getMessage()]
        return self.handled + logged + never


@pytest.fixture
def noise(caplog):
    return Noise(caplog)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_abandoned_async_and_sync_streams(sim, noise, api):
    """Issue 14: 30 async and 30 sync streams abandoned mid-way; each one cancelled metric
    inside the session, and no 'Task exception was never retrieved'."""
    noise.watch_loop()
    _fast(sim)
    aclient = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(aclient)
    instrument(client)
    watched = Watched()
    async with watched.session:
        for _ in range(N_STREAMS):
            await _abandon_async(aclient, api)
        for _ in range(N_STREAMS):
            await asyncio.to_thread(_abandon_sync, client, api)
        gc.collect()
        await _settle()
    await _settle()
    await aclient.close()
    client.close()
    await _settle()
    assert len(watched.llm) == 2 * N_STREAMS
    assert len(watched.inside) == 2 * N_STREAMS
    assert all(m.cancelled and m.error is None for m in watched.llm)
    assert all(m.ttft > 0 for m in watched.llm)  # each got its first token before the break
    assert noise() == []


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_abandoned_before_the_first_chunk(sim, noise, api):
    noise.watch_loop()
    _fast(sim)
    aclient = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(aclient)
    watched = Watched()
    async with watched.session:
        for _ in range(5):
            await _open_async(aclient, api)  # dropped unread
        gc.collect()
        await _settle()
    await aclient.close()
    await _settle()
    assert [(m.cancelled, m.ttft) for m in watched.inside] == [(True, -1.0)] * 5
    assert len(watched.llm) == 5
    assert noise() == []


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_unfinished_stream_ends_when_its_session_closes(sim, noise, api):
    """A stream still held, unfinished, when the session closes is emitted as cancelled
    from the session's ``closing`` event: inside the session, ending at its last chunk."""
    noise.watch_loop()
    _fast(sim)
    aclient = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(aclient)
    watched = Watched(ClosingSession(prices=False))
    held = []
    async with watched.session:
        stream = await _open_async(aclient, api)
        async for _ in stream:  # type: ignore[attr-defined]
            break
        held.append(stream)
        assert watched.llm == []
    (m,) = watched.inside
    assert m.cancelled and m.error is None
    assert watched.session.usage.llm_requests == 1
    # consuming it afterwards emits nothing more
    async for _ in held[0]:
        pass
    await held[0].close()
    assert len(watched.llm) == 1
    await aclient.close()
    await _settle()
    assert noise() == []


def test_unfinished_stream_without_closing_event(sim):
    """Fallback for a session that does not emit ``closing``: the stream ends from the
    ``close`` handler: once, cancelled, counted in the session's usage."""
    _fast(sim)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    watched = Watched(NoClosingSession(prices=False))
    with watched.session:
        stream = _open_sync(client, "chat")
        next(iter(stream))  # type: ignore[call-overload]
    (m,) = watched.llm
    assert m.cancelled
    assert watched.session.usage.llm_requests == 1
    list(stream)  # type: ignore[call-overload]
    stream.close()  # type: ignore[attr-defined]
    del stream
    gc.collect()
    assert len(watched.llm) == 1
    client.close()


def test_eight_threads_share_one_session(sim):
    """8 threads stream through one client into one session at once: half finish, half
    abandon; every stream is exactly one metric with the right outcome."""
    _fast(sim)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    watched = Watched(ClosingSession(prices=False))
    instrument(client, watched.session)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for j in range(6):
                stream = _open_sync(client, "chat" if j % 2 else "responses")
                if (n + j) % 2:
                    list(stream)  # type: ignore[call-overload]
                else:
                    for _ in stream:  # type: ignore[attr-defined]
                        break
        except BaseException as exc:
            errors.append(exc)

    with watched.session:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(watched.inside) == len(watched.llm) == 48
    assert sum(m.cancelled for m in watched.llm) == 24
    assert all(m.error is None for m in watched.llm)
    assert sum(m.usage_reported for m in watched.llm) == 24  # the finished ones
    client.close()


def test_closing_hook_as_a_method(sim):
    """A session offering ``on_closing(callback)`` instead of a ``closing`` event."""
    _fast(sim)

    class HookSession(AgentSession):
        def __init__(self) -> None:
            super().__init__(prices=False)
            self.closing_hooks: list = []

        def on_closing(self, callback) -> None:
            self.closing_hooks.append(callback)

        def close(self, error: str | None = None) -> None:
            if not self.closed:
                for callback in self.closing_hooks:
                    callback()
            super().close(error)

    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    watched = Watched(HookSession())
    with watched.session:
        stream = _open_sync(client, "responses")
        next(iter(stream))  # type: ignore[call-overload]
    assert len(watched.session.closing_hooks) == 1
    (m,) = watched.inside
    assert m.cancelled and len(watched.llm) == 1
    stream.close()  # type: ignore[attr-defined]
    client.close()


def test_unfinished_stream_reaches_the_sinks_before_the_close_record(sim, tmp_path):
    """With a real AgentSession and a JSONL sink: the unfinished stream's cancelled metric
    is a record of the call, numbered before its ``close`` record."""
    from callmeter.export import JSONLWriter
    from callmeter.records import CloseEvent, RecordReader
    from callmeter.records import MetricsCollectedEvent as Rec

    _fast(sim)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client)
    path = tmp_path / "calls.jsonl"
    held = []
    with JSONLWriter(path) as writer:
        session = writer.attach(AgentSession(prices=False))
        with session:
            stream = _open_sync(client, "chat")
            next(iter(stream))  # type: ignore[call-overload]
            held.append(stream)
    records = list(RecordReader(path))
    assert isinstance(records[-1], CloseEvent)
    llm = [r for r in records if isinstance(r, Rec) and r.metrics.type == "llm_metrics"]
    assert len(llm) == 1 and llm[0].metrics.cancelled and llm[0].seq < records[-1].seq
    assert [r.seq for r in records] == list(range(len(records)))
