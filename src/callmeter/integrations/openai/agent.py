"""A small tool-calling loop over the OpenAI chat completions API, measured step by step.

``await run_turn(session, client, model=..., messages=..., tools=[...])`` asks the model,
runs the tools it requests (concurrently when it asks for several), appends the results
and asks again until the model answers. Every LLM request is one ``LLMMetrics`` and every
tool call one ``ToolMetrics``; they all share the turn's ``speech_id``. Tool schemas come
from the functions' type hints and docstrings. Needs the ``openai`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import typing
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from ...errors import InvalidArgumentError
from ...metrics import (
    AgentMetrics,
    LLMMetrics,
    MetricsCollectedEvent,
    ToolMetrics,
    UsageCollector,
    UsageSummary,
    union_duration,
)
from ...session import AgentSession, current_session, current_speech_id
from .instrument import is_instrumented, measured

__all__ = ["Tool", "ToolResult", "TurnResult", "run_turn", "tool"]

_SKIP_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parse_doc(doc: str | None) -> tuple[str, dict[str, str]]:
    if not doc:
        return "", {}
    try:
        import docstring_parser
    except ImportError:  # fall back to the first paragraph
        return inspect.cleandoc(doc).split("\n\n")[0].strip(), {}
    parsed = docstring_parser.parse(doc)
    parts = [p for p in (parsed.short_description, parsed.long_description) if p]
    return "\n\n".join(parts), {p.arg_name: p.description or "" for p in parsed.params}


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


@dataclass(frozen=True)
class Tool:
    """A function the model may call, with its JSON schema. Build with :func:`tool`."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    is_async: bool
    args_model: type[pydantic.BaseModel] = field(repr=False)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this function."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def parse_arguments(self, raw: str | None) -> dict[str, Any]:
        """Decode and validate the model's JSON arguments; raises ``ValueError`` with a
        message for the model when they are not valid."""
        try:
            data = json.loads(raw) if raw and raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("arguments must be a JSON object")
        try:
            validated = self.args_model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValueError(f"invalid arguments: {exc}") from None
        return {name: getattr(validated, name) for name in type(validated).model_fields}


_cache: weakref.WeakKeyDictionary[Callable[..., Any], Tool] = weakref.WeakKeyDictionary()


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Any:
    """Describe a sync or async function as a :class:`Tool` (usable as a decorator).

    Parameters become JSON schema properties from their type hints (anything pydantic
    understands) and defaults; the docstring gives the description and, in its
    ``Args:`` section (Google, NumPy or reST style), the parameter descriptions.
    """

    def build(func: Callable[..., Any]) -> Tool:
        if isinstance(func, Tool):
            return func
        if not callable(func):
            raise InvalidArgumentError(f"a tool must be a function, got {func!r}")
        tool_name = name or getattr(func, "__name__", "")
        if not tool_name or not tool_name.replace("_", "").replace("-", "").isalnum():
            raise InvalidArgumentError(
                f"tool name {tool_name!r} must be letters, digits, '_' or '-'; pass name=..."
            )
        doc, param_docs = _parse_doc(inspect.getdoc(func))
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception as exc:
            raise InvalidArgumentError(
                f"cannot resolve the type hints of tool {tool_name!r}: {exc}"
            ) from None
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(func).parameters.items():
            if param.kind in _SKIP_KINDS:
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            desc = param_docs.get(pname) or None
            fields[pname] = (hints.get(pname, Any), pydantic.Field(default, description=desc))
        try:
            model = pydantic.create_model(f"{tool_name}_arguments", **fields)
            parameters = _strip_titles(model.model_json_schema())
        except Exception as exc:
            raise InvalidArgumentError(
                f"cannot build a JSON schema for tool {tool_name!r}: {exc}"
            ) from None
        parameters.setdefault("properties", {})
        return Tool(
            fn=func,
            name=tool_name,
            description=description if description is not None else doc,
            parameters=parameters,
            is_async=inspect.iscoroutinefunction(inspect.unwrap(func)),
            args_model=model,
        )

    return build if fn is None else build(fn)


def _as_tool(obj: Any) -> Tool:
    if isinstance(obj, Tool):
        return obj
    try:
        cached = _cache.get(obj)
    except TypeError:
        cached = None
    if cached is None:
        cached = tool(obj)
        with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
            _cache[obj] = cached
    return cached


@dataclass
class ToolResult:
    """One tool call of a turn: what the model asked and what it was told."""

    call_id: str
    name: str
    arguments: str
    output: str
    """The tool message content sent back to the model."""
    error: str | None = None
    """Why the call failed (the exception, an unknown tool, invalid arguments), else None."""


@dataclass
class TurnResult:
    """What :func:`run_turn` did. ``metrics`` holds this turn's events only."""

    content: str | None
    """The model's final answer; None when ``max_steps`` ran out first."""
    messages: list[dict[str, Any]]
    speech_id: str
    steps: int
    """LLM requests made."""
    tool_results: list[ToolResult]
    finished: bool
    """True when the model answered without asking for more tools."""
    metrics: list[AgentMetrics]
    prices: Any = None
    """The session's prices, used to price :attr:`usage`."""

    @property
    def llm_metrics(self) -> list[LLMMetrics]:
        """The turn's LLM requests."""
        return [m for m in self.metrics if isinstance(m, LLMMetrics)]

    @property
    def tool_metrics(self) -> list[ToolMetrics]:
        """The turn's tool calls."""
        return [m for m in self.metrics if isinstance(m, ToolMetrics)]

    @property
    def tool_interval(self) -> float:
        """Wall-clock seconds during which at least one tool of this turn was running."""
        return union_duration((m.started_at, m.started_at + m.duration) for m in self.tool_metrics)

    @property
    def usage(self) -> UsageSummary:
        """Summary of this turn's metrics."""
        collector = UsageCollector(keep_metrics=False, prices=self.prices)
        for m in self.metrics:
            collector.collect(m)
        return collector.get_summary()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


async def _run_tool(
    session: AgentSession, tools: dict[str, Tool], call_id: str, name: str, raw: str
) -> ToolResult:
    async with session.tool_call(name or "unknown_tool", call_id=call_id) as timer:
        found = tools.get(name)
        if found is None:
            timer.error = "UnknownTool"
            known = ", ".join(sorted(tools)) or "none"
            message = f"unknown tool {name!r}; available tools: {known}"
            return ToolResult(call_id, name, raw, _text({"error": message}), timer.error)
        try:
            kwargs = found.parse_arguments(raw)
        except ValueError as exc:
            timer.error = "InvalidArguments"
            return ToolResult(call_id, name, raw, _text({"error": str(exc)}), timer.error)
        try:
            if found.is_async:
                value = await found.fn(**kwargs)
            else:
                value = await asyncio.to_thread(found.fn, **kwargs)
        except Exception as exc:
            timer.error = type(exc).__name__
            output = _text({"error": f"{type(exc).__name__}: {exc}"})
            return ToolResult(call_id, name, raw, output, timer.error)
        return ToolResult(call_id, name, raw, _text(value))


def _collect_stream(stream: Iterable[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        _add_chunk(chunk, parts, calls)
    return _assemble(parts, calls)


async def _acollect_stream(stream: Any) -> tuple[str | None, list[dict[str, Any]]]:
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    async for chunk in stream:
        _add_chunk(chunk, parts, calls)
    return _assemble(parts, calls)


def _add_chunk(chunk: Any, parts: list[str], calls: dict[int, dict[str, Any]]) -> None:
    if not chunk.choices:
        return
    delta = getattr(chunk.choices[0], "delta", None)
    if delta is None:
        return
    if delta.content:
        parts.append(delta.content)
    for tc in delta.tool_calls or ():
        slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": []})
        if tc.id:
            slot["id"] = tc.id
        if tc.function is not None:
            if tc.function.name:
                slot["name"] += tc.function.name
            if tc.function.arguments:
                slot["arguments"].append(tc.function.arguments)


def _assemble(
    parts: list[str], calls: dict[int, dict[str, Any]]
) -> tuple[str | None, list[dict[str, Any]]]:
    out = [
        {"id": c["id"], "name": c["name"], "arguments": "".join(c["arguments"])}
        for _, c in sorted(calls.items())
    ]
    return ("".join(parts) if parts else None), out


def _from_message(message: Any) -> tuple[str | None, list[dict[str, Any]]]:
    calls = [
        {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
        for tc in (message.tool_calls or ())
        if getattr(tc, "function", None) is not None
    ]
    return message.content, calls


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidArgumentError(
            "messages must be a list of dicts such as {'role': 'user', 'content': '...'}"
        )


async def run_turn(
    session: AgentSession,
    client: Any,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: Sequence[Callable[..., Any] | Tool] = (),
    max_steps: int = 8,
    stream: bool = True,
    speech_id: str | None = None,
    **create_kwargs: Any,
) -> TurnResult:
    """Run one user -> agent turn: LLM, tools, LLM, ... until the model answers.

    ``messages`` is extended in place with the assistant and tool messages (so the next
    turn continues the conversation). ``client`` is an ``openai.AsyncOpenAI`` or
    ``openai.OpenAI``; if :func:`~callmeter.integrations.openai.instrument` already wraps
    it, its metrics are used, otherwise each request is measured here. A tool that raises,
    an unknown tool name and invalid JSON arguments are sent back to the model as an error
    result and recorded as ``success=False``. Extra keyword arguments go to
    ``chat.completions.create``. ``speech_id`` defaults to the current turn's when this
    session is current, else a new one.
    """
    if not isinstance(session, AgentSession):
        raise InvalidArgumentError(f"session must be an AgentSession, got {session!r}")
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError(f"model must be a non-empty str, got {model!r}")
    _check_messages(messages)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise InvalidArgumentError(f"max_steps must be a positive int, got {max_steps!r}")
    tool_list = [_as_tool(t) for t in tools]
    by_name = {t.name: t for t in tool_list}
    if len(by_name) != len(tool_list):
        raise InvalidArgumentError("two tools have the same name; pass name=... to tool()")
    if is_instrumented(client):
        create = client.chat.completions.create
    else:
        create = measured(client, session)
    is_async = inspect.iscoroutinefunction(inspect.unwrap(create))
    request: dict[str, Any] = {"model": model, **create_kwargs}
    if tool_list:
        request["tools"] = [t.schema for t in tool_list]
    if stream:
        request["stream"] = True

    enclosing = current_speech_id() if current_session() is session else None
    if speech_id is None:
        speech_id = enclosing
    # Inside the caller's own turn, that turn measures (and reports) the exchange.
    turn = session.turn(speech_id)
    turn_block: Any = (
        turn if speech_id is None or speech_id != enclosing else contextlib.nullcontext(turn)
    )
    collected: list[AgentMetrics] = []

    def on_metrics(ev: MetricsCollectedEvent) -> None:
        if getattr(ev.metrics, "speech_id", None) == turn.speech_id:
            collected.append(ev.metrics)

    def llm_sync() -> tuple[str | None, list[dict[str, Any]]]:
        result = create(messages=list(messages), **request)
        return _collect_stream(result) if stream else _from_message(result.choices[0].message)

    async def llm() -> tuple[str | None, list[dict[str, Any]]]:
        if not is_async:
            return await asyncio.to_thread(llm_sync)
        result = await create(messages=list(messages), **request)
        if stream:
            return await _acollect_stream(result)
        return _from_message(result.choices[0].message)

    session.on("metrics_collected", on_metrics)
    results: list[ToolResult] = []
    try:
        async with turn_block:
            for step in range(1, max_steps + 1):
                content, calls = await llm()
                assistant: dict[str, Any] = {"role": "assistant", "content": content}
                for i, call in enumerate(calls):
                    call["id"] = call["id"] or f"call_{step}_{i}"
                if calls:
                    assistant["tool_calls"] = [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in calls
                    ]
                messages.append(assistant)
                if not calls:
                    return TurnResult(
                        content, messages, turn.speech_id, step, results, True, collected,
                        session.usage_prices,
                    )  # fmt: skip
                done = await asyncio.gather(
                    *(
                        _run_tool(session, by_name, c["id"], c["name"], c["arguments"])
                        for c in calls
                    )
                )
                results.extend(done)
                messages.extend(
                    {"role": "tool", "tool_call_id": r.call_id, "content": r.output} for r in done
                )
            return TurnResult(
                None, messages, turn.speech_id, max_steps, results, False, collected,
                session.usage_prices,
            )  # fmt: skip
    finally:
        session.off("metrics_collected", on_metrics)
