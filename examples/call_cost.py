"""What did this call cost? A voice-agent call priced per model and per turn.

Offline: the usage is what an STT, an LLM and a TTS would report; prices come from the
bundled speech table, genai-prices' snapshot and an override for a negotiated rate.
Run: `python examples/call_cost.py`
"""

from __future__ import annotations

import asyncio

from callmeter import AgentSession, metrics
from callmeter.pricing.cost import format_usd

NEGOTIATED = {"deepgram": {"nova-3": {"audio_minute": "0.0050", "source": "our contract"}}}


async def main() -> None:
    session = AgentSession(agent_name="receptionist")
    usage = metrics.UsageCollector(prices=NEGOTIATED)
    session.on("metrics_collected", lambda ev: usage.collect(ev.metrics))

    async with session:
        for heard, said, prompt in ((3.1, 96, 1450), (4.6, 142, 1710), (2.2, 61, 1980)):
            async with session.turn():
                with session.stt_request(model="nova-3", provider="deepgram") as stt:
                    stt.set_usage(audio_duration=heard)
                with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                    gen.first_token()
                    gen.set_usage(
                        prompt_tokens=prompt, prompt_cached_tokens=1024, completion_tokens=45
                    )
                with session.tts_request(model="eleven_flash_v2_5", provider="elevenlabs") as tts:
                    tts.set_usage(characters_count=said)
        # a model nobody priced: the total becomes a lower bound, not silently complete
        with session.llm_generation(model="house-model-1", provider="self-hosted") as gen:
            gen.set_usage(prompt_tokens=300, completion_tokens=20)

    s = usage.get_summary()
    print(f"call cost: {format_usd(s.cost, 6, lower_bound=s.cost_is_lower_bound)}")
    for name, mu in s.by_model.items():
        cost = "no price" if mu.cost is None else format_usd(mu.cost, 6)
        print(f"  {name:32} {cost:>12}  {mu.price_source or ''}")
    for speech_id, cost in s.cost_by_turn.items():
        print(f"  turn {speech_id}: {format_usd(cost, 6)}")
    if s.unpriced:
        print(f"unpriced (not in the total): {', '.join(s.unpriced)}")


if __name__ == "__main__":
    asyncio.run(main())
