"""Overhead of callmeter's OpenAI instrumentation on a streaming workload.

Runs the same streaming chat workload against callmeter-sim (in a subprocess, no
latency, so the client's own work dominates) with a plain client and with an
instrumented one, alternating rounds, in one run. Reports the added wall time (%) and
the added CPU time per streamed chunk (this process only, time.process_time), plus the
measuring generator's per-item cost in isolation on pre-built SDK items (chat and
responses, sync and async), next to the four wrappers it replaced (frozen below).

    .venv/bin/python bench/openai_overhead.py [--requests 40] [--tokens 250] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import openai
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseTextDeltaEvent

from callmeter import AgentSession, metrics
from callmeter.integrations.openai import instrument
from callmeter.integrations.openai.pending import OpenStreams
from callmeter.integrations.openai.stream import (
    _END_EVENTS,
    _TOKEN_EVENTS,
    StreamMeter,
    _is_chat_token,
    aiterate,
    iterate,
)
from callmeter.session import LLMGeneration

MSGS = [{"role": "user", "content": "benchmark"}]
_perf = time.perf_counter


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


# --- the measuring generator alone, on pre-built items -------------------------------------
#
# "before": the per-item hot path of the four wrappers the single stream wrapper replaced
# (chat and responses, sync and async), frozen here as they were, so that before and after
# are measured in the same run. Their rare paths (usage, final events) are not exercised.


def _before_chat_iter(gen, it):
    try:
        need_id = True
        for chunk in it:
            gen.ended_at = _perf()
            if need_id:
                need_id = False
                gen.request_id = chunk.id or gen.request_id
            if _is_chat_token(chunk):
                gen.first_token()
                yield chunk
                break
            yield chunk
        for chunk in it:
            gen.ended_at = _perf()
            if chunk.usage is not None:
                pass
            yield chunk
    except BaseException:
        raise


async def _before_chat_aiter(gen, it):
    try:
        need_id = True
        async for chunk in it:
            gen.ended_at = _perf()
            if need_id:
                need_id = False
                gen.request_id = chunk.id or gen.request_id
            if _is_chat_token(chunk):
                gen.first_token()
                yield chunk
                break
            yield chunk
        async for chunk in it:
            gen.ended_at = _perf()
            if chunk.usage is not None:
                pass
            yield chunk
    except BaseException:
        raise


def _before_responses_iter(gen, it):
    try:
        for event in it:
            gen.ended_at = _perf()
            if event.type in _TOKEN_EVENTS:
                gen.first_token()
                yield event
                break
            yield event
        for event in it:
            gen.ended_at = _perf()
            if event.type in _END_EVENTS:
                pass
            yield event
    except BaseException:
        raise


async def _before_responses_aiter(gen, it):
    try:
        async for event in it:
            gen.ended_at = _perf()
            if event.type in _TOKEN_EVENTS:
                gen.first_token()
                yield event
                break
            yield event
        async for event in it:
            gen.ended_at = _perf()
            if event.type in _END_EVENTS:
                pass
            yield event
    except BaseException:
        raise


_BEFORE = {
    ("sync", "chat"): _before_chat_iter,
    ("async", "chat"): _before_chat_aiter,
    ("sync", "responses"): _before_responses_iter,
    ("async", "responses"): _before_responses_aiter,
}


def _items(kind: str, n: int) -> list:
    if kind == "chat":
        chunk = ChatCompletionChunk.model_validate(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
            }
        )
        return [chunk] * n
    event = ResponseTextDeltaEvent(
        type="response.output_text.delta",
        delta=" tok",
        item_id="msg",
        output_index=0,
        content_index=0,
        sequence_number=1,
        logprobs=[],
    )
    return [event] * n


def _plain(it):  # what Stream.__iter__ already does: one generator layer
    yield from it


async def _aplain(it):  # what AsyncStream.__aiter__ already does
    async for item in it:
        yield item


async def _asource(items):
    for item in items:
        yield item


def isolated(n_items: int = 100_000, repeats: int = 9) -> dict[tuple[str, str], dict]:
    """CPU per item added by the measuring generator over the SDK's one generator layer
    (the baseline), for the wrappers before and after, interleaved; best of ``repeats``."""
    session = AgentSession(prices=False)

    def generation() -> LLMGeneration:
        gen = LLMGeneration(session, model="m", provider="bench")
        gen.__enter__()
        return gen

    def build(mode: str, kind: str, which: str, items: list):
        source = iter(items) if mode == "sync" else _asource(items)
        if which == "plain":
            inner = source
        elif which == "before":
            inner = _BEFORE[mode, kind](generation(), source)
        else:
            meter = StreamMeter(generation(), kind, False, OpenStreams())
            inner = (iterate if mode == "sync" else aiterate)(meter, source)
        return _plain(inner) if mode == "sync" else _aplain(inner)

    async def drain(it) -> None:
        async for _ in it:
            pass

    loop = asyncio.new_event_loop()
    results = {}
    for mode in ("sync", "async"):
        for kind in ("chat", "responses"):
            items = _items(kind, n_items)
            best = {"plain": float("inf"), "before": float("inf"), "after": float("inf")}
            for _ in range(repeats):
                for which in best:
                    it = build(mode, kind, which, items)
                    t0 = time.process_time()
                    if mode == "sync":
                        for _ in it:
                            pass
                    else:
                        loop.run_until_complete(drain(it))
                    best[which] = min(best[which], time.process_time() - t0)
            results[mode, kind] = {k: v / n_items * 1e9 for k, v in best.items()}
    loop.close()
    return results


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
    print("measuring generator alone, CPU per item on pre-built SDK items (best of 9):")
    print("  mode   API        SDK layer   added before   added after   after - before")
    for (mode, kind), r in iso.items():
        before, after = r["before"] - r["plain"], r["after"] - r["plain"]
        print(
            f"  {mode:6} {kind:9} {r['plain']:8.0f} ns {before:+10.0f} ns {after:+11.0f} ns"
            f" {after - before:+11.0f} ns"
        )


if __name__ == "__main__":
    main()
