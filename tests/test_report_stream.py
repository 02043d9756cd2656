"""callmeter report at any size: adversarial files, filters, top-N, bounded turns and memory."""

from __future__ import annotations

import json
import os
import re
import tracemalloc

import pytest

from callmeter.cli import run
from callmeter.metrics import LLMMetrics, Metadata
from callmeter.model.events import CloseEvent, MetricsCollectedEvent, SessionStartedEvent
from callmeter.model.types import TurnBreakdown, TurnMetrics, TurnSegment
from callmeter.records import encode
from callmeter.report import ReportOptions, load, render_html, scan
from callmeter.report.html import BAR_W, LABEL_W
from callmeter.report.plain import BAR_WIDTH

T0 = 1_790_000_000.0
PRICES = {"acme/m": {"input_mtok": 1, "output_mtok": 1}}


def turn(sid: str, duration: float, segments: list[TurnSegment] | None = None) -> TurnMetrics:
    segs = segments or [TurnSegment(component="other", start=0.0, end=duration)]
    return TurnMetrics(
        timestamp=T0 + duration,
        started_at=T0,
        duration=duration,
        e2e_latency=duration,
        breakdown=TurnBreakdown(other=duration, segments=segs),
        speech_id=sid,
    )


def call_lines(
    session_id: str,
    durations: list[float] = (1.0,),  # type: ignore[assignment]
    *,
    agent: str | None = None,
    start: float = T0,
    tokens: int = 0,
    close: bool = True,
    labels: dict[str, str] | None = None,
    turns: list[TurnMetrics] | None = None,
) -> list[bytes]:
    """The encoded records of one call: start, an LLM request, its turns, close."""
    env = {"session_id": session_id, "agent_name": agent, "labels": labels}
    recs = [SessionStartedEvent(seq=0, created_at=start, **env)]
    llm = LLMMetrics(
        timestamp=start + 1,
        started_at=start,
        duration=1.0,
        prompt_tokens=tokens,
        completion_tokens=0,
        metadata=Metadata(model_name="m", model_provider="acme"),
    )
    recs.append(MetricsCollectedEvent(seq=1, created_at=start + 1, metrics=llm, **env))
    for i, t in enumerate(
        turns or [turn(f"{session_id}_t{i}", d) for i, d in enumerate(durations)]
    ):
        recs.append(MetricsCollectedEvent(seq=2 + i, created_at=start + 2, metrics=t, **env))
    if close:
        recs.append(CloseEvent(seq=len(recs), created_at=start + 60, duration=60.0, **env))
    return [encode(r) for r in recs]


def write(path, lines: list[bytes], end: bytes = b"\n") -> str:
    path.write_bytes(b"".join(line + end for line in lines))
    return str(path)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(["report", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_adversarial_lines_are_skipped_counted_and_never_crash(tmp_path, capsys):
    bad = [
        b'{"event":"close","v":1,"session_id":"\xff\xfe","seq":1,"created_at":1,"duration":1}',
        b"[" * 100_000,  # deeply nested
        b'{"a":' * 100_000,
        b'{"event":"session_started","v":1,"session_id":"n","seq":0,"created_at":NaN}',
        b'{"event":"x":"' + b"a" * (20 * 2**20) + b'"}',  # a 20 MiB line
        b"\x00\x01garbage",
        b'{"event":"metrics_collected","v":1,"session_id":"u","seq":1,"created_at":1,'
        b'"metrics":{"type":"hologram_metrics"}}',  # a metric type from a newer callmeter
    ]
    path = write(tmp_path / "bad.jsonl", [*call_lines("good", [1.0, 2.0]), *bad])
    code, out, err = cli(capsys, path)
    assert code == 0, err
    assert "call good" in out and "Traceback" not in out + err
    assert "skipped 7 of 12 lines" in err
    assert "malformed: 4 (line 6, 8, 9, 11)" in err and "invalid: 1 (line 7)" in err
    assert "too_long: 1 (line 10)" in err and "unknown_metric: 1 (line 12)" in err
    assert len(err.splitlines()) == 5  # a count per kind, not a line per bad line


def test_many_bad_lines_give_a_short_summary(tmp_path, capsys):
    path = write(tmp_path / "noisy.jsonl", [*call_lines("c"), *[b"nope"] * 5000])
    code, _out, err = cli(capsys, path)
    assert code == 0
    assert "malformed: 5000 (line 5, 6, 7, 8, 9, ...)" in err and len(err.splitlines()) == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n{not json\n\xff\xff\n", b"\n\n\r\n"],
    ids=["empty", "garbage", "blank"],
)
def test_no_valid_record_exits_non_zero(tmp_path, capsys, content):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    code, out, err = cli(capsys, str(path))
    assert code == 1
    assert "error: no valid record in" in err and "Traceback" not in err
    assert ("it is empty" in err) == (content == b"")
    code, out, _ = cli(capsys, str(path), "--json")
    assert code == 1 and json.loads(out)["calls"] == []  # still a valid document


def test_crlf_and_bom(tmp_path, capsys):
    path = tmp_path / "win.jsonl"
    lines = call_lines("crlf", [1.0, 1.5])
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(line + b"\r\n" for line in lines))
    code, out, err = cli(capsys, str(path))
    assert code == 0 and "skipped" not in err
    assert "call crlf" in out and re.search(r"e2e latency\s+2\s", out)


def test_unknown_component_and_out_of_range_segments_are_clipped(tmp_path, capsys):
    weird = turn(
        "weird",
        2.0,
        [
            TurnSegment(component="quantum_wait", start=-5.0, end=0.5),
            TurnSegment(component="tool", start=0.5, end=1e300),
            TurnSegment(component="other", start=1e300, end=1e308),
        ],
    )
    path = write(tmp_path / "w.jsonl", call_lines("w", turns=[weird, turn("ok", 1.0)]))
    code, out, err = cli(capsys, path)
    assert code == 0, err
    bars = [line for line in out.splitlines() if "█" in line and " s" in line]
    assert [line.count("█") for line in bars] == [BAR_WIDTH, BAR_WIDTH // 2]  # clipped to 2 s
    assert len(out) < 10_000
    (call,) = load(path).calls
    doc = render_html([call])
    widths = [float(w) for w in re.findall(r'<rect x="[^"]+" y="\d+" width="([^"]+)"', doc)]
    xs = [float(x) for x in re.findall(r'<rect x="([^"]+)"', doc)]
    assert (
        widths
        and max(widths) <= BAR_W
        and max(x + w for x, w in zip(xs, widths, strict=True)) <= LABEL_W + BAR_W + 0.01
    )
    assert "?quantum_wait" in doc and len(doc) < 50_000
    code, out, _ = cli(capsys, path, "--json")
    # the waterfall shows the malformed turn clipped; the percentiles leave it out, since
    # collectors reject an event whose segments lie outside its turn
    assert code == 0 and json.loads(out)["calls"][0]["latency"]["turns"] == 1


def test_huge_turn_duration_keeps_the_axis_small():
    doc = render_html([_call_with(turn("slow", 9e8))])
    assert doc.count("<line ") <= 12 and len(doc) < 20_000


def _call_with(t: TurnMetrics):
    from callmeter.report import Call

    return Call(session_id="c", turns=[t], turns_total=1)


def test_terminal_never_receives_control_characters_or_markup_loss(tmp_path, capsys):
    lines = call_lines(
        "evil\x1b[2J\x1b]0;pwned\x07",
        agent="[openai] bot",
        labels={"provider": "[bold]x[/bold]"},
    )
    code, out, err = cli(capsys, write(tmp_path / "e.jsonl", lines))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out  # stdout is not a tty: no colour either
    assert "[openai] bot" in out and "[bold]x[/bold]" in out


def test_calls_without_close_are_reported_at_the_end(tmp_path, capsys):
    path = write(tmp_path / "open.jsonl", [*call_lines("open", close=False), *call_lines("done")])
    code, out, _ = cli(capsys, path)
    assert code == 0
    titles = re.findall(r"── call (\S+)(.*)", out)
    assert [t[0] for t in titles] == ["done", "open"] and "no close record" in titles[1][1]
    assert "1 without close" in out


def test_a_record_after_its_calls_close_is_left_out_and_counted(tmp_path, capsys):
    late = MetricsCollectedEvent(
        session_id="a", seq=9, created_at=T0 + 61, metrics=turn("a_late", 2.0)
    )
    lines = [*call_lines("a"), *call_lines("b"), encode(late)]
    code, out, err = cli(capsys, write(tmp_path / "late.jsonl", lines))
    assert code == 0
    assert [t for t in re.findall(r"── call (\S+)", out)] == ["a", "b"]
    assert "left out 1 records read after their call's close record" in err
    result = scan(str(tmp_path / "late.jsonl"))
    assert (result.calls, result.after_close) == (2, 1)


def test_waterfall_rows_are_bounded_and_the_rest_counted(tmp_path, capsys):
    durations = [0.5 + (i % 7) / 10 for i in range(100)]
    path = write(tmp_path / "long.jsonl", call_lines("long", durations))
    code, out, _ = cli(capsys, path, "--turns", "5")
    assert code == 0
    assert len([line for line in out.splitlines() if line.startswith("long_t")]) == 5 + 5
    assert "… 95 more turns" in out  # 5 rows in the waterfall, 5 in the slowest table
    assert re.search(r"e2e latency\s+100\s", out)  # percentiles over every turn
    (call,) = scan_calls(path, ReportOptions(max_turns=5))
    assert len(call.turns) == 5 and call.turns_total == 100 and call.turns_hidden == 95


def scan_calls(path, options: ReportOptions):
    calls = []
    scan(path, options, on_call=lambda _o, c: calls.append(c))
    return calls


@pytest.fixture
def fleet_file(tmp_path):
    lines = []
    for i in range(6):
        lines += call_lines(
            f"c{i}",
            [0.5 + i, 0.2],
            agent="sales" if i % 2 else "support",
            start=T0 + 3600 * i,
            tokens=[5, 50, 1, 30, 2, 40][i] * 1000,
        )
    return write(tmp_path / "fleet.jsonl", lines)


def titles(out: str) -> list[str]:
    return re.findall(r"── call (\S+)", out)


def test_filters_call_agent_since_until(fleet_file, capsys):
    assert titles(cli(capsys, fleet_file, "--call", "c2", "--call", "c4")[1]) == ["c2", "c4"]
    assert titles(cli(capsys, fleet_file, "--agent", "sales")[1]) == ["c1", "c3", "c5"]
    since = "2026-09-21T16:13:20Z"  # T0 + 2 h
    assert titles(cli(capsys, fleet_file, "--since", since)[1]) == ["c2", "c3", "c4", "c5"]
    until = str(T0 + 3600 * 2)  # epoch seconds; --until is exclusive
    assert titles(cli(capsys, fleet_file, "--until", until)[1]) == ["c0", "c1"]
    both = cli(capsys, fleet_file, "--since", since, "--until", until, "--agent", "sales")
    assert both[0] == 0 and titles(both[1]) == [] and "no call matches the filters" in both[1]


def test_limit_and_sort(fleet_file, capsys):
    def top(*args: str) -> list[str]:
        return titles(cli(capsys, fleet_file, *args)[1])

    assert top("--limit", "2") == ["c5", "c4"]  # default: most recent first
    assert top("--limit", "2", "--sort", "slowest") == ["c5", "c4"]
    assert top("--sort", "slowest") == ["c5", "c4", "c3", "c2", "c1", "c0"]
    options = ReportOptions(limit=3, sort="costliest", prices=PRICES)
    assert [c.session_id for c in scan_calls(fleet_file, options)] == ["c1", "c5", "c3"]
    assert top("--limit", "1", "--sort", "recent", "--agent", "support") == ["c4"]


def test_summary_shows_fleet_only(fleet_file, capsys):
    code, out, _ = cli(capsys, fleet_file, "--summary")
    assert code == 0 and titles(out) == []
    assert "── all 6 calls" in out and re.search(r"e2e latency\s+12\s", out)
    assert re.search(r"call duration\s+6\s+60\.000 s", out)
    code, out, _ = cli(capsys, fleet_file, "--summary", "--json")
    data = json.loads(out)
    assert data["calls"] == [] and data["all_calls"]["totals"]["turns"] == 12
    assert data["all_calls"]["latency"]["e2e_latency"]["max"] == pytest.approx(5.5)
    assert data["all_calls"]["latency"]["slowest_turns"][0]["session_id"] == "c5"


def test_json_streams_every_call(fleet_file, capsys):
    code, out, _ = cli(capsys, fleet_file, "--json", "--agent", "sales")
    assert code == 0
    data = json.loads(out)
    assert [c["session_id"] for c in data["calls"]] == ["c1", "c3", "c5"]
    assert data["all_calls"]["calls"] == 3 and data["skipped"] == {}


def test_html_with_filters(fleet_file, tmp_path, capsys):
    out_path = tmp_path / "r.html"
    code, _, err = cli(capsys, fleet_file, "--limit", "2", "--html", str(out_path))
    assert code == 0 and "HTML report:" in err
    doc = out_path.read_text()
    assert doc.count('<section class="call"') == 2 and "all 6 calls" in doc


def test_progress_goes_to_stderr_only(fleet_file, capsys):
    plain = cli(capsys, fleet_file)[1]
    code, out, _ = cli(capsys, fleet_file, "--progress")
    assert code == 0 and out == plain


def _many_calls(path, calls: int) -> None:
    """``calls`` calls of 20 turns each, one after another, written quickly."""
    with path.open("wb") as f:
        for i in range(calls):
            f.write(b"\n".join(call_lines(f"call_{i:06d}", [0.5 + (i % 13) / 10] * 20)) + b"\n")


def test_memory_does_not_grow_with_the_file(tmp_path):
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _many_calls(small, 80)
    _many_calls(big, 400)
    assert big.stat().st_size > 4.5 * small.stat().st_size

    def peak(path) -> int:
        with open(os.devnull, "w") as devnull:
            from callmeter.report import TerminalWriter
            from callmeter.report.plain import Painter

            writer = TerminalWriter(devnull, Painter(False))
            tracemalloc.start()
            try:
                result = scan(path, on_call=lambda _o, c: writer.call(c))
                writer.finish(result.fleet)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    scan(small)  # load prices and imports before tracing
    p_small, p_big = peak(small), peak(big)
    assert p_big < 1.5 * p_small, (p_small, p_big)


def test_load_lines_and_render_terminal_from_a_path(fleet_file):
    import io
    from pathlib import Path

    from callmeter.report import load_lines, render_terminal

    lines = Path(fleet_file).read_bytes().splitlines()
    rep = load_lines(lines)
    assert [c.session_id for c in rep.calls] == [f"c{i}" for i in range(6)]
    assert rep.fleet is not None and rep.fleet.totals.turns == 12
    out = io.StringIO()
    streamed = render_terminal(fleet_file, out)
    assert streamed.calls == [] and streamed.fleet is not None  # printed, not kept
    assert streamed.fleet.totals.calls == 6 and titles(out.getvalue()) == [
        f"c{i}" for i in range(6)
    ]


class _Tty:
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    import io

    from callmeter.report.plain import use_color

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(_Tty()) and not use_color(io.StringIO())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(_Tty())  # type: ignore[arg-type]


def test_report_options_reject_bad_values():
    from callmeter.errors import InvalidArgumentError

    for bad in (
        {"limit": -1},
        {"limit": True},
        {"max_turns": 1.5},
        {"sort": "fastest"},
        {"since": float("nan")},
        {"until": "yesterday"},
    ):
        with pytest.raises(InvalidArgumentError):
            ReportOptions(**bad)
