"""UsageSummary and its parts: the totals of one call (or of whatever a collector was fed)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class ModelUsage:
    """Usage of one provider/model in a call. Which fields apply depends on ``kind``."""

    provider: str
    model: str
    kind: str
    """``llm``, ``realtime``, ``stt``, ``tts``, or ``call`` for a call-level charge
    (telephony, hosting: ``duration`` is then the call's duration)."""
    requests: int = 0
    prompt_tokens: int = 0
    prompt_cached_tokens: int = 0
    cache_creation_tokens: int = 0
    completion_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    audio_duration: float = 0.0
    """Seconds of audio as reported (STT: transcribed; TTS: produced)."""
    characters_count: int = 0
    duration: float = 0.0
    """Sum of request durations, seconds."""
    billed_audio_duration: float = 0.0
    """Seconds of audio billed: ``audio_duration`` after the price's per-request rules
    (minimum billed duration, rounding up to an increment), to the microsecond."""
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
    cost_by_kind: dict[str, Decimal] = field(default_factory=dict)
    """USD per kind that had usage: ``llm``, ``stt``, ``tts``, ``realtime`` and ``call``
    (call-level charges: telephony, hosting). Adds up to ``cost``."""
    cost_unattributed: Decimal = Decimal(0)
    """USD in no turn: usage without a ``speech_id``, and call-level charges."""
    cost_dropped_turns: Decimal = Decimal(0)
    """USD of the turns no longer in ``cost_by_turn``. ``cost == sum(cost_by_turn.values())
    + cost_unattributed + cost_dropped_turns``, exactly."""
    dropped_turns: int = 0
    """Turns whose cost is no longer listed in ``cost_by_turn`` (still in ``cost``)."""
    partial_turns: list[str] = field(default_factory=list)
    """Turns of ``cost_by_turn`` whose cost is a lower bound (unpriced or unreported usage)."""
    unbilled_requests: dict[str, int] = field(default_factory=dict)
    """Per ``"provider/model"``, speech requests carrying none of the quantities its price
    bills (not in ``cost``; the model is also in ``unpriced``)."""
    cost_notes: list[str] = field(default_factory=list)
    """Why ``cost`` is a lower bound, one line per reason (empty when complete)."""
    call_duration: float | None = None
    """The call's duration (seconds) that call-level charges were priced from, if known."""

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
        out["cost_by_kind"] = {k: _money_str(v) for k, v in self.cost_by_kind.items()}
        out["cost_unattributed"] = _money_str(self.cost_unattributed)
        out["cost_dropped_turns"] = _money_str(self.cost_dropped_turns)
        out["unpriced"] = list(self.unpriced)
        out["partial_turns"] = list(self.partial_turns)
        out["unbilled_requests"] = dict(self.unbilled_requests)
        out["cost_notes"] = list(self.cost_notes)
        return out


def usage_from_ledger(mu: ModelUsage, v: list[Any] | None) -> ModelUsage:
    """A copy of ``mu`` whose billable quantities are the ledger's vector ``v`` (see
    :mod:`callmeter.pricing.ledger`): the one place they are added up."""
    out = copy.copy(mu)
    if v is None:
        return out
    out.requests = v[0] + v[10] if mu.kind == "llm" else v[0]
    out.duration = v[13]
    out.errors = v[14]
    out.prompt_tokens = v[1]
    out.prompt_cached_tokens = v[2]
    out.cache_creation_tokens = v[3]
    out.completion_tokens = v[4]
    out.input_audio_tokens = v[5]
    out.output_audio_tokens = v[6]
    out.characters_count = v[9]
    out.usage_unreported = v[10]
    out.audio_duration = v[11]
    out.billed_audio_duration = v[8] / 1_000_000
    return out


def apply_cost(
    s: UsageSummary,
    report: Any,
    keys: dict[tuple[str, str | None, str | None], str],
    call_duration: float | None,
) -> None:
    """Copy a :class:`~callmeter.pricing.cost.CostReport` into ``s``; ``keys`` maps the
    report's model keys to ``s.by_model`` names. Call-level charges get their own entries."""
    s.cost, s.cost_complete = report.total, report.complete
    s.unpriced = list(report.unpriced)
    s.cost_by_turn = dict(report.by_turn)
    s.cost_by_kind = dict(report.by_kind)
    s.cost_unattributed = report.unattributed
    s.cost_dropped_turns = report.dropped_turns_cost
    s.dropped_turns = report.dropped_turns
    s.partial_turns = list(report.partial_turns)
    s.cost_notes = list(report.notes)
    s.call_duration = call_duration
    for model_key, cost in report.by_model.items():
        name = keys.get(model_key)
        if name is None:  # a call-level charge
            kind, provider, model = model_key
            name = f"{provider}/{model}"
            if name in s.by_model:
                name = f"{name}#{kind}"
            s.by_model[name] = ModelUsage(
                provider or "unknown", model or "unknown", kind, duration=call_duration or 0.0
            )
        entry = s.by_model[name]
        entry.cost = cost
        entry.price_source = report.sources.get(model_key)
    s.unbilled_requests = {
        keys.get(k, f"{k[1]}/{k[2]}"): n for k, n in report.unbilled_requests.items()
    }


def _money_str(value: Decimal) -> str:
    # Money is a Decimal; as a plain decimal string it stays exact in JSON.
    return f"{value.normalize():f}"


def _slots_dict(obj: Any) -> dict[str, Any]:
    return {
        name: _money_str(v) if isinstance(v := getattr(obj, name), Decimal) else v
        for name in obj.__dataclass_fields__
    }
