"""Event hot path: create an LLMMetrics, emit it through an AgentSession, collect it.

Compared, in the same run, with livekit-agents' own path (its pydantic LLMMetrics
construction plus ModelUsageCollector.collect). Then feeds 1,000,000 events to a
UsageCollector(keep_metrics=False) and reports memory, to show it stays flat.

Run: make bench   (or: .venv/bin/python bench/event_path.py after `pip install -e '.[bench]'`)
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
import warnings

N = int(os.environ.get("BENCH_EVENTS", "200000"))
CALL_EVENTS = 1000  # events per call (one AgentSession + one UsageCollector each)
TURN_EVENTS = 10  # events per turn (speech_id)
REPEATS = 5
T0 = 1_790_000_000.0


def best_ns_per_event(fn, n: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        gc.collect()
        start = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def callmeter_paths():
    from callmeter import AgentSession, metrics

    md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    speech_ids = [f"speech_{t}" for t in range(CALL_EVENTS // TURN_EVENTS)]

    def create_only(n: int) -> None:
        LLM = metrics.LLMMetrics
        for i in range(n):
            LLM(
                timestamp=T0 + i,
                started_at=T0 + i,
                duration=0.5,
                label="openai.LLM",
                request_id="req",
                ttft=0.2,
                prompt_tokens=100,
                completion_tokens=20,
                prompt_cached_tokens=0,
                total_tokens=120,
                tokens_per_second=40.0,
                speech_id=speech_ids[(i % CALL_EVENTS) // TURN_EVENTS],
                metadata=md,
            )

    def full_path(n: int, summary: bool = False) -> None:
        LLM = metrics.LLMMetrics
        for call in range(0, n, CALL_EVENTS):
            session = AgentSession(session_id=f"bench-{call}")
            usage = metrics.UsageCollector(keep_metrics=False)
            session.on("metrics_collected", lambda ev, usage=usage: usage.collect(ev.metrics))
            emit = session.emit_metrics
            for i in range(call, min(n, call + CALL_EVENTS)):
                emit(
                    LLM(
                        timestamp=T0 + i,
                        started_at=T0 + i,
                        duration=0.5,
                        label="openai.LLM",
                        request_id="req",
                        ttft=0.2,
                        prompt_tokens=100,
                        completion_tokens=20,
                        prompt_cached_tokens=0,
                        total_tokens=120,
                        tokens_per_second=40.0,
                        speech_id=speech_ids[(i - call) // TURN_EVENTS],
                        metadata=md,
                    )
                )
            # Totals are added up in batches: flush both collectors so that work is timed.
            usage._flush()
            session._collector._flush()
            if summary:
                assert usage.get_summary().llm_requests == min(n, call + CALL_EVENTS) - call
                session.usage  # noqa: B018

    return create_only, full_path, lambda n: full_path(n, summary=True)


def livekit_paths():
    try:
        from livekit.agents import metrics as lk
    except ImportError:
        return None
    warnings.simplefilter("ignore", DeprecationWarning)
    md = lk.base.Metadata(model_name="gpt-4o-mini", model_provider="openai")

    def create_only(n: int) -> None:
        LLM = lk.LLMMetrics
        for i in range(n):
            LLM(
                label="openai.LLM",
                request_id="req",
                timestamp=T0 + i,
                duration=0.5,
                ttft=0.2,
                cancelled=False,
                completion_tokens=20,
                prompt_tokens=100,
                prompt_cached_tokens=0,
                total_tokens=120,
                tokens_per_second=40.0,
                speech_id="speech_1",
                metadata=md,
            )

    def full_path(n: int) -> None:
        collector = lk.ModelUsageCollector()
        LLM = lk.LLMMetrics
        for i in range(n):
            collector.collect(
                LLM(
                    label="openai.LLM",
                    request_id="req",
                    timestamp=T0 + i,
                    duration=0.5,
                    ttft=0.2,
                    cancelled=False,
                    completion_tokens=20,
                    prompt_tokens=100,
                    prompt_cached_tokens=0,
                    total_tokens=120,
                    tokens_per_second=40.0,
                    speech_id="speech_1",
                    metadata=md,
                )
            )

    return create_only, full_path


def memory_check(total: int = 1_000_000) -> None:
    import psutil

    from callmeter import metrics

    md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    collector = metrics.UsageCollector(keep_metrics=False)
    proc = psutil.Process()
    marks = {10_000, 100_000, 500_000, total}
    print(f"\nUsageCollector(keep_metrics=False) fed {total:,} events (disjoint intervals):")
    print(f"{'events':>10}  {'traced now (KiB)':>17}  {'traced peak (KiB)':>18}  {'RSS (MiB)':>10}")
    tracemalloc.start()
    for i in range(1, total + 1):
        collector.collect(
            metrics.LLMMetrics(
                timestamp=T0 + 2 * i + 0.5,
                started_at=T0 + 2 * i,
                duration=0.5,
                prompt_tokens=100,
                completion_tokens=20,
                metadata=md,
            )
        )
        if i in marks:
            now, peak = tracemalloc.get_traced_memory()
            rss = proc.memory_info().rss / 2**20
            print(f"{i:>10,}  {now / 1024:>17.1f}  {peak / 1024:>18.1f}  {rss:>10.1f}")
    tracemalloc.stop()
    summary = collector.get_summary()
    assert summary.llm_requests == total
    assert abs(summary.active_duration - 0.5 * total) < 1e-3 * total


def main() -> None:
    print(
        f"Python {sys.version.split()[0]}, {N:,} events per measurement, best of {REPEATS}; "
        f"calls of {CALL_EVENTS:,} events, a new turn every {TURN_EVENTS}"
    )
    cm_create, cm_full, cm_summary = callmeter_paths()
    rows = [
        ("callmeter: create LLMMetrics", best_ns_per_event(cm_create, N)),
        ("callmeter: create + emit (1 handler) + collect", best_ns_per_event(cm_full, N)),
    ]
    summary_row = (
        "callmeter: same + both summaries per call (priced)",
        best_ns_per_event(cm_summary, N),
    )
    lk_paths = livekit_paths()
    if lk_paths is None:
        print("livekit-agents not installed (pip install -e '.[bench]'): no baseline")
    else:
        import importlib.metadata as im

        lk_create, lk_full = lk_paths
        lk_version = im.version("livekit-agents")
        rows += [
            (f"livekit-agents {lk_version}: create LLMMetrics", best_ns_per_event(lk_create, N)),
            (
                f"livekit-agents {lk_version}: create + ModelUsageCollector.collect",
                best_ns_per_event(lk_full, N),
            ),
        ]
    width = max(len(r[0]) for r in [*rows, summary_row])
    print(f"\n{'path':<{width}}  {'ns/event':>9}")
    for name, ns in [*rows, summary_row]:
        print(f"{name:<{width}}  {ns:>9.0f}")
    if lk_paths is not None:
        print(f"\ncreate only:     callmeter is {rows[2][1] / rows[0][1]:.1f}x faster")
        print(f"full event path: callmeter is {rows[3][1] / rows[1][1]:.1f}x faster (goal >= 8x)")
    memory_check()


if __name__ == "__main__":
    main()
