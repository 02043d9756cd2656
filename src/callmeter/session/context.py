"""Context variables: the current session and the current turn's speech_id.

Tasks created inside a ``with session.turn():`` block copy the context, so metrics they
measure carry the turn's speech_id.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agent_session import AgentSession

current_session_var: ContextVar[AgentSession | None] = ContextVar("callmeter_session", default=None)
current_speech_id_var: ContextVar[str | None] = ContextVar("callmeter_speech_id", default=None)
current_tool_name_var: ContextVar[str | None] = ContextVar("callmeter_tool_name", default=None)
"""Name of the tool call being measured in this context (so it is not measured twice)."""


def current_session() -> AgentSession | None:
    """The session current in this context (inside ``with session:`` or a turn), or None."""
    return current_session_var.get()


def current_speech_id() -> str | None:
    """The speech_id of the turn current in this context, or None."""
    return current_speech_id_var.get()
