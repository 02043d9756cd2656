"""Hot-path cost of turn tracking and latency collection, per event.

Baselines in the same run: an empty function call (the interpreter's floor) and
``UsageCollector.collect`` with its latency collector stubbed out. Measured: the
LatencyCollector's share of ``collect``, and ``session.emit_metrics`` with no turn open,
with another turn open, and with the event's own turn open (the turn keeps the event).

Run: .venv/bin/python bench/turn_path.py
"""

from __future__ import annotations

import timeit

from callmeter import AgentSession, metrics

N = 100_000
REPEATS = 7


def variants(m, noop):
    """name -> factory of a fresh per-event callable (fresh state every repeat)."""

    def latency():
        return metrics.LatencyCollector(max_values=10**9).collect

    def usage_stubbed():
        u = metrics.UsageCollector(keep_metrics=False)
        u._latency.collect_groups = noop  # type: ignore[method-assign]
        return u.collect

    def usage():
        return metrics.UsageCollector(keep_metrics=False).collect

    def session(*turn_ids: str):
        def make():
            s = AgentSession()
            s.on("metrics_collected", noop)
            for sid in turn_ids:
                s.turn(speech_id=sid).__enter__()
            return s.emit_metrics

        return make

    return {
        "empty function call (floor)": lambda: noop,
        "LatencyCollector.collect": latency,
        "UsageCollector.collect, latency stubbed": usage_stubbed,
        "UsageCollector.collect (folds 100,000 values into a sketch once)": usage,
        "emit_metrics, no turn open (baseline)": session(),
        "emit_metrics, another turn open": session("another"),
        "emit_metrics, its own turn open": session("speech_1"),
    }


def main() -> None:
    md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    m = metrics.LLMMetrics(
        timestamp=1.79e9, started_at=1.79e9, duration=0.5, ttft=0.2, prompt_tokens=100,
        completion_tokens=20, speech_id="speech_1", metadata=md,
    )  # fmt: skip

    def noop(x) -> None:
        return None

    makers = variants(m, noop)
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(REPEATS):  # interleaved, so machine noise hits every variant alike
        for name, make in makers.items():
            fn = make()
            t = timeit.timeit(lambda fn=fn: fn(m), number=N)
            best[name] = min(best[name], t / N * 1e9)
    base = best["emit_metrics, no turn open (baseline)"]
    width = max(map(len, best))
    print(f"{N:,} events per measurement, best of {REPEATS} interleaved runs")
    print(f"{'path':<{width}}  {'ns/event':>9}  {'vs baseline':>11}")
    for name, ns in best.items():
        print(f"{name:<{width}}  {ns:>9.0f}  {ns / base:>11.2f}")


if __name__ == "__main__":
    main()
