"""A small event emitter that never lets a handler's failure reach the emitter.

Any thread may emit. Handlers are kept per event name in a tuple that is replaced (under a
lock) when a handler is added or removed, so an emit iterates a stable snapshot without
taking a lock. Async handlers run on the emitter's event loop: on the running loop when
the emit happens on it, otherwise handed over with ``loop.call_soon_threadsafe`` to the
loop remembered when the session started or the handler was registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InvalidArgumentError

logger = logging.getLogger("callmeter.session")

F = TypeVar("F", bound=Callable[..., Any])
Handler = tuple[Callable[..., Any], bool, bool]  # (callback, is_async, once)

_PROPAGATE = (KeyboardInterrupt, SystemExit)


class _RateLimit:
    """At most ``burst`` log lines per ``period`` seconds; counts what it held back."""

    __slots__ = ("_burst", "_logged", "_period", "_window", "suppressed")

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        self._burst, self._period = burst, period
        self._window = float("-inf")
        self._logged = 0
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """(whether to log now, lines held back since the last window)."""
        now = time.monotonic()
        held = 0
        if now - self._window >= self._period:
            held, self.suppressed = self.suppressed, 0
            self._window, self._logged = now, 0
        if self._logged >= self._burst:
            self.suppressed += 1
            return False, 0
        self._logged += 1
        return True, held


class EventEmitter:
    """``on``/``once``/``off``/``emit`` with sync and async handlers.

    A sync handler runs inline; an async handler is scheduled as a task on the event loop
    (never awaited on the emitter's path), also when the emit happens in another thread. A
    handler that raises anything (``asyncio.CancelledError`` included) is logged with its
    traceback (rate-limited) and the remaining handlers still run; ``emit`` never raises,
    except that ``KeyboardInterrupt`` and ``SystemExit`` propagate.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        self._handlers_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handoffs = 0  # async handler calls posted to the loop, not yet started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log_limit = _RateLimit()
        self._fast_handler: Callable[..., Any] | None = None
        """The only handler of ``metrics_collected`` when it is one plain sync handler (the
        common case, called directly on the emit path), else None."""
        self.dropped_events = 0
        """Handler deliveries that did not happen: an async handler with no event loop to
        run on, or one still running when :meth:`drain` gave up waiting."""

    # registration ------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Any:
        """Register ``callback`` for ``event``; without ``callback``, return a decorator."""
        return self._register(event, callback, once=False)

    def once(self, event: str, callback: Callable[..., Any] | None = None) -> Any:
        """Like :meth:`on`, but the handler is removed after its first call."""
        return self._register(event, callback, once=True)

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Remove ``callback`` from ``event`` (no error if it was not registered)."""
        self._remove(event, callback)

    def _register(self, event: str, callback: Callable[..., Any] | None, *, once: bool) -> Any:
        if not isinstance(event, str):
            raise InvalidArgumentError(f"event name must be a str, got {event!r}")
        if callback is None:

            def decorator(fn: F) -> F:
                self._add(event, fn, once=once)
                return fn

            return decorator
        self._add(event, callback, once=once)
        return callback

    def _add(self, event: str, callback: Callable[..., Any], *, once: bool) -> None:
        if not callable(callback):
            raise InvalidArgumentError(f"handler for {event!r} must be callable, got {callback!r}")
        is_async = inspect.iscoroutinefunction(callback)
        if is_async:
            self._remember_loop()
        with self._handlers_lock:
            self._handlers[event] = (*self._handlers.get(event, ()), (callback, is_async, once))
            self._update_fast(event)

    def _remove(self, event: str, callback: Callable[..., Any]) -> bool:
        with self._handlers_lock:
            handlers = self._handlers.get(event)
            if not handlers:
                return False
            kept = tuple(h for h in handlers if h[0] is not callback)
            if len(kept) == len(handlers):
                return False
            if kept:
                self._handlers[event] = kept
            else:
                del self._handlers[event]
            self._update_fast(event)
            return True

    def _claim_once(self, event: str, handler: Handler) -> bool:
        # Exactly one emit calls a `once` handler, even when threads emit at the same time.
        with self._handlers_lock:
            handlers = self._handlers.get(event, ())
            if handler not in handlers:
                return False
            kept = tuple(h for h in handlers if h is not handler)
            if kept:
                self._handlers[event] = kept
            else:
                del self._handlers[event]
            self._update_fast(event)
            return True

    def _update_fast(self, event: str) -> None:
        # Under _handlers_lock. Emitters compare it with their handler snapshot before use.
        if event == "metrics_collected":
            handlers = self._handlers.get(event, ())
            one = len(handlers) == 1 and not handlers[0][1] and not handlers[0][2]
            self._fast_handler = handlers[0][0] if one else None

    def _remember_loop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    # emitting ----------------------------------------------------------------------------

    def emit(self, event: str, *args: Any) -> None:
        """Call every handler of ``event`` with ``args``. Never raises."""
        handlers = self._handlers.get(event)
        if handlers:
            self._dispatch(event, handlers, args)

    def _dispatch(self, event: str, handlers: tuple[Handler, ...], args: tuple[Any, ...]) -> None:
        for handler in handlers:
            callback, is_async, once = handler
            if once and not self._claim_once(event, handler):
                continue
            try:
                result = callback(*args)
                if result is not None and (is_async or inspect.isawaitable(result)):
                    self._schedule(event, callback, result)
            except _PROPAGATE:
                raise
            except BaseException:
                self._handler_failed(event, callback)

    def _handler_failed(self, event: str, callback: Callable[..., Any]) -> None:
        try:
            ok, held = self._log_limit.allow()
            if held:
                logger.error("callmeter: %d more handler failures were not logged", held)
            if ok:
                logger.exception("callmeter: %r handler %r raised", event, callback)
        except Exception:  # a broken logging setup must not reach the agent either
            pass

    def _schedule(self, event: str, callback: Callable[..., Any], awaitable: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            if self._loop is None:
                self._loop = running
            self._start_task(running, event, callback, awaitable)
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with self._handlers_lock:
                self._handoffs += 1
            try:
                loop.call_soon_threadsafe(self._handoff, loop, event, callback, awaitable)
                return
            except RuntimeError:  # the loop closed in the meantime
                with self._handlers_lock:
                    self._handoffs -= 1
        self._drop(event, callback, awaitable)

    def _drop(self, event: str, callback: Callable[..., Any], awaitable: Any) -> None:
        self.dropped_events += 1
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        ok, _ = self._log_limit.allow()
        if ok:
            logger.warning(
                "callmeter: async %r handler %r has no event loop to run on (emitted outside "
                "a running loop, and the session never saw one); skipped",
                event,
                callback,
            )

    def _handoff(
        self,
        loop: asyncio.AbstractEventLoop,
        event: str,
        callback: Callable[..., Any],
        awaitable: Any,
    ) -> None:
        with self._handlers_lock:
            self._handoffs -= 1
        try:
            self._start_task(loop, event, callback, awaitable)
        except Exception:
            self._handler_failed(event, callback)

    def _start_task(
        self,
        loop: asyncio.AbstractEventLoop,
        event: str,
        callback: Callable[..., Any],
        awaitable: Any,
    ) -> None:
        task = (
            loop.create_task(awaitable)
            if inspect.iscoroutine(awaitable)
            else (asyncio.ensure_future(awaitable, loop=loop))
        )
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(event, callback, t))

    def _task_done(self, event: str, callback: Callable[..., Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            ok, _ = self._log_limit.allow()
            if ok:
                logger.error("callmeter: async %r handler %r raised", event, callback, exc_info=exc)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for async handlers scheduled so far (also those handed over from other
        threads) to finish, at most ``timeout`` seconds (None: no limit).

        Returns True when all finished. Handlers still running after ``timeout`` are left
        running, logged and counted in :attr:`dropped_events`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            await asyncio.sleep(0)  # let handovers posted from other threads start
            pending = [t for t in self._tasks if not t.done() and t.get_loop() is loop]
            if not pending and not self._handoffs:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if pending:
                await asyncio.wait(pending, timeout=remaining)
            else:
                await asyncio.sleep(0.001 if remaining is None else min(0.001, remaining))
        self.dropped_events += len(pending)
        logger.warning(
            "callmeter: stopped waiting for %d async handler(s) after %.3g s; left running: %s",
            len(pending),
            timeout,
            ", ".join(sorted({repr(t.get_coro()) for t in pending}))[:500],
        )
        return False
