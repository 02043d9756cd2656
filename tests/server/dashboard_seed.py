"""Calls for the dashboard tests: real sessions' records (turn breakdowns with every
component) and many small synthetic calls (for pages, sorts and filters)."""

from __future__ import annotations

import time
from pathlib import Path

from callmeter import AgentSession
from callmeter.export import JSONLWriter
from callmeter.records import RecordReader
from store.factory import make_call
from test_report import tool_turn

AGENTS = ("support", "sales")


def real_calls(tmp: Path, n: int = 4) -> list:
    """``n`` real sessions (AgentSession + JSONLWriter), 1..3 turns each, one with an open
    call. Their records as read back from the JSONL file."""
    path = tmp / "real.jsonl"
    with JSONLWriter(path) as w:
        for i in range(n):
            s = w.attach(
                AgentSession(session_id=f"real-{i}", agent_name=AGENTS[i % 2],
                             labels={"tier": "gold" if i % 2 else "free"})
            )  # fmt: skip
            with s:
                for k in range(i % 3 + 1):
                    tool_turn(s, f"real-{i}-t{k}", 0.2 + 0.3 * k)
    return list(RecordReader(path))


def synthetic_calls(n: int, now: float | None = None, prefix: str = "syn") -> list:
    """``n`` calls over the last 50 minutes, alternating agents and tiers, some with
    tool errors."""
    now = time.time() if now is None else now
    out = []
    for i in range(n):
        out += make_call(
            f"{prefix}-{i:03d}", t0=now - 3000 + i * (2900 / max(n, 1)), turns=1 + i % 3,
            agent=AGENTS[i % 2], labels={"tier": "gold" if i % 3 else "free"},
            e2e=0.4 + (i % 10) * 0.1, tool_error=i % 7 == 0,
        )  # fmt: skip
    return out
