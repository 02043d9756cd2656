"""A LiveKit Agents call measured by callmeter, offline.

A real `livekit.agents.AgentSession` in text mode (no room) whose LLM is the real
`livekit-plugins-openai` plugin pointed at `callmeter sim` on loopback; the agent has a
tool that takes 300 ms. Needs `pip install 'callmeter[livekit,sim]' livekit-plugins-openai`.
Run: `python examples/livekit_agent.py`
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import Agent, AgentSession, function_tool
from livekit.plugins import openai as lk_openai

from callmeter.integrations.livekit import attach
from callmeter.sim import Reply, SimConfig, SimServer, ToolCallSpec


class WeatherAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You answer questions about the weather.")

    @function_tool
    async def get_weather(self, city: str) -> str:
        """The weather in a city."""
        await asyncio.sleep(0.3)  # a slow backend
        return f"sunny, 21C in {city}"


async def main() -> None:
    config = SimConfig(ttft=0.2, token_delay=0.01)
    config.add_rule(
        r"weather in (?P<city>\w+)",
        Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "{city}"})]),
    )
    with SimServer(config) as sim:
        llm = lk_openai.LLM(model="gpt-4o-mini", base_url=sim.base_url, api_key="sim")
        lk_session = AgentSession(llm=llm)
        handle = attach(lk_session)  # a callmeter session named after the agent
        await lk_session.start(WeatherAgent())
        await lk_session.run(user_input="What is the weather in Paris?")
        await lk_session.run(user_input="Thanks!")
        await lk_session.aclose()  # closes the callmeter session too

    session = handle.session
    u = session.usage
    print(f"agent: {session.agent_name}, closed: {session.closed}")
    print(
        f"LLM requests: {u.llm_requests} ({u.llm_prompt_tokens} prompt tokens, "
        f"{u.llm_completion_tokens} completion tokens)"
    )
    print(f"LLM time:  {u.llm_duration:.3f} s")
    print(f"tool time: {u.tool_duration:.3f} s ({u.tool_calls} call)")
    print(
        f"Total duration including tool calls: {u.llm_and_tool_duration:.3f} s "
        f"(call open {session.duration:.3f} s)"
    )
    latency = session.latency
    print(f"turns: {latency.turns}, e2e p50 {latency.e2e_latency.p50:.3f} s")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main())
