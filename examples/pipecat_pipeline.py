"""A Pipecat pipeline measured by callmeter, offline.

A real Pipecat pipeline (context aggregators around the real `OpenAILLMService`, run by
`PipelineWorker` and `WorkerRunner` with metrics enabled) whose LLM is `callmeter sim` on
loopback; the LLM calls a function that takes 300 ms, then answers from its result.
Needs `pip install 'callmeter[pipecat,sim]' 'pipecat-ai[openai]'`.
Run: `python examples/pipecat_pipeline.py`
"""

from __future__ import annotations

import asyncio

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import EndFrame, LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from callmeter.integrations.pipecat import CallmeterObserver
from callmeter.sim import Reply, SimConfig, SimServer, ToolCallSpec


async def get_weather(params: FunctionCallParams) -> None:
    await asyncio.sleep(0.3)  # a slow backend
    await params.result_callback({"city": params.arguments["city"], "forecast": "sunny, 21C"})


async def main() -> None:
    config = SimConfig(ttft=0.2, token_delay=0.01)
    config.add_rule(
        r"weather in (?P<city>\w+)",
        Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "{city}"})]),
    )
    with SimServer(config) as sim:
        llm = OpenAILLMService(
            api_key="sim",
            base_url=sim.base_url,
            settings=OpenAILLMService.Settings(model="gpt-4o-mini"),
        )
        llm.register_function("get_weather", get_weather)
        weather = FunctionSchema(
            name="get_weather",
            description="The weather in a city.",
            properties={"city": {"type": "string"}},
            required=["city"],
        )
        context = LLMContext(
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=ToolsSchema(standard_tools=[weather]),
        )
        aggregators = LLMContextAggregatorPair(context)
        observer = CallmeterObserver()
        worker = PipelineWorker(
            Pipeline([aggregators.user(), llm, aggregators.assistant()]),
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
            observers=[observer],
            enable_rtvi=False,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)

        async def converse() -> None:
            await worker.queue_frame(LLMRunFrame())
            while len(context.messages) < 4:  # question, tool call, tool result, answer
                await asyncio.sleep(0.05)
            await worker.queue_frame(EndFrame())

        await asyncio.gather(runner.run(), converse())

    session = observer.session  # closed when the pipeline ended
    u = session.usage
    print(f"closed: {session.closed}, answer: {context.messages[-1]['content']!r}")
    print(
        f"LLM requests: {u.llm_requests} ({u.llm_prompt_tokens} prompt tokens, "
        f"{u.llm_completion_tokens} completion tokens)"
    )
    print(f"LLM time:  {u.llm_duration:.3f} s")
    print(f"tool time: {u.tool_duration:.3f} s ({u.tool_calls} call)")
    print(
        f"Total duration including tool calls: {u.llm_and_tool_duration:.3f} s "
        f"(pipeline ran {session.duration:.3f} s)"
    )


if __name__ == "__main__":
    from loguru import logger

    logger.remove()  # Pipecat logs at DEBUG by default
    asyncio.run(main())
