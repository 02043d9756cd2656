"""Validation of metrics events before they touch a total: exact types and ranges.

:func:`check` runs on the hot path (every emitted or collected event), so it checks exact
types (``type(x) is int``) and ranges with plain comparisons, without converting anything.
It accepts exactly what decoding (:mod:`callmeter.model.codec`) accepts, plus an ``int``
wherever a ``float`` is expected: finite, non-negative durations and timestamps; ``ttft``
and ``ttfb`` non-negative or -1; counts non-negative ``int`` (not ``bool``, not ``float``);
strings ``str``; ``speech_id``, ``error`` and friends ``str`` or None; ``metadata`` a
:class:`~callmeter.model.types.Metadata` of strings or None. NaN fails every range check.

:class:`RejectLog` logs rejected events at a bounded rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from msgspec.structs import astuple

from .._native import speedups
from .types import (
    CachedTokenDetails,
    EOUMetrics,
    InputTokenDetails,
    LLMMetrics,
    LLMStepLatency,
    Metadata,
    OutputTokenDetails,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    TurnBreakdown,
    TurnMetrics,
    TurnSegment,
    VADMetrics,
)

MAX_SECONDS = 1e9
"""Largest duration accepted, in seconds (as in the decoding constraints)."""
MAX_TIMESTAMP = 1e11
"""Largest wall-clock timestamp accepted, in seconds since the epoch."""

_REAL = frozenset((float, int))
_STR_OR_NONE = frozenset((str, type(None)))


def _seconds(x: Any) -> bool:
    return type(x) in _REAL and 0.0 <= x <= MAX_SECONDS


def _stamp(x: Any) -> bool:
    return type(x) in _REAL and 0.0 <= x <= MAX_TIMESTAMP


def _latency(x: Any) -> bool:
    # -1 means "did not happen" (LiveKit's convention); otherwise a duration
    return type(x) in _REAL and (0.0 <= x <= MAX_SECONDS or x == -1.0)


def _count(x: Any) -> bool:
    return type(x) is int and x >= 0


# Metadata is frozen and usually shared by every event of a model: remember the ones that
# passed, by identity (the dict holds them, so an id is never reused while it is a key).
_valid_metadata: dict[int, Metadata] = {}
_MAX_REMEMBERED = 1024


def _metadata(md: Any) -> str | None:
    if md is None or _valid_metadata.get(id(md)) is md:
        return None
    if type(md) is not Metadata:
        return f"metadata must be a Metadata or None, got {type(md).__name__}"
    name, provider = md.model_name, md.model_provider
    if not (name is None or isinstance(name, str)) or not (
        provider is None or isinstance(provider, str)
    ):
        return "metadata.model_name and metadata.model_provider must be str or None"
    if len(_valid_metadata) >= _MAX_REMEMBERED:
        _valid_metadata.clear()
    _valid_metadata[id(md)] = md
    return None


def _llm(
    m: LLMMetrics,
    _float: type = float,
    _int: type = int,
    _bool: type = bool,
    _str: type = str,
    _md_ok: dict[int, Metadata] = _valid_metadata,
    _astuple: Callable[[Any], tuple[Any, ...]] = astuple,
    _type: type = type,
) -> str | None:
    # The hot path, as one expression of exact type checks (type(), which an object
    # cannot fake, unlike __class__) and comparisons (NaN fails every comparison; the
    # 1e9/1e11 literals are MAX_SECONDS and MAX_TIMESTAMP). The fields are read in one
    # call (astuple), in LLMMetrics' field order (checked below). A bitwise OR of ints is
    # negative iff one of them is.
    (ts, st, d, label, rid, ttft, cancelled, b, a, c, e, f, g, h, t, tps, reported, err, sid,
     md) = _astuple(m)  # fmt: skip
    if (
        (_type(ts) is _float or _type(ts) is _int)
        and (_type(st) is _float or _type(st) is _int)
        and (_type(d) is _float or _type(d) is _int)
        and (_type(tps) is _float or _type(tps) is _int)
        and (_type(ttft) is _float or _type(ttft) is _int)
        and 0.0 <= ts <= 1e11
        and 0.0 <= st <= 1e11
        and 0.0 <= d <= 1e9
        and 0.0 <= tps <= 1e9
        and (0.0 <= ttft <= 1e9 or ttft == -1.0)
        and _type(a) is _int
        and _type(b) is _int
        and _type(c) is _int
        and _type(t) is _int
        and _type(e) is _int
        and _type(f) is _int
        and _type(g) is _int
        and _type(h) is _int
        and (a | b | c | t | e | f | g | h) >= 0
        and _type(cancelled) is _bool
        and _type(reported) is _bool
        and _type(label) is _str
        and _type(rid) is _str
        and (err is None or _type(err) is _str)
        and (sid is None or _type(sid) is _str)
    ):
        if md is None or _md_ok.get(id(md)) is md:
            return None
        return _metadata(md)
    return "invalid LLMMetrics"  # the caller names the field (_explain)


def _tool(
    m: ToolMetrics, _real: frozenset[type] = _REAL, _son: frozenset[type] = _STR_OR_NONE
) -> str | None:
    ts, st, d = m.timestamp, m.started_at, m.duration
    if not (
        ts.__class__ in _real
        and st.__class__ in _real
        and d.__class__ in _real
        and 0.0 <= ts <= 1e11
        and 0.0 <= st <= 1e11
        and 0.0 <= d <= 1e9
    ):
        return "timestamp, started_at and duration must be finite, non-negative numbers"
    if not (
        type(m.tool_name) is str
        and type(m.success) is bool
        and type(m.cancelled) is bool
        and type(m.call_id) in _son
        and type(m.error) in _son
        and type(m.speech_id) in _son
    ):
        return "tool_name must be str, success/cancelled bool, call_id/error/speech_id str or None"
    md = m.metadata
    return None if md is None else _metadata(md)


def _common_speech(m: Any) -> str | None:
    if not (_stamp(m.timestamp) and _stamp(m.started_at) and _seconds(m.duration)):
        return "timestamp, started_at and duration must be finite, non-negative numbers"
    if not (_seconds(m.audio_duration) and _latency(m.ttfb)):
        return "audio_duration must be a finite non-negative number, ttfb too (or -1)"
    if not (_count(m.input_tokens) and _count(m.output_tokens)):
        return "token counts must be non-negative ints"
    if not (
        type(m.streamed) is bool
        and type(m.cancelled) is bool
        and type(m.label) is str
        and type(m.request_id) is str
        and type(m.error) in _STR_OR_NONE
        and type(m.speech_id) in _STR_OR_NONE
    ):
        return "streamed/cancelled must be bool, label/request_id str, error/speech_id str or None"
    return _metadata(m.metadata)


def _stt(m: STTMetrics) -> str | None:
    if not (_count(m.total_tokens) and _count(m.input_audio_tokens)):
        return "token counts must be non-negative ints"
    return _common_speech(m)


def _tts(m: TTSMetrics) -> str | None:
    if not _count(m.characters_count):
        return "characters_count must be a non-negative int"
    if type(m.segment_id) not in _STR_OR_NONE:
        return "segment_id must be str or None"
    return _common_speech(m)


def _vad(m: VADMetrics) -> str | None:
    if not (
        _stamp(m.timestamp)
        and _seconds(m.idle_time)
        and _seconds(m.inference_duration_total)
        and _count(m.inference_count)
        and type(m.label) is str
    ):
        return "VAD times must be finite non-negative numbers, inference_count a non-negative int"
    return _metadata(m.metadata)


def _eou(m: EOUMetrics) -> str | None:
    if not (
        _stamp(m.timestamp)
        and _stamp(m.started_at)
        and _seconds(m.end_of_utterance_delay)
        and _seconds(m.transcription_delay)
        and _seconds(m.on_user_turn_completed_delay)
    ):
        return "EOU timestamps and delays must be finite, non-negative numbers"
    if type(m.speech_id) not in _STR_OR_NONE:
        return "speech_id must be str or None"
    return _metadata(m.metadata)


def _details(d: Any, cls: type, names: tuple[str, ...]) -> bool:
    return type(d) is cls and all(_count(getattr(d, n)) for n in names)


_MODALITIES = ("audio_tokens", "text_tokens", "image_tokens")


def _realtime(m: RealtimeModelMetrics) -> str | None:
    if not (
        _stamp(m.timestamp)
        and _stamp(m.started_at)
        and _seconds(m.duration)
        and _seconds(m.session_duration)
        and _seconds(m.tokens_per_second)
        and _latency(m.ttft)
    ):
        return "timestamps, durations and ttft must be finite, non-negative numbers (ttft or -1)"
    if not (_count(m.input_tokens) and _count(m.output_tokens) and _count(m.total_tokens)):
        return "token counts must be non-negative ints"
    inp = m.input_token_details
    if not (
        _details(inp, InputTokenDetails, (*_MODALITIES, "cached_tokens"))
        and (
            inp.cached_tokens_details is None
            or _details(inp.cached_tokens_details, CachedTokenDetails, _MODALITIES)
        )
        and _details(m.output_token_details, OutputTokenDetails, _MODALITIES)
    ):
        return "input_token_details/output_token_details must hold non-negative int counts"
    if not (
        type(m.cancelled) is bool
        and type(m.label) is str
        and type(m.request_id) is str
        and type(m.speech_id) in _STR_OR_NONE
    ):
        return "cancelled must be bool, label/request_id str, speech_id str or None"
    return _metadata(m.metadata)


_COMPONENT_FIELDS = (
    "end_of_utterance",
    "transcription",
    "user_turn_completed",
    "llm_ttft",
    "llm_remainder",
    "tool",
    "tts_ttfb",
    "other",
)


def _breakdown(b: Any) -> bool:
    if type(b) is not TurnBreakdown:
        return False
    if not all(_seconds(getattr(b, n)) for n in _COMPONENT_FIELDS):
        return False
    steps, segments = b.llm_steps, b.segments
    if type(steps) is not list or type(segments) is not list:
        return False
    for s in steps:
        if not (
            type(s) is LLMStepLatency
            and type(s.step) is int
            and _latency(s.ttft)
            and _seconds(s.ttft_wait)
            and _seconds(s.remainder_wait)
            and type(s.request_id) is str
        ):
            return False
    for g in segments:
        if not (
            type(g) is TurnSegment
            and type(g.component) is str
            and type(g.start) in _REAL
            and type(g.end) in _REAL
            and -MAX_SECONDS <= g.start <= MAX_SECONDS
            and -MAX_SECONDS <= g.end <= MAX_SECONDS
            and type(g.step) in (int, type(None))
        ):
            return False
    return True


def _turn(m: TurnMetrics) -> str | None:
    if not (
        _stamp(m.timestamp)
        and _stamp(m.started_at)
        and _seconds(m.duration)
        and _latency(m.e2e_latency)
        and (m.agent_started_at is None or _stamp(m.agent_started_at))
    ):
        return "turn timestamps and latencies must be finite, non-negative numbers (or -1)"
    if not (
        _count(m.llm_requests)
        and _count(m.tool_calls)
        and type(m.interrupted) is bool
        and type(m.text_only) is bool
        and type(m.speech_id) in _STR_OR_NONE
    ):
        return "turn counts must be non-negative ints, flags bool, speech_id str or None"
    if not _breakdown(m.breakdown):
        return "breakdown must be a TurnBreakdown of finite, non-negative seconds"
    return _metadata(m.metadata)


_LLM_FIELDS = (
    "timestamp", "started_at", "duration", "label", "request_id", "ttft", "cancelled",
    "completion_tokens", "prompt_tokens", "prompt_cached_tokens", "cache_creation_tokens",
    "reasoning_tokens", "input_audio_tokens", "output_audio_tokens", "total_tokens",
    "tokens_per_second", "usage_reported", "error", "speech_id", "metadata",
)  # fmt: skip
assert LLMMetrics.__struct_fields__ == _LLM_FIELDS, "update _llm to the new LLMMetrics fields"
if speedups is not None:  # the same check in C; anything it does not accept goes to _llm
    speedups.configure(LLMMetrics, Metadata, _llm)

_CHECKS: dict[type, Callable[[Any], str | None]] = {
    LLMMetrics: _llm if speedups is None else speedups.llm_check,
    ToolMetrics: _tool,
    STTMetrics: _stt,
    TTSMetrics: _tts,
    VADMetrics: _vad,
    EOUMetrics: _eou,
    RealtimeModelMetrics: _realtime,
    TurnMetrics: _turn,
}


_NOTHING = object()


class _LastValid:
    """The event a session validated most recently (see :data:`last_valid`)."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Any = _NOTHING


last_valid = _LastValid()
"""Set by a session to each event it has just validated, so a ``UsageCollector`` fed from
its ``metrics_collected`` handler does not check the same object again. Any other object
(another thread's event, an event built elsewhere) is checked in full."""


CHECKS = _CHECKS
"""Per-type check functions (exact class -> function returning None or a reason). Callers
on the hot path look the function up themselves and fall back to :func:`check` (which
also names the offending field) when it returns a reason, raises, or is missing."""


def check(metrics: Any) -> str | None:
    """None when ``metrics`` is a valid metrics event; otherwise what is wrong with it.

    Never raises. Only the callmeter metric types are valid (subclasses are checked as
    their callmeter base type).
    """
    fn = _CHECKS.get(type(metrics))
    if fn is None:
        fn = _find_check(metrics)
        if fn is None:
            return f"not a callmeter metrics event: {type(metrics).__name__}"
    try:
        reason = fn(metrics)
    except Exception as exc:  # e.g. a comparison an odd value refuses, a missing attribute
        reason = f"malformed {type(metrics).__name__}: {type(exc).__name__}: {exc}"
    if reason is None:
        return None
    return _explain(metrics) or reason


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {}
for _names, _kind in (
    (("timestamp", "started_at"), (_stamp, "a finite number of seconds since the epoch")),
    (
        (
            "duration",
            "audio_duration",
            "tokens_per_second",
            "idle_time",
            "inference_duration_total",
            "end_of_utterance_delay",
            "transcription_delay",
            "on_user_turn_completed_delay",
            "session_duration",
        ),
        (_seconds, "a finite, non-negative number"),
    ),
    (("ttft", "ttfb", "e2e_latency"), (_latency, "a finite, non-negative number or -1")),
    (
        (
            "prompt_tokens",
            "completion_tokens",
            "prompt_cached_tokens",
            "cache_creation_tokens",
            "reasoning_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "characters_count",
            "inference_count",
            "llm_requests",
            "tool_calls",
        ),
        (_count, "a non-negative int"),
    ),
    (
        ("cancelled", "usage_reported", "success", "streamed", "interrupted", "text_only"),
        (lambda x: type(x) is bool, "a bool"),
    ),
    (("label", "request_id", "tool_name"), (lambda x: type(x) is str, "a str")),
    (
        ("error", "speech_id", "call_id", "segment_id"),
        (lambda x: type(x) in _STR_OR_NONE, "a str or None"),
    ),
    (("metadata",), (lambda x: _metadata(x) is None, "a Metadata of str or None values")),
):
    for _name in _names:
        _KINDS[_name] = _kind


def _explain(metrics: Any) -> str | None:
    # Slow path, on rejection only: name the first offending field.
    try:
        for name in metrics.__struct_fields__:
            kind = _KINDS.get(name)
            if kind is None:
                continue
            value = getattr(metrics, name)
            if not kind[0](value):
                text = describe(value, 60)
                return f"{name} must be {kind[1]}, got {type(value).__name__} {text}"
    except Exception:
        return None
    return None


def _find_check(metrics: Any) -> Callable[[Any], str | None] | None:
    try:
        for cls in type(metrics).__mro__[1:]:
            fn = _CHECKS.get(cls)
            if fn is not None:
                if type(metrics).__struct_fields__ == cls.__struct_fields__:
                    return fn
                return _explain  # a subclass with more fields: field by field
    except Exception:
        return None
    return None


def as_counted(metrics: Any) -> Any:
    """A valid event as collectors add it up: itself when its class is a callmeter metrics
    class, else (a subclass, with its own fields) a copy as its callmeter base class.

    Totals dispatch on the exact class; without this, a subclass would be counted nowhere.
    """
    cls = type(metrics)
    if cls in _CHECKS:
        return metrics
    for base in cls.__mro__[1:]:
        if base in _CHECKS:
            return base(**{f: getattr(metrics, f) for f in base.__struct_fields__})
    return metrics


def describe(metrics: Any, limit: int = 300) -> str:
    """A short, never-raising ``repr`` of an event for log lines."""
    try:
        text = repr(metrics)
    except Exception as exc:
        text = f"<{type(metrics).__name__}, repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class RejectLog:
    """Logs rejected events at most ``burst`` times per ``period`` seconds, then a count of
    the ones it left out. Thread-safe; :attr:`count` is every rejection."""

    __slots__ = (
        "_burst",
        "_lock",
        "_logged",
        "_logger",
        "_period",
        "_suppressed",
        "_window",
        "count",
    )

    def __init__(self, logger: logging.Logger, *, burst: int = 10, period: float = 60.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._lock = threading.Lock()
        self._window = float("-inf")
        self._logged = 0
        self._suppressed = 0
        self.count = 0

    def add(self, n: int) -> None:
        """Count ``n`` events left out without logging them (the caller logs)."""
        with self._lock:
            self.count += n

    def reject(self, what: str, reason: str, metrics: Any) -> None:
        """Count one rejected event and log it unless over the rate."""
        with self._lock:
            self.count += 1
            now = time.monotonic()
            suppressed = 0
            if now - self._window >= self._period:
                suppressed, self._suppressed = self._suppressed, 0
                self._window, self._logged = now, 0
            if self._logged >= self._burst:
                self._suppressed += 1
                return
            self._logged += 1
        if suppressed:
            self._logger.warning(
                "callmeter: %s: %d more invalid events were rejected and not logged",
                what,
                suppressed,
            )
        self._logger.warning(
            "callmeter: %s: rejected an invalid metrics event (%s): %s",
            what,
            reason,
            describe(metrics),
        )
