"""AgentSession: one call. Emits events, offers measurement helpers, tracks its lifecycle."""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, overload

from .._native import speedups
from ..errors import InvalidArgumentError
from ..latency.summary import LatencySummary
from ..latency.turns import LatencyBudget
from ..model import validate
from ..model.events import CloseEvent, SessionStartedEvent
from ..usage.collector import UsageCollector, UsageSummary
from .context import current_session_var, current_tool_name_var
from .emitter import EventEmitter
from .recording import LAZY_BATCH, RecordingBase, check_str
from .timers import STTRequest, ToolCall, TTSRequest
from .turn import Turn

logger = logging.getLogger("callmeter.session")

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_DRAIN_TIMEOUT = 5.0
"""Seconds ``async with session`` / :meth:`AgentSession.aclose` wait for async handlers."""


class AgentSession(EventEmitter, RecordingBase):
    """One agent session ("call").

    Events: ``metrics_collected`` (:class:`MetricsCollectedEvent`; a ``TurnMetrics`` when a
    turn ends), ``session_started`` (:class:`SessionStartedEvent`), ``close``
    (:class:`CloseEvent`; ``closing``, with no arguments, just before it) and
    ``latency_budget_exceeded``
    (:class:`~callmeter.metrics.LatencyBudgetExceededEvent`).
    ``session_id`` is generated when not given; ``agent_name`` and ``labels`` ride on every
    event. Use as ``with session:`` / ``async with session:`` or call :meth:`start` and
    :meth:`close`. :attr:`usage` is the summary of everything this session measured, priced
    with ``prices`` (as for :class:`~callmeter.metrics.UsageCollector`; default prices when
    None), plus ``call_charges`` (per-minute call-level charges, priced from the session's
    duration when it closes). Leaving ``async with`` waits at most ``drain_timeout``
    seconds for async handlers.

    Any thread may emit: totals stay exact, ``seq`` stays unique and gap-free, and async
    handlers run on the session's event loop. :meth:`emit_metrics` never raises; invalid
    events are counted in :attr:`rejected_events`.
    """

    def __init__(
        self,
        session_id: str | None = None,
        agent_name: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        prices: Any = None,
        call_charges: list[str] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        super().__init__()
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, int | float)
            or not 0 <= drain_timeout < float("inf")
        ):
            raise InvalidArgumentError(
                f"drain_timeout must be a finite number of seconds >= 0, got {drain_timeout!r}"
            )
        self.drain_timeout = float(drain_timeout)
        check_str("session_id", session_id)
        check_str("agent_name", agent_name)
        if labels is not None:
            if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise InvalidArgumentError(f"labels must be a dict of str to str, got {labels!r}")
            labels = dict(labels)
        self.session_id: str = session_id or f"call_{uuid.uuid4().hex[:16]}"
        self.agent_name = agent_name
        self.labels = labels
        self._collector = UsageCollector(
            keep_metrics=False, prices=prices, call_charges=call_charges
        )
        # Usage is added up when read (or every LAZY_BATCH events, to bound memory).
        self._collector._batch = LAZY_BATCH
        self._pending = self._collector._buf  # appended to directly: validated already
        self._rejects = validate.RejectLog(logger)
        self._start_token: Token[AgentSession | None] | None = None
        self._started_wall: float | None = None
        self._started_perf: float | None = None
        self._duration: float | None = None
        self._closing = False
        self._context_tokens: list[Token[AgentSession | None]] = []
        self._open_turns: dict[str, Turn] = {}
        self._latency_budget: LatencyBudget | None = None
        self._next_seq = itertools.count().__next__  # atomic under the GIL

    def __repr__(self) -> str:
        return f"AgentSession(session_id={self.session_id!r}, agent_name={self.agent_name!r})"

    # lifecycle -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._started_perf is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._duration is not None

    @property
    def started_at(self) -> float | None:
        """Wall-clock start time (seconds since the epoch), or None before :meth:`start`."""
        return self._started_wall

    @property
    def duration(self) -> float:
        """Wall-clock seconds from start to close (to now while open; 0 before start)."""
        if self._duration is not None:
            return self._duration
        if self._started_perf is None:
            return 0.0
        return time.perf_counter() - self._started_perf

    @property
    def rejected_events(self) -> int:
        """Events :meth:`emit_metrics` rejected as invalid (logged, rate-limited)."""
        return self._rejects.count

    @property
    def dropped(self) -> int:
        """Everything this session could not deliver: rejected events plus handler
        deliveries that did not happen (:attr:`dropped_events`)."""
        return self._rejects.count + self.dropped_events

    def start(self) -> None:
        """Start the session, make it the current one in this context (as ``with session:``
        does, so sources such as ``instrument(client)`` find it) and emit
        ``session_started``. A second call does nothing. :meth:`close` undoes the first.
        """
        if self._started_perf is not None:
            return
        self._remember_loop()
        if current_session_var.get() is not self:
            self._start_token = current_session_var.set(self)
        self._started_wall = time.time()
        self._started_perf = time.perf_counter()
        self.emit(
            "session_started",
            SessionStartedEvent(
                session_id=self.session_id,
                seq=self._next_seq(),
                created_at=self._started_wall,
                agent_name=self.agent_name,
                labels=self.labels,
            ),
        )

    def close(self, error: str | None = None) -> None:
        """Close the session and emit ``close`` with its duration. A second call does nothing.

        First the ``closing`` event (no arguments) is emitted: its handlers may still record
        metrics that belong to the call (e.g. a stream left unfinished ends, cancelled).
        """
        if self._duration is not None or self._closing:
            return
        if self._started_perf is None:
            self.start()
        assert self._started_perf is not None
        self._closing = True  # a closing handler that calls close() does not close twice
        self.emit("closing")
        self._duration = time.perf_counter() - self._started_perf
        self._collector.set_call_duration(self._duration)
        self._release_current()
        self.emit(
            "close",
            CloseEvent(
                session_id=self.session_id,
                seq=self._next_seq(),
                created_at=time.time(),
                duration=self._duration,
                agent_name=self.agent_name,
                labels=self.labels,
                error=error,
            ),
        )

    def _release_current(self) -> None:
        # Undo start()'s "make current" if this context still has this session current;
        # fall back to the previous session only if it is still open.
        token, self._start_token = self._start_token, None
        if token is None or current_session_var.get() is not self:
            return
        previous = token.old_value
        if previous is Token.MISSING or (previous is not None and previous.closed):
            previous = None
        current_session_var.set(previous)

    async def aclose(self, error: str | None = None) -> None:
        """Close the session, then wait for async handlers already scheduled to finish, at
        most :attr:`drain_timeout` seconds."""
        self.close(error)
        await self.drain(self.drain_timeout)

    def _enter(self) -> None:
        self._context_tokens.append(current_session_var.set(self))
        self._remember_loop()
        self.start()

    def _leave(self) -> None:
        if self._context_tokens:
            with contextlib.suppress(ValueError):  # left in another context than entered
                current_session_var.reset(self._context_tokens.pop())

    def __enter__(self) -> AgentSession:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()
        self.close(exc_type.__name__ if exc_type else None)

    async def __aenter__(self) -> AgentSession:
        self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()
        await self.aclose(exc_type.__name__ if exc_type else None)

    # metrics ---------------------------------------------------------------------------

    @property
    def usage_prices(self) -> Any:
        """The prices :attr:`usage` is computed with (a ``Prices``; False when pricing is off)."""
        prices = self._collector.prices
        return False if prices is None else prices

    @property
    def usage(self) -> UsageSummary:
        """Summary of every metrics event this session recorded (a copy). Never raises."""
        return self._collector.get_summary()

    @property
    def latency(self) -> LatencySummary:
        """Turn latency of everything this session recorded: percentiles, slowest turns.

        Never raises (on an internal failure, logged, an empty summary)."""
        try:
            return self._collector.get_latency_summary()
        except Exception:
            logger.exception("callmeter: computing the latency summary failed")
            return LatencySummary()

    def set_latency_budget(self, **limits: float) -> None:
        """Limit turn latency, in seconds: ``e2e`` and any breakdown component (``llm_ttft``,
        ``tool``, ``tts_ttfb``, ...). A turn over a limit emits ``latency_budget_exceeded``.
        No arguments removes the budget. Raises InvalidArgumentError on an unknown name or a
        non-positive value.
        """
        self._latency_budget = LatencyBudget(**limits) if limits else None

    # measurement helpers ---------------------------------------------------------------

    def turn(self, speech_id: str | None = None) -> Turn:
        """One user -> agent exchange: metrics measured inside get its ``speech_id``."""
        check_str("speech_id", speech_id)
        return Turn(self, speech_id)

    def tool_call(
        self, name: str, call_id: str | None = None, *, speech_id: str | None = None
    ) -> ToolCall:
        """Time one tool call (``with`` or ``async with``); emits one ``ToolMetrics``."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"tool name must be a non-empty str, got {name!r}")
        check_str("call_id", call_id)
        return ToolCall(self, name, call_id=call_id, speech_id=speech_id)

    def stt_request(
        self,
        model: str | None = None,
        provider: str | None = None,
        label: str = "",
        *,
        request_id: str = "",
        streamed: bool = False,
        speech_id: str | None = None,
    ) -> STTRequest:
        """Time one speech-to-text request; emits one ``STTMetrics``."""
        check_str("model", model)
        check_str("provider", provider)
        return STTRequest(
            self,
            model=model,
            provider=provider,
            label=label,
            request_id=request_id,
            streamed=streamed,
            speech_id=speech_id,
        )

    def tts_request(
        self,
        model: str | None = None,
        provider: str | None = None,
        label: str = "",
        *,
        request_id: str = "",
        streamed: bool = False,
        speech_id: str | None = None,
    ) -> TTSRequest:
        """Time one text-to-speech request; emits one ``TTSMetrics``."""
        check_str("model", model)
        check_str("provider", provider)
        return TTSRequest(
            self,
            model=model,
            provider=provider,
            label=label,
            request_id=request_id,
            streamed=streamed,
            speech_id=speech_id,
        )

    @overload
    def tool(self, fn: F, *, name: str | None = None) -> F: ...
    @overload
    def tool(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def tool(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Decorator: measure every call of a sync or async function as a tool call.

        The wrapper keeps the function's name, signature and docstring. Use bare
        (``@session.tool``) or with a name (``@session.tool(name="lookup")``). Called
        inside a tool call of the same name that is already measured (e.g. by
        ``callmeter.agent.run_turn``), it is not measured a second time.
        """

        def wrap(func: F) -> F:
            if not callable(func):
                raise InvalidArgumentError(f"@session.tool needs a function, got {func!r}")
            tool_name = name or getattr(func, "__name__", "tool")
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    if current_tool_name_var.get() == tool_name:
                        return await func(*args, **kwargs)
                    with ToolCall(self, tool_name):
                        return await func(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                if current_tool_name_var.get() == tool_name:
                    return func(*args, **kwargs)
                with ToolCall(self, tool_name):
                    return func(*args, **kwargs)

            return sync_wrapper  # type: ignore[return-value]

        return wrap if fn is None else wrap(fn)


if speedups is not None and issubclass(AgentSession, speedups.SessionCore):
    # The C path serves these exact classes; instances of subclasses take the Python path.
    speedups.serve_classes(AgentSession, UsageCollector)
