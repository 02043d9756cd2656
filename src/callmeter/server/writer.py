"""The single writer: one thread commits queued batches together (group commit).

Request handlers :meth:`Writer.submit` a batch and await its future; the writer takes every
batch waiting (up to ``max_group`` records), stores them in one transaction, and resolves
each future with its own :class:`~callmeter.store.IngestResult` once the commit returned.
The queue is bounded in records: :meth:`submit` raises :class:`QueueFull` beyond it.

The server is one interpreter: request threads decoding bodies and the writer share one
lock (the GIL). Request threads call :meth:`Writer.wait_turn` before decoding a body: it
returns at once while the writer waits for batches or for its commit to reach the disk
(the GIL is free then), and otherwise after the writer's Python work or ``timeout``. So
decoding the next batches overlaps the commit instead of interrupting the writer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..model.events import Record
from ..store import IngestResult, Store
from ..store.store import Batch

logger = logging.getLogger("callmeter.server")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class QueueFull(Exception):
    """The write queue holds its maximum of records: retry later."""


class WriterStopped(Exception):
    """The writer is stopping: no new batches."""


@dataclass(slots=True)
class IngestStats:
    """Counters of the server's ingest, for ``/metrics``."""

    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    refused_full: int = 0
    commit_failures: int = 0
    commits: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def observe(self, seconds: float) -> None:
        """Count one batch's time from submit to commit."""
        self.latency_count += 1
        self.latency_sum += seconds
        for i, b in enumerate(LATENCY_BUCKETS):
            if seconds <= b:
                self.latency_buckets[i] += 1


@dataclass(slots=True)
class _Item:
    tenant: str
    records: Sequence[Record]
    bodies: Sequence[bytes] | None
    future: Future[IngestResult]
    t0: float


def _batch(item: _Item) -> Batch:
    if item.bodies is None:
        return (item.tenant, item.records)
    return (item.tenant, item.records, item.bodies)


class Writer:
    """Commits batches on one thread; bounded by ``max_queue`` records."""

    def __init__(self, store: Store, *, max_queue: int = 200_000, max_group: int = 50_000) -> None:
        self.store = store
        self.max_queue = max_queue
        self.max_group = max_group
        self.stats = IngestStats()
        self._items: deque[_Item] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._turn = threading.Event()  # set: request threads may decode now
        self._turn.set()
        self._thread = threading.Thread(target=self._run, name="callmeter-writer", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Records waiting to be committed."""
        return self._queued

    def submit(
        self, tenant: str, records: Sequence[Record], bodies: Sequence[bytes] | None = None
    ) -> Future[IngestResult]:
        """Queue a batch (with each record's JSON when known, see
        :meth:`~callmeter.store.Store.ingest_batches`); the future resolves after its commit
        (or raises its error)."""
        fut: Future[IngestResult] = Future()
        n = len(records)
        with self._cond:
            if self._stop:
                raise WriterStopped("the server is shutting down")
            if self._queued and self._queued + n > self.max_queue:
                self.stats.refused_full += 1
                raise QueueFull(f"the write queue holds {self._queued} records")
            self._items.append(_Item(tenant, records, bodies, fut, time.perf_counter()))
            self._queued += n
            self._cond.notify()
        return fut

    def wait_turn(self, timeout: float = 0.5) -> None:
        """Block until the writer waits (for batches or for the disk), at most ``timeout``."""
        self._turn.wait(timeout)

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._items:
                if self._stop:
                    return None
                self._cond.wait()
            group: list[_Item] = []
            n = 0
            while self._items and (not group or n + len(self._items[0].records) <= self.max_group):
                item = self._items.popleft()
                if not item.future.set_running_or_notify_cancel():
                    # cancelled (its request is gone): not stored, since nobody would be
                    # told; a running future cannot be cancelled any more
                    self._queued -= len(item.records)
                    continue
                group.append(item)
                n += len(item.records)
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            if not group:  # every batch taken was cancelled
                continue
            self._turn.clear()
            try:
                results: list[IngestResult | BaseException] = list(
                    self.store.ingest_batches(
                        [_batch(i) for i in group], before_commit=self._turn.set
                    )
                )
                self.stats.commits += 1
            except Exception as exc:
                if len(group) == 1:
                    logger.warning("callmeter: committing a batch failed: %s", exc)
                    self.stats.commit_failures += 1
                    results = [exc]
                else:  # commit one by one, so one failing batch fails alone
                    results = [self._one(item) for item in group]
            self._turn.set()
            now = time.perf_counter()
            self._done(group)
            for item, res in zip(group, results, strict=True):
                if isinstance(res, BaseException):
                    item.future.set_exception(res)
                    continue
                self.stats.batches += 1
                self.stats.accepted += res.accepted
                self.stats.duplicates += res.duplicates
                self.stats.observe(now - item.t0)
                item.future.set_result(res)

    def _one(self, item: _Item) -> IngestResult | BaseException:
        try:
            res = self.store.ingest_batches([_batch(item)])[0]
        except Exception as exc:
            logger.warning("callmeter: committing a batch failed: %s", exc)
            self.stats.commit_failures += 1
            return exc
        self.stats.commits += 1
        return res

    def _done(self, group: list[_Item]) -> None:
        with self._cond:
            self._queued -= sum(len(i.records) for i in group)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
