"""The session layer: AgentSession, its events, measurement helpers and turns."""

from .agent_session import AgentSession
from .context import current_session, current_speech_id
from .emitter import EventEmitter
from .timers import LLMGeneration, STTRequest, ToolCall, TTSRequest
from .turn import Turn, new_speech_id

__all__ = [
    "AgentSession",
    "EventEmitter",
    "LLMGeneration",
    "STTRequest",
    "TTSRequest",
    "ToolCall",
    "Turn",
    "current_session",
    "current_speech_id",
    "new_speech_id",
]
