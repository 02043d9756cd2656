"""The sink contract, and the base every sink that does I/O is built on.

A sink consumes records (:mod:`callmeter.records`): it is attached to sessions, receives
each of their records, and is flushed and closed. :class:`Sink` is the protocol;
:class:`SinkBase` does the attach/detach bookkeeping, so a sink that aggregates in memory
only implements :meth:`~SinkBase.receive`; :class:`QueueSink` adds a bounded queue drained
by one worker thread, so a sink that writes files or talks to a network only implements
:meth:`~QueueSink.write_batch`, and the agent's event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from .._ratelimit import RateLimitedLog
from ..errors import InvalidArgumentError, SinkClosedError
from ..model.events import RECORD_EVENTS, CloseEvent, Record
from ..session.agent_session import AgentSession

logger = logging.getLogger("callmeter.export")

__all__ = ["QueueSink", "Sink", "SinkBase"]


@runtime_checkable
class Sink(Protocol):
    """What callmeter needs of a sink."""

    def attach(self, session: AgentSession) -> AgentSession:
        """Receive ``session``'s records from now on; returns the session."""
        ...

    def detach(self, session: AgentSession) -> None:
        """Stop receiving ``session``'s records."""
        ...

    def receive(self, record: Record) -> None:
        """Take one record. Called on the emitting thread: must be quick, must not raise."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything received so far; True when it all was (False on timeout)."""
        ...

    def close(self) -> None:
        """Deliver what was received, release resources. Idempotent. Records that arrive
        afterwards are counted as dropped."""
        ...

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        ...


class SinkBase:
    """Attach/detach bookkeeping shared by every sink.

    ``attach(session)`` subscribes :meth:`receive` to the session's record events
    (``session_started``, ``metrics_collected``, ``latency_budget_exceeded``, ``close``);
    a session detaches itself after its ``close`` record. Attaching to a closed sink raises
    :class:`~callmeter.errors.SinkClosedError`; sessions still attached when the sink closes
    stay attached until they close, and their records are counted in :attr:`dropped`.
    :attr:`dropped` counts every record this sink could not deliver; subclasses add to it
    with :meth:`_drop`, which also logs (at most once per 10 s per reason).
    """

    def __init__(self) -> None:
        self._sessions: dict[int, tuple[weakref.ref[AgentSession], Callable[[Any], None]]] = {}
        self._attach_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._log = RateLimitedLog(logger)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` started."""
        return self._closed

    @property
    def dropped(self) -> int:
        """Records received but not delivered (queue full, write failed, sink closed)."""
        return self._dropped

    def _drop(self, n: int, why: str, key: str | None = None) -> None:
        """Count ``n`` undelivered records and log why. Logging is rate-limited per ``key``
        (default: ``why``), so pass a fixed key when ``why`` varies (an error message)."""
        if n <= 0:
            return
        with self._drop_lock:
            self._dropped += n
            total = self._dropped
        self._log.log(
            why if key is None else key, logging.WARNING,
            "callmeter: %r dropped %d record(s): %s (%d dropped in all)", self, n, why, total,
        )  # fmt: skip

    def _deliver(self, record: Record) -> None:
        """What an attached session's handler calls: :meth:`receive`, or count the record
        as dropped once the sink is closed."""
        if self._closed:
            self._drop(1, "the sink is closed", "closed")
        else:
            self.receive(record)

    def receive(self, record: Record) -> None:
        """Take one record (subclasses implement this)."""
        raise NotImplementedError

    def attach(self, session: AgentSession) -> AgentSession:
        """Receive ``session``'s records from now on; returns the session."""
        if not isinstance(session, AgentSession):
            raise InvalidArgumentError(f"attach() needs an AgentSession, got {session!r}")
        with self._attach_lock:
            if self._closed:
                raise SinkClosedError(f"{self!r} is closed: create a new sink to attach sessions")
            key = id(session)
            if key in self._sessions:
                return session
            # a QueueSink's receive() counts late records itself: skip a call per record
            deliver = self.receive if isinstance(self, QueueSink) else self._deliver

            def handler(record: Any) -> None:
                deliver(record)
                if record.__class__ is CloseEvent:
                    self.detach(session)

            self._sessions[key] = (weakref.ref(session), handler)
            for name in RECORD_EVENTS:
                session.on(name, handler)
        return session

    def detach(self, session: AgentSession) -> None:
        """Stop receiving ``session``'s records (no error if it was not attached)."""
        with self._attach_lock:
            entry = self._sessions.pop(id(session), None)
        if entry is not None:
            for name in RECORD_EVENTS:
                session.off(name, entry[1])

    def _detach_all(self) -> None:
        with self._attach_lock:
            entries = list(self._sessions.values())
        for ref, _ in entries:
            session = ref()
            if session is not None:
                self.detach(session)

    @property
    def sessions(self) -> list[AgentSession]:
        """The sessions attached now."""
        with self._attach_lock:
            refs = [ref for ref, _ in self._sessions.values()]
        return [s for s in (ref() for ref in refs) if s is not None]

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to deliver for an in-memory sink."""
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """:meth:`flush` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)

    def close(self) -> None:
        """Refuse new sessions; records of sessions still attached are counted as dropped
        from now on. Idempotent."""
        with self._attach_lock:
            self._closed = True

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Marker:
    """Queued behind the records a :meth:`QueueSink.flush` waits for."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class QueueSink(SinkBase):
    """A sink whose I/O runs on one worker thread, fed by a bounded in-memory queue.

    :meth:`receive` only appends to the queue (never blocks, never raises); when
    ``max_queue`` records wait, new ones are dropped and counted. The worker hands records
    to :meth:`write_batch` in batches of at most ``batch_size``, every ``flush_interval``
    seconds and at once when a session closes. A batch whose ``write_batch`` raises is
    counted in :attr:`dropped` and logged (rate-limited); a ``write_batch`` that delivers
    part of a batch counts the rest itself with :meth:`_drop` and returns. :meth:`close`
    delivers what is queued, then calls :meth:`close_resources`; it also runs at interpreter
    exit. Every record received is either delivered or counted in :attr:`dropped`, once.
    """

    def __init__(
        self,
        *,
        max_queue: int = 1_000_000,
        batch_size: int = 10_000,
        flush_interval: float = 0.2,
        name: str = "callmeter-sink",
    ) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise InvalidArgumentError(f"max_queue must be a positive int, got {max_queue!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or not 0 < flush_interval < float("inf")
        ):
            raise InvalidArgumentError(
                f"flush_interval must be a positive number of seconds, got {flush_interval!r}"
            )
        super().__init__()
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._finished = False  # the worker is gone: whatever is still queued is dropped
        self._abandoned = False  # close() timed out waiting for the worker
        self._inflight = 0  # records in the write_batch() call under way
        self._inflight_counted = False
        self.exit_timeout = 10.0
        """At interpreter exit, the longest :meth:`close` waits for the worker (seconds)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self._close_at_exit)

    # subclass API ----------------------------------------------------------------------

    def write_batch(self, records: list[Record]) -> None:
        """Deliver ``records`` (on the worker thread). Raise to have them counted as dropped."""
        raise NotImplementedError

    def close_resources(self) -> None:
        """Release files, connections... (on the closing thread, after the last batch)."""

    # receiving -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records waiting in the queue (and pending flush() calls)."""
        return len(self._queue)

    def receive(self, record: Record) -> None:
        """Queue one record; drop and count it when the sink is closed or the queue full."""
        if self._stop:
            self._drop(1, "the sink is closed", "closed")
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._drop(1, f"the queue is full ({self.max_queue} records)", "full")
            return
        queue.append(record)
        if self._finished:  # close() ran between the check above and the append
            self._sweep()
        elif record.__class__ is CloseEvent:
            self._wake.set()

    def _sweep(self) -> None:
        """Count whatever is queued as dropped (after the worker is gone). Each item is
        popped exactly once, by whichever thread gets it, so nothing is counted twice."""
        n = 0
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if item.__class__ is _Marker:
                item.done.set()
            else:
                n += 1
        self._drop(n, "the sink is closed", "closed")

    # the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stop = self._stop  # read before draining: what was queued before close() is written
            self._drain(queue)
            if stop:
                return

    def _drain(self, queue: deque[Any]) -> None:
        while queue:
            batch: list[Record] = []
            markers: list[_Marker] = []
            while queue and len(batch) < self.batch_size:
                item = queue.popleft()
                if item.__class__ is _Marker:
                    markers.append(item)
                    if batch:
                        break
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            for marker in markers:
                marker.done.set()

    def _write(self, batch: list[Record]) -> None:
        n = len(batch)
        with self._drop_lock:
            abandoned = self._abandoned
            if not abandoned:
                self._inflight = n
        if abandoned:  # close() gave up on this worker: count rather than write
            self._drop(n, "the sink is closed", "closed")
            return
        error: BaseException | None = None
        try:
            self.write_batch(batch)
        except BaseException as exc:  # the worker must survive anything
            error = exc
        with self._drop_lock:
            counted = self._inflight_counted  # by a close() that timed out meanwhile
            self._inflight = 0
            self._inflight_counted = False
            if counted and error is None:
                self._dropped -= n  # written after all
        if error is not None and not counted:
            self._drop(n, f"write_batch raised {type(error).__name__}: {error}", "write")

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until every record received so far is delivered or dropped (call it off
        the event loop, or use :meth:`aflush`). Returns False when ``timeout`` seconds
        (None: no limit) passed first; the records are still delivered later."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise InvalidArgumentError(
                f"timeout must be None or a number of seconds >= 0, got {timeout!r}"
            )
        if self._thread is threading.current_thread() or not self._thread.is_alive():
            return not any(item.__class__ is not _Marker for item in self._queue)
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        if self._finished:
            self._sweep()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued, stop the worker, release resources. Idempotent.

        Blocks until the last batch is written (use :meth:`aclose` on an event loop), or
        at most ``timeout`` seconds: then what is still queued or being written is counted
        as dropped (a batch that is written later after all is taken off the count), and
        the resources are left to the stuck worker. Records received afterwards, from
        sessions still attached, are counted as dropped.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise InvalidArgumentError(
                f"timeout must be None or a number of seconds >= 0, got {timeout!r}"
            )
        with self._attach_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        self._stop = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        stuck = self._thread.is_alive() and self._thread is not threading.current_thread()
        if stuck:
            with self._drop_lock:
                self._abandoned = True
                inflight = self._inflight
                if inflight:
                    self._dropped += inflight
                    self._inflight_counted = True
        self._finished = True
        self._sweep()  # records that raced with close(), or a worker that died or hangs
        if stuck:
            self._log.log(
                "stuck", logging.WARNING,
                "callmeter: %r: the worker did not finish within %s s; %d record(s) being "
                "written counted as dropped, resources left open", self, timeout, inflight,
            )  # fmt: skip
            return
        try:
            self.close_resources()
        except Exception:
            logger.exception("callmeter: closing %r failed", self)

    def _close_at_exit(self) -> None:
        self.close(self.exit_timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.close, timeout)
