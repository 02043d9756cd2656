"""The OpenTelemetry names callmeter exports under.

GenAI names follow the OpenTelemetry semantic conventions 1.37+ as shipped in
``opentelemetry-semantic-conventions`` 0.66b2 (schema 1.44.0): ``gen_ai.*`` attributes,
``gen_ai.operation.name`` values, ``gen_ai.client.*`` metrics and their recommended bucket
boundaries. ``gen_ai.execute_tool.duration`` and ``gen_ai.invoke_agent.duration`` follow the
GenAI conventions repository, which those conventions moved to (the 0.66b2 package marks
the ``gen_ai`` metrics as moved there and does not define these two yet). What the
conventions do not cover is under ``callmeter.*``.
"""

from __future__ import annotations

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

# metrics ------------------------------------------------------------------------------
OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
EXECUTE_TOOL_DURATION = "gen_ai.execute_tool.duration"
INVOKE_AGENT_DURATION = "gen_ai.invoke_agent.duration"
TURN_E2E_LATENCY = "callmeter.turn.e2e_latency"
TURN_COMPONENT = "callmeter.turn.latency.component"
TTS_TTFB = "callmeter.tts.time_to_first_byte"
STT_AUDIO = "callmeter.stt.audio.duration"
TTS_CHARACTERS = "callmeter.tts.characters"
COST = "callmeter.cost"
BUDGET_EXCEEDED = "callmeter.turn.budget_exceeded"

DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Recommended boundaries (seconds) for GenAI durations."""
TOKEN_BUCKETS: tuple[int, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
    67108864,
)  # fmt: skip
"""Recommended boundaries for ``gen_ai.client.token.usage``."""

# attributes ---------------------------------------------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
TOKEN_TYPE = "gen_ai.token.type"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
RESPONSE_ID = "gen_ai.response.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
TIME_TO_FIRST_CHUNK_ATTR = "gen_ai.response.time_to_first_chunk"
ERROR_TYPE = "error.type"

# gen_ai.operation.name values
CHAT = "chat"
EXECUTE_TOOL = "execute_tool"
INVOKE_AGENT = "invoke_agent"
