"""Synthetic but realistic records of calls, for store, server and exporter tests."""

from __future__ import annotations

import msgspec

from callmeter.metrics import LLMMetrics, Metadata, ToolMetrics, TTSMetrics
from callmeter.model.types import TurnMetrics
from callmeter.records import (
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    Record,
    SessionStartedEvent,
)

LLM = Metadata(model_name="gpt-4o-mini", model_provider="openai")
TTS = Metadata(model_name="tts-1", model_provider="openai")


def make_call(
    sid: str,
    t0: float = 1_700_000_000.0,
    *,
    turns: int = 3,
    agent: str | None = "support",
    labels: dict[str, str] | None = None,
    e2e: float = 1.0,
    tool_error: bool = False,
    close: bool = True,
    breach: bool = False,
) -> list[Record]:
    """Records of one call: started, per turn LLM + tool + TTS + turn metrics, close."""
    env = {"session_id": sid, "agent_name": agent, "labels": labels}
    out: list[Record] = [SessionStartedEvent(seq=0, created_at=t0, **env)]
    t = t0
    for k in range(turns):
        t += 2.0
        sp = f"{sid}-t{k}"
        mets = [
            LLMMetrics(timestamp=t + 0.5, started_at=t, duration=0.5, ttft=0.2,
                       prompt_tokens=100, completion_tokens=20, total_tokens=120,
                       speech_id=sp, metadata=LLM),
            ToolMetrics(timestamp=t + 0.7, started_at=t + 0.5, duration=0.2,
                        tool_name="lookup", success=not tool_error,
                        error="KeyError" if tool_error else None, speech_id=sp),
            TTSMetrics(timestamp=t + 1.0, started_at=t + 0.7, duration=0.3, ttfb=0.1,
                       characters_count=40, audio_duration=2.0, speech_id=sp, metadata=TTS),
            TurnMetrics(timestamp=t + 1.0, started_at=t, duration=e2e, e2e_latency=e2e,
                        llm_requests=1, tool_calls=1, speech_id=sp),
        ]  # fmt: skip
        for m in mets:
            out.append(
                MetricsCollectedEvent(seq=len(out), created_at=m.timestamp, metrics=m, **env)
            )
        if breach:
            out.append(
                LatencyBudgetExceededEvent(
                    seq=len(out), created_at=t + 1.0, turn=mets[-1], exceeded=[], **env
                )
            )
    if close:
        out.append(CloseEvent(seq=len(out), created_at=t + 2.0, duration=t + 2.0 - t0, **env))
    return out


def unpriced(records: list) -> list:
    """The records with the LLM's model renamed to one no price list knows."""
    out = []
    for r in records:
        if isinstance(r, MetricsCollectedEvent) and isinstance(r.metrics, LLMMetrics):
            md = Metadata(model_name="no-such-model", model_provider="acme")
            r = msgspec.structs.replace(r, metrics=msgspec.structs.replace(r.metrics, metadata=md))
        out.append(r)
    return out
