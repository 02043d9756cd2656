"""Quickstart: measure a call with two LLM generations and two parallel tool calls.

No API key needed: the "LLM" here is timed work standing in for a real request, and the
tools really read a local file. Run with `make demo` or `python examples/quickstart.py`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from callmeter import AgentSession, MetricsCollectedEvent, metrics


async def main() -> None:
    session = AgentSession(agent_name="quickstart")
    usage = metrics.UsageCollector()

    @session.on("metrics_collected")
    def _on_metrics(ev: MetricsCollectedEvent) -> None:
        usage.collect(ev.metrics)
        metrics.log_metrics(ev.metrics)

    data = Path(tempfile.mkdtemp()) / "forecast.json"
    data.write_text(json.dumps({"Paris": "sunny, 21C", "Oslo": "rain, 9C"}))

    @session.tool
    async def get_weather(city: str) -> str:
        """Look the city up in the local forecast file."""
        await asyncio.sleep(0.3)  # a slow backend
        return json.loads(data.read_text())[city]

    async with session, session.turn():
        async with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            await asyncio.sleep(0.25)
            gen.first_token()
            await asyncio.sleep(0.1)
            gen.set_usage(prompt_tokens=180, completion_tokens=24)
        answers = await asyncio.gather(get_weather("Paris"), get_weather("Oslo"))
        async with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            await asyncio.sleep(0.2)
            gen.first_token()
            await asyncio.sleep(0.15)
            gen.set_usage(prompt_tokens=260, completion_tokens=31, prompt_cached_tokens=128)

    s = usage.get_summary()
    print(f"tools answered: {answers}")
    print(f"LLM time (2 requests):            {s.llm_duration:.3f} s")
    print(f"tool time (2 calls, in parallel): {s.tool_duration:.3f} s")
    print(f"LLM + tool time (plain sum):      {s.llm_and_tool_duration:.3f} s")
    print(f"active wall-clock time (union):   {s.active_duration:.3f} s")
    print(f"session wall-clock duration:      {session.duration:.3f} s")
    print(
        f"tokens: {s.llm_prompt_tokens} prompt ({s.llm_prompt_cached_tokens} cached), "
        f"{s.llm_completion_tokens} completion"
    )


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())
