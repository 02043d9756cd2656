"""UsageCollector and UsageSummary: per-call totals from a stream of metrics events."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CallmeterError, InvalidArgumentError
from .latency import LatencyCollector, LatencySummary
from .timeline import IntervalUnion
from .types import (
    AgentMetrics,
    EOUMetrics,
    LLMMetrics,
    Metadata,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
)

UNKNOWN = "unknown"


@dataclass(slots=True)
class ModelUsage:
    """Usage of one provider/model in a call. Which fields apply depends on ``kind``."""

    provider: str
    model: str
    kind: str
    """``llm``, ``realtime``, ``stt`` or ``tts``."""
    requests: int = 0
    prompt_tokens: int = 0
    prompt_cached_tokens: int = 0
    cache_creation_tokens: int = 0
    completion_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    audio_duration: float = 0.0
    characters_count: int = 0
    duration: float = 0.0
    """Sum of request durations, seconds."""
    usage_unreported: int = 0
    """Requests for which the provider reported no token usage (their tokens are unknown)."""
    errors: int = 0


@dataclass(slots=True)
class ToolUsage:
    """Calls of one tool in a call."""

    calls: int = 0
    errors: int = 0
    total_duration: float = 0.0
    max_duration: float = 0.0


@dataclass(slots=True)
class UsageSummary:
    """Totals for one call (or whatever a collector was fed).

    Durations are seconds. ``llm_duration`` and ``tool_duration`` are plain sums of request
    durations; ``llm_and_tool_duration`` is their sum (time spent in LLM requests plus time
    spent in tools). ``active_duration`` is the wall-clock union of every timed interval
    (LLM, tool, STT, TTS, realtime, end-of-utterance), so work that ran in parallel counts
    once.
    """

    llm_prompt_tokens: int = 0
    llm_prompt_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters_count: int = 0
    tts_audio_duration: float = 0.0
    stt_audio_duration: float = 0.0
    llm_requests: int = 0
    llm_duration: float = 0.0
    llm_errors: int = 0
    llm_usage_unreported: int = 0
    """LLM requests whose provider reported no usage: token totals exclude them."""
    tool_calls: int = 0
    tool_errors: int = 0
    tool_duration: float = 0.0
    stt_requests: int = 0
    tts_requests: int = 0
    llm_and_tool_duration: float = 0.0
    active_duration: float = 0.0
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    """Usage per ``"provider/model"``."""
    by_tool: dict[str, ToolUsage] = field(default_factory=dict)
    """Usage per tool name."""

    @property
    def llm_input_tokens(self) -> int:
        """Alias of ``llm_prompt_tokens``."""
        return self.llm_prompt_tokens

    @property
    def llm_output_tokens(self) -> int:
        """Alias of ``llm_completion_tokens``."""
        return self.llm_completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain builtins (for JSON)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["by_model"] = {k: _slots_dict(v) for k, v in self.by_model.items()}
        out["by_tool"] = {k: _slots_dict(v) for k, v in self.by_tool.items()}
        return out


def _slots_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


class MetricsNotKeptError(CallmeterError):
    """``UsageCollector.metrics`` was read on a collector created with ``keep_metrics=False``."""


class UsageCollector:
    """Collects metrics events into a :class:`UsageSummary`.

    ``keep_metrics=True`` (the default) keeps the events in :attr:`metrics`; ``max_metrics``
    keeps only the newest N (older ones are counted in :attr:`dropped_metrics`). Totals are
    exact either way. Not thread-safe: feed one collector from one thread (or event loop).
    """

    def __init__(self, *, keep_metrics: bool = True, max_metrics: int | None = None) -> None:
        if max_metrics is not None and (not isinstance(max_metrics, int) or max_metrics < 1):
            raise InvalidArgumentError(
                f"max_metrics must be a positive int or None, got {max_metrics!r}"
            )
        self._keep = keep_metrics
        self._max_metrics = max_metrics
        self._dispatch: dict[type, Callable[[Any], None]] = {
            LLMMetrics: self._llm,
            ToolMetrics: self._tool,
            STTMetrics: self._stt,
            TTSMetrics: self._tts,
            EOUMetrics: self._eou,
            RealtimeModelMetrics: self._realtime,
        }
        self.reset()

    def reset(self) -> None:
        """Forget everything collected so far."""
        self._summary = UsageSummary()
        self._models: dict[tuple[str, str | None, str | None], ModelUsage] = {}
        self._timeline = IntervalUnion()
        self._metrics: deque[AgentMetrics] | list[AgentMetrics] = (
            deque(maxlen=self._max_metrics) if self._max_metrics else []
        )
        self._seen = 0
        self._latency = LatencyCollector()

    def __call__(self, metrics: AgentMetrics) -> None:
        self.collect(metrics)

    def collect(self, metrics: AgentMetrics) -> None:
        """Add one metrics event. Unknown event types are kept but add to no total."""
        handler = self._dispatch.get(type(metrics))
        if handler is not None:
            handler(metrics)
        self._latency.collect(metrics)
        if self._keep:
            self._metrics.append(metrics)
            self._seen += 1

    @property
    def metrics(self) -> list[AgentMetrics]:
        """The collected events, oldest first (a copy)."""
        if not self._keep:
            raise MetricsNotKeptError(
                "this UsageCollector was created with keep_metrics=False; "
                "create it with keep_metrics=True (optionally max_metrics=N) to keep events"
            )
        return list(self._metrics)

    @property
    def dropped_metrics(self) -> int:
        """Events no longer in :attr:`metrics` because of ``max_metrics``."""
        return self._seen - len(self._metrics) if self._keep else 0

    def get_summary(self) -> UsageSummary:
        """A copy of the totals so far."""
        summary = copy.deepcopy(self._summary)
        summary.llm_and_tool_duration = summary.llm_duration + summary.tool_duration
        summary.active_duration = self._timeline.total()
        summary.by_model = {
            f"{mu.provider}/{mu.model}": copy.copy(mu) for mu in self._models.values()
        }
        return summary

    def get_latency_summary(self) -> LatencySummary:
        """Turn latency so far: e2e, LLM TTFT, TTS TTFB and tool percentiles, slowest turns."""
        return self._latency.get_summary()

    def _model(self, kind: str, metadata: Metadata | None) -> ModelUsage:
        if metadata is None:
            key = (kind, None, None)
        else:
            key = (kind, metadata.model_provider, metadata.model_name)
        mu = self._models.get(key)
        if mu is None:
            mu = self._models[key] = ModelUsage(
                provider=key[1] or UNKNOWN, model=key[2] or UNKNOWN, kind=kind
            )
        return mu

    def _llm(self, m: LLMMetrics) -> None:
        s = self._summary
        s.llm_requests += 1
        s.llm_duration += m.duration
        mu = self._model("llm", m.metadata)
        mu.requests += 1
        mu.duration += m.duration
        if m.error is not None:
            s.llm_errors += 1
            mu.errors += 1
        if m.usage_reported:
            s.llm_prompt_tokens += m.prompt_tokens
            s.llm_prompt_cached_tokens += m.prompt_cached_tokens
            s.llm_completion_tokens += m.completion_tokens
            mu.prompt_tokens += m.prompt_tokens
            mu.prompt_cached_tokens += m.prompt_cached_tokens
            mu.cache_creation_tokens += m.cache_creation_tokens
            mu.completion_tokens += m.completion_tokens
            mu.input_audio_tokens += m.input_audio_tokens
            mu.output_audio_tokens += m.output_audio_tokens
        else:
            s.llm_usage_unreported += 1
            mu.usage_unreported += 1
        self._timeline.add(m.started_at, m.started_at + m.duration)

    def _tool(self, m: ToolMetrics) -> None:
        s = self._summary
        s.tool_calls += 1
        s.tool_duration += m.duration
        tu = s.by_tool.get(m.tool_name)
        if tu is None:
            tu = s.by_tool[m.tool_name] = ToolUsage()
        tu.calls += 1
        tu.total_duration += m.duration
        if m.duration > tu.max_duration:
            tu.max_duration = m.duration
        if not m.success:
            s.tool_errors += 1
            tu.errors += 1
        self._timeline.add(m.started_at, m.started_at + m.duration)

    def _stt(self, m: STTMetrics) -> None:
        s = self._summary
        s.stt_requests += 1
        s.stt_audio_duration += m.audio_duration
        mu = self._model("stt", m.metadata)
        mu.requests += 1
        mu.duration += m.duration
        mu.audio_duration += m.audio_duration
        mu.prompt_tokens += m.input_tokens
        mu.completion_tokens += m.output_tokens
        mu.input_audio_tokens += m.input_audio_tokens
        if m.error is not None:
            mu.errors += 1
        self._timeline.add(m.started_at, m.started_at + m.duration)

    def _tts(self, m: TTSMetrics) -> None:
        s = self._summary
        s.tts_requests += 1
        s.tts_characters_count += m.characters_count
        s.tts_audio_duration += m.audio_duration
        mu = self._model("tts", m.metadata)
        mu.requests += 1
        mu.duration += m.duration
        mu.characters_count += m.characters_count
        mu.audio_duration += m.audio_duration
        mu.prompt_tokens += m.input_tokens
        mu.completion_tokens += m.output_tokens
        if m.error is not None:
            mu.errors += 1
        self._timeline.add(m.started_at, m.started_at + m.duration)

    def _eou(self, m: EOUMetrics) -> None:
        self._timeline.add(m.started_at, m.started_at + m.end_of_utterance_delay)

    def _realtime(self, m: RealtimeModelMetrics) -> None:
        s = self._summary
        cached = m.input_token_details.cached_tokens
        s.llm_prompt_tokens += m.input_tokens
        s.llm_prompt_cached_tokens += cached
        s.llm_completion_tokens += m.output_tokens
        mu = self._model("realtime", m.metadata)
        mu.requests += 1
        mu.duration += m.duration
        mu.prompt_tokens += m.input_tokens
        mu.prompt_cached_tokens += cached
        mu.completion_tokens += m.output_tokens
        mu.input_audio_tokens += m.input_token_details.audio_tokens
        mu.output_audio_tokens += m.output_token_details.audio_tokens
        self._timeline.add(m.started_at, m.started_at + m.duration)
