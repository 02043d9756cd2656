"""callmeter report: loading JSONL, terminal report, --json, --html, bad lines."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from callmeter import AgentSession, InvalidArgumentError
from callmeter.cli import app
from callmeter.export import JSONLWriter
from callmeter.report import load, render_html, render_terminal, write_html
from test_turns import T0, eou, llm, tool, tts


def tool_turn(s: AgentSession, sid: str, tool_s: float) -> None:
    """Known by construction: e2e = 0.4 + 0.5 + 0.05 + tool_s + 0.05 + 0.2 + 0.2."""
    with s.turn(speech_id=sid) as turn:
        turn.user_stopped_speaking(at=T0)
        end = 0.95 + tool_s
        for m in (
            eou(0, 0.4, 0.15, sid=sid),
            llm(0.4, 0.3, 0.5, sid=sid),
            tool(0.95, tool_s, sid=sid),
            tool(0.95, tool_s / 2, "other_tool", sid=sid),
            llm(end + 0.05, 0.2, 0.5, sid=sid),
            tts(end + 0.25, 0.2, 1.0, sid=sid),
        ):
            s.emit_metrics(m)


def expected_e2e(tool_s: float) -> float:
    return 1.4 + tool_s


@pytest.fixture
def calls_file(tmp_path):
    path = tmp_path / "calls.jsonl"
    with JSONLWriter(path) as w:
        a = w.attach(AgentSession(session_id="call_a", agent_name="support", labels={"env": "t"}))
        a.set_latency_budget(tool=1.0)
        with a:
            tool_turn(a, "a1", 0.3)
            tool_turn(a, "a2", 1.5)
            tool_turn(a, "a3", 0.6)
        b = w.attach(AgentSession(session_id="call_b"))
        with b:
            tool_turn(b, "b1", 0.2)
    return path


def test_load_groups_by_call(calls_file):
    rep = load(calls_file)
    assert [c.session_id for c in rep.calls] == ["call_a", "call_b"] and rep.errors == []
    a = rep.calls[0]
    assert (a.agent_name, a.labels, a.budget_exceeded) == ("support", {"env": "t"}, 1)
    assert [t.speech_id for t in a.turns] == ["a1", "a2", "a3"]
    assert a.usage.tool_calls == 6 and a.usage.llm_requests == 6
    lat = a.latency
    assert lat.turns == 3 and lat.e2e_latency.exact
    assert lat.e2e_latency.max == pytest.approx(expected_e2e(1.5))
    assert lat.e2e_latency.p50 == pytest.approx(expected_e2e(0.6))
    assert lat.slowest_turns[0].speech_id == "a2"
    assert a.duration is not None and a.started_at is not None


def test_corrupt_and_truncated_lines_are_reported_and_skipped(calls_file, tmp_path):
    lines = calls_file.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"this is not json\n")
    lines.insert(4, b'{"event":"metrics_collected","session_id":"call_a","metrics":{"type":"x"}}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines) + lines[5][:40])  # a truncated last line
    rep = load(bad)
    assert [e.line for e in rep.errors] == [3, 5, len(lines) + 1]
    assert "truncated" in rep.errors[-1].message
    assert [c.session_id for c in rep.calls] == ["call_a", "call_b"]
    assert len(rep.calls[0].turns) == 3  # the rest of the file still reports
    out = io.StringIO()
    render_terminal(rep, Console(file=out, width=120))
    text = out.getvalue()
    # one line per kind of problem, with the first line numbers
    assert f"skipped 3 of {len(lines) + 1} lines" in text
    assert "malformed: 1 (line 3) not valid JSON" in text
    assert f"truncated: 1 (line {len(lines) + 1}) partial last line" in text
    assert "unknown_metric: 1 (line 5)" in text


def test_terminal_report_shows_summary_waterfall_percentiles_slowest(calls_file):
    out = io.StringIO()
    render_terminal(calls_file, Console(file=out, width=140, color_system="truecolor"))
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert "call call_a · support · env=t" in text and "call call_b" in text
    bars = [line for line in text.splitlines() if re.search(r"\d\.\d{3} s\s+█", line)]
    assert len(bars) == 4  # one bar per turn (the legend has no duration)
    longest = max(bars, key=lambda line: line.count("█"))
    assert longest.startswith("a2") and longest.count("█") == 48
    assert re.search(r"e2e latency\s+3\s+2\.000 s\s+2\.720 s\s+2.882 s\s+2\.900 s", text)
    assert "tools 1.500" in text  # slowest turn: where the time went
    assert "all 2 calls" in text
    # the tool segment is drawn in the tool colour (61,133,198)
    assert "\x1b[38;2;61;133;198m" in out.getvalue()


def test_cli_json_and_html(calls_file, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(calls_file), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    a = data["calls"][0]
    assert a["session_id"] == "call_a" and a["usage"]["tool_calls"] == 6
    assert a["latency"]["e2e_latency"]["max"] == pytest.approx(2.9)
    assert a["latency"]["slowest_turns"][0]["breakdown"]["tool"] == pytest.approx(1.5)
    assert data["all_calls"]["latency"]["turns"] == 4
    html_path = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(calls_file), "--html", str(html_path)])
    assert res.exit_code == 0 and "call call_a" in res.stdout
    doc = html_path.read_text()
    assert doc.count('<svg class="waterfall"') == 2
    assert doc.count("<rect ") == sum(
        len(t.breakdown.segments) for c in load(calls_file).calls for t in c.turns
    )
    # self-contained: no scripts, stylesheets, images or fetched URLs
    assert "<script" not in doc and "<link" not in doc and "<img" not in doc
    assert re.findall(r'(?:src|href)="', doc) == []
    assert set(re.findall(r"https?://[^\s\"']+", doc)) == {"http://www.w3.org/2000/svg"}


def test_cli_errors(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "cannot read" in res.output
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        load(tmp_path / "nope.jsonl")


def test_turns_rebuilt_from_metrics_when_the_file_has_none(tmp_path):
    path = tmp_path / "raw.jsonl"
    with JSONLWriter(path) as w:
        s = w.attach(AgentSession(session_id="raw"))
        with s:  # metrics carry speech ids, but no session.turn() was used
            for m in (eou(0, 0.4, 0.15, sid="r1"), llm(0.4, 0.3, 0.5, sid="r1"),
                      tts(0.8, 0.2, 1.0, sid="r1")):  # fmt: skip
                s.emit_metrics(m)
    (call,) = load(path).calls
    (turn,) = call.turns
    assert turn.speech_id == "r1" and turn.e2e_latency == pytest.approx(1.0)


def test_html_escapes_and_handles_calls_without_turns():
    s = AgentSession(session_id="<x>", agent_name="a&b")
    from callmeter.report import Call

    doc = render_html([Call(session_id=s.session_id, agent_name=s.agent_name)])
    assert "&lt;x&gt;" in doc and "a&amp;b" in doc and "<x>" not in doc
    assert doc.count('<svg class="waterfall"') == 1 and "no turns" in doc


def test_write_html_bad_path(calls_file, tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot write"):
        write_html(calls_file, tmp_path / "missing" / "r.html")


def test_cost_row_priced_with_given_prices_or_marked_lower_bound(tmp_path):
    from callmeter.metrics import LLMMetrics, Metadata

    path = tmp_path / "cost.jsonl"
    with JSONLWriter(path) as w:
        s = w.attach(AgentSession(session_id="call_c"))
        with s:
            s.emit_metrics(
                LLMMetrics(
                    timestamp=T0 + 1, started_at=T0, duration=1.0,
                    prompt_tokens=1_000_000, completion_tokens=500_000,
                    metadata=Metadata(model_name="house-model", model_provider="acme"),
                )
            )  # fmt: skip

    def cost_row(prices):
        out = io.StringIO()
        render_terminal(load(path, prices=prices), Console(file=out, width=140))
        return next(line for line in out.getvalue().splitlines() if line.startswith("cost"))

    # 1M input tokens at $2/M + 0.5M output tokens at $8/M = $6
    priced = cost_row({"acme/house-model": {"input_mtok": 2, "output_mtok": 8}})
    assert "$6.000000" in priced and "at least" not in priced
    unpriced = cost_row(None)
    assert "at least $0.000000" in unpriced and "acme/house-model" in unpriced
    prices_file = tmp_path / "prices.toml"
    prices_file.write_text('[acme."house-model"]\ninput_mtok = 2\noutput_mtok = 8\n')
    done = CliRunner().invoke(app, ["report", str(path), "--prices", str(prices_file)])
    assert done.exit_code == 0, done.output
    assert re.search(r"cost\s+\$6\.000000", done.output)
