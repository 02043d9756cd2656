"""UsageSummary and its parts: the totals of one call (or of whatever a collector was fed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


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
    cost: Decimal | None = None
    """USD for this model's usage; None when it has no price (see ``UsageSummary.unpriced``)."""
    price_source: str | None = None
    """Where the price came from (override file, bundled table, genai-prices version)."""


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
    """Usage per ``"provider/model"`` (``"provider/model#kind"`` for the rare second kind
    measured under the same name)."""
    by_tool: dict[str, ToolUsage] = field(default_factory=dict)
    """Usage per tool name."""
    cost: Decimal = Decimal(0)
    """Total USD, exact. A lower bound when ``cost_complete`` is False."""
    cost_complete: bool = True
    """False when some usage could not be priced (``unpriced``) or was not reported."""
    unpriced: list[str] = field(default_factory=list)
    """``"provider/model"`` of models that had usage but no price (not in ``cost``)."""
    cost_by_turn: dict[str, Decimal] = field(default_factory=dict)
    """USD per turn (``speech_id``), most recent turns only (``UsageCollector(max_cost_turns)``)."""

    @property
    def cost_is_lower_bound(self) -> bool:
        """True when the real cost is at least ``cost`` (some usage is unpriced)."""
        return not self.cost_complete

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
        out["cost"] = _money_str(self.cost)
        out["cost_by_turn"] = {k: _money_str(v) for k, v in self.cost_by_turn.items()}
        out["unpriced"] = list(self.unpriced)
        return out


def _money_str(value: Decimal) -> str:
    # Money is a Decimal; as a plain decimal string it stays exact in JSON.
    return f"{value.normalize():f}"


def _slots_dict(obj: Any) -> dict[str, Any]:
    return {
        name: _money_str(v) if isinstance(v := getattr(obj, name), Decimal) else v
        for name in obj.__dataclass_fields__
    }
