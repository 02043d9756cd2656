"""Exporter cost per LLM event: callmeter's sinks against the SDK calls they replace.

Prometheus: ``CallMonitor.receive`` (buffer, fold in batches of 1,024 inside the timed
region) against ``prometheus_client`` doing the same observations directly (2 histograms
and 2 counters per event), with ``.labels()`` per event and with pre-bound children.

OpenTelemetry: ``OTelExporter.receive`` (a queue append on the emitting thread; a worker
thread records) against the bare SDK ``record()`` calls it replaces (operation duration,
time to first chunk, input and output token usage: 4 histogram records per event). The
exporter is timed twice: on the emitting thread only, and in CPU time of the whole
process (``time.process_time``) including the worker until ``flush()`` returns.

Every measurement is repeated ``REPEATS`` times, interleaved, and the median reported.

Run: .venv/bin/python bench/export_overhead.py   (BENCH_EVENTS=50000 for a quicker run)
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time

N = int(os.environ.get("BENCH_EVENTS", "100000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
T0 = 1_790_000_000.0
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku")]


def make_records(n: int) -> list:
    from callmeter import metrics
    from callmeter.model.events import MetricsCollectedEvent

    mds = [metrics.Metadata(model_name=m, model_provider=p) for p, m in MODELS]
    out = []
    for i in range(n):
        m = metrics.LLMMetrics(
            timestamp=T0 + i,
            started_at=T0 + i - 0.5,
            duration=0.2 + (i % 97) * 0.01,
            ttft=0.1 + (i % 31) * 0.01,
            prompt_tokens=800 + i % 50,
            completion_tokens=30 + i % 20,
            total_tokens=830 + i % 70,
            metadata=mds[i % len(mds)],
        )
        out.append(
            MetricsCollectedEvent(session_id="call_bench", seq=i, created_at=T0 + i, metrics=m)
        )
    return out


def timed(fn, records: list) -> float:
    """ns per event of fn(records): CPU time of this thread (the machine is shared, so
    wall-clock time would include waiting for a core)."""
    gc.collect()
    gc.disable()
    try:
        start = time.thread_time_ns()
        fn(records)
        return (time.thread_time_ns() - start) / len(records)
    finally:
        gc.enable()


def prometheus_paths() -> dict:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from callmeter.export.prometheus import VOICE_BUCKETS, CallMonitor

    reg = CollectorRegistry()
    pm = ("provider", "model")
    dur = Histogram("direct_llm_duration_seconds", "d", pm, registry=reg, buckets=VOICE_BUCKETS)
    ttft = Histogram("direct_llm_ttft_seconds", "t", pm, registry=reg, buckets=VOICE_BUCKETS)
    tokens = Counter("direct_tokens_total", "k", (*pm, "kind"), registry=reg)

    def direct_labels(records: list) -> None:
        for r in records:
            m = r.metrics
            md = m.metadata
            p, mo = md.model_provider, md.model_name
            dur.labels(p, mo).observe(m.duration)
            ttft.labels(p, mo).observe(m.ttft)
            tokens.labels(p, mo, "input").inc(m.prompt_tokens)
            tokens.labels(p, mo, "output").inc(m.completion_tokens)

    bound = {
        (p, mo): (
            dur.labels(p, mo),
            ttft.labels(p, mo),
            tokens.labels(p, mo, "input"),
            tokens.labels(p, mo, "output"),
        )
        for p, mo in MODELS
    }

    def direct_bound(records: list) -> None:
        for r in records:
            m = r.metrics
            md = m.metadata
            d, t, ti, to = bound[md.model_provider, md.model_name]
            d.observe(m.duration)
            t.observe(m.ttft)
            ti.inc(m.prompt_tokens)
            to.inc(m.completion_tokens)

    monitor = CallMonitor(registry=CollectorRegistry(), prices=False)

    def callmeter(records: list) -> None:
        receive = monitor.receive
        for r in records:
            receive(r)

    priced = CallMonitor(registry=CollectorRegistry())

    def callmeter_priced(records: list) -> None:
        receive = priced.receive
        for r in records:
            receive(r)

    def scrape_ms() -> float:
        from prometheus_client import generate_latest

        generate_latest(priced.registry)  # the first one loads genai-prices' snapshot
        start = time.perf_counter()
        generate_latest(priced.registry)
        return (time.perf_counter() - start) * 1000

    return {
        "paths": {
            "prometheus_client direct, .labels() per event": direct_labels,
            "prometheus_client direct, pre-bound children": direct_bound,
            "callmeter CallMonitor.receive (prices=False)": callmeter,
            "callmeter CallMonitor.receive (priced)": callmeter_priced,
        },
        "scrape_ms": scrape_ms,
    }


def otel_paths() -> dict | None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.trace import NoOpTracerProvider

        from callmeter.export.otel import DURATION_BUCKETS, TOKEN_BUCKETS, OTelExporter
    except ImportError as e:
        print(f"(OpenTelemetry part skipped: {e})")
        return None

    direct_mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = direct_mp.get_meter("direct")
    dur = meter.create_histogram(
        "gen_ai.client.operation.duration",
        "s",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )
    ttfc = meter.create_histogram(
        "gen_ai.client.operation.time_to_first_chunk",
        "s",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )
    tok = meter.create_histogram(
        "gen_ai.client.token.usage", "{token}", explicit_bucket_boundaries_advisory=TOKEN_BUCKETS
    )
    attrs = {
        (p, m): {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": p,
            "gen_ai.request.model": m,
        }
        for p, m in MODELS
    }
    tok_attrs = {
        key: ({**a, "gen_ai.token.type": "input"}, {**a, "gen_ai.token.type": "output"})
        for key, a in attrs.items()
    }

    def direct(records: list) -> None:
        for r in records:
            m = r.metrics
            md = m.metadata
            key = (md.model_provider, md.model_name)
            a = attrs[key]
            dur.record(m.duration, a)
            ttfc.record(m.ttft, a)
            ti, to = tok_attrs[key]
            tok.record(m.prompt_tokens, ti)
            tok.record(m.completion_tokens, to)

    exp_mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    exporter = OTelExporter(
        meter_provider=exp_mp, tracer_provider=NoOpTracerProvider(), prices=False
    )

    return {"direct": direct, "exporter": exporter}


def main() -> None:
    records = make_records(N)
    print(
        f"Python {platform.python_version()}, {N:,} LLM events per measurement, "
        f"median of {REPEATS} interleaved runs"
    )
    prom = prometheus_paths()
    results: dict[str, list[float]] = {name: [] for name in prom["paths"]}
    otel = otel_paths()
    otel_names = [
        "opentelemetry-sdk direct record() x4",
        "callmeter OTelExporter, emitting thread",
        "callmeter OTelExporter, process CPU incl. worker",
    ]
    if otel:
        for name in otel_names:
            results[name] = []
    for _ in range(REPEATS):
        for name, fn in prom["paths"].items():
            results[name].append(timed(fn, records))
        if otel:
            results[otel_names[0]].append(timed(otel["direct"], records))
            exporter = otel["exporter"]
            gc.collect()
            cpu0 = time.process_time_ns()
            thread0 = time.thread_time_ns()
            receive = exporter.receive
            for r in records:
                receive(r)
            thread1 = time.thread_time_ns()
            exporter.flush(timeout=600)
            cpu1 = time.process_time_ns()
            results[otel_names[1]].append((thread1 - thread0) / N)
            results[otel_names[2]].append((cpu1 - cpu0) / N)
    med = {name: statistics.median(v) for name, v in results.items()}
    width = max(len(n) for n in med) + 2
    print(f"\n{'path':<{width}}{'ns/event':>10}")
    for name, v in med.items():
        print(f"{name:<{width}}{v:>10.0f}")
    base = med["prometheus_client direct, .labels() per event"]
    bound = med["prometheus_client direct, pre-bound children"]
    for name in (
        "callmeter CallMonitor.receive (prices=False)",
        "callmeter CallMonitor.receive (priced)",
    ):
        print(
            f"\n{name}: {med[name] / base:.2f}x of direct with .labels() "
            f"({med[name] / bound:.2f}x of pre-bound); goal <= 0.5x"
        )
    print(f"one scrape of the priced monitor (3 models, warm): {prom['scrape_ms']():.2f} ms")
    if otel:
        sdk = med[otel_names[0]]
        print(
            f"\nOTelExporter emitting thread: {med[otel_names[1]] / sdk:.3f}x of the SDK records; "
            f"whole process CPU: {med[otel_names[2]] / sdk:.2f}x; goal <= 1.0x"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
