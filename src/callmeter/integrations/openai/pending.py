"""Streams still open in a session: each ends exactly once, at the latest when its session
closes.

A measured stream registers itself in its session's :class:`OpenStreams` and claims its
own end (:meth:`OpenStreams.claim`, an atomic ``dict.pop``), whichever path gets there
first: the end of the iterator, an exception, ``close()``, the stream being garbage
collected, or the session closing. A stream the caller still holds, unfinished, when its
session closes is emitted as cancelled then, ending at its last chunk.

Open streams are ended from the session's ``closing`` hook (the ``closing`` event, or an
``on_closing(callback)`` method if the session has one), which ``AgentSession.close()``
runs before it fixes the session's duration and emits ``close``, so that what is
recorded there is still inside the call. A session without that hook gets its open
streams ended from its ``close`` handler instead: they are then in
:attr:`AgentSession.usage`, but recorded after ``close``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Protocol

from ...session import AgentSession

__all__ = ["OpenStreams", "open_streams"]

logger = logging.getLogger("callmeter.integrations.openai")


class _Stream(Protocol):
    def cancel(self) -> None: ...


class OpenStreams:
    """The measured streams of one session that have not ended yet."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[_Stream, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: _Stream) -> None:
        self._open[stream] = None

    def claim(self, stream: _Stream) -> bool:
        """True once per stream: for the caller that gets to end it."""
        return self._open.pop(stream, False) is None

    def cancel_all(self, *_event: Any) -> None:
        """End every open stream as cancelled (a session event handler)."""
        for stream in list(self._open):
            try:
                stream.cancel()
            except Exception:  # one broken stream must not keep the others open
                logger.exception("callmeter: ending an open OpenAI stream failed")


_by_session: weakref.WeakKeyDictionary[AgentSession, OpenStreams] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def open_streams(session: AgentSession) -> OpenStreams:
    """The registry of ``session``'s open streams, created (with its handlers) on first use."""
    found = _by_session.get(session)
    if found is not None:
        return found
    with _lock:
        found = _by_session.get(session)
        if found is None:
            found = OpenStreams()
            try:
                on_closing = getattr(session, "on_closing", None)
                if callable(on_closing):  # the hook as a method, if the session has one
                    on_closing(found.cancel_all)
                else:
                    session.on("closing", found.cancel_all)
                session.on("close", found.cancel_all)
                _by_session[session] = found
            except Exception:  # e.g. a session type that cannot be weakly referenced
                logger.exception("callmeter: cannot track open streams of %r", session)
        return found
