"""`callmeter report` speed on a JSONL file of 1,000 calls and 100,000 events.

Generates the file through real AgentSessions and a JSONLWriter (synthetic timelines:
EOU -> LLM step -> two parallel tools -> LLM step -> TTS, every 4th turn without tools),
then times loading, the terminal report (rendered to a throw-away console), --json and
--html. Baseline, same run: reading and JSON-parsing every line with the stdlib only.

Run: .venv/bin/python bench/report_speed.py   (BENCH_CALLS / BENCH_TURNS to change size)
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callmeter import AgentSession
from callmeter.export.jsonl import JSONLWriter
from callmeter.metrics import EOUMetrics, LLMMetrics, ToolMetrics, TTSMetrics

CALLS = int(os.environ.get("BENCH_CALLS", "1000"))
TURNS = int(os.environ.get("BENCH_TURNS", "16"))
T0 = 1_790_000_000.0


def generate(path: Path, calls: int = CALLS, turns: int = TURNS, seed: int = 1) -> int:
    rng = random.Random(seed)
    with JSONLWriter(path) as writer:
        for c in range(calls):
            s = writer.attach(AgentSession(session_id=f"call_{c:05d}", agent_name="bench"))
            t = T0 + c * 600
            with s:
                for k in range(turns):
                    with s.turn(speech_id=f"speech_{c:05d}_{k:02d}") as turn:
                        sid = turn.speech_id
                        eou = rng.uniform(0.2, 0.6)
                        s.emit_metrics(
                            EOUMetrics(
                                timestamp=t + eou,
                                started_at=t,
                                end_of_utterance_delay=eou,
                                transcription_delay=eou * 0.4,
                                speech_id=sid,
                            )
                        )
                        x = t + eou
                        ttft = rng.lognormvariate(-1.2, 0.4)
                        d = ttft + rng.uniform(0.1, 0.4)
                        s.emit_metrics(
                            LLMMetrics(
                                timestamp=x + d,
                                started_at=x,
                                duration=d,
                                ttft=ttft,
                                prompt_tokens=900,
                                completion_tokens=40,
                                speech_id=sid,
                            )
                        )
                        x += d
                        if k % 4:
                            d1, d2 = rng.lognormvariate(-1, 0.7), rng.lognormvariate(-1.5, 0.5)
                            for name, dur in (("get_weather", d1), ("get_time", d2)):
                                s.emit_metrics(
                                    ToolMetrics(
                                        timestamp=x + dur,
                                        started_at=x,
                                        duration=dur,
                                        tool_name=name,
                                        speech_id=sid,
                                    )
                                )
                            x += max(d1, d2) + 0.01
                            ttft = rng.lognormvariate(-1.2, 0.4)
                            d = ttft + rng.uniform(0.2, 0.6)
                            s.emit_metrics(
                                LLMMetrics(
                                    timestamp=x + d,
                                    started_at=x,
                                    duration=d,
                                    ttft=ttft,
                                    prompt_tokens=1100,
                                    completion_tokens=60,
                                    speech_id=sid,
                                )
                            )
                            x += ttft
                        ttfb = rng.lognormvariate(-1.6, 0.3)
                        s.emit_metrics(
                            TTSMetrics(
                                timestamp=x + 2,
                                started_at=x,
                                duration=2.0,
                                ttfb=ttfb,
                                characters_count=120,
                                audio_duration=4.0,
                                speech_id=sid,
                            )
                        )
                        turn.user_stopped_speaking(at=t)
                    t += 30
    return sum(1 for _ in path.open("rb"))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    from rich.console import Console

    from callmeter.report import load, render_terminal, write_html

    tmp = Path(tempfile.mkdtemp())
    path = tmp / "calls.jsonl"
    gen_s, lines = timed(lambda: generate(path))
    size = path.stat().st_size / 2**20
    print(f"generated {CALLS:,} calls, {lines:,} events ({size:.1f} MiB) in {gen_s:.2f} s")

    def stdlib_parse() -> int:
        with path.open("rb") as f:
            return sum(1 for line in f if json.loads(line))

    base_s, _ = timed(stdlib_parse)
    load_s, rep = timed(lambda: load(path))
    assert len(rep.calls) == CALLS and not rep.errors

    def terminal() -> None:
        console = Console(file=io.StringIO(), width=120, force_terminal=True)
        render_terminal(rep, console)

    term_s, _ = timed(terminal)
    rep2 = load(path)  # fresh: summaries are cached per call
    html_s, _ = timed(lambda: write_html(rep2, tmp / "report.html"))
    cli = [sys.executable, "-m", "callmeter", "report", str(path)]
    cli_term_s, _ = timed(lambda: subprocess.run(cli, capture_output=True, check=True))
    cli_json_s, _ = timed(lambda: subprocess.run([*cli, "--json"], capture_output=True, check=True))
    cli_html_s, _ = timed(
        lambda: subprocess.run(
            [*cli, "--html", str(tmp / "r.html")], capture_output=True, check=True
        )
    )
    html_mb = (tmp / "report.html").stat().st_size / 2**20
    rows = [
        ("baseline: stdlib json.loads of every line", base_s),
        ("load (msgspec decode + validate, group by call)", load_s),
        ("terminal report render (all calls)", term_s),
        (f"HTML report render + write ({html_mb:.1f} MiB)", html_s),
        ("CLI end to end: callmeter report FILE", cli_term_s),
        ("CLI end to end: callmeter report FILE --json", cli_json_s),
        ("CLI end to end: callmeter report FILE --html OUT", cli_html_s),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'step':<{width}}  {'seconds':>8}  {'x baseline':>10}")
    for name, secs in rows:
        print(f"{name:<{width}}  {secs:>8.2f}  {secs / base_s:>10.1f}")


if __name__ == "__main__":
    main()
