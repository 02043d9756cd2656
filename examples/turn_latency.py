"""Turn latency: where the seconds between the user and the agent went.

Simulates a short voice call (timed work stands in for STT, LLM, tools and TTS; no API
key needed): a plain turn, a tool turn with two parallel tools, a turn the user
interrupts, and a slow tool turn that goes over the latency budget. Every event goes to a
JSONL file; the end prints `callmeter report` and writes the HTML report.

Run: python examples/turn_latency.py [calls.jsonl] [report.html]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from callmeter import AgentSession, metrics
from callmeter.export import JSONLWriter
from callmeter.metrics import LatencyBudgetExceededEvent
from callmeter.report import render_terminal, write_html


async def user_speaks(session: AgentSession, turn, eou_delay: float, stt_delay: float) -> None:
    """The user stops speaking now; the transcript and the end-of-turn decision follow."""
    stopped = time.time()
    turn.user_stopped_speaking(at=stopped)
    await asyncio.sleep(eou_delay)
    session.emit_metrics(
        metrics.EOUMetrics(
            timestamp=time.time(),
            started_at=stopped,
            end_of_utterance_delay=eou_delay,
            transcription_delay=stt_delay,
            speech_id=turn.speech_id,
        )
    )


async def llm_step(session: AgentSession, ttft: float, rest: float) -> None:
    async with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
        await asyncio.sleep(ttft)
        gen.first_token()
        await asyncio.sleep(rest)
        gen.set_usage(prompt_tokens=420, completion_tokens=38)


async def speak(session: AgentSession, turn, ttfb: float) -> None:
    async with session.tts_request(model="sonic", provider="cartesia") as tts:
        await asyncio.sleep(ttfb)
        tts.first_byte()
        turn.agent_started_speaking()
        tts.set_usage(characters_count=64, audio_duration=3.2)


async def call(writer: JSONLWriter) -> None:
    session = writer.attach(AgentSession(agent_name="weather-bot", labels={"env": "demo"}))
    session.set_latency_budget(e2e=1.5, tool=0.5)

    @session.on("latency_budget_exceeded")
    def _over_budget(ev: LatencyBudgetExceededEvent) -> None:
        over = ", ".join(f"{x.name} {x.actual:.2f}s > {x.budget}s" for x in ev.exceeded)
        print(f"over budget in {ev.speech_id}: {over}")

    @session.tool
    async def get_weather(city: str) -> str:
        await asyncio.sleep(0.25 if city != "Oslo" else 0.7)
        return "sunny"

    @session.tool
    async def get_time(city: str) -> str:
        await asyncio.sleep(0.12)
        return "12:00"

    async with session:
        async with session.turn() as turn:  # plain turn
            await user_speaks(session, turn, 0.30, 0.12)
            await llm_step(session, 0.22, 0.05)
            await speak(session, turn, 0.15)
        async with session.turn() as turn:  # LLM -> two parallel tools -> LLM -> TTS
            await user_speaks(session, turn, 0.35, 0.15)
            await llm_step(session, 0.25, 0.08)
            await asyncio.gather(get_weather("Paris"), get_time("Paris"))
            await llm_step(session, 0.18, 0.02)
            await speak(session, turn, 0.16)
        try:
            async with session.turn() as turn:  # the user barges in before any answer
                await user_speaks(session, turn, 0.25, 0.1)
                await asyncio.wait_for(llm_step(session, 2.0, 0.1), timeout=0.3)
        except TimeoutError:
            pass
        async with session.turn() as turn:  # a slow tool: over the budget
            await user_speaks(session, turn, 0.30, 0.12)
            await llm_step(session, 0.2, 0.05)
            await asyncio.gather(get_weather("Oslo"), get_time("Oslo"))
            await llm_step(session, 0.2, 0.02)
            await speak(session, turn, 0.14)


async def main(jsonl: Path, html: Path) -> None:
    async with JSONLWriter(jsonl) as writer:
        await call(writer)
    render_terminal(jsonl)
    print(f"HTML report: {write_html(jsonl, html)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args[0]) if args else Path("calls.jsonl")
    asyncio.run(main(out, Path(args[1]) if len(args) > 1 else out.with_suffix(".html")))
