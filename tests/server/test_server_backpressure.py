"""A full write queue answers 429 with Retry-After; a failing store answers 503."""

from __future__ import annotations

import threading
import time

import pytest

from callmeter.server import Limits, create_app
from callmeter.server.writer import QueueFull, Writer
from callmeter.store import Store
from store.factory import make_call

from .conftest import Client, serve_in_thread


@pytest.fixture
def app_server(tmp_path):
    """create_app on a real uvicorn in a thread (loopback), with a 20-record write queue."""
    store = Store(tmp_path / "s.db", prices=False)
    app = create_app(store, limits=Limits(max_queue=20, retry_after=3))
    with serve_in_thread(app) as url:
        yield url, store
    store.close()


def test_full_queue_is_429_with_retry_after(app_server):
    url, store = app_server
    first: list = []
    with store._lock:  # the writer is busy: the first batch waits in the queue
        t = threading.Thread(target=lambda: first.append(Client(url).post_records(
            make_call("q-1"))))  # fmt: skip
        t.start()
        c = Client(url)
        deadline = time.monotonic() + 20
        while c.get("/health").json()["queue_depth"] == 0:  # the first batch is queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = c.post_records(make_call("q-2"))
        assert r is not None and r.status == 429 and r.headers["retry-after"] == "3"
    t.join(10)
    assert first[0].status == 200 and first[0].json()["accepted"] == 14
    assert c.post_records(make_call("q-2")).status == 200  # room again
    assert "callmeter_ingest_queue_full_total" in c.get("/metrics").body.decode()


def test_a_failing_store_is_503(app_server, monkeypatch):
    url, store = app_server

    def broken(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "ingest_batches", broken)
    monkeypatch.setattr(store, "ingest", broken)
    r = Client(url).post_records(make_call("f-1"))
    assert r.status == 503 and "retry-after" in r.headers


def test_writer_commits_batches_together(tmp_path):
    with Store(tmp_path / "w.db", prices=False) as store:
        w = Writer(store, max_queue=80)
        with store._lock:
            futs = [w.submit("t", make_call(f"w-{i}")) for i in range(5)]  # 70 records
            with pytest.raises(QueueFull):
                w.submit("t", make_call("w-5") + make_call("w-6"))
        assert [f.result(10).accepted for f in futs] == [14] * 5
        # the writer may have taken the first batch before the others came: <= 2 commits
        assert w.stats.commits <= 2 and w.stats.batches == 5
        w.stop()


def test_request_threads_decode_while_the_writer_waits_not_while_it_works(tmp_path):
    with Store(tmp_path / "g.db", prices=False) as store:
        w = Writer(store, max_queue=1000)
        t = time.perf_counter()
        w.wait_turn(timeout=5)  # the writer waits for batches: at once
        assert time.perf_counter() - t < 1
        with store._lock:  # the writer takes the batch, then is held in its work
            fut = w.submit("t", make_call("g-1"))
            deadline = time.monotonic() + 10
            while w._turn.is_set():
                assert time.monotonic() < deadline
                time.sleep(0.005)
            t = time.perf_counter()
            w.wait_turn(timeout=0.3)  # not its turn: waits, but never longer than told
            assert 0.25 < time.perf_counter() - t < 5
        assert fut.result(10).accepted == 14
        t = time.perf_counter()
        w.wait_turn(timeout=5)
        assert time.perf_counter() - t < 1

        seen = []  # the turn is given back while the commit is left, before it returns

        def before_commit_hook(*a, before_commit=None, **k):
            def hook():
                before_commit()
                seen.append(w._turn.is_set())

            return real(*a, before_commit=hook, **k)

        real = store.ingest_batches
        store.ingest_batches = before_commit_hook
        assert w.submit("t", make_call("g-2")).result(10).accepted == 14
        assert seen == [True]
        w.stop()
