"""Measure ``openai`` SDK calls and run a measured tool-calling loop (extra ``openai``).

``instrument(client)`` makes every ``chat.completions.create`` / ``responses.create`` of
one client an ``LLMMetrics``; ``run_turn`` (in :mod:`.agent`) is a tool-calling loop
measured step by step. Modules: :mod:`.provider` (provider names), :mod:`.usage` (SDK
usage to callmeter fields), :mod:`.outcome` (completed, cancelled, failed),
:mod:`.stream` (the measuring stream), :mod:`.pending` (streams open in a session) and
:mod:`.instrument` (patching and the handle).
"""

try:
    import openai as _openai  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "callmeter.integrations.openai needs the openai package: pip install 'callmeter[openai]'"
    ) from exc

from .agent import Tool, ToolResult, TurnResult, run_turn, tool
from .instrument import Instrumentation, instrument, is_instrumented, measured, uninstrument
from .provider import infer_provider

__all__ = [
    "Instrumentation",
    "Tool",
    "ToolResult",
    "TurnResult",
    "infer_provider",
    "instrument",
    "is_instrumented",
    "measured",
    "run_turn",
    "tool",
    "uninstrument",
]
