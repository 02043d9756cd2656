"""The callmeter demo: a short store-support conversation, measured, with a call summary.

By default the LLM is callmeter-sim (a local simulator started here, offline); with a
base URL it is a real OpenAI-compatible endpoint. Tools read the data files shipped in
``callmeter/demo/data`` and wait ``tool_latency`` seconds each, standing in for a remote
backend. Sinks attach to the session through ``hooks`` (called before it starts) or by
passing a session built with :func:`build_session`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..errors import InvalidArgumentError
from ..metrics import UsageSummary
from ..session import AgentSession

DATA = Path(__file__).parent / "data"
SIM_MODEL = "callmeter-sim-demo"
SIM_PRICES = {
    f"callmeter-sim/{SIM_MODEL}": {
        "input_mtok": "0.15",
        "cache_read_mtok": "0.075",
        "output_mtok": "0.60",
        "source": "illustration: gpt-4o-mini's list rates applied to the simulated model",
    }
}
"""The simulated model is priced at gpt-4o-mini's list rates so the demo can show a cost."""
DEFAULT_REAL_MODEL = "gpt-4o-mini"

SYSTEM_PROMPT = (
    "You are the support assistant of Trailhead Outfitters, an outdoor gear shop. "
    "Use the tools to look up orders, stock and delivery dates; call several tools at "
    "once when a question needs several facts. Answer in two sentences or fewer."
)
USER_TURNS = (
    "Hi, can you help me with an order?",
    "My order is A1002. Also, is the TENT-2P tent in stock? I want a second one.",
    "Could express shipping get order A1002 to me sooner?",
)


def sim_rules() -> list[Any]:
    """The simulator's rules for this conversation (the simulated model's 'decisions')."""
    from ..sim import Reply, Rule, ToolCallSpec

    return [
        Rule(
            r"express",
            Reply(
                tool_calls=[
                    ToolCallSpec("estimate_delivery", {"order_id": "A1002", "express": True})
                ]
            ),
        ),
        Rule(
            r"order (?:is |number )?(?P<order>[A-Z]\d{4}).*?(?P<sku>[A-Z]+-[A-Z0-9]+)",
            Reply(
                tool_calls=[
                    ToolCallSpec("lookup_order", {"order_id": "{order}"}),
                    ToolCallSpec("check_stock", {"sku": "{sku}"}),
                ]
            ),
        ),
        Rule(
            r"\bhelp\b",
            Reply(
                text="(simulated answer) Happy to help: I can look up orders, check stock "
                "and estimate delivery dates. What is your order number?"
            ),
        ),
    ]


def make_tools(tool_latency: float) -> list[Callable[..., Any]]:
    """The demo's tools. Each reads a data file and then waits ``tool_latency`` seconds
    (a stand-in for a remote backend's response time)."""

    def _orders() -> dict[str, Any]:
        return json.loads((DATA / "orders.json").read_text(encoding="utf-8"))

    def lookup_order(order_id: str) -> dict[str, Any]:
        """Look up an order: status, items, carrier and estimated arrival.

        Args:
            order_id: The order number, a letter and four digits such as "A1002".
        """
        order = _orders().get(order_id.strip().upper())
        time.sleep(tool_latency)
        if order is None:
            raise KeyError(f"no order {order_id!r}")
        return {"order_id": order_id, **order}

    def check_stock(sku: str) -> dict[str, Any]:
        """Check how many units of a product are available, per warehouse.

        Args:
            sku: The product code such as "TENT-2P".
        """
        with (DATA / "inventory.csv").open(encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["sku"] == sku.strip().upper()]
        time.sleep(tool_latency)
        if not rows:
            raise KeyError(f"unknown product {sku!r}")
        return {
            "sku": rows[0]["sku"],
            "name": rows[0]["name"],
            "available": {r["warehouse"]: int(r["on_hand"]) - int(r["reserved"]) for r in rows},
            "restock_date": next((r["restock_date"] for r in rows if r["restock_date"]), None),
        }

    def estimate_delivery(order_id: str, express: bool = False) -> dict[str, Any]:
        """Estimate when an order arrives, optionally with express shipping.

        Args:
            order_id: The order number such as "A1002".
            express: Whether to upgrade to express shipping (one day faster, 9 EUR).
        """
        order = _orders().get(order_id.strip().upper())
        time.sleep(tool_latency)
        if order is None or not order.get("eta"):
            raise KeyError(f"no delivery estimate for order {order_id!r}")
        eta = date.fromisoformat(order["eta"]) - timedelta(days=1 if express else 0)
        return {
            "order_id": order_id,
            "express": express,
            "eta": eta.isoformat(),
            "fee_eur": 9 if express else 0,
        }

    return [lookup_order, check_stock, estimate_delivery]


@dataclass
class DemoOptions:
    """How to run the demo. Without ``base_url`` the LLM is callmeter-sim."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    tool_latency: float = 0.3
    sim_ttft: float = 0.25
    sim_token_delay: float = 0.01
    turns: Sequence[str] = USER_TURNS

    def __post_init__(self) -> None:
        for name in ("tool_latency", "sim_ttft", "sim_token_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 60:
                raise InvalidArgumentError(
                    f"{name} must be between 0 and 60 seconds, got {value!r}"
                )

    @property
    def simulated(self) -> bool:
        """True when the demo talks to its own simulator."""
        return not self.base_url


@dataclass
class DemoResult:
    """The measured conversation: the session, each turn's result and the call summary."""

    session: AgentSession
    turns: list[Any]
    summary: UsageSummary
    llm_label: str
    messages: list[dict[str, Any]] = field(default_factory=list)


def build_session(options: DemoOptions | None = None) -> AgentSession:
    """The session the demo measures into; attach sinks to it before :func:`run_demo`."""
    labels = {
        "demo": "store-support",
        "llm": "simulated" if (options is None or options.simulated) else "real",
    }
    simulated = options is None or options.simulated
    return AgentSession(
        agent_name="callmeter-demo", labels=labels, prices=SIM_PRICES if simulated else None
    )


async def run_demo(
    options: DemoOptions | None = None,
    session: AgentSession | None = None,
    *,
    hooks: Sequence[Callable[[AgentSession], Any]] = (),
    console: Console | None = None,
) -> DemoResult:
    """Run the conversation through :func:`callmeter.agent.run_turn` with an instrumented
    client and print it. ``hooks`` are called with the session before it starts."""
    import openai

    from ..integrations.openai import instrument
    from ..integrations.openai.agent import run_turn

    options = options or DemoOptions()
    session = session or build_session(options)
    console = console or Console()
    for hook in hooks:
        hook(session)

    sim = None
    if options.simulated:
        from ..sim import SimConfig, SimServer

        config = SimConfig(
            ttft=options.sim_ttft, token_delay=options.sim_token_delay, rules=sim_rules()
        )
        sim = SimServer(config).start()
        base_url, model, api_key = sim.base_url, options.model or SIM_MODEL, "callmeter-sim"
        llm_label = (
            f"callmeter-sim at {base_url} (SIMULATED model: scripted replies, "
            f"{options.sim_ttft:g} s to first token, "
            f"{options.sim_token_delay * 1000:g} ms per token)"
        )
    else:
        base_url = options.base_url or ""
        model = options.model or DEFAULT_REAL_MODEL
        api_key = options.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        llm_label = f"{model} at {base_url}"
    console.print(f"[bold]LLM:[/bold] {llm_label}")
    console.print(
        f"[bold]Tools:[/bold] read {DATA.name}/orders.json and {DATA.name}/inventory.csv, "
        f"then wait {options.tool_latency:g} s each (stand-in for a remote backend)\n"
    )

    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=1)
    handle = instrument(client, session, provider="callmeter-sim" if sim else None)
    tools = make_tools(options.tool_latency)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    turns = []
    try:
        async with session:
            for text in options.turns:
                console.print(f"[bold cyan]user:[/bold cyan] {text}")
                messages.append({"role": "user", "content": text})
                result = await run_turn(
                    session, client, model=model, messages=messages, tools=tools
                )
                for r in result.tool_results:
                    status = "[red]failed[/red]" if r.error else "ok"
                    console.print(f"  [dim]tool {r.name}({r.arguments}) -> {status}[/dim]")
                answer = result.content if result.content is not None else "(no answer: max_steps)"
                console.print(f"[bold green]agent:[/bold green] {answer}\n")
                turns.append(result)
    finally:
        handle.uninstrument()
        await client.close()
        if sim is not None:
            sim.stop()
    result = DemoResult(session, turns, session.usage, llm_label, messages)
    print_report(result, console)
    return result


def _s(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def print_report(result: DemoResult, console: Console) -> None:
    """The call summary: per turn and total LLM time, tool time, their sum and the
    wall-clock busy time, and tokens."""
    table = Table(
        title="Call summary (seconds; tokens in/cached/out)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in (
        "turn",
        "LLM\nreqs",
        "LLM",
        "TTFT",
        "tool\ncalls",
        "tool\nsum",
        "tool\nwall",
        "LLM+\ntool",
    ):
        table.add_column(col, justify="right", no_wrap=True, min_width=5)
    table.add_column("active", justify="right", no_wrap=True, min_width=6)
    table.add_column("tokens", justify="right", no_wrap=True, min_width=10)
    llm_total = tool_total = 0
    for i, turn in enumerate(result.turns, 1):
        u = turn.usage
        llm_ms, tool_ms = _ms(u.llm_duration), _ms(u.tool_duration)
        llm_total += llm_ms
        tool_total += tool_ms
        first = turn.llm_metrics[0].ttft if turn.llm_metrics else -1.0
        table.add_row(
            str(i),
            str(u.llm_requests),
            _s(llm_ms),
            f"{first:.3f}" if first >= 0 else "-",
            str(u.tool_calls),
            _s(tool_ms),
            _s(_ms(turn.tool_interval)),
            _s(llm_ms + tool_ms),
            _s(_ms(u.active_duration)),
            _tokens(u),
        )
    s = result.summary
    table.add_row(
        "total",
        str(s.llm_requests),
        _s(llm_total),
        "",
        str(s.tool_calls),
        _s(tool_total),
        "",
        _s(llm_total + tool_total),
        _s(_ms(s.active_duration)),
        _tokens(s),
        style="bold",
    )
    console.print(table)
    overlap = llm_total + tool_total - _ms(s.active_duration)
    lines = [
        "[bold]Total duration including tool calls[/bold] "
        f"(llm_and_tool_duration): LLM {_sec(llm_total)} + tools {_sec(tool_total)} = "
        f"[bold]{_sec(llm_total + tool_total)}[/bold]",
        f"Wall-clock time busy with LLM or tools (active_duration): {_sec(_ms(s.active_duration))} "
        f"— {_sec(overlap)} less, because parallel tool calls ran at the same time",
        f"Whole call (session open to close): {_sec(_ms(result.session.duration))}, "
        "including the time between requests",
        f"Tokens: {s.llm_prompt_tokens} in ({s.llm_prompt_cached_tokens} cached), "
        f"{s.llm_completion_tokens} out"
        + (
            f"; {s.llm_usage_unreported} request(s) reported no usage"
            if s.llm_usage_unreported
            else ""
        ),
        _cost_line(s, result.llm_label),
        f"LLM: {result.llm_label}",
    ]
    console.print(Panel("\n".join(lines), title="Answer", expand=False))


def _cost_line(s: UsageSummary, llm_label: str) -> str:
    at_least = "at least " if s.cost_is_lower_bound else ""
    text = f"Cost: {at_least}${s.cost:.6f}"
    if "SIMULATED" in llm_label:
        text += " (the simulated model priced at gpt-4o-mini's list rates, for illustration)"
    if s.unpriced:
        text += f"; no price for {', '.join(s.unpriced)}"
    return text


def _sec(ms: int) -> str:
    return f"{ms / 1000:.3f} s"


def _tokens(u: UsageSummary) -> str:
    text = f"{u.llm_prompt_tokens}/{u.llm_prompt_cached_tokens}/{u.llm_completion_tokens}"
    return text + ("*" if u.llm_usage_unreported else "")
