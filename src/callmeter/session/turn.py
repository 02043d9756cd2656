"""A turn: one user -> agent exchange, the unit that groups metrics by speech_id."""

from __future__ import annotations

import contextlib
import uuid
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING

from .context import current_session_var, current_speech_id_var

if TYPE_CHECKING:
    from .agent_session import AgentSession


def new_speech_id() -> str:
    """A fresh speech id (``speech_`` + 12 hex digits)."""
    return f"speech_{uuid.uuid4().hex[:12]}"


class Turn:
    """Context manager (``with`` or ``async with``) that gives everything measured inside it,
    including in asyncio tasks created inside it, the turn's ``speech_id``."""

    def __init__(self, session: AgentSession, speech_id: str | None = None) -> None:
        self.session = session
        self.speech_id = speech_id or new_speech_id()
        self._tokens: tuple[Token[str | None], Token[AgentSession | None]] | None = None

    def _enter(self) -> Turn:
        self._tokens = (
            current_speech_id_var.set(self.speech_id),
            current_session_var.set(self.session),
        )
        return self

    def _exit(self) -> None:
        if self._tokens is None:
            return
        speech_token, session_token = self._tokens
        self._tokens = None
        with contextlib.suppress(ValueError):  # exited in another context than entered
            current_speech_id_var.reset(speech_token)
            current_session_var.reset(session_token)

    def __enter__(self) -> Turn:
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    async def __aenter__(self) -> Turn:
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()
