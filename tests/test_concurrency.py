"""Many threads emitting into one session and feeding one collector: totals stay exact."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import pytest

from callmeter import AgentSession, metrics

T0 = 1_790_000_000.0
THREADS = 8
PER_THREAD = 20_000


@pytest.fixture
def busy_switching():
    """Switch threads often, so races in the code under test show up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def _events(thread: int) -> list:
    md = metrics.Metadata(model_name=f"m{thread % 2}", model_provider="p")
    out: list = []
    for i in range(PER_THREAD):
        if i % 4 == 3:
            out.append(metrics.ToolMetrics(timestamp=T0 + i, started_at=T0 + i, duration=0.25,
                                           tool_name=f"t{thread}"))  # fmt: skip
        else:
            out.append(metrics.LLMMetrics(timestamp=T0 + i, started_at=T0 + i, duration=0.5,
                                          prompt_tokens=3, completion_tokens=1 + thread,
                                          metadata=md))  # fmt: skip
    return out


EVENTS = [_events(t) for t in range(THREADS)]  # built once, reused by every run


def _run_once() -> None:
    session = AgentSession()
    usage = metrics.UsageCollector(keep_metrics=False)
    seqs: list[int] = []

    def on(ev):
        usage.collect(ev.metrics)
        seqs.append(ev.seq)

    session.on("metrics_collected", on)
    barrier = threading.Barrier(THREADS)

    def work(events):
        barrier.wait()
        emit = session.emit_metrics
        for m in events:
            emit(m)

    threads = [threading.Thread(target=work, args=(ev,)) for ev in EVENTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    llm_per_thread = PER_THREAD * 3 // 4
    completion = sum(llm_per_thread * (1 + t) for t in range(THREADS))
    for u in (usage.get_summary(), session.usage):
        assert u.llm_requests == THREADS * llm_per_thread
        assert u.llm_prompt_tokens == 3 * THREADS * llm_per_thread
        assert u.llm_completion_tokens == completion
        assert u.tool_calls == THREADS * PER_THREAD // 4
        assert u.llm_duration == 0.5 * THREADS * llm_per_thread
        assert {k: v.calls for k, v in u.by_tool.items()} == {
            f"t{t}": PER_THREAD // 4 for t in range(THREADS)
        }
    assert sorted(seqs) == list(range(THREADS * PER_THREAD))  # unique and gap-free
    assert session.rejected_events == 0 and usage.rejected_events == 0


def test_8_threads_into_one_session_and_one_collector_exact_10_runs():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # 50x the default: races show up within a run
    try:
        for _ in range(10):
            _run_once()
    finally:
        sys.setswitchinterval(old)


def test_collector_fed_directly_by_threads_while_summaries_are_read(busy_switching):
    usage = metrics.UsageCollector(max_metrics=1000)
    stop = threading.Event()
    errors: list = []

    def reader():
        while not stop.is_set():
            try:
                s = usage.get_summary()
                assert s.llm_requests + s.tool_calls <= THREADS * 5000
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    def feed(events):
        for m in events[:5000]:
            usage.collect(m)

    r = threading.Thread(target=reader)
    r.start()
    threads = [threading.Thread(target=feed, args=(ev,)) for ev in EVENTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    s = usage.get_summary()
    assert errors == []
    assert s.llm_requests + s.tool_calls == THREADS * 5000
    assert usage.dropped_metrics == THREADS * 5000 - 1000 and len(usage.metrics) == 1000


async def test_async_handlers_receive_events_emitted_from_worker_threads():
    session = AgentSession()
    got: list = []

    async def on(ev):
        assert threading.current_thread() is threading.main_thread()
        await asyncio.sleep(0)
        got.append(ev.metrics.tool_name)

    session.on("metrics_collected", on)
    async with session:

        def tool(i):
            with session.tool_call(f"t{i}"):
                pass

        await asyncio.gather(*(asyncio.to_thread(tool, i) for i in range(20)))
    assert sorted(got) == sorted(f"t{i}" for i in range(20))
    assert session.dropped_events == 0


async def test_async_handler_registered_before_the_loop_learns_it_on_start():
    session = AgentSession()
    got: list = []

    async def on(ev):
        got.append(ev.seq)

    # registered outside any loop: the session learns its loop when entered
    def register():
        session.on("metrics_collected", on)

    await asyncio.to_thread(register)
    async with session:
        t = threading.Thread(target=lambda: [session.emit_metrics(_events(0)[0]) for _ in range(5)])
        t.start()
        t.join()
    assert len(got) == 5


def test_sessions_seq_unique_under_threads_for_every_event_kind(busy_switching):
    session = AgentSession()
    seqs: list[int] = []
    for name in ("session_started", "metrics_collected", "close"):
        session.on(name, lambda ev: seqs.append(ev.seq))
    session.start()

    def work():
        for _ in range(500):
            with session.tool_call("t"):
                pass

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    session.close()
    assert sorted(seqs) == list(range(THREADS * 500 + 2))


def test_threads_register_and_unregister_handlers_while_others_emit(busy_switching):
    session = AgentSession()
    total: list = []
    session.on("metrics_collected", lambda ev: total.append(1))
    errors: list = []
    stop = threading.Event()

    def churn(k):
        try:
            for i in range(2000):
                if stop.is_set():
                    break
                fn = lambda ev: None  # noqa: E731
                session.on("metrics_collected", fn)
                if i % 50 == 0:
                    session.once("metrics_collected", lambda ev: None)
                session.off("metrics_collected", fn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def emit():
        for m in EVENTS[0][:3000]:
            session.emit_metrics(m)

    churners = [threading.Thread(target=churn, args=(k,)) for k in range(THREADS)]
    emitters = [threading.Thread(target=emit) for _ in range(4)]
    for t in churners + emitters:
        t.start()
    for t in emitters:
        t.join()
    stop.set()
    for t in churners:
        t.join()
    assert errors == []
    assert len(total) == 4 * 3000  # the permanent handler saw every event
    # every `on` was matched by an `off`; only unfired `once` handlers may remain
    remaining = session._handlers["metrics_collected"]
    assert all(once for _, _, once in remaining[1:])


def test_once_handler_runs_exactly_once_under_threads(busy_switching):
    session = AgentSession()
    calls: list = []
    session.once("metrics_collected", lambda ev: calls.append(ev.seq))

    def emit():
        for m in EVENTS[1][:200]:
            session.emit_metrics(m)

    threads = [threading.Thread(target=emit) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_handler_that_unregisters_itself():
    session = AgentSession()
    calls: list = []

    def selfish(ev):
        calls.append("selfish")
        session.off("metrics_collected", selfish)

    session.on("metrics_collected", selfish)
    session.on("metrics_collected", lambda ev: calls.append("other"))
    for m in EVENTS[0][:3]:
        session.emit_metrics(m)
    assert calls == ["selfish", "other", "other", "other"]


def test_emit_after_close_is_recorded_and_never_raises(caplog):
    session = AgentSession()
    seen: list = []
    session.on("metrics_collected", lambda ev: seen.append(ev.seq))
    with session:
        session.emit_metrics(EVENTS[0][0])
    with caplog.at_level(logging.WARNING):
        session.emit_metrics(EVENTS[0][0])  # a late metric of the closed call
        session.emit_metrics(None)
    assert session.closed and session.usage.llm_requests == 2
    assert seen == [1, 3]  # 0 was session_started, 2 the close
    assert session.rejected_events == 1
