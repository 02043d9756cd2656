"""Cost of pricing on the hot path and at summary time.

Baseline: the same collector with pricing disabled (``prices=False``), in the same run;
pricing off and on alternate, 7 rounds each, medians of CPU time (process_time, which
is steadier than wall time on a shared machine) are reported.
Run: ``.venv/bin/python bench/pricing.py``
"""

from __future__ import annotations

import statistics
import time
from timeit import repeat

from callmeter.metrics import LLMMetrics, Metadata, STTMetrics, TTSMetrics, UsageCollector
from callmeter.pricing.prices import Prices

T0 = 1_790_000_000.0
N = 20_000


def events(with_turns: bool = True) -> list:
    out = []
    for i in range(N // 4):
        sid = f"turn-{i}" if with_turns else None
        out.append(
            STTMetrics(
                timestamp=T0,
                started_at=T0,
                duration=0.2,
                audio_duration=3.0,
                speech_id=sid,
                metadata=Metadata(model_name="nova-3", model_provider="deepgram"),
            )
        )
        for _ in range(2):
            out.append(
                LLMMetrics(
                    timestamp=T0,
                    started_at=T0,
                    duration=0.8,
                    prompt_tokens=1500,
                    prompt_cached_tokens=1024,
                    completion_tokens=60,
                    speech_id=sid,
                    metadata=Metadata(model_name="gpt-4o-mini", model_provider="openai"),
                )
            )
        out.append(
            TTSMetrics(
                timestamp=T0,
                started_at=T0,
                duration=0.3,
                characters_count=180,
                speech_id=sid,
                metadata=Metadata(model_name="tts-1", model_provider="openai"),
            )
        )
    return out


ROUNDS = 7


def collect_ns(prices: object, evs: list) -> float:
    def run() -> None:
        c = UsageCollector(keep_metrics=False, prices=prices)
        for m in evs:
            c.collect(m)
        c._flush()  # the last batch's arithmetic too

    return repeat(run, timer=time.process_time, number=1, repeat=1)[0] / len(evs) * 1e9


def reference_ns(evs: list) -> float:
    """A fixed per-event floor (read two fields, add, append), to compare runs made at
    different machine load: figures divided by it are comparable across runs."""

    def run() -> None:
        out = []
        total = 0.0
        for m in evs:
            total += m.duration
            out.append(m.speech_id)

    return repeat(run, timer=time.process_time, number=1, repeat=1)[0] / len(evs) * 1e9


def interleaved(prices: object, evs: list) -> tuple[float, float, float]:
    """Median ns/event with pricing off and on and of the reference, alternating rounds."""
    off, on, ref = [], [], []
    for _ in range(ROUNDS):
        ref.append(reference_ns(evs))
        off.append(collect_ns(False, evs))
        on.append(collect_ns(prices, evs))
    return statistics.median(off), statistics.median(on), statistics.median(ref)


def main() -> None:
    evs = events()
    prices = Prices(env=False)
    t = time.perf_counter()
    prices.preload()
    print(f"first price lookup (imports genai-prices): {(time.perf_counter() - t) * 1e3:.0f} ms")
    for label, evs_ in (("with speech_id", evs), ("no speech_id", events(False))):
        base, priced, ref = interleaved(prices, evs_)
        print(
            f"collect() {label}: pricing off (baseline) {base:.0f} ns/event, pricing on "
            f"{priced:.0f} ns/event ({priced / base:.2f}x, +{priced - base:.0f} ns); "
            f"reference loop {ref:.0f} ns/event: off {base / ref:.1f}x, on {priced / ref:.1f}x"
        )
    c = UsageCollector(keep_metrics=False, prices=prices)
    for m in evs:
        c.collect(m)
    t = time.perf_counter()
    c.get_summary()
    cold = time.perf_counter() - t
    best = statistics.median(repeat(c.get_summary, number=1, repeat=ROUNDS))
    off = UsageCollector(keep_metrics=False, prices=False)
    for m in evs:
        off.collect(m)
    best_off = statistics.median(repeat(off.get_summary, number=1, repeat=ROUNDS))
    turns = len(c.get_summary().cost_by_turn)
    print(
        f"get_summary() with cost, {len(evs)} events, {turns} turns kept: first call "
        f"{cold * 1e3:.1f} ms, later calls {best * 1e3:.2f} ms "
        f"(pricing off: {best_off * 1e3:.2f} ms)"
    )
    handler_sums(prices)


def handler_sums(prices: Prices) -> None:
    """What the collector's own usage sums cost now that the ledger holds the quantities:
    the same collect() with the LLM/STT/TTS batch handlers reduced to the interval union
    (an upper bound of the saving, since requests, duration and errors would move into
    the ledger)."""
    from callmeter.metrics import LLMMetrics as L
    from callmeter.metrics import STTMetrics as S
    from callmeter.metrics import TTSMetrics as T

    def run_ns(evs: list, stub: bool) -> float:
        def run() -> None:
            c = UsageCollector(keep_metrics=False, prices=prices)
            if stub:
                for cls in (L, S, T):
                    c._batch_handlers[cls] = c._add_intervals
            for m in evs:
                c.collect(m)
            c._flush()

        return repeat(run, timer=time.process_time, number=1, repeat=1)[0] / len(evs) * 1e9

    for label, evs in (("with speech_id", events()), ("no speech_id", events(False))):
        full, stub = [], []
        for _ in range(ROUNDS):
            full.append(run_ns(evs, False))
            stub.append(run_ns(evs, True))
        f, st = statistics.median(full), statistics.median(stub)
        print(
            f"collect() {label}: collector as is (baseline) {f:.0f} ns/event, without its "
            f"usage sums {st:.0f} ns/event ({st / f:.2f}x)"
        )


if __name__ == "__main__":
    main()
