"""A turn: one user -> agent exchange, the unit that groups metrics by speech_id."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING

from ..latency.turns import build_turn_metrics
from ..model.events import LatencyBudgetExceededEvent
from ..model.types import AgentMetrics, TurnMetrics
from .context import current_session_var, current_speech_id_var

if TYPE_CHECKING:
    from .agent_session import AgentSession

logger = logging.getLogger("callmeter.session")
_MAX_TURN_METRICS = 10_000  # a runaway turn must not grow memory without bound


def new_speech_id() -> str:
    """A fresh speech id (``speech_`` + 12 hex digits)."""
    return f"speech_{uuid.uuid4().hex[:12]}"


class Turn:
    """Context manager (``with`` or ``async with``) that gives everything measured inside it,
    including in asyncio tasks created inside it, the turn's ``speech_id``.

    While open it picks up every metrics event the session records with its ``speech_id``;
    when it ends the session records the turn's :class:`~callmeter.metrics.TurnMetrics` like
    any other metric (``metrics_collected``), and emits ``latency_budget_exceeded`` when the
    session has a latency budget the turn went over.
    Mark :meth:`user_stopped_speaking` and :meth:`agent_started_speaking` where you know
    them; otherwise they come from the EOU, TTS and LLM metrics (see docs/latency.md).
    Leaving the block by exception marks the turn interrupted.
    """

    def __init__(self, session: AgentSession, speech_id: str | None = None) -> None:
        self.session = session
        self.speech_id = speech_id or new_speech_id()
        self._tokens: tuple[Token[str | None], Token[AgentSession | None]] | None = None
        self._metrics: list[AgentMetrics] = []
        self._started_at = 0.0
        self._user_stopped_at: float | None = None
        self._agent_started_at: float | None = None
        self._interrupted = False
        self.metrics: TurnMetrics | None = None
        """The turn's :class:`TurnMetrics`, once it ended."""

    def user_stopped_speaking(self, at: float | None = None) -> None:
        """Mark when the user stopped speaking (wall clock; now by default)."""
        self._user_stopped_at = time.time() if at is None else at

    def agent_started_speaking(self, at: float | None = None) -> None:
        """Mark when the agent started speaking (wall clock; now by default).

        The first call counts; later calls are ignored.
        """
        if self._agent_started_at is None:
            self._agent_started_at = time.time() if at is None else at

    def interrupt(self) -> None:
        """Mark the turn interrupted (e.g. the user barged in)."""
        self._interrupted = True

    def _add(self, metrics: AgentMetrics) -> None:
        if len(self._metrics) < _MAX_TURN_METRICS:
            self._metrics.append(metrics)

    def _enter(self) -> Turn:
        self._started_at = time.time()
        self._tokens = (
            current_speech_id_var.set(self.speech_id),
            current_session_var.set(self.session),
        )
        self.session._open_turns[self.speech_id] = self
        return self

    def _exit(self, exc_type: type[BaseException] | None) -> None:
        if self._tokens is None:
            return
        speech_token, session_token = self._tokens
        self._tokens = None
        with contextlib.suppress(ValueError):  # exited in another context than entered
            current_speech_id_var.reset(speech_token)
            current_session_var.reset(session_token)
        session = self.session
        if session._open_turns.get(self.speech_id) is self:
            del session._open_turns[self.speech_id]
        try:
            self.metrics = turn = build_turn_metrics(
                self._metrics,
                turn_started_at=self._started_at,
                ended_at=time.time(),
                user_stopped_at=self._user_stopped_at,
                agent_started_at=self._agent_started_at,
                interrupted=self._interrupted or exc_type is not None,
                speech_id=self.speech_id,
            )
        except Exception:  # measurement must never break the agent
            logger.exception("callmeter: building the metrics of turn %s failed", self.speech_id)
            return
        self._metrics = []
        session.emit_metrics(turn)
        budget = session._latency_budget
        if budget is None:
            return
        exceeded = budget.check(turn)
        if exceeded:
            session.emit(
                "latency_budget_exceeded",
                LatencyBudgetExceededEvent(
                    session_id=session.session_id,
                    seq=session._next_seq(),
                    created_at=time.time(),
                    turn=turn,
                    exceeded=exceeded,
                    agent_name=session.agent_name,
                    labels=session.labels,
                ),
            )

    def __enter__(self) -> Turn:
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc_type)

    async def __aenter__(self) -> Turn:
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc_type)
