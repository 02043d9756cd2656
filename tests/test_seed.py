"""The seed conversation's two snippets, with only the import changed, give correct totals."""

from __future__ import annotations

import time

import pytest


def _run_call(session) -> None:
    """A call with two LLM generations and one tool call in between."""
    with session, session.turn():
        with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            time.sleep(0.02)
            gen.first_token()
            gen.set_usage(prompt_tokens=100, completion_tokens=12)
        with session.tool_call("get_weather", call_id="call_1"):
            time.sleep(0.05)
        with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            time.sleep(0.02)
            gen.first_token()
            gen.set_usage(prompt_tokens=140, completion_tokens=30, prompt_cached_tokens=100)


def test_seed_snippet_one_totals_including_tool_calls(capsys):
    from callmeter import AgentSession

    session = AgentSession()

    # --- seed snippet 1, `livekit.agents` -> `callmeter` -------------------------------
    from callmeter import MetricsCollectedEvent, metrics

    # Initialize a usage collector
    usage_collector = metrics.UsageCollector()

    # Listen for metrics events
    @session.on("metrics_collected")
    def _on_metrics_collected(ev: MetricsCollectedEvent):
        usage_collector.collect(ev.metrics)

    # ----------------------------------------------------------------------------------
    _run_call(session)

    # After the session ends, get the summary
    summary = usage_collector.get_summary()

    # Manually sum the durations from all LLM metrics, including tool calls
    total_duration = 0.0
    for metric in usage_collector.metrics:
        if isinstance(metric, metrics.LLMMetrics):
            total_duration += metric.duration

    print(f"Total call duration including tool calls: {total_duration} seconds")
    # ----------------------------------------------------------------------------------

    llm = [m for m in usage_collector.metrics if isinstance(m, metrics.LLMMetrics)]
    tools = [m for m in usage_collector.metrics if isinstance(m, metrics.ToolMetrics)]
    assert len(llm) == 2 and len(tools) == 1
    # The seed's loop sums LLM time only; the tool's 50 ms is not in it.
    assert total_duration == pytest.approx(sum(m.duration for m in llm))
    assert 0.04 <= total_duration < 0.2
    assert summary.llm_duration == pytest.approx(total_duration)
    # callmeter's answer to the seed's question includes the tool call.
    assert summary.tool_calls == 1
    assert summary.tool_duration == pytest.approx(tools[0].duration)
    assert tools[0].duration >= 0.05
    assert summary.llm_and_tool_duration == pytest.approx(total_duration + tools[0].duration)
    # Sequential work: the wall-clock union equals the plain sum (to clock precision).
    assert summary.active_duration == pytest.approx(summary.llm_and_tool_duration, abs=2e-3)
    assert summary.llm_prompt_tokens == 240
    assert summary.llm_completion_tokens == 42
    assert summary.llm_prompt_cached_tokens == 100
    assert summary.llm_requests == 2
    assert "Total call duration including tool calls" in capsys.readouterr().out


def test_seed_snippet_two_handler_receives_every_metric(capsys):
    # --- seed snippet 2, `livekit.agents` -> `callmeter` -------------------------------
    from callmeter import AgentSession, metrics

    # Initialize the session
    session = AgentSession()

    # Define a handler for metrics collection
    @session.on("metrics_collected")
    def handle_metrics(event: metrics.MetricsCollectedEvent):
        # Access the metrics object
        metrics_data = event.metrics
        # Log or process the metrics
        print(f"Received metrics: {metrics_data}")

    # ----------------------------------------------------------------------------------
    _run_call(session)

    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Received metrics")]
    assert len(lines) == 4
    assert "LLMMetrics(" in lines[0] and "completion_tokens=12" in lines[0]
    assert "ToolMetrics(" in lines[1] and "tool_name='get_weather'" in lines[1]
    assert "prompt_tokens=140" in lines[2] and "total_tokens=170" in lines[2]
    # when the turn ends, its latency breakdown arrives as one more metrics event
    assert lines[3].startswith("Received metrics: TurnMetrics(") and "e2e_latency=" in lines[3]
    assert session.usage.llm_and_tool_duration > 0.09
