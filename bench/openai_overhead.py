"""Overhead of callmeter's OpenAI instrumentation on a streaming workload.

Runs the same streaming chat workload against callmeter-sim (in a subprocess, no
latency, so the client's own work dominates) with a plain client and with an
instrumented one, alternating rounds, in one run. Reports the added wall time (%) and
the added CPU time per streamed chunk (this process only, time.process_time), plus the
wrapper's per-chunk cost measured in isolation on pre-built chunks.

    .venv/bin/python bench/openai_overhead.py [--requests 40] [--tokens 250] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import openai
from openai.types.chat import ChatCompletionChunk

from callmeter import AgentSession, metrics
from callmeter.integrations.openai import instrument
from callmeter.integrations.openai.pending import OpenStreams
from callmeter.integrations.openai.stream import StreamMeter, iterate
from callmeter.session import LLMGeneration

MSGS = [{"role": "user", "content": "benchmark"}]


def start_sim(tokens: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "callmeter", "sim", "--port", "0", "--ttft", "0"]
    cmd += ["--token-delay", "0", "--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    return proc, line.split(" at ")[1].strip()


def one_stream(client: openai.OpenAI) -> tuple[float, float, int]:
    chunks = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stream = client.chat.completions.create(
        model="bench",
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},  # same bytes on the wire for both
    )
    for _chunk in stream:
        chunks += 1
    return time.perf_counter() - wall0, time.process_time() - cpu0, chunks


def end_to_end(base_url: str, requests: int, rounds: int) -> dict[str, float]:
    """Alternate plain and instrumented streams request by request (so drift and noise hit
    both alike); per round, sum each mode's wall and CPU time; report medians of rounds."""
    plain = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    metered = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    session = AgentSession(agent_name="bench")
    usage = metrics.UsageCollector(max_metrics=1000)
    session.on("metrics_collected", lambda ev: usage.collect(ev.metrics))
    instrument(metered, session)
    for _ in range(5):  # warm up both code paths
        one_stream(plain)
        one_stream(metered)
    walls: dict[str, list[float]] = {"plain": [], "metered": []}
    cpus: dict[str, list[float]] = {"plain": [], "metered": []}
    chunks = 0
    pair_cpu: list[float] = []  # metered - plain CPU, adjacent streams, per chunk
    pair_wall: list[float] = []  # metered / plain wall time of adjacent streams
    for _ in range(rounds):
        wall = {"plain": 0.0, "metered": 0.0}
        cpu = {"plain": 0.0, "metered": 0.0}
        chunks = 0
        for i in range(requests):
            order = [("plain", plain), ("metered", metered)]
            if i % 2:
                order.reverse()
            pair: dict[str, tuple[float, float, int]] = {}
            for name, client in order:
                w, c, n = one_stream(client)
                pair[name] = (w, c, n)
                wall[name] += w
                cpu[name] += c
                chunks += n if name == "plain" else 0
            pair_cpu.append((pair["metered"][1] - pair["plain"][1]) / pair["plain"][2])
            pair_wall.append(pair["metered"][0] / pair["plain"][0])
        for name in wall:
            walls[name].append(wall[name])
            cpus[name].append(cpu[name])
    assert usage.get_summary().llm_requests == requests * rounds + 5
    wall_p, wall_m = statistics.median(walls["plain"]), statistics.median(walls["metered"])
    cpu_p, cpu_m = statistics.median(cpus["plain"]), statistics.median(cpus["metered"])
    return {
        "chunks": chunks,
        "wall_plain": wall_p,
        "wall_metered": wall_m,
        "wall_pct": (wall_m - wall_p) / wall_p * 100,
        "cpu_plain_us_per_chunk": cpu_p / chunks * 1e6,
        "cpu_added_us_per_chunk": (cpu_m - cpu_p) / chunks * 1e6,
        "pair_wall_pct": (statistics.median(pair_wall) - 1) * 100,
        "pair_cpu_us_per_chunk": statistics.median(pair_cpu) * 1e6,
        "rounds_cpu_spread_us": (max(cpus["plain"]) - min(cpus["plain"])) / chunks * 1e6,
    }


def isolated(n_chunks: int = 200_000, repeats: int = 7) -> float:
    """Added CPU per chunk of the measuring generator alone, on pre-built SDK chunks."""
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
        }
    )
    chunks = [chunk] * n_chunks
    session = AgentSession()

    def plain_gen(it):  # what Stream.__iter__ already does: one generator layer
        yield from it

    best_plain = best_metered = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _c in plain_gen(iter(chunks)):
            pass
        best_plain = min(best_plain, time.process_time() - t0)
        gen = LLMGeneration(session, model="m", provider="bench")
        gen.__enter__()
        t0 = time.process_time()
        meter = StreamMeter(gen, "chat", False, OpenStreams())
        for _c in plain_gen(iterate(meter, iter(chunks))):
            pass
        best_metered = min(best_metered, time.process_time() - t0)
    return (best_metered - best_plain) / n_chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="streams per round")
    parser.add_argument("--tokens", type=int, default=250, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per mode (alternating)")
    args = parser.parse_args()
    proc, base_url = start_sim(args.tokens)
    try:
        r = end_to_end(base_url, args.requests, args.rounds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    iso = isolated()
    print(f"openai {openai.__version__}, Python {sys.version.split()[0]}")
    print(
        f"workload: {args.rounds} rounds x {args.requests} streams x {r['chunks'] // args.requests}"
        " chunks, callmeter-sim with no latency (subprocess)"
    )
    print(f"wall per round: plain {r['wall_plain']:.3f} s, instrumented {r['wall_metered']:.3f} s")
    print(f"client CPU per chunk (plain SDK): {r['cpu_plain_us_per_chunk']:.1f} us")
    print(
        f"noise: plain rounds' CPU per chunk varies by {r['rounds_cpu_spread_us']:.2f} us "
        "(max - min)"
    )
    print("added wall time (goal <= 2 %):")
    print(f"  median of rounds: {r['wall_pct']:+.2f} %")
    print(f"  median of adjacent stream pairs: {r['pair_wall_pct']:+.2f} %")
    print("added CPU per chunk (goal <= 2 us):")
    print(f"  median of rounds: {r['cpu_added_us_per_chunk']:+.2f} us")
    print(f"  median of adjacent stream pairs: {r['pair_cpu_us_per_chunk']:+.2f} us")
    print(f"  measuring generator in isolation (pre-built chunks): {iso:+.3f} us")


if __name__ == "__main__":
    main()
