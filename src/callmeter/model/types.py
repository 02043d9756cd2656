"""Metric event types.

Field names follow LiveKit Agents' where LiveKit has the field. Every timed metric also
carries ``started_at`` (wall clock, seconds since the epoch); ``timestamp`` is when the
event was emitted. Construction does not validate (it is the hot path); decoding does,
see :mod:`callmeter.model.codec`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta, Struct, field

Seconds = Annotated[float, Meta(ge=0.0, le=1e9)]
"""A non-negative, finite duration in seconds (checked when decoding)."""
Timestamp = Annotated[float, Meta(ge=0.0, le=1e11)]
"""Wall-clock seconds since the Unix epoch (checked when decoding)."""
Count = Annotated[int, Meta(ge=0)]
"""A non-negative count (checked when decoding)."""
Latency = Annotated[float, Meta(ge=-1.0, le=1e9)]
"""A latency in seconds, or -1 when it did not happen (LiveKit's convention)."""


class Metadata(Struct, kw_only=True, omit_defaults=True, frozen=True, gc=False):
    """Which model produced a metric."""

    model_name: str | None = None
    model_provider: str | None = None


class _Metric(Struct, kw_only=True, tag_field="type", omit_defaults=True, gc=False):
    type: ClassVar[str]

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if getattr(self, name) is not None
        )
        return f"{type(self).__name__}({fields})"


class LLMMetrics(_Metric, tag="llm_metrics"):
    """One LLM request (one generation).

    ``tokens_per_second`` is completion tokens divided by the time from the first token
    to the end of the response (generation speed, not counting the wait for the first
    token); :attr:`tokens_per_second_overall` is LiveKit's definition (over ``duration``).
    ``usage_reported`` is False when the provider returned no usage: the token fields
    are then 0 because they are unknown, not because nothing was used.
    """

    type: ClassVar[str] = "llm_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    label: str = ""
    request_id: str = ""
    ttft: Latency = -1.0
    cancelled: bool = False
    completion_tokens: Count = 0
    prompt_tokens: Count = 0
    prompt_cached_tokens: Count = 0
    cache_creation_tokens: Count = 0
    reasoning_tokens: Count = 0
    input_audio_tokens: Count = 0
    output_audio_tokens: Count = 0
    total_tokens: Count = 0
    tokens_per_second: Seconds = 0.0
    usage_reported: bool = True
    error: str | None = None
    speech_id: str | None = None
    metadata: Metadata | None = None

    @property
    def tokens_per_second_overall(self) -> float:
        """Completion tokens over the whole ``duration`` (LiveKit's tokens_per_second)."""
        return self.completion_tokens / self.duration if self.duration > 0 else 0.0


class ToolMetrics(_Metric, tag="tool_metrics"):
    """One tool (function) call.

    Three outcomes: completed (``success=True``), cancelled by the caller
    (``cancelled=True, error=None``) or failed (``error`` is the exception type name,
    optionally ``": "`` and a short detail). ``success`` is ``not cancelled and error is
    None``.
    """

    type: ClassVar[str] = "tool_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    tool_name: str
    call_id: str | None = None
    success: bool = True
    cancelled: bool = False
    error: str | None = None
    speech_id: str | None = None
    metadata: Metadata | None = None


class STTMetrics(_Metric, tag="stt_metrics"):
    """One speech-to-text request. ``ttfb`` is the time to the first transcript."""

    type: ClassVar[str] = "stt_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    audio_duration: Seconds = 0.0
    label: str = ""
    request_id: str = ""
    ttfb: Latency = -1.0
    streamed: bool = False
    cancelled: bool = False
    input_tokens: Count = 0
    output_tokens: Count = 0
    total_tokens: Count = 0
    input_audio_tokens: Count = 0
    error: str | None = None
    speech_id: str | None = None
    metadata: Metadata | None = None


class TTSMetrics(_Metric, tag="tts_metrics"):
    """One text-to-speech request. ``ttfb`` is the time to the first audio byte."""

    type: ClassVar[str] = "tts_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    ttfb: Latency = -1.0
    audio_duration: Seconds = 0.0
    characters_count: Count = 0
    label: str = ""
    request_id: str = ""
    cancelled: bool = False
    streamed: bool = False
    input_tokens: Count = 0
    output_tokens: Count = 0
    error: str | None = None
    segment_id: str | None = None
    speech_id: str | None = None
    metadata: Metadata | None = None


class VADMetrics(_Metric, tag="vad_metrics"):
    """Voice-activity-detection inference statistics over a window (not a timed interval)."""

    type: ClassVar[str] = "vad_metrics"
    timestamp: Timestamp
    idle_time: Seconds = 0.0
    inference_duration_total: Seconds = 0.0
    inference_count: Count = 0
    label: str = ""
    metadata: Metadata | None = None


class EOUMetrics(_Metric, tag="eou_metrics"):
    """End of utterance: from the end of the user's speech to the decision that the turn ended.

    ``started_at`` is when the user stopped speaking (wall clock).
    """

    type: ClassVar[str] = "eou_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    end_of_utterance_delay: Seconds
    transcription_delay: Seconds = 0.0
    on_user_turn_completed_delay: Seconds = 0.0
    speech_id: str | None = None
    metadata: Metadata | None = None

    @property
    def duration(self) -> float:
        """The end-of-utterance delay, so every timed metric has ``duration``."""
        return self.end_of_utterance_delay


class CachedTokenDetails(Struct, kw_only=True, omit_defaults=True):
    """Cached input tokens of a realtime response, by modality."""

    audio_tokens: Count = 0
    text_tokens: Count = 0
    image_tokens: Count = 0


class InputTokenDetails(Struct, kw_only=True, omit_defaults=True):
    """Input tokens of a realtime response, by modality."""

    audio_tokens: Count = 0
    text_tokens: Count = 0
    image_tokens: Count = 0
    cached_tokens: Count = 0
    cached_tokens_details: CachedTokenDetails | None = None


class OutputTokenDetails(Struct, kw_only=True, omit_defaults=True):
    """Output tokens of a realtime response, by modality."""

    text_tokens: Count = 0
    audio_tokens: Count = 0
    image_tokens: Count = 0


class RealtimeModelMetrics(_Metric, tag="realtime_model_metrics"):
    """One response of a speech-to-speech (realtime) model."""

    type: ClassVar[str] = "realtime_model_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    request_id: str = ""
    label: str = ""
    session_duration: Seconds = 0.0
    ttft: Latency = -1.0
    cancelled: bool = False
    input_tokens: Count = 0
    output_tokens: Count = 0
    total_tokens: Count = 0
    tokens_per_second: Seconds = 0.0
    input_token_details: InputTokenDetails = field(default_factory=InputTokenDetails)
    output_token_details: OutputTokenDetails = field(default_factory=OutputTokenDetails)
    speech_id: str | None = None
    metadata: Metadata | None = None


COMPONENTS: tuple[str, ...] = (
    "end_of_utterance",
    "transcription",
    "user_turn_completed",
    "llm_ttft",
    "llm_remainder",
    "tool",
    "tts_ttfb",
    "other",
)
"""The parts of a turn's latency, in the order they usually happen (see docs/latency.md)."""


class TurnSegment(Struct, kw_only=True, omit_defaults=True):
    """One stretch of a turn's wait attributed to one component.

    ``start``/``end`` are seconds after the user stopped speaking; ``step`` is the LLM step
    (1-based) for ``llm_ttft``/``llm_remainder`` segments.
    """

    component: str
    start: float
    end: float
    step: int | None = None


class LLMStepLatency(Struct, kw_only=True, omit_defaults=True):
    """One LLM request of a turn: its measured TTFT and the seconds the turn waited on it."""

    step: int
    ttft: Latency
    ttft_wait: Seconds = 0.0
    """Seconds of the turn's wait attributed to this step's time to first token."""
    remainder_wait: Seconds = 0.0
    """Seconds of the turn's wait attributed to this step after its first token."""
    request_id: str = ""


class TurnBreakdown(Struct, kw_only=True):
    """Where a turn's wait went, in seconds; the components add up to the turn's ``duration``.

    ``segments`` tile ``[0, duration]`` without gaps or overlaps, in time order.
    """

    end_of_utterance: Seconds = 0.0
    transcription: Seconds = 0.0
    user_turn_completed: Seconds = 0.0
    llm_ttft: Seconds = 0.0
    llm_remainder: Seconds = 0.0
    tool: Seconds = 0.0
    tts_ttfb: Seconds = 0.0
    other: Seconds = 0.0
    llm_steps: list[LLMStepLatency] = field(default_factory=list)
    segments: list[TurnSegment] = field(default_factory=list)

    def components(self) -> dict[str, float]:
        """Seconds per component, in :data:`COMPONENTS` order."""
        return {name: getattr(self, name) for name in COMPONENTS}


class TurnMetrics(_Metric, tag="turn_metrics"):
    """One user -> agent exchange, emitted when a ``session.turn()`` ends.

    ``started_at`` is when the user stopped speaking (or the text input arrived);
    ``agent_started_at`` when the agent started speaking (first TTS audio; first LLM token
    of a text-only turn), None if it never did. ``e2e_latency`` is the time between the two
    (-1 when the agent never spoke). ``duration`` is the span the breakdown covers: equal
    to ``e2e_latency`` when the agent spoke, up to the end of the turn otherwise.
    """

    type: ClassVar[str] = "turn_metrics"
    timestamp: Timestamp
    started_at: Timestamp
    duration: Seconds
    e2e_latency: Latency = -1.0
    agent_started_at: Timestamp | None = None
    interrupted: bool = False
    text_only: bool = False
    llm_requests: Count = 0
    tool_calls: Count = 0
    breakdown: TurnBreakdown = field(default_factory=TurnBreakdown)
    speech_id: str | None = None
    metadata: Metadata | None = None


AgentMetrics = (
    LLMMetrics
    | ToolMetrics
    | STTMetrics
    | TTSMetrics
    | VADMetrics
    | EOUMetrics
    | RealtimeModelMetrics
    | TurnMetrics
)
"""Any metrics event; the ``type`` field tells which."""

METRIC_TYPES: tuple[type[_Metric], ...] = (
    LLMMetrics,
    ToolMetrics,
    STTMetrics,
    TTSMetrics,
    VADMetrics,
    EOUMetrics,
    RealtimeModelMetrics,
    TurnMetrics,
)
