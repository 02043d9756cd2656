"""JSONLWriter: append every session event to a JSON Lines file, off the event loop.

One JSON object per line: ``{"event": "<name>", <the event's fields>}``. Metrics events
keep their ``type`` tag, so :func:`callmeter.metrics.decode` reads them back. Handlers only
append to an in-memory queue (a few hundred nanoseconds); a background thread encodes and
writes in batches, so the agent's event loop never waits on the disk.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from ..errors import InvalidArgumentError
from ..session.agent_session import AgentSession

logger = logging.getLogger("callmeter.export")

EVENTS: tuple[str, ...] = (
    "session_started",
    "metrics_collected",
    "latency_budget_exceeded",
    "close",
)
"""The session events a :class:`JSONLWriter` records."""


class JSONLWriter:
    """Appends the events of every attached session to ``path`` (created if missing).

    Safe with many concurrent sessions (one writer thread, whole lines). Events are written
    within ``flush_interval`` seconds, and at once when a session closes; :meth:`close`
    writes everything still queued. At most ``max_pending`` events wait in memory; beyond
    that new events are dropped and counted in :attr:`dropped`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.2,
        max_pending: int = 1_000_000,
    ) -> None:
        if not isinstance(flush_interval, int | float) or not flush_interval > 0:
            raise InvalidArgumentError(
                f"flush_interval must be > 0 seconds, got {flush_interval!r}"
            )
        if not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidArgumentError(f"max_pending must be a positive int, got {max_pending!r}")
        self.path = Path(path)
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot open {str(self.path)!r} for appending: {exc}"
            ) from None
        self._interval = float(flush_interval)
        self._max_pending = max_pending
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._enqueued = 0
        self._done = 0
        self._closing = False
        self.dropped = 0
        """Events dropped because the queue was full or the file could not be written."""
        self._sessions: dict[int, tuple[AgentSession, list[tuple[str, Callable[..., Any]]]]] = {}
        self._thread = threading.Thread(target=self._run, name="callmeter-jsonl", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"JSONLWriter({str(self.path)!r})"

    # sessions --------------------------------------------------------------------------

    def attach(self, session: AgentSession) -> AgentSession:
        """Record ``session``'s events from now on; returns the session.

        The session is detached by itself when it closes (after its ``close`` event is
        queued), so a long-running writer holds no finished sessions.
        """
        if not isinstance(session, AgentSession):
            raise InvalidArgumentError(f"attach() needs an AgentSession, got {session!r}")
        if id(session) in self._sessions:
            return session
        handlers = []
        for name in EVENTS:
            handler = self._handler(name.encode(), session)
            session.on(name, handler)
            handlers.append((name, handler))
        self._sessions[id(session)] = (session, handlers)
        return session

    def detach(self, session: AgentSession) -> None:
        """Stop recording ``session`` (no error if it was not attached)."""
        entry = self._sessions.pop(id(session), None)
        if entry is not None:
            for name, handler in entry[1]:
                session.off(name, handler)

    def _handler(self, name: bytes, session: AgentSession) -> Callable[[Any], None]:
        queue = self._queue
        closing_event = name == b"close"

        def handler(event: Any) -> None:
            if closing_event:
                self.detach(session)
            if self._closing or len(queue) >= self._max_pending:
                self.dropped += 1
                return
            queue.append((name, event))
            self._enqueued += 1
            if closing_event:
                self._wake.set()

        return handler

    # writing ---------------------------------------------------------------------------

    def _run(self) -> None:
        encoder = msgspec.json.Encoder()
        queue = self._queue
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            chunks: list[bytes] = []
            n = 0
            while queue:
                name, event = queue.popleft()
                n += 1
                try:
                    body = encoder.encode(event)
                except Exception:
                    logger.exception("callmeter: cannot encode a %s event", name.decode())
                    self.dropped += 1
                    continue
                chunks.append(body + b"\n")
            if chunks:
                try:
                    self._file.write(b"".join(chunks))
                    self._file.flush()
                except (OSError, ValueError):
                    logger.exception("callmeter: writing %s failed", self.path)
                    self.dropped += len(chunks)
            if n:
                with self._written:
                    self._done += n
                    self._written.notify_all()
            if self._closing and not queue:
                return

    def flush(self, timeout: float | None = 10.0) -> None:
        """Block until every event queued so far is written (call it off the event loop)."""
        target = self._enqueued
        self._wake.set()
        with self._written:
            self._written.wait_for(
                lambda: self._done >= target or not self._thread.is_alive(), timeout
            )

    def close(self) -> None:
        """Detach every session, write what is queued and close the file. Idempotent."""
        if self._closing:
            return
        for session, _ in list(self._sessions.values()):
            self.detach(session)
        self._closing = True
        self._wake.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._file.close()
        atexit.unregister(self.close)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running."""
        import asyncio

        await asyncio.to_thread(self.close)

    def __enter__(self) -> JSONLWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> JSONLWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
