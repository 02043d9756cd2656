"""callmeter-sim's planning: tokens, timing, rules, script and prefix cache (no server)."""

from __future__ import annotations

import pytest

from callmeter import InvalidArgumentError
from callmeter.sim import Reply, Rule, SimConfig, ToolCallSpec, filler_text, tokenize
from callmeter.sim.script import responses_to_messages

USER = [{"role": "user", "content": "hello there"}]


def test_tokenize_and_filler():
    assert tokenize("one two  three") == ["one", " two", "  three"]
    assert len(tokenize(filler_text(30))) == 30
    assert "simulator" in filler_text(30)


def test_timing_plan():
    plan = SimConfig(ttft=0.25, token_delay=0.01, tokens=30).choose(USER, {})
    assert plan.completion_tokens == 30
    assert plan.delays[0] == pytest.approx(0.25)
    assert plan.delays[-1] == pytest.approx(0.55)
    assert plan.prompt_tokens == 5


def test_jitter_is_seeded():
    a = SimConfig(jitter=0.05, seed=7).choose(USER, {}).delays
    b = SimConfig(jitter=0.05, seed=7).choose(USER, {}).delays
    c = SimConfig(jitter=0.05, seed=8).choose(USER, {}).delays
    assert a == b and a != c
    assert a[0] >= 0.25


def test_script_then_rules_then_default():
    config = SimConfig()
    config.add_rule(
        r"weather in (?P<city>\w+)", Reply(tool_calls=[ToolCallSpec("w", {"c": "{city}"})])
    )
    config.script.append(Reply(text="scripted"))
    msgs = [{"role": "user", "content": "what is the weather in Oslo"}]
    assert "".join(config.choose(msgs, {}).text_tokens) == "scripted"
    plan = config.choose(msgs, {})
    assert plan.tool_calls[0][1] == "w"
    assert "".join(plan.tool_calls[0][2]) == '{"c": "Oslo"}'
    assert len(config.choose(USER, {}).text_tokens) == 30
    after_tools = [*msgs, {"role": "tool", "content": "sunny"}]
    assert "sunny" in "".join(config.choose(after_tools, {}).text_tokens)
    assert len(config.requests) == 4


def test_prefix_cache():
    config = SimConfig()
    first = [{"role": "system", "content": "be brief"}, *USER]
    assert config.choose(first, {}).cached_tokens == 0
    second = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    plan = config.choose(second, {})
    assert plan.cached_tokens == 5 + 5  # system (3+2) and user (3+2) were seen before
    assert plan.prompt_tokens == 10 + 4 + 4


def test_from_json_and_validation():
    config = SimConfig.from_json(
        {
            "ttft": 0.1,
            "rules": [{"match": "hi", "reply": {"text": "hello"}}],
            "script": [{"status": 500}],
        },
        token_delay=0.0,
    )
    assert config.ttft == 0.1 and config.token_delay == 0.0
    assert config.script[0].status == 500 and isinstance(config.rules[0], Rule)
    with pytest.raises(InvalidArgumentError, match="unknown simulator config keys"):
        SimConfig.from_json({"latency": 1})
    with pytest.raises(InvalidArgumentError):
        SimConfig(ttft=-1)
    with pytest.raises(InvalidArgumentError):
        SimConfig(tokens=0)
    with pytest.raises(InvalidArgumentError):
        Rule("(", Reply())
    with pytest.raises(InvalidArgumentError):
        Reply.from_dict({"colour": "red"})
    with pytest.raises(InvalidArgumentError):
        Rule.from_dict({"reply": {}})


def test_responses_input_normalized():
    msgs = responses_to_messages(
        {
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "42"},
            ],
        }
    )
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert responses_to_messages({"input": "hi"}) == [{"role": "user", "content": "hi"}]
