"""callmeter-sim: a local OpenAI-compatible server with scripted replies and set latency.

It speaks the OpenAI wire protocol (chat completions and responses, JSON and SSE
streaming, usage blocks, tool calls) so that the real ``openai`` SDK can be measured
offline. It is a simulator and says so: banner, ``x-callmeter-simulator`` header,
``system_fingerprint``, and a ``callmeter-sim:`` prefix on the model name it reports.
The server needs the ``sim`` extra (aiohttp); :mod:`callmeter.sim.script` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .script import SIM_NAME, Plan, Reply, Rule, SimConfig, ToolCallSpec, filler_text, tokenize

if TYPE_CHECKING:
    from .server import SimServer, SimServerError, banner

__all__ = [
    "SIM_NAME",
    "Plan",
    "Reply",
    "Rule",
    "SimConfig",
    "SimServer",
    "SimServerError",
    "ToolCallSpec",
    "banner",
    "filler_text",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    if name in ("SimServer", "SimServerError", "banner"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'callmeter.sim' has no attribute {name!r}")
