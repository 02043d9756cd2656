"""The sink contract: Sink, SinkBase and the queue-and-worker QueueSink."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from callmeter import AgentSession
from callmeter.errors import CallmeterError, InvalidArgumentError, SinkClosedError
from callmeter.export import JSONLWriter, QueueSink, Sink, SinkBase
from callmeter.model.events import Record, SessionStartedEvent


# A sink in 10 lines (the example of docs/export.md, "Write your own sink").
class ListSink(QueueSink):
    """Keeps every record in a list, written by the worker thread."""

    def __init__(self, **kw):
        self.records: list[Record] = []
        super().__init__(**kw)

    def write_batch(self, records):
        self.records.extend(records)


class FailingSink(QueueSink):
    """write_batch raises for every batch."""

    def __init__(self, **kw):
        self.calls = 0
        super().__init__(**kw)

    def write_batch(self, records):
        self.calls += 1
        raise OSError("peer hung up")


class BlockedSink(ListSink):
    """write_batch waits until the test releases it."""

    def __init__(self, **kw):
        self.release = threading.Event()
        self.entered = threading.Event()
        super().__init__(**kw)

    def write_batch(self, records):
        self.entered.set()
        self.release.wait(30)
        super().write_batch(records)


class Counter(SinkBase):
    """An in-memory sink: only receive()."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def receive(self, record):
        self.n += 1


def rec(i: int, sid: str = "s") -> SessionStartedEvent:
    return SessionStartedEvent(session_id=sid, seq=i, created_at=1.0)


def emit(session: AgentSession, n: int) -> None:
    for _ in range(n):
        with session.tool_call("t"):
            pass


def test_every_sink_satisfies_the_protocol(tmp_path):
    with ListSink() as a, JSONLWriter(tmp_path / "x.jsonl") as b:
        for sink in (a, b, Counter()):
            assert isinstance(sink, Sink)


def test_a_sink_in_ten_lines_gets_every_record_of_its_sessions():
    sink = ListSink(flush_interval=60)
    sessions = [sink.attach(AgentSession(session_id=f"s{i}")) for i in range(3)]
    for s in sessions:
        with s:
            emit(s, 4)
    assert sink.flush(5)
    assert len(sink.records) == 3 * 6 and sink.dropped == 0
    for s in sessions:
        seqs = [r.seq for r in sink.records if r.session_id == s.session_id]
        assert seqs == list(range(6))
    assert sink.sessions == []  # sessions detach themselves once closed
    sink.close()


def test_flush_waits_for_delivery_and_times_out_honestly():
    sink = BlockedSink(flush_interval=60)
    sink.receive(rec(0))
    assert sink.flush(0.05) is False  # the worker is stuck in write_batch
    assert sink.entered.is_set() and sink.records == []
    sink.receive(rec(1))
    sink.release.set()
    assert sink.flush(5) is True
    assert [r.seq for r in sink.records] == [0, 1]
    assert sink.pending == 0
    sink.close()
    assert sink.flush() is True  # nothing left after close


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", True])
def test_flush_timeout_must_be_a_duration(bad):
    with ListSink() as sink, pytest.raises(InvalidArgumentError, match="timeout"):
        sink.flush(bad)


def test_receive_never_blocks_on_a_stuck_worker():
    sink = BlockedSink(flush_interval=0.01, max_queue=100)
    sink.receive(rec(0))
    assert sink.entered.wait(5)
    for i in range(1000):  # returns although the worker is stuck
        sink.receive(rec(i))
    assert sink.dropped == 1000 - 100 and sink.pending == 100
    sink.release.set()
    sink.close()
    assert len(sink.records) == 101 and sink.dropped == 900


def test_queue_full_drops_exactly_what_did_not_fit(caplog):
    sink = ListSink(flush_interval=60, max_queue=5)
    s = sink.attach(AgentSession())
    with caplog.at_level(logging.WARNING, logger="callmeter.export"):
        s.start()
        emit(s, 20)
    assert sink.dropped == 21 - 5
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1  # rate-limited
    sink.close()
    assert len(sink.records) == 5 and sink.dropped == 16


def test_close_delivers_the_queue_and_counts_what_comes_after():
    sink = ListSink(flush_interval=60)
    s = sink.attach(AgentSession(session_id="late"))
    s.start()
    emit(s, 3)
    sink.close()
    assert len(sink.records) == 4 and sink.dropped == 0
    emit(s, 5)  # the session is still attached: its records are counted, not lost silently
    s.close()
    assert sink.dropped == 6 and len(sink.records) == 4
    emit(s, 2)  # closed and detached: no longer the sink's records
    assert sink.dropped == 6
    sink.close()  # idempotent
    sink.receive(rec(0))
    assert sink.dropped == 7


def test_in_memory_sink_counts_records_after_close():
    sink = Counter()
    s = sink.attach(AgentSession())
    s.start()
    sink.close()
    emit(s, 3)
    assert sink.n == 1 and sink.dropped == 3


def test_attach_after_close_is_refused_with_a_clear_error():
    for sink in (ListSink(), Counter()):
        sink.close()
        with pytest.raises(SinkClosedError, match="is closed: create a new sink") as info:
            sink.attach(AgentSession())
        assert isinstance(info.value, CallmeterError)


@pytest.mark.parametrize("bad", [None, "session", 3, object()])
def test_attach_needs_a_session(bad):
    with ListSink() as sink, pytest.raises(InvalidArgumentError, match="AgentSession"):
        sink.attach(bad)


def test_attach_twice_and_detach():
    with ListSink(flush_interval=60) as sink:
        s = AgentSession()
        assert sink.attach(s) is s and sink.attach(s) is s
        s.start()
        sink.detach(s)
        sink.detach(s)  # no error
        emit(s, 3)
        sink.flush()
        assert len(sink.records) == 1


def test_failing_write_batch_counts_exactly_and_logs_once_per_interval(caplog):
    sink = FailingSink(flush_interval=60, batch_size=7)
    with caplog.at_level(logging.WARNING, logger="callmeter.export"):
        for i in range(50):
            sink.receive(rec(i))
        assert sink.flush(5)
        for i in range(5):  # a second round of failures, still inside the log interval
            sink.receive(rec(i))
        sink.close()
    assert sink.dropped == 55
    assert sink.calls == 8 + 1  # 50 = 7 batches of 7 + 1 of 1, then 1 batch of 5
    logged = [r for r in caplog.records if "write_batch raised OSError" in r.getMessage()]
    assert len(logged) == 1
    assert "peer hung up" in logged[0].getMessage()


def test_the_worker_survives_a_base_exception():
    class Exits(ListSink):
        def write_batch(self, records):
            if records[0].seq == 0:
                raise SystemExit(1)
            super().write_batch(records)

    sink = Exits(flush_interval=60)
    sink.receive(rec(0))
    assert sink.flush(5) and sink.dropped == 1
    sink.receive(rec(1))
    sink.close()
    assert [r.seq for r in sink.records] == [1] and sink.dropped == 1


def test_close_racing_eight_threads_loses_nothing_uncounted():
    for _ in range(5):
        sink = ListSink(flush_interval=0.001, batch_size=50)
        start = threading.Barrier(9)
        per_thread = 3000

        def run(t: int, sink=sink, start=start, per_thread=per_thread) -> None:
            start.wait()
            for i in range(per_thread):
                sink.receive(rec(i, f"t{t}"))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        start.wait()
        time.sleep(0.002)
        sink.close()
        for th in threads:
            th.join()
        delivered = len(sink.records)
        assert delivered + sink.dropped == 8 * per_thread
        assert len({(r.session_id, r.seq) for r in sink.records}) == delivered


def test_eight_threads_of_sessions_every_record_once():
    sink = ListSink(flush_interval=0.005)

    def run(t: int) -> None:
        for k in range(5):
            s = sink.attach(AgentSession(session_id=f"t{t}-{k}"))
            with s:
                emit(s, 40)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sink.close()
    assert sink.dropped == 0 and len(sink.records) == 8 * 5 * 42
    by_session: dict[str, list[int]] = {}
    for r in sink.records:
        by_session.setdefault(r.session_id, []).append(r.seq)
    assert all(sorted(v) == list(range(42)) for v in by_session.values())


async def test_aclose_and_aflush_keep_the_event_loop_running():
    sink = BlockedSink(flush_interval=60)
    sink.receive(rec(0))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    assert await sink.aflush(0.1) is False
    asyncio.get_running_loop().call_later(0.1, sink.release.set)
    await sink.aclose()
    task.cancel()
    assert ticks >= 3  # the loop ran while the worker was stuck
    assert len(sink.records) == 1 and sink.dropped == 0


async def test_async_context_manager_closes():
    async with ListSink() as sink:
        s = sink.attach(AgentSession())
        async with s:
            pass
    assert sink.closed and len(sink.records) == 2


@pytest.mark.parametrize(
    "kw",
    [
        {"max_queue": 0},
        {"max_queue": True},
        {"max_queue": 1.5},
        {"batch_size": 0},
        {"batch_size": None},
        {"flush_interval": 0},
        {"flush_interval": -1},
        {"flush_interval": float("nan")},
        {"flush_interval": float("inf")},
        {"flush_interval": "1"},
    ],
)
def test_bad_queue_arguments(kw):
    with pytest.raises(InvalidArgumentError, match=next(iter(kw))):
        ListSink(**kw)


def test_the_documented_sink_runs():
    """docs/export.md, "Write your own sink": the example is a complete program."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text()
    section = doc.split("## Write your own sink", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.split("class PrintSink")[1].split("\n\n\n")[0].splitlines()) <= 10
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines() == [
        "call_1 0 SessionStartedEvent",
        "call_1 1 MetricsCollectedEvent",
        "call_1 2 CloseEvent",
        "closed",
    ]


def test_close_with_a_hung_worker_gives_up_and_counts_exactly():
    sink = BlockedSink(flush_interval=60, batch_size=10)
    for i in range(25):
        sink.receive(rec(i))
    sink._wake.set()
    assert sink.entered.wait(5)  # the worker is stuck in a batch of 10
    started = time.monotonic()
    sink.close(timeout=0.1)
    assert time.monotonic() - started < 5
    assert sink.dropped == 25 and sink.records == []  # in flight and queued: counted
    sink.receive(rec(99))
    assert sink.dropped == 26
    sink.release.set()  # the peer answers after all: its batch is written
    sink._thread.join(5)
    assert not sink._thread.is_alive()
    assert len(sink.records) == 10 and sink.dropped == 16  # written or counted, never both


def test_close_with_a_hung_worker_that_then_fails_counts_once():
    class HungThenFails(BlockedSink):
        def write_batch(self, records):
            self.entered.set()
            self.release.wait(30)
            raise OSError("reset")

    sink = HungThenFails(flush_interval=60)
    sink.receive(rec(0))
    sink._wake.set()
    assert sink.entered.wait(5)
    sink.close(timeout=0.05)
    assert sink.dropped == 1
    sink.release.set()
    sink._thread.join(5)
    assert sink.dropped == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", True])
def test_close_timeout_must_be_a_duration(bad):
    sink = ListSink()
    with pytest.raises(InvalidArgumentError, match="timeout"):
        sink.close(bad)
    sink.close()
