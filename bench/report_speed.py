"""`callmeter report` speed and peak memory, before and after, beside the standard library.

Generates a JSONL file of 1,000 calls and ~100,000 records through real AgentSessions and
a JSONLWriter (synthetic timelines: EOU -> LLM step -> two parallel tools -> LLM step ->
TTS, every 4th turn without tools). Then, interleaved and repeated (medians):

- baseline: reading the file and ``json.loads``-ing every line with the standard library;
- before: ``callmeter report`` of the code at ``BENCH_BEFORE_REV`` (default: the commit
  before the streaming report, extracted with ``git archive``; skipped when git or the
  revision is unavailable);
- after: ``callmeter report`` of this tree, with ``--json``, ``--html``, ``--summary`` and
  ``--limit 10 --sort slowest``.

Every command runs as a subprocess with stdout to /dev/null; time is wall clock, memory
is the subprocess's peak RSS (``VmHWM`` from ``/proc/self/status`` at exit: ``ru_maxrss``
of a child started by vfork would include the parent's RSS). Then the same on a large file
(``BENCH_BIG_MB``, default 300; 0 skips) made by repeating the small one under new
session ids.

Run: .venv/bin/python bench/report_speed.py   (BENCH_CALLS, BENCH_TURNS, BENCH_REPEAT,
BENCH_BIG_MB, BENCH_BEFORE_REV to change it)
"""

from __future__ import annotations

import os
import random
import statistics
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
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "300"))
BEFORE_REV = os.environ.get("BENCH_BEFORE_REV", "23f02372a5cd7644d804985c787413d9381febfb")
ROOT = Path(__file__).resolve().parent.parent
PEAK = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'):\n"
    "            sys.stderr.write('PEAK_KIB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_peak)\n"
)
STDLIB = PEAK + (
    "import json\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        if line.strip():\n"
    "            json.loads(line)\n"
)
CALLMETER = PEAK + (
    "import runpy\nsys.argv[0] = 'callmeter'\nrunpy.run_module('callmeter', run_name='__main__')\n"
)
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


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one subprocess; stdout to /dev/null."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait()
    secs = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {err.decode()[-2000:]}")
    peaks = [line for line in err.decode().splitlines() if line.startswith("PEAK_KIB ")]
    return secs, int(peaks[-1].split()[1]) / 1024


def extract_before(dest: Path) -> dict[str, str] | None:
    """The report code at BEFORE_REV in ``dest``; the environment that runs it."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE_REV, "src/callmeter"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"before: not measured (git archive {BEFORE_REV[:12]} failed: {exc})")
        return None
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return {**os.environ, "PYTHONPATH": str(dest / "src")}


def replicate(small: Path, big: Path, mib: int) -> int:
    """``big``: copies of ``small`` under new session ids until it is ``mib`` MiB."""
    data = small.read_bytes()
    copies = 0
    with big.open("wb") as f:
        while f.tell() < mib * 2**20:
            f.write(data.replace(b'"session_id":"call_', f'"session_id":"r{copies}_'.encode()))
            copies += 1
    return copies


def measure(
    cases: list[tuple[str, list[str], dict[str, str] | None]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Median seconds and max peak RSS per case, cases interleaved ``repeat`` times."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    rss: dict[str, float] = dict.fromkeys(times, 0.0)
    for _ in range(repeat):
        for name, cmd, env in cases:
            secs, peak = run(cmd, env)
            times[name].append(secs)
            rss[name] = max(rss[name], peak)
    return {name: (statistics.median(times[name]), rss[name]) for name in times}


def table(results: dict[str, tuple[float, float]], baseline: str) -> None:
    base = results[baseline][0]
    width = max(len(name) for name in results)
    print(f"{'command':<{width}}  {'seconds':>8}  {'x baseline':>10}  {'peak RSS MiB':>12}")
    for name, (secs, peak) in results.items():
        print(f"{name:<{width}}  {secs:>8.2f}  {secs / base:>10.2f}  {peak:>12.0f}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "calls.jsonl"
    gen_start = time.perf_counter()
    lines = generate(path)
    gen_s = time.perf_counter() - gen_start
    size = path.stat().st_size / 2**20
    print(f"generated {CALLS:,} calls, {lines:,} records ({size:.1f} MiB) in {gen_s:.2f} s")
    before_dir = tmp / "before"
    before_dir.mkdir()
    before_env = extract_before(before_dir)
    py = sys.executable
    stdlib = ("baseline: stdlib json.loads of every line", [py, "-c", STDLIB, str(path)], None)

    def cli(args: list[str], target: Path = path) -> list[str]:
        return [py, "-c", CALLMETER, "report", str(target), *args]

    html = str(tmp / "r.html")
    cases = [stdlib]
    variants = [("", []), (" --json", ["--json"]), (" --html OUT", ["--html", html])]
    for label, args in variants:
        if before_env is not None:
            cases.append((f"before: callmeter report FILE{label}", cli(args), before_env))
        cases.append((f"after:  callmeter report FILE{label}", cli(args), None))
    cases.append(("after:  callmeter report FILE --summary", cli(["--summary"]), None))
    cases.append(
        (
            "after:  callmeter report FILE --limit 10 --sort slowest",
            cli(["--limit", "10", "--sort", "slowest"]),
            None,
        )
    )
    print(
        f"\n{size:.0f} MiB file, median of {REPEAT} interleaved runs, "
        f"Python {sys.version.split()[0]}"
    )
    results = measure(cases, REPEAT)
    table(results, stdlib[0])
    if before_env is not None:
        for label, _ in variants:
            b = results[f"before: callmeter report FILE{label}"][0]
            a = results[f"after:  callmeter report FILE{label}"][0]
            print(f"callmeter report FILE{label}: {b / a:.1f}x faster than before")
    if BIG_MB <= 0:
        return
    big = tmp / "big.jsonl"
    copies = replicate(path, big, BIG_MB)
    path.unlink()
    big_mib = big.stat().st_size / 2**20
    print(f"\n{big_mib:.0f} MiB file ({copies * CALLS:,} calls), one run each")
    big_cases = [
        ("baseline: stdlib json.loads of every line", [py, "-c", STDLIB, str(big)], None),
        ("after:  callmeter report FILE", cli([], big), None),
        ("after:  callmeter report FILE --summary", cli(["--summary"], big), None),
        ("after:  callmeter report FILE --limit 10 --sort costliest",
         cli(["--limit", "10", "--sort", "costliest"], big), None),
    ]  # fmt: skip
    if before_env is not None:
        big_cases.insert(1, ("before: callmeter report FILE", cli([], big), before_env))
    table(measure(big_cases, 1), big_cases[0][0])


if __name__ == "__main__":
    main()
