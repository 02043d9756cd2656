"""callmeter.agent.run_turn with the real openai SDK against callmeter-sim."""

from __future__ import annotations

import asyncio
import json
import time
from enum import Enum
from typing import Literal

import openai
import pytest

from callmeter import InvalidArgumentError, metrics
from callmeter.agent import Tool, run_turn, tool
from callmeter.integrations.openai import instrument
from callmeter.sim import Reply, ToolCallSpec


def _client(sim: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)


class Unit(Enum):
    C = "celsius"
    F = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.C, days: int = 1) -> str:
    """Get the forecast for a city.

    Args:
        city: Name of the city, e.g. "Paris".
        unit: Temperature unit.
        days: How many days ahead.
    """
    return f"{city}: sunny, {days} day(s), {unit.value}"


async def slow_lookup(key: str) -> dict:
    """Look a key up in a slow backend."""
    await asyncio.sleep(0.4)
    return {"key": key, "value": key.upper()}


def slow_sync_lookup(key: str, mode: Literal["fast", "exact"] = "exact") -> str:
    """Look a key up with a blocking client (runs in a worker thread)."""
    time.sleep(0.4)
    return f"{key}:{mode}"


def test_schema_from_type_hints_and_docstring():
    t = tool(get_weather)
    assert isinstance(t, Tool) and not t.is_async
    fn = t.schema["function"]
    assert fn["name"] == "get_weather"
    assert fn["description"] == "Get the forecast for a city."
    params = fn["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {
        "type": "string",
        "description": 'Name of the city, e.g. "Paris".',
    }
    assert params["properties"]["days"]["type"] == "integer"
    assert params["properties"]["days"]["default"] == 1
    unit = json.dumps(params)
    assert "celsius" in unit and "fahrenheit" in unit
    assert tool(slow_lookup).is_async
    literal = tool(slow_sync_lookup).parameters["properties"]["mode"]
    assert literal["enum"] == ["fast", "exact"]


def test_tool_argument_validation():
    t = tool(get_weather)
    assert t.parse_arguments('{"city": "Oslo", "unit": "fahrenheit"}') == {
        "city": "Oslo",
        "unit": Unit.F,
        "days": 1,
    }
    with pytest.raises(ValueError, match="not valid JSON"):
        t.parse_arguments("{city")
    with pytest.raises(ValueError, match="invalid arguments"):
        t.parse_arguments('{"days": 2}')
    with pytest.raises(ValueError, match="JSON object"):
        t.parse_arguments("[1]")


def test_tool_decorator_with_name():
    @tool(name="lookup", description="Find things.")
    def find(q: str) -> str:
        return q

    assert find.name == "lookup" and find.description == "Find things."
    with pytest.raises(InvalidArgumentError):
        tool(lambda x: x)  # "<lambda>" is not a valid tool name
    with pytest.raises(InvalidArgumentError):
        tool(42)


async def test_two_parallel_tools(sim, recorder):
    sim.config.script.append(
        Reply(
            tool_calls=[
                ToolCallSpec("slow_lookup", {"key": "a"}),
                ToolCallSpec("slow_sync_lookup", {"key": "b"}),
            ]
        )
    )
    messages = [{"role": "user", "content": "look up a and b"}]
    result = await run_turn(
        recorder.session,
        _client(sim),
        model="m1",
        messages=messages,
        tools=[slow_lookup, slow_sync_lookup],
    )
    assert result.finished and result.steps == 2
    assert '"value": "A"' in result.content and "b:exact" in result.content
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert len(messages[1]["tool_calls"]) == 2
    assert {r.name for r in result.tool_results} == {"slow_lookup", "slow_sync_lookup"}
    assert all(r.error is None for r in result.tool_results)

    tools = result.tool_metrics
    assert len(tools) == 2 and len(result.llm_metrics) == 2
    for m in tools:  # each tool sleeps 0.4 s
        assert 0.4 <= m.duration < 0.8
        assert m.success
    assert {m.call_id for m in tools} == {c["id"] for c in messages[1]["tool_calls"]}
    usage = result.usage
    assert usage.tool_duration == pytest.approx(sum(m.duration for m in tools))
    # they ran in parallel: their interval is the longer of the two, not the sum
    # the interval union is computed on wall-clock seconds since the epoch, whose float
    # resolution near 1.8e9 s is about 0.2 us
    assert max(m.duration for m in tools) <= result.tool_interval + 1e-6 < usage.tool_duration
    assert usage.llm_requests == 2
    speech_ids = {m.speech_id for m in recorder.events}
    assert speech_ids == {result.speech_id}
    assert result.metrics == recorder.events
    # the LLM steps and the tools do not overlap: active time is their wall-clock union
    assert usage.active_duration == pytest.approx(
        sum(m.duration for m in result.llm_metrics) + result.tool_interval, abs=0.05
    )


async def test_failing_unknown_and_invalid_tools_are_reported_to_the_model(sim, recorder):
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("backend down")

    sim.config.script.append(
        Reply(
            ttft=0.0,
            token_delay=0.0,
            tool_calls=[
                ToolCallSpec("broken", {"x": 1}),
                ToolCallSpec("nope", {}),
                ToolCallSpec("broken", "{not json"),
                ToolCallSpec("broken", {"x": "not a number"}),
            ],
        )
    )
    sim.config.ttft = 0.0
    sim.config.token_delay = 0.0
    result = await run_turn(
        recorder.session,
        _client(sim),
        model="m1",
        messages=[{"role": "user", "content": "go"}],
        tools=[broken],
    )
    assert result.finished
    errors = [r.error for r in result.tool_results]
    assert errors == ["ValueError", "UnknownTool", "InvalidArguments", "InvalidArguments"]
    assert "backend down" in result.tool_results[0].output
    assert "available tools: broken" in result.tool_results[1].output
    metrics = result.tool_metrics
    assert len(metrics) == 4
    assert all(not m.success for m in metrics)
    assert sorted(m.error for m in metrics) == sorted(errors)
    assert recorder.session.usage.tool_errors == 4


async def test_max_steps(sim, recorder):
    sim.config.ttft = sim.config.token_delay = 0.0
    for _ in range(3):
        sim.config.script.append(Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "X"})]))
    result = await run_turn(
        recorder.session,
        _client(sim),
        model="m1",
        messages=[{"role": "user", "content": "loop"}],
        tools=[get_weather],
        max_steps=2,
    )
    assert not result.finished and result.content is None
    assert result.steps == 2 and len(result.llm_metrics) == 2


@pytest.mark.parametrize("stream", [True, False])
async def test_sync_client_and_instrumented_client(sim, recorder, stream):
    sim.config.ttft = sim.config.token_delay = 0.0
    sim.config.script.append(Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"})]))
    client = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    instrument(client)  # session from the context: the turn's
    result = await run_turn(
        recorder.session,
        client,
        model="m1",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[get_weather],
        stream=stream,
    )
    assert "Oslo: sunny" in result.content
    assert len(recorder.llm) == 2  # measured once, by the instrumented client
    assert all(m.speech_id == result.speech_id for m in recorder.events)
    assert all(m.usage_reported for m in recorder.llm)


async def test_speech_id_of_an_enclosing_turn_is_kept(sim, recorder):
    sim.config.ttft = sim.config.token_delay = 0.0
    async with recorder.session.turn() as turn:
        result = await run_turn(
            recorder.session,
            _client(sim),
            model="m1",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert result.speech_id == turn.speech_id
    # the enclosing turn measures the exchange: one TurnMetrics, with the LLM request in it
    turns = [m for m in recorder.events if isinstance(m, metrics.TurnMetrics)]
    assert len(turns) == 1 and turns[0] is turn.metrics
    assert turn.metrics.llm_requests == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_steps": 0},
        {"messages": "hi"},
        {"model": ""},
        {"tools": [get_weather, get_weather]},
        {"tools": ["not a function"]},
    ],
)
async def test_bad_arguments(sim, recorder, kwargs):
    args = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(InvalidArgumentError):
        await run_turn(recorder.session, _client(sim), **args)
    with pytest.raises(InvalidArgumentError):
        await run_turn("session", _client(sim), model="m1", messages=[])


async def test_session_tool_passed_to_run_turn_is_measured_once(sim, recorder):
    sim.config.ttft = sim.config.token_delay = 0.0
    sim.config.script.append(Reply(tool_calls=[ToolCallSpec("get_forecast", {"city": "Oslo"})]))

    @recorder.session.tool
    async def get_forecast(city: str) -> str:
        """Forecast for a city."""
        await asyncio.sleep(0.01)
        return f"{city}: rain"

    result = await run_turn(
        recorder.session,
        _client(sim),
        model="m1",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[get_forecast],
    )
    tools = [m for m in recorder.events if isinstance(m, metrics.ToolMetrics)]
    assert [t.tool_name for t in tools] == ["get_forecast"]
    assert tools[0].call_id is not None and "Oslo: rain" in result.tool_results[0].output
    # called directly, outside run_turn, it still measures itself
    await get_forecast("Bergen")
    assert sum(isinstance(m, metrics.ToolMetrics) for m in recorder.events) == 2


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("instrumented", [True, False], ids=["instrumented", "measured"])
async def test_llm_outcomes_in_a_turn(sim, recorder, stream, instrumented):
    """A turn cancelled during its LLM request (barge-in) records it cancelled; an HTTP
    error records it failed and propagates; both exactly once."""
    client = _client(sim)
    if instrumented:
        instrument(client, recorder.session)
    messages = [{"role": "user", "content": "hi"}]
    task = asyncio.create_task(
        run_turn(recorder.session, client, model="m1", messages=messages, stream=stream)
    )
    while not sim.config.requests:  # the request reached the server; its reply is due later
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (m,) = recorder.llm
    assert (m.cancelled, m.error) == (True, None)

    sim.config.script.append(Reply(status=429, ttft=0.0))
    with pytest.raises(openai.RateLimitError):
        await run_turn(recorder.session, client, model="m1", messages=messages, stream=stream)
    assert len(recorder.llm) == 2
    assert (recorder.llm[1].cancelled, recorder.llm[1].error) == (False, "RateLimitError: HTTP 429")
    await client.close()
