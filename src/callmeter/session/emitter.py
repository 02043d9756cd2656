"""A small event emitter that never lets a handler's failure reach the emitter."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InvalidArgumentError

logger = logging.getLogger("callmeter.session")

F = TypeVar("F", bound=Callable[..., Any])


class EventEmitter:
    """``on``/``once``/``off``/``emit`` with sync and async handlers.

    A sync handler runs inline; an async handler is scheduled as a task on the running
    event loop (never awaited on the emitter's path). A handler that raises is logged with
    its traceback and the remaining handlers still run; ``emit`` never raises.
    """

    def __init__(self) -> None:
        # name -> list of (callback, is_async, once)
        self._handlers: dict[str, list[tuple[Callable[..., Any], bool, bool]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Any:
        """Register ``callback`` for ``event``; without ``callback``, return a decorator."""
        if not isinstance(event, str):
            raise InvalidArgumentError(f"event name must be a str, got {event!r}")
        if callback is None:

            def decorator(fn: F) -> F:
                self._add(event, fn, once=False)
                return fn

            return decorator
        self._add(event, callback, once=False)
        return callback

    def once(self, event: str, callback: Callable[..., Any] | None = None) -> Any:
        """Like :meth:`on`, but the handler is removed after its first call."""
        if callback is None:

            def decorator(fn: F) -> F:
                self._add(event, fn, once=True)
                return fn

            return decorator
        self._add(event, callback, once=True)
        return callback

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Remove ``callback`` from ``event`` (no error if it was not registered)."""
        handlers = self._handlers.get(event)
        if handlers:
            self._handlers[event] = [h for h in handlers if h[0] is not callback]

    def _add(self, event: str, callback: Callable[..., Any], *, once: bool) -> None:
        if not callable(callback):
            raise InvalidArgumentError(f"handler for {event!r} must be callable, got {callback!r}")
        is_async = inspect.iscoroutinefunction(callback)
        # Copy-on-write so an emit in progress iterates a stable list.
        self._handlers[event] = [*self._handlers.get(event, ()), (callback, is_async, once)]

    def emit(self, event: str, *args: Any) -> None:
        """Call every handler of ``event`` with ``args``. Never raises."""
        handlers = self._handlers.get(event)
        if not handlers:
            return
        for callback, is_async, once in handlers:
            if once:
                self.off(event, callback)
            try:
                result = callback(*args)
                if result is not None and (is_async or inspect.isawaitable(result)):
                    self._schedule(event, callback, result)
            except Exception:
                logger.exception("callmeter: %r handler %r raised", event, callback)

    def _schedule(self, event: str, callback: Callable[..., Any], awaitable: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.warning(
                "callmeter: async %r handler %r called outside a running event loop; skipped",
                event,
                callback,
            )
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            return
        task = loop.create_task(awaitable)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(event, callback, t))

    def _task_done(self, event: str, callback: Callable[..., Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "callmeter: async %r handler %r raised",
                event,
                callback,
                exc_info=task.exception(),
            )

    async def drain(self) -> None:
        """Wait for async handlers scheduled so far to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
