"""The per-event recording path of a session: check an event, add it, hand it on; and
``llm_generation``, the helper that builds the most frequent event.

:class:`Recording` is the reference implementation in Python. When the optional C
extension is built, :data:`RecordingBase` puts its C counterpart
(``callmeter._speedups.SessionCore``) in front of it: the C methods handle the common
case and call the Python methods below for everything else (an event the check is unsure
of, several or async handlers, a failure to log), so both paths behave the same.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

from .._native import CState, speedups
from ..errors import InvalidArgumentError
from ..model import validate
from ..model.events import RECORD_VERSION, MetricsCollectedEvent
from ..model.types import AgentMetrics
from ..usage import collecting  # noqa: F401  (configures the C collect path first)
from . import timers
from .context import current_speech_id_var
from .emitter import _PROPAGATE
from .timers import LLMGeneration, PyLLMGeneration

if TYPE_CHECKING:
    from .agent_session import AgentSession

logger = logging.getLogger("callmeter.session")

LAZY_BATCH = 8192
"""Events a session's own collector holds before adding them up (usage is added up when
read, or every LAZY_BATCH events, to bound memory)."""

_CHECKS = validate.CHECKS
_new_generation = LLMGeneration.__new__
_check = validate.check
_last_valid = validate.last_valid
_as_counted = validate.as_counted


def check_str(name: str, value: object) -> None:
    """Raise InvalidArgumentError unless ``value`` is a str or None."""
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str or None, got {type(value).__name__}")


class Recording:
    """``emit_metrics`` and what follows the check; mixed into :class:`AgentSession`."""

    __slots__ = ()

    def emit_metrics(self: AgentSession, metrics: AgentMetrics) -> None:
        """Record a metrics event: add it to :attr:`usage` and emit ``metrics_collected``.

        Sources (integrations, the measurement helpers) call this. Never raises: an invalid
        event (see :mod:`callmeter.model.validate`) is rejected as a whole, logged
        (rate-limited) and counted in :attr:`rejected_events`.
        """
        fn = _CHECKS.get(type(metrics))
        try:
            ok = fn is not None and fn(metrics) is None
        except Exception:
            ok = False
        if not ok:
            self._emit_slow(metrics)
            return
        self._record_checked(metrics)

    def _emit_slow(self: AgentSession, metrics: Any) -> None:
        # The full check: it names the bad field, and accepts valid subclasses.
        reason = _check(metrics)
        if reason is not None:
            self._rejects.reject(f"session {self.session_id}", reason, metrics)
            self._collector.note_rejected(metrics)
            return
        self._record_checked(metrics)

    def _record_checked(self: AgentSession, metrics: AgentMetrics) -> None:
        # Everything after the check: the session's own helpers call this directly for
        # metrics they built from values they checked (see LLMGeneration._build_checked);
        # any object from elsewhere goes through emit_metrics and its full check.
        _last_valid.event = metrics
        try:
            pending = self._pending
            pending.append(metrics if type(metrics) in _CHECKS else _as_counted(metrics))
            if len(pending) >= LAZY_BATCH:
                self._collector._flush()
            if self._open_turns:  # hand the event to the open turn it belongs to
                turn = self._open_turns.get(getattr(metrics, "speech_id", None))  # type: ignore[arg-type]
                if turn is not None:
                    turn._add(metrics)
            seq = self._next_seq()
            handlers = self._handlers.get("metrics_collected")
            if not handlers:
                return
            event = MetricsCollectedEvent(
                session_id=self.session_id,
                seq=seq,
                created_at=metrics.timestamp,
                agent_name=self.agent_name,
                labels=self.labels,
                metrics=metrics,
            )
            fast = self._fast_handler
            if fast is not None and handlers[0][0] is fast:
                try:  # one sync handler, the common case: call it directly
                    result = fast(event)
                    if result is not None and inspect.isawaitable(result):
                        self._schedule("metrics_collected", fast, result)
                except _PROPAGATE:
                    raise
                except BaseException:
                    self._handler_failed("metrics_collected", fast)
                return
            self._dispatch("metrics_collected", handlers, (event,))
        except _PROPAGATE:
            raise
        except BaseException:
            self._record_failed()

    def llm_generation(
        self: AgentSession,
        model: str | None = None,
        provider: str | None = None,
        label: str = "",
        *,
        request_id: str = "",
        speech_id: str | None = None,
    ) -> LLMGeneration:
        """Time one LLM request (``with`` or ``async with``); emits one ``LLMMetrics``."""
        if (model is not None and model.__class__ is not str) or (
            provider is not None and provider.__class__ is not str
        ):
            check_str("model", model)
            check_str("provider", provider)
        # Built without a second call frame: this runs once per LLM request.
        gen = _new_generation(LLMGeneration)
        gen._session = self
        gen.model = model
        gen.provider = provider
        gen.label = label
        gen.request_id = request_id
        gen.speech_id = speech_id
        return gen

    def _record_failed(self) -> None:
        # Called while the failure is being handled (also from the C path).
        with contextlib.suppress(Exception):  # a broken logging setup must not reach the agent
            logger.exception("callmeter: recording a metrics event failed")


if not TYPE_CHECKING and speedups is not None:  # LLMGeneration has its C base then
    speedups.configure_generation(
        LLMGeneration, PyLLMGeneration.__enter__, PyLLMGeneration.first_token,
        PyLLMGeneration.__exit__, PyLLMGeneration._build_checked, PyLLMGeneration.set_usage,
        Recording.llm_generation, timers._metadata, current_speech_id_var, vars(timers),
    )  # fmt: skip

# The fields _speedups_record.c sets, in order, when it builds a MetricsCollectedEvent.
_C_EVENT_FIELDS = ("v", "session_id", "seq", "created_at", "agent_name", "labels", "metrics")

RecordingBase = Recording
"""Recording, with its common case in C when the extension is built."""
if (
    not TYPE_CHECKING
    and speedups is not None
    and MetricsCollectedEvent.__struct_fields__ == _C_EVENT_FIELDS
):
    speedups.configure_record(
        MetricsCollectedEvent, RECORD_VERSION, LAZY_BATCH, Recording.emit_metrics,
        Recording._record_checked, inspect.isawaitable,
    )  # fmt: skip

    class RecordingBase(speedups.SessionCore, Recording, CState):
        """:class:`Recording` with its common case in C."""

        __slots__ = ()
