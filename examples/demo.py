"""The callmeter demo, with a sink attached: every metric is also logged as one line.

Offline by default (it starts callmeter-sim). `python examples/demo.py --base-url URL
--model NAME` runs it against a real OpenAI-compatible endpoint ($OPENAI_API_KEY).
`make demo` runs the same demo through the CLI (`callmeter demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from callmeter import AgentSession, MetricsCollectedEvent, log_metrics
from callmeter.demo import DemoOptions, run_demo


def attach_log_sink(session: AgentSession) -> None:
    """A sink: log each metrics event as it is measured."""

    @session.on("metrics_collected")
    def _log(ev: MetricsCollectedEvent) -> None:
        log_metrics(ev.metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("callmeter.metrics").setLevel(logging.INFO)
    options = DemoOptions(base_url=args.base_url, model=args.model, api_key=args.api_key)
    asyncio.run(run_demo(options, hooks=[attach_log_sink]))


if __name__ == "__main__":
    main()
