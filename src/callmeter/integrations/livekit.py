"""Measure a LiveKit Agents ``AgentSession`` into a callmeter session (the ``livekit`` extra).

``attach(lk_session, session=None)`` subscribes to the LiveKit session's events and turns
them into callmeter metrics:

- ``metrics_collected``: LiveKit's LLM, STT, TTS, VAD, EOU and realtime metrics become
  callmeter's types, with their ``speech_id``, ``request_id``, model metadata and times
  (LiveKit stamps ``timestamp`` when it emits, at the end; ``started_at`` is
  ``timestamp - duration``).
- ``tool_execution_updated``: ``ToolCallStarted`` ... ``ToolCallEnded`` of one ``call_id``
  become one ``ToolMetrics`` with the turn's ``speech_id``; ``function_tools_executed``
  only fills in calls no ``ToolCallEnded`` covered.
- ``conversation_item_added``: the user and assistant ``ChatMessage.metrics`` reports give
  the turn's ends (user stopped speaking, agent started speaking); one callmeter turn per
  LiveKit speech, ended when the speech is done.
- ``close``: ends the callmeter session.

Handlers are synchronous and never raise: an event of a shape this module does not know
is skipped with a debug log.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import weakref
from collections import OrderedDict
from typing import Any

try:
    from livekit.agents import llm as lk_llm
    from livekit.agents import metrics as lk_metrics
    from livekit.agents.voice import events as lk_events
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "callmeter.integrations.livekit needs LiveKit Agents: pip install 'callmeter[livekit]'"
    ) from exc

from ..errors import InvalidArgumentError, InvalidMetricsError
from ..metrics import (
    EOUMetrics,
    LLMMetrics,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    VADMetrics,
    from_dict,
)
from ..session import AgentSession, Turn

__all__ = ["LiveKitHandle", "attach", "convert_metrics"]

logger = logging.getLogger("callmeter.integrations.livekit")

_MAX_TRACKED = 4096  # tool calls and turns remembered per session (bounded memory)
_MAX_OPEN_TURNS = 64


class _Malformed(Exception):
    """An event this module cannot read; it is skipped."""


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Malformed(f"{name} is not a finite number: {value!r}")
    return float(value)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _metadata(m: Any) -> dict[str, str] | None:
    meta = getattr(m, "metadata", None)
    if meta is None:
        return None
    out = {
        k: v
        for k in ("model_name", "model_provider")
        if isinstance(v := getattr(meta, k, None), str)
    }
    return out or None


def _fields(m: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes of ``m`` that are set (not None), by name."""
    return {n: v for n in names if (v := getattr(m, n, None)) is not None}


def convert_metrics(m: Any) -> Any:
    """The callmeter metric for one LiveKit metrics object, or None for a kind callmeter does
    not model (decision, EOT inference, interruption, avatar metrics, connection reports).

    Raises :class:`~callmeter.errors.InvalidMetricsError` (or ``ValueError``) when ``m`` is
    malformed (missing fields, wrong types, negative durations, NaN).
    """
    try:
        return _convert(m)
    except _Malformed as exc:
        raise InvalidMetricsError(str(exc)) from None


def _convert(m: Any) -> Any:
    meta = _metadata(m)
    common = {"metadata": meta} if meta else {}
    if isinstance(m, lk_metrics.LLMMetrics):
        ts, duration = _num(m.timestamp, "timestamp"), _num(m.duration, "duration")
        ttft = _num(m.ttft, "ttft")
        d = _fields(
            m,
            (
                "label",
                "request_id",
                "cancelled",
                "completion_tokens",
                "prompt_tokens",
                "prompt_cached_tokens",
                "cache_creation_tokens",
                "reasoning_tokens",
                "total_tokens",
                "speech_id",
            ),
        )
        completion = d.get("completion_tokens", 0)
        gen_time = duration - ttft if ttft >= 0 else 0.0
        reported = isinstance(completion, int) and (completion or d.get("prompt_tokens"))
        return from_dict(
            {
                **d,
                **common,
                "timestamp": ts,
                "started_at": ts - duration,
                "duration": duration,
                "ttft": ttft,
                # callmeter's tokens_per_second is generation speed (after the first token)
                "tokens_per_second": completion / gen_time if gen_time > 0 else 0.0,
                "usage_reported": bool(reported),
            },
            LLMMetrics,
        )
    if isinstance(m, lk_metrics.STTMetrics):
        ts, duration = _num(m.timestamp, "timestamp"), _num(m.duration, "duration")
        d = _fields(
            m,
            (
                "label",
                "request_id",
                "audio_duration",
                "streamed",
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "input_audio_tokens",
            ),
        )
        return from_dict(
            {**d, **common, "timestamp": ts, "started_at": ts - duration, "duration": duration},
            STTMetrics,
        )
    if isinstance(m, lk_metrics.TTSMetrics):
        ts, duration = _num(m.timestamp, "timestamp"), _num(m.duration, "duration")
        d = _fields(
            m,
            (
                "label",
                "request_id",
                "ttfb",
                "audio_duration",
                "cancelled",
                "characters_count",
                "input_tokens",
                "output_tokens",
                "streamed",
                "segment_id",
                "speech_id",
            ),
        )
        return from_dict(
            {**d, **common, "timestamp": ts, "started_at": ts - duration, "duration": duration},
            TTSMetrics,
        )
    if isinstance(m, lk_metrics.VADMetrics):
        d = _fields(
            m, ("label", "timestamp", "idle_time", "inference_duration_total", "inference_count")
        )
        return from_dict({**d, **common}, VADMetrics)
    if isinstance(m, lk_metrics.EOUMetrics):
        ts = _num(m.timestamp, "timestamp")
        eou = _num(m.end_of_utterance_delay, "end_of_utterance_delay")
        callback = _num(m.on_user_turn_completed_delay, "on_user_turn_completed_delay")
        d = _fields(m, ("transcription_delay", "speech_id"))
        # LiveKit emits EOU metrics after on_user_turn_completed ran, which followed the decision
        return from_dict(
            {
                **d,
                **common,
                "timestamp": ts,
                "started_at": ts - eou - callback,
                "end_of_utterance_delay": eou,
                "on_user_turn_completed_delay": callback,
            },
            EOUMetrics,
        )
    if isinstance(m, lk_metrics.RealtimeModelMetrics):
        created, duration = _num(m.timestamp, "timestamp"), _num(m.duration, "duration")
        d = _fields(
            m,
            (
                "request_id",
                "label",
                "session_duration",
                "ttft",
                "cancelled",
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "tokens_per_second",
                "speech_id",
            ),
        )
        if not d.get("request_id") and not d.get("total_tokens") and not duration:
            return None  # a connection report (acquire time), no response
        for key in ("input_token_details", "output_token_details"):
            details = getattr(m, key, None)
            if details is not None:
                d[key] = details.model_dump(exclude_none=True)
        # LiveKit stamps a realtime response's timestamp when the response was created
        return from_dict(
            {
                **d,
                **common,
                "timestamp": created + duration,
                "started_at": created,
                "duration": duration,
            },
            RealtimeModelMetrics,
        )
    return None


class _OpenTurn:
    """A callmeter turn for one LiveKit speech, entered in a context of its own so that the
    turn's context variables never leak into LiveKit's tasks."""

    __slots__ = ("ctx", "handle", "report_seen", "turn", "user_set")

    def __init__(self, session: AgentSession, speech_id: str) -> None:
        self.ctx = contextvars.copy_context()
        self.turn: Turn = session.turn(speech_id)
        self.ctx.run(self.turn.__enter__)
        self.handle: Any = None
        self.user_set = False
        self.report_seen = False

    def end(self, interrupted: bool = False) -> None:
        if interrupted:
            self.turn.interrupt()
        self.ctx.run(self.turn.__exit__, None, None, None)


class LiveKitHandle:
    """The subscriptions :func:`attach` made. :meth:`detach` (or ``await aclose()``)
    removes them; after that nothing from the LiveKit session reaches :attr:`session`."""

    def __init__(self, lk_session: Any, session: AgentSession) -> None:
        self.lk_session = lk_session
        self.session = session
        self._attached = False
        self._tools: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()
        """call_id -> (tool name, started_at, speech_id) of calls started, not yet ended"""
        self._ended: OrderedDict[str, float] = OrderedDict()
        """call_id -> end time of calls that ended without their start seen"""
        self._done: OrderedDict[str, None] = OrderedDict()
        """call_ids already emitted as ToolMetrics"""
        self._turns: OrderedDict[str, _OpenTurn] = OrderedDict()
        self._closed_turns: OrderedDict[str, None] = OrderedDict()
        self._user_stopped_at: float | None = None
        self._handlers = {
            "metrics_collected": self._on_metrics_collected,
            "tool_execution_updated": self._on_tool_execution_updated,
            "function_tools_executed": self._on_function_tools_executed,
            "conversation_item_added": self._on_conversation_item_added,
            "close": self._on_close,
        }

    def __repr__(self) -> str:
        return f"LiveKitHandle(session={self.session!r}, attached={self._attached})"

    @property
    def attached(self) -> bool:
        """True until :meth:`detach`."""
        return self._attached

    def _attach(self) -> None:
        for event, handler in self._handlers.items():
            self.lk_session.on(event, handler)
        self._attached = True

    def detach(self) -> None:
        """Remove every subscription. Turns still open end first (marked interrupted when
        the agent had not spoken yet). A second call does nothing."""
        if not self._attached:
            return
        self._attached = False
        for event, handler in self._handlers.items():
            with contextlib.suppress(Exception):
                self.lk_session.off(event, handler)
        self._end_turns()

    async def aclose(self) -> None:
        """:meth:`detach`, then wait for the session's async handlers already scheduled."""
        self.detach()
        await self.session.drain()

    # helpers ---------------------------------------------------------------------------

    def _safe(self, event: str, handler: Any, ev: Any) -> None:
        if not self._attached:
            return
        try:
            handler(ev)
        except Exception:  # LiveKit would let a TypeError reach its caller: never raise
            # the type only: events carry transcripts
            logger.debug(
                "callmeter: skipped a LiveKit %r event (%s)",
                event,
                type(ev).__name__,
                exc_info=True,
            )

    def _current_speech(self) -> Any:
        try:
            speech = self.lk_session.current_speech
        except Exception:
            return None
        return speech if isinstance(getattr(speech, "id", None), str) else None

    def _turn_for(self, speech_id: str | None) -> _OpenTurn | None:
        """The open turn of ``speech_id``, opened now if it is new."""
        if not isinstance(speech_id, str) or speech_id in self._closed_turns:
            return None
        turn = self._turns.get(speech_id)
        if turn is None:
            while len(self._turns) >= _MAX_OPEN_TURNS:
                self._end_turn(next(iter(self._turns)), interrupted=True)
            turn = self._turns[speech_id] = _OpenTurn(self.session, speech_id)
            if self._user_stopped_at is not None:
                turn.turn.user_stopped_speaking(self._user_stopped_at)
                turn.user_set = True
                self._user_stopped_at = None
        if turn.handle is None:
            speech = self._current_speech()
            if speech is not None and speech.id == speech_id:
                turn.handle = speech
                with contextlib.suppress(Exception):
                    speech.add_done_callback(self._on_speech_done)
        return turn

    def _end_turn(self, speech_id: str, interrupted: bool = False) -> None:
        turn = self._turns.pop(speech_id, None)
        if turn is None:
            return
        self._closed_turns[speech_id] = None
        if len(self._closed_turns) > _MAX_TRACKED:
            self._closed_turns.popitem(last=False)
        if turn.handle is not None:
            with contextlib.suppress(Exception):
                turn.handle.remove_done_callback(self._on_speech_done)
        turn.end(interrupted)

    def _end_turns(self) -> None:
        for speech_id, turn in list(self._turns.items()):
            self._end_turn(speech_id, interrupted=not turn.report_seen)

    def _emit(self, metric: Any) -> None:
        self._turn_for(getattr(metric, "speech_id", None))
        self.session.emit_metrics(metric)

    def _emit_tool(
        self,
        call_id: str,
        name: str,
        started_at: float,
        ended_at: float,
        speech_id: str | None,
        error: str | None,
    ) -> None:
        self._done[call_id] = None
        if len(self._done) > _MAX_TRACKED:
            self._done.popitem(last=False)
        self._emit(
            ToolMetrics(
                timestamp=ended_at,
                started_at=started_at,
                duration=max(0.0, ended_at - started_at),
                tool_name=name,
                call_id=call_id,
                success=error is None,
                error=error,
                speech_id=speech_id,
            )
        )

    # handlers (synchronous, as LiveKit requires) ---------------------------------------

    def _on_metrics_collected(self, ev: Any) -> None:
        self._safe("metrics_collected", self._metrics_collected, ev)

    def _on_tool_execution_updated(self, ev: Any) -> None:
        self._safe("tool_execution_updated", self._tool_execution_updated, ev)

    def _on_function_tools_executed(self, ev: Any) -> None:
        self._safe("function_tools_executed", self._function_tools_executed, ev)

    def _on_conversation_item_added(self, ev: Any) -> None:
        self._safe("conversation_item_added", self._conversation_item_added, ev)

    def _on_close(self, ev: Any) -> None:
        self._safe("close", self._close, ev)

    def _on_speech_done(self, speech: Any) -> None:
        self._safe("speech done", lambda s: self._end_turn(s.id, bool(s.interrupted)), speech)

    def _metrics_collected(self, ev: Any) -> None:
        m = getattr(ev, "metrics", None)
        metric = _convert(m)
        if metric is None:
            logger.debug("callmeter: LiveKit metrics %r not measured", type(m).__name__)
            return
        self._emit(metric)

    def _tool_execution_updated(self, ev: Any) -> None:
        update = getattr(ev, "update", None)
        at = _num(getattr(ev, "created_at", None), "created_at")
        if isinstance(update, lk_events.ToolCallStarted):
            call = update.function_call
            call_id, name = call.call_id, call.name
            if not (isinstance(call_id, str) and isinstance(name, str) and name):
                raise _Malformed(f"tool call without call_id or name: {call!r}")
            if call_id in self._done or call_id in self._tools:
                return
            speech = self._current_speech()
            speech_id = speech.id if speech is not None else None
            self._turn_for(speech_id)
            self._tools[call_id] = (name, at, speech_id)
            if len(self._tools) > _MAX_TRACKED:
                self._tools.popitem(last=False)
        elif isinstance(update, lk_events.ToolCallEnded):
            call_id, status = update.call_id, update.status
            if not isinstance(call_id, str) or call_id in self._done:
                return
            started = self._tools.pop(call_id, None)
            if started is None:  # started before attach: function_tools_executed names it
                self._ended[call_id] = at
                if len(self._ended) > _MAX_TRACKED:
                    self._ended.popitem(last=False)
                return
            name, started_at, speech_id = started
            error = None if status == "done" else str(status)
            self._emit_tool(call_id, name, started_at, at, speech_id, error)
        # ToolCallUpdated, ToolReplyUpdated: progress, not timing

    def _function_tools_executed(self, ev: Any) -> None:
        at = _num(getattr(ev, "created_at", None), "created_at")
        outputs = {
            getattr(o, "call_id", None): o for o in (getattr(ev, "function_call_outputs", ()) or ())
        }
        for call in getattr(ev, "function_calls", ()) or ():
            call_id, name = getattr(call, "call_id", None), getattr(call, "name", None)
            if not (isinstance(call_id, str) and isinstance(name, str) and name):
                logger.debug("callmeter: skipped a malformed LiveKit function call")
                continue
            if call_id in self._done:
                continue
            output = outputs.get(call_id)
            error = "error" if getattr(output, "is_error", False) is True else None
            started = self._tools.pop(call_id, None)
            ended_at = self._ended.pop(call_id, None) or at
            if started is not None:
                _, started_at, speech_id = started
            else:
                # LiveKit resets FunctionCall.created_at to the start of the execution
                started_at = _num(getattr(call, "created_at", None), "created_at")
                speech_id = None
            self._emit_tool(call_id, name, min(started_at, ended_at), ended_at, speech_id, error)

    def _conversation_item_added(self, ev: Any) -> None:
        item = getattr(ev, "item", None)
        if isinstance(item, lk_llm.AgentHandoff):
            agent_id = getattr(item, "new_agent_id", None)
            if self.session.agent_name is None and isinstance(agent_id, str):
                self.session.agent_name = agent_id
            return
        if not isinstance(item, lk_llm.ChatMessage):
            return
        report = item.metrics if isinstance(item.metrics, dict) else {}
        if item.role == "user":
            stopped = report.get("stopped_speaking_at")
            if stopped is None:  # text input: the message is the end of the user's turn
                stopped = getattr(item, "created_at", None)
            stopped_at = _num(stopped, "stopped_speaking_at")
            # a turn opened before its user message (preemptive generation) takes it
            pending = [t for t in self._turns.values() if not t.user_set and not t.report_seen]
            if pending:
                pending[-1].turn.user_stopped_speaking(stopped_at)
                pending[-1].user_set = True
            else:
                self._user_stopped_at = stopped_at
            return
        if item.role != "assistant":
            return
        speech = self._current_speech()
        if speech is not None:
            speech_id = speech.id
        else:  # no speech playing (e.g. a custom output): the latest turn still unanswered
            speech_id = next(
                (sid for sid, t in reversed(self._turns.items()) if not t.report_seen), None
            )
        turn = self._turn_for(speech_id)
        if turn is None or speech_id is None:
            return
        started = report.get("started_speaking_at")
        if started is not None:
            started_at = _num(started, "started_speaking_at")
            e2e = report.get("e2e_latency")
            if e2e is not None:
                turn.turn.user_stopped_speaking(started_at - _num(e2e, "e2e_latency"))
                turn.user_set = True
            turn.turn.agent_started_speaking(started_at)
        turn.report_seen = True
        if turn.handle is None:  # no speech handle to wait for: the report ends the turn
            self._end_turn(speech_id, bool(item.interrupted))

    def _close(self, ev: Any) -> None:
        try:
            error = ev.error
        except Exception:  # a close is a close, whatever else the event carries
            error = None
        self._end_turns()
        self.detach()
        self.session.close(type(error).__name__ if error is not None else None)


def _agent_name(lk_session: Any) -> str | None:
    try:
        agent = lk_session.current_agent
    except Exception:  # not started yet
        return None
    name = getattr(agent, "id", None)
    return name if isinstance(name, str) else None


def attach(lk_session: Any, session: AgentSession | None = None) -> LiveKitHandle:
    """Measure ``lk_session`` (a ``livekit.agents.AgentSession``) into ``session``.

    ``session=None`` creates a callmeter :class:`~callmeter.AgentSession` named after the
    agent (its id, known at attach time or when the session starts). The callmeter session
    is started now and closed when the LiveKit session closes. Attach before
    ``lk_session.start()`` to measure the whole call. Returns a :class:`LiveKitHandle`;
    attaching the same two sessions again returns the handle already attached (nothing is
    counted twice). Raises :class:`~callmeter.errors.InvalidArgumentError` when
    ``lk_session`` is not an event emitter or ``session`` not a callmeter session.
    """
    if not all(callable(getattr(lk_session, name, None)) for name in ("on", "off")):
        raise InvalidArgumentError(
            "attach() needs a livekit.agents.AgentSession (an event emitter with on/off), "
            f"got {type(lk_session).__name__}"
        )
    if session is None:
        session = AgentSession(agent_name=_agent_name(lk_session))
    elif not isinstance(session, AgentSession):
        raise InvalidArgumentError(f"session must be a callmeter AgentSession, got {session!r}")
    for other in list(_handles):
        if other.attached and other.lk_session is lk_session and other.session is session:
            return other  # attached already: a second subscription would count twice
    handle = LiveKitHandle(lk_session, session)
    session.start()
    handle._attach()
    _handles.add(handle)
    return handle


_handles: weakref.WeakSet[LiveKitHandle] = weakref.WeakSet()
"""Handles attached so far (while attached, the LiveKit session's emitter keeps them)."""
