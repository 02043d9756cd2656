"""Patching: ``instrument(client)`` measures every ``create()`` of one client.

``instrument(client)`` replaces ``client.chat.completions.create`` and
``client.responses.create`` on that client object only (instance attributes; the SDK's
classes are untouched) with measuring wrappers; :meth:`Instrumentation.uninstrument`
removes them again. One ``create()`` call is one ``LLMMetrics``: the SDK's retries
happen inside it. A non-streamed call ends when ``create()`` returns or raises; a stream
is measured by :mod:`.stream`. Outcomes (completed, cancelled, failed) follow
:mod:`.outcome`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from ...errors import InvalidArgumentError
from ...session import AgentSession, LLMGeneration, current_session
from .outcome import end_completed, end_failed
from .provider import provider_of
from .stream import wrap_stream
from .usage import chat_usage, record_usage, responses_usage

__all__ = ["Instrumentation", "instrument", "is_instrumented", "measured", "uninstrument"]

logger = logging.getLogger("callmeter.integrations.openai")


def _finish_chat(gen: LLMGeneration, result: Any) -> None:
    try:
        gen.request_id = getattr(result, "id", None) or gen.request_id
        if getattr(result, "choices", None):
            gen.first_token()
        usage = getattr(result, "usage", None)
        if usage is not None:
            record_usage(gen, usage, chat_usage)
    except Exception:
        logger.exception("callmeter: reading a chat completion failed")
    end_completed(gen)


def _finish_response(gen: LLMGeneration, result: Any) -> None:
    try:
        gen.request_id = getattr(result, "id", None) or gen.request_id
        if getattr(result, "output", None):
            gen.first_token()
        usage = getattr(result, "usage", None)
        if usage is not None:
            record_usage(gen, usage, responses_usage)
        error = getattr(result, "error", None)
        if error is not None and getattr(result, "status", None) == "failed":
            gen.error = f"response failed: {getattr(error, 'code', error)}"
    except Exception:
        logger.exception("callmeter: reading a response failed")
    end_completed(gen)


_FINISH = {"chat": _finish_chat, "responses": _finish_response}

NO_SESSION_WARNING = (
    "callmeter: %s: %s() was called with no current session, so it is not measured (nor "
    "are later such calls of this client; this is said once). Make a session current "
    "with `with session:` or `async with session:` around the calls, or pass one: "
    "instrument(client, session=session)."
)


class _Meter:
    """Settings and state shared by the wrappers of one client."""

    __slots__ = ("_lock", "include_usage", "label", "provider", "session", "warned")

    def __init__(
        self, session: AgentSession | None, provider: str, include_usage: bool, label: str
    ) -> None:
        self.session = session
        self.provider = provider
        self.include_usage = include_usage
        self.label = label
        self.warned = False
        self._lock = threading.Lock()

    def unmeasured(self, kind: str) -> None:
        """A call with no session to measure it: warn once per client."""
        if self.warned:
            return
        with self._lock:
            if self.warned:
                return
            self.warned = True
        where = "chat.completions.create" if kind == "chat" else "responses.create"
        logger.warning(NO_SESSION_WARNING, self.label, where)

    def prepare(self, kind: str, kwargs: dict[str, Any]) -> bool:
        """Ask for streamed usage where needed; True when the caller did not ask for it."""
        if kind != "chat" or not self.include_usage or kwargs.get("stream") is not True:
            return False
        options = kwargs.get("stream_options")
        if isinstance(options, dict):
            if "include_usage" in options:
                return False
            kwargs["stream_options"] = {**options, "include_usage": True}
        else:
            kwargs["stream_options"] = {"include_usage": True}
        return True

    def begin(self, session: AgentSession, kind: str, kwargs: dict[str, Any]) -> Any:
        """Start measuring one call: (generation, hide the usage chunk), or None if
        starting failed (then the call goes through unmeasured)."""
        try:
            hide = self.prepare(kind, kwargs)
            model = kwargs.get("model")
            gen = LLMGeneration(
                session, model=model if isinstance(model, str) else None, provider=self.provider
            )
            gen.__enter__()
            return gen, hide
        except Exception:  # measuring must never stop the call
            logger.exception("callmeter: starting an OpenAI metric failed")
            return None

    def after(
        self,
        gen: LLMGeneration,
        result: Any,
        kind: str,
        hide: bool,
        session: AgentSession,
        kwargs: dict[str, Any],
    ) -> Any:
        """Measure ``result``: wrap a stream, or finish a whole response now."""
        if kwargs.get("stream") is True:
            try:
                if wrap_stream(gen, result, kind, hide, session):
                    return result
            except Exception:
                logger.exception("callmeter: wrapping an OpenAI stream failed")
        _FINISH[kind](gen, result)
        return result

    def wrap(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        """A measuring version of a bound ``create`` method (sync or async)."""
        meter = self

        if inspect.iscoroutinefunction(inspect.unwrap(original)) or inspect.iscoroutinefunction(
            original
        ):

            @functools.wraps(original)
            async def acreate(*args: Any, **kwargs: Any) -> Any:
                session = meter.session or current_session()
                if session is None:
                    meter.unmeasured(kind)
                    return await original(*args, **kwargs)
                started = meter.begin(session, kind, kwargs)
                if started is None:
                    return await original(*args, **kwargs)
                gen, hide = started
                try:
                    result = await original(*args, **kwargs)
                except BaseException as exc:
                    end_failed(gen, exc)
                    raise
                return meter.after(gen, result, kind, hide, session, kwargs)

            return acreate

        @functools.wraps(original)
        def create(*args: Any, **kwargs: Any) -> Any:
            session = meter.session or current_session()
            if session is None:
                meter.unmeasured(kind)
                return original(*args, **kwargs)
            started = meter.begin(session, kind, kwargs)
            if started is None:
                return original(*args, **kwargs)
            gen, hide = started
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                end_failed(gen, exc)
                raise
            return meter.after(gen, result, kind, hide, session, kwargs)

        return create


def _check_client(client: Any) -> None:
    chat = getattr(getattr(client, "chat", None), "completions", None)
    if chat is None or not callable(getattr(chat, "create", None)):
        raise InvalidArgumentError(
            f"expected an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}"
        )


def _check_session(session: object) -> None:
    if session is not None and not isinstance(session, AgentSession):
        raise InvalidArgumentError(
            f"session must be an AgentSession or None (the current session), got {session!r}"
        )


def _check_include_usage(include_usage: object) -> None:
    if not isinstance(include_usage, bool):
        raise InvalidArgumentError(f"include_usage must be a bool, got {include_usage!r}")


def _label(client: Any) -> str:
    return f"{type(client).__name__} at {getattr(client, 'base_url', '?')}"


_MARK = "_callmeter_instrumentation"


def _handle_of(client: Any) -> Instrumentation | None:
    """The handle of an instrumented client, found on its wrapper (no global registry, so
    an instrumented client is garbage-collected like any other)."""
    try:
        wrapper = vars(client.chat.completions).get("create")
    except Exception:
        return None
    handle = getattr(wrapper, _MARK, None)
    return handle if isinstance(handle, Instrumentation) and handle.active else None


class Instrumentation:
    """Handle returned by :func:`instrument`; :meth:`uninstrument` restores the client."""

    def __init__(self, client: Any, meter: _Meter) -> None:
        self.client = client
        self._meter = meter
        self._patched: list[tuple[Any, bool, Any]] = []  # (resource, had own attr, old)

    @property
    def provider(self) -> str:
        """The provider name put on every metric."""
        return self._meter.provider

    @property
    def session(self) -> AgentSession | None:
        """The session metrics go to; None means the session current in the context."""
        return self._meter.session

    @property
    def active(self) -> bool:
        """True until :meth:`uninstrument`."""
        return bool(self._patched)

    def _patch(self, resource: Any, kind: str) -> None:
        own = vars(resource)
        had = "create" in own
        self._patched.append((resource, had, own.get("create")))
        wrapper = self._meter.wrap(resource.create, kind)
        setattr(wrapper, _MARK, self)
        resource.create = wrapper

    def uninstrument(self) -> None:
        """Remove the wrappers; the client is as it was before :func:`instrument`."""
        while self._patched:
            resource, had, old = self._patched.pop()
            if had:
                resource.create = old
            else:
                vars(resource).pop("create", None)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstrument()


def instrument(
    client: Any,
    session: AgentSession | None = None,
    *,
    provider: str | None = None,
    include_usage: bool = True,
) -> Instrumentation:
    """Measure every ``chat.completions.create`` and ``responses.create`` of ``client``.

    ``session=None`` sends each metric to the session current where ``create()`` is
    called (:func:`callmeter.current_session`: inside ``with session:`` or
    ``async with session:``), so one client can serve many concurrent calls; a call
    made with no current session is not measured, and the first such call logs one
    warning. ``provider`` overrides the name inferred from the base URL.
    ``include_usage=False`` never adds ``stream_options`` (for servers that reject it).
    Returns a handle whose :meth:`~Instrumentation.uninstrument` (or ``with`` exit)
    restores the client.
    """
    _check_client(client)
    _check_session(session)
    _check_include_usage(include_usage)
    if _handle_of(client) is not None:
        raise InvalidArgumentError(
            "this client is already instrumented; call uninstrument() on it first"
        )
    meter = _Meter(session, provider_of(client, provider), include_usage, _label(client))
    handle = Instrumentation(client, meter)
    handle._patch(client.chat.completions, "chat")
    responses = getattr(client, "responses", None)
    if responses is not None and callable(getattr(responses, "create", None)):
        handle._patch(responses, "responses")
    return handle


def uninstrument(client: Any) -> bool:
    """Restore ``client`` if it is instrumented; True if it was."""
    handle = _handle_of(client)
    if handle is None:
        return False
    handle.uninstrument()
    return True


def is_instrumented(client: Any) -> bool:
    """True if :func:`instrument` wrapped ``client`` and it was not restored since."""
    return _handle_of(client) is not None


def measured(
    client: Any,
    session: AgentSession | None = None,
    *,
    api: str = "chat",
    provider: str | None = None,
    include_usage: bool = True,
) -> Callable[..., Any]:
    """A measuring version of ``client.chat.completions.create`` (``api="chat"``) or
    ``client.responses.create`` (``api="responses"``), leaving the client untouched."""
    _check_client(client)
    _check_session(session)
    _check_include_usage(include_usage)
    if api == "chat":
        create = client.chat.completions.create
    elif api == "responses":
        create = client.responses.create
    else:
        raise InvalidArgumentError(f'api must be "chat" or "responses", got {api!r}')
    meter = _Meter(session, provider_of(client, provider), include_usage, _label(client))
    return meter.wrap(create, api)
