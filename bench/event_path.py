"""Event hot path: create an LLMMetrics, emit it through an AgentSession, collect it.

Compared, in the same run, with livekit-agents' own path (its pydantic LLMMetrics
construction plus ModelUsageCollector.collect). Paths are run interleaved, REPEATS times,
and the median is reported. Also: the measurement-helper path (``session.llm_generation``
with ``first_token`` and ``set_usage``), what the collector's lock costs a single thread,
and memory of a UsageCollector(keep_metrics=False) fed 1,000,000 events.

Run: make bench   (or: .venv/bin/python bench/event_path.py after `pip install -e '.[bench]'`)
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
import tracemalloc
import warnings

N = int(os.environ.get("BENCH_EVENTS", "200000"))
CALL_EVENTS = 1000  # events per call (one AgentSession + one UsageCollector each)
TURN_EVENTS = 10  # events per turn (speech_id)
REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
T0 = 1_790_000_000.0


# CPU time of this thread: on a shared machine, time spent waiting for a core is not
# counted (every path here is single-threaded and CPU-bound).
clock = time.thread_time_ns


def interleaved_medians(paths: dict, n: int) -> dict[str, float]:
    """ns per event of each path: median of REPEATS rounds, each round running every path."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(REPEATS):
        for name, fn in paths.items():
            gc.collect()
            start = clock()
            fn(n)
            times[name].append((clock() - start) / n)
    return {name: statistics.median(values) for name, values in times.items()}


class _NoLock:
    """Stands in for the collector's lock to measure what the lock costs one thread."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


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
            # The user's collector adds up in batches: flush it so that work is timed. The
            # session's own usage is added up when it is read (the summary row reads it).
            usage._flush()
            if summary:
                assert usage.get_summary().llm_requests == min(n, call + CALL_EVENTS) - call
                assert session.usage.llm_requests == min(n, call + CALL_EVENTS) - call

    def helper_path(n: int) -> None:
        for call in range(0, n, CALL_EVENTS):
            session = AgentSession(session_id=f"bench-{call}")
            usage = metrics.UsageCollector(keep_metrics=False)
            session.on("metrics_collected", lambda ev, usage=usage: usage.collect(ev.metrics))
            generation = session.llm_generation
            for i in range(call, min(n, call + CALL_EVENTS)):
                with generation(
                    model="gpt-4o-mini",
                    provider="openai",
                    label="openai.LLM",
                    request_id="req",
                    speech_id=speech_ids[(i - call) // TURN_EVENTS],
                ) as gen:
                    gen.first_token()
                    gen.set_usage(prompt_tokens=100, completion_tokens=20, prompt_cached_tokens=0)
            usage._flush()

    events = [
        metrics.LLMMetrics(
            timestamp=T0 + i,
            started_at=T0 + i,
            duration=0.5,
            prompt_tokens=100,
            completion_tokens=20,
            speech_id=speech_ids[(i % CALL_EVENTS) // TURN_EVENTS],
            metadata=md,
        )
        for i in range(CALL_EVENTS)
    ]

    def collect_path(n: int, lock: bool = True) -> None:
        # UsageCollector.collect alone (validation, append, batch arithmetic), fed events
        # built beforehand; with its real lock, or with the lock replaced by a no-op.
        for call in range(0, n, CALL_EVENTS):
            usage = metrics.UsageCollector(keep_metrics=False)
            if not lock:
                usage._lock = _NoLock()
            collect = usage.collect
            for m in events[: min(CALL_EVENTS, n - call)]:
                collect(m)
            usage._flush()

    import threading

    lock = threading.Lock()

    def append_locked(n: int) -> None:
        # The alternative design: a lock around every append (for comparison).
        buf: list = []
        append = buf.append
        m = events[0]
        for _ in range(n):
            with lock:
                append(m)

    def append_plain(n: int) -> None:
        buf: list = []
        append = buf.append
        m = events[0]
        for _ in range(n):
            append(m)

    return {
        "append_locked": append_locked,
        "append_plain": append_plain,
        "create": create_only,
        "full": full_path,
        "summary": lambda n: full_path(n, summary=True),
        "helper": helper_path,
        "collect_locked": collect_path,
        "collect_nolock": lambda n: collect_path(n, lock=False),
    }


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
        f"Python {sys.version.split()[0]}, {N:,} events per measurement, median of {REPEATS} "
        f"interleaved rounds; calls of {CALL_EVENTS:,} events, a new turn every {TURN_EVENTS}"
    )
    from callmeter._native import speedups

    print(
        "callmeter hot path: "
        + ("C (callmeter._speedups)" if speedups is not None else "pure Python")
        + " (CALLMETER_PURE_PYTHON=1 selects pure Python)"
    )
    paths = callmeter_paths()
    lk_paths = livekit_paths()
    if lk_paths is None:
        print("livekit-agents not installed (pip install -e '.[bench]'): no baseline")
    else:
        paths["lk_create"], paths["lk_full"] = lk_paths
    ns = interleaved_medians(paths, N)
    rows = [
        ("callmeter: create LLMMetrics", "create"),
        ("callmeter: create + emit (1 handler) + collect", "full"),
        ("callmeter: session.llm_generation helper + 1 handler + collect", "helper"),
        ("callmeter: create + emit + collect + both summaries per call", "summary"),
        ("callmeter: UsageCollector.collect (prebuilt events)", "collect_locked"),
        ("callmeter: same, lock replaced by a no-op", "collect_nolock"),
        ("list.append", "append_plain"),
        ("list.append under a threading.Lock (per-event lock)", "append_locked"),
    ]
    if lk_paths is not None:
        import importlib.metadata as im

        lk_version = im.version("livekit-agents")
        rows += [
            (f"livekit-agents {lk_version}: create LLMMetrics", "lk_create"),
            (f"livekit-agents {lk_version}: create + ModelUsageCollector.collect", "lk_full"),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'path':<{width}}  {'ns/event':>9}")
    for label, key in rows:
        print(f"{label:<{width}}  {ns[key]:>9.0f}")
    lock_cost = ns["collect_locked"] - ns["collect_nolock"]
    print(
        f"\nlock cost, one thread: {lock_cost:+.0f} ns/event "
        f"({lock_cost / ns['collect_nolock']:+.1%} of UsageCollector.collect; the lock is "
        "taken once per batch); a lock per event would add "
        f"{ns['append_locked'] - ns['append_plain']:.0f} ns"
    )
    if lk_paths is not None:
        print(f"create only:             callmeter is {ns['lk_create'] / ns['create']:.1f}x faster")
        print(
            f"emit + collect:          callmeter is {ns['lk_full'] / ns['full']:.1f}x faster "
            "(goal >= 4x)"
        )
        print(
            f"llm_generation helper:   callmeter is {ns['lk_full'] / ns['helper']:.1f}x faster "
            "than LiveKit's create + collect (goal >= 2x)"
        )
    if os.environ.get("BENCH_MEMORY", "1") != "0":
        memory_check()


if __name__ == "__main__":
    main()
