"""What JSONLWriter's durability modes cost the agent.

One call = start + 20 LLM metrics + close = 22 records. For each mode, the time the agent's
thread spends emitting a call (what a call waits for), and the time close() then takes to
write what is still queued. Baseline: the default mode, ``sync="interval"`` without fsync,
measured in the same run. Modes are interleaved (rotated order each round), rounds
repeated, medians reported. Files go to $BENCH_DIR (default: the system temp directory);
fsync costs depend entirely on that disk.

Run: .venv/bin/python bench/jsonl_durability.py   (BENCH_CALLS, BENCH_ROUNDS to change size)
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

from callmeter import AgentSession, metrics
from callmeter.export import JSONLWriter

CALLS = int(os.environ.get("BENCH_CALLS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
RECORDS_PER_CALL = 22
MODES = [
    ("interval", False),
    ("interval", True),
    ("session", False),
    ("session", True),
    ("record", False),
    ("record", True),
]
T0 = 1_790_000_000.0


def one_round(directory: str, sync: str, fsync: bool, tag: str) -> tuple[float, float]:
    """Seconds per call on the emitting thread, and seconds close() took."""
    md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    m = metrics.LLMMetrics(
        timestamp=T0, started_at=T0, duration=0.5, ttft=0.2, prompt_tokens=100,
        completion_tokens=20, total_tokens=120, speech_id="speech_1", metadata=md,
    )  # fmt: skip
    path = os.path.join(directory, f"{tag}.jsonl")
    writer = JSONLWriter(path, sync=sync, fsync=fsync)
    sessions = [AgentSession(session_id=f"{tag}-{k}", agent_name="bench") for k in range(CALLS)]
    gc.collect()
    start = time.perf_counter()
    for s in sessions:
        writer.attach(s)
        s.start()
        for _ in range(RECORDS_PER_CALL - 2):
            s.emit_metrics(m)
        s.close()
    emitting = (time.perf_counter() - start) / CALLS
    start = time.perf_counter()
    writer.close()
    closing = time.perf_counter() - start
    assert writer.dropped == 0
    with open(path, "rb") as f:
        assert sum(1 for _ in f) == CALLS * RECORDS_PER_CALL
    os.unlink(path)
    return emitting, closing


def main() -> None:
    directory = tempfile.mkdtemp(prefix="callmeter-bench-", dir=os.environ.get("BENCH_DIR"))
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {m: [] for m in MODES}
    try:
        for r in range(ROUNDS):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for sync, fsync in order:
                results[(sync, fsync)].append(
                    one_round(directory, sync, fsync, f"{sync}-{fsync}-{r}")
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    base = statistics.median(e for e, _ in results[("interval", False)])
    print(
        f"JSONLWriter durability modes: {CALLS} calls x {RECORDS_PER_CALL} records, "
        f"{ROUNDS} rounds, medians; Python {sys.version.split()[0]}; dir {directory}"
    )
    print(
        f"{'mode':<22} {'per call':>12} {'per record':>12} {'vs interval':>12} "
        f"{'close()':>10}  survives"
    )
    for sync, fsync in MODES:
        emitting = statistics.median(e for e, _ in results[(sync, fsync)])
        closing = statistics.median(c for _, c in results[(sync, fsync)])
        name = f'sync="{sync}"' + (", fsync" if fsync else "")
        survives = {
            "interval": "kill -9: all but the last flush interval",
            "session": "kill -9: every closed session",
            "record": "kill -9: every record",
        }[sync]
        if fsync:
            survives = survives.replace("kill -9", "power loss")
        print(
            f"{name:<22} {emitting * 1e6:>9.1f} us {emitting / RECORDS_PER_CALL * 1e6:>9.2f} us "
            f"{emitting / base:>11.1f}x {closing * 1e3:>7.1f} ms  {survives}"
        )


if __name__ == "__main__":
    main()
