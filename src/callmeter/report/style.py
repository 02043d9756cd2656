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


UNKNOWN_COLOR = "#5f5f5f"
"""Colour of a component this callmeter does not know (written by a newer version)."""


def color(component: str) -> str:
    """The colour of ``component`` (:data:`UNKNOWN_COLOR` for an unknown one)."""
    return COLORS.get(component, UNKNOWN_COLOR)


def label(component: str) -> str:
    """The short label of ``component`` (unknown ones are shown as ``?name``)."""
    known = LABELS.get(component)
    return known if known is not None else "?" + clean(component, 24)


# C0 and C1 control characters (ANSI escapes, carriage returns, ...) never reach a terminal
_CONTROL = {c: "\ufffd" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}


def clean(text: str, width: int = 80) -> str:
    """``text`` safe for one terminal line: control characters replaced, at most ``width``
    characters (longer text ends in ``…``)."""
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.translate(_CONTROL)
