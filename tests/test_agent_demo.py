"""The demo program: a measured conversation whose printed numbers add up."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from callmeter import InvalidArgumentError
from callmeter.demo import DemoOptions, build_session, make_tools, run_demo


async def test_demo_runs_offline_and_adds_up():
    out = io.StringIO()
    seen = []
    session = build_session()
    result = await run_demo(
        DemoOptions(tool_latency=0.1, sim_ttft=0.05, sim_token_delay=0.002),
        session,
        hooks=[lambda s: seen.append(s.started)],
        console=Console(file=out, width=120),
    )
    text = out.getvalue()
    assert seen == [False]  # hooks run before the session starts
    assert result.session is session and session.closed
    assert len(result.turns) == 3 and all(t.finished for t in result.turns)
    parallel = result.turns[1]
    assert len(parallel.tool_metrics) == 2
    assert all(m.success for m in parallel.tool_metrics)
    assert parallel.tool_interval < parallel.usage.tool_duration
    s = result.summary
    assert s.llm_requests == 5 and s.tool_calls == 3 and s.tool_errors == 0
    assert s.llm_and_tool_duration == pytest.approx(s.llm_duration + s.tool_duration)
    assert s.active_duration < s.llm_and_tool_duration
    assert s.llm_completion_tokens > 0 and s.llm_usage_unreported == 0
    assert "SIMULATED" in text
    found = re.search(r"LLM ([\d.]+) s \+ tools ([\d.]+) s = ([\d.]+) s", text)
    assert found, text
    llm, tools, total = (float(x) for x in found.groups())
    assert llm + tools == pytest.approx(total, abs=1e-9)
    assert total == pytest.approx(s.llm_and_tool_duration, abs=0.005)
    assert "available" in text and "A1002" in text  # tools really read the data files


def test_demo_tools_read_the_shipped_data():
    lookup_order, check_stock, estimate_delivery = make_tools(0.0)
    assert lookup_order("a1002")["status"] == "in transit"
    assert check_stock("TENT-2P")["available"] == {"Gothenburg": 1, "Oslo": 0}
    assert estimate_delivery("A1002", express=True)["eta"] == "2026-11-27"
    with pytest.raises(KeyError):
        lookup_order("Z9999")


def test_demo_options_validation():
    with pytest.raises(InvalidArgumentError):
        DemoOptions(tool_latency=-1)
    assert DemoOptions().simulated and not DemoOptions(base_url="http://x/v1").simulated


async def test_demo_against_an_endpoint_given_by_base_url(sim):
    """--base-url path: here the endpoint is the test simulator, without the demo's rules."""
    sim.config.ttft = sim.config.token_delay = 0.0
    out = io.StringIO()
    result = await run_demo(
        DemoOptions(base_url=sim.base_url, model="some-model", api_key="k", tool_latency=0),
        console=Console(file=out, width=120),
    )
    assert not result.turns[0].tool_results  # the plain simulator asks for no tools
    assert result.summary.llm_requests == 3
    llm = result.turns[0].llm_metrics[0]
    assert llm.metadata.model_name == "some-model"
    assert llm.metadata.model_provider == "openai-compatible"
    assert sim.config.requests[0]["model"] == "some-model"
    assert len(sim.config.requests[0]["tools"]) == 3
    assert "some-model at http://127.0.0.1" in out.getvalue()


def test_demo_cli(sim, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from callmeter.cli import app

    sim.config.ttft = sim.config.token_delay = 0.0
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    args = ["demo", "--tool-latency", "0", "--model", "m-cli", "--out", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "Total duration including tool calls" in done.output
    assert sim.config.requests[0]["model"] == "m-cli"
    bad = CliRunner().invoke(app, ["demo", "--tool-latency", "-1"])
    assert bad.exit_code == 2 and "tool_latency" in bad.output


def test_demo_cli_offline_writes_events_report_and_html(tmp_path):
    from typer.testing import CliRunner

    from callmeter.cli import app
    from callmeter.report import load

    args = ["demo", "--tool-latency", "0", "--sim-ttft", "0", "--sim-token-delay", "0"]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    report = load(tmp_path / "calls.jsonl")
    assert report.errors == [] and len(report.calls) == 1
    call = report.calls[0]
    assert len(call.turns) == 3 and call.usage.tool_calls == 3
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 1 and call.session_id in html
    assert "HTML report:" in done.output and "callmeter report" in done.output
    # the simulated model is priced (at gpt-4o-mini's list rates) in the summary and report
    assert "Cost: $0.0001" in done.output and "no price" not in done.output
    assert re.search(r"cost\s+\$0\.0001\d+", done.output)
