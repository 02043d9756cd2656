"""The measured tool-calling loop; it lives in :mod:`callmeter.integrations.openai.agent`.

Kept so ``from callmeter.agent import run_turn`` keeps working (extra ``openai``).
"""

from .integrations.openai.agent import Tool, ToolResult, TurnResult, run_turn, tool

__all__ = ["Tool", "ToolResult", "TurnResult", "run_turn", "tool"]
