"""Colours and labels of the turn components, shared by the terminal and HTML reports."""

from __future__ import annotations

COLORS: dict[str, str] = {
    "end_of_utterance": "#8e7cc3",
    "transcription": "#c9b8ef",
    "user_turn_completed": "#c27ba0",
    "llm_ttft": "#e69138",
    "llm_remainder": "#f9cb9c",
    "tool": "#3d85c6",
    "tts_ttfb": "#6aa84f",
    "other": "#999999",
}
"""Component -> colour (hex)."""

LABELS: dict[str, str] = {
    "end_of_utterance": "end of utterance",
    "transcription": "transcription",
    "user_turn_completed": "turn callback",
    "llm_ttft": "LLM TTFT",
    "llm_remainder": "LLM rest",
    "tool": "tools",
    "tts_ttfb": "TTS TTFB",
    "other": "other",
}
"""Component -> short human label."""

SERIES_LABELS: dict[str, str] = {
    "e2e_latency": "e2e latency",
    "llm_ttft": "LLM TTFT",
    "tts_ttfb": "TTS TTFB",
    "tool_duration": "tool duration",
}


def seconds(value: float | None) -> str:
    """A duration for people: ``1.234 s``, ``-`` when unknown."""
    if value is None or value < 0:
        return "-"
    return f"{value:.3f} s"
