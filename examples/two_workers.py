"""Two simulated agent workers export their calls to one callmeter server.

Starts ``callmeter serve`` on a temporary SQLite store (a token per worker tenant), runs
two worker processes that each measure a few calls and send them with ``HTTPExporter``,
then reads the calls back from ``GET /v1/calls`` and ``GET /v1/stats``. Offline: the LLM,
tool and TTS "requests" are timed sleeps. Run: ``python examples/two_workers.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "example-token-123"


async def one_call(exporter, worker: str, i: int) -> None:
    from callmeter import AgentSession

    labels = {"worker": worker}
    session = AgentSession(session_id=f"{worker}-call-{i}", agent_name="support", labels=labels)
    exporter.attach(session)
    async with session:
        for _ in range(2):
            async with session.turn() as turn:
                turn.user_stopped_speaking()
                async with session.llm_generation(model="gpt-4o-mini", provider="openai") as g:
                    await asyncio.sleep(0.02)
                    g.first_token()
                    g.set_usage(prompt_tokens=400, completion_tokens=60)
                async with session.tool_call("lookup_order"):
                    await asyncio.sleep(0.01)
                async with session.tts_request(model="tts-1", provider="openai") as tts:
                    await asyncio.sleep(0.01)
                    tts.first_byte()
                    tts.set_usage(characters_count=120, audio_duration=3.5)


async def worker_main(url: str, worker: str) -> None:
    from callmeter.export.http import HTTPExporter

    exporter = HTTPExporter(url, TOKEN, flush_interval=0.1)
    await asyncio.gather(*(one_call(exporter, worker, i) for i in range(3)))
    await exporter.aclose()  # delivers what is left, off the event loop
    print(f"{worker}: {exporter.sent} records acknowledged, {exporter.dropped} dropped")


def get(url: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    if len(sys.argv) == 3:  # a worker process
        asyncio.run(worker_main(sys.argv[1], sys.argv[2]))
        return
    db = Path(tempfile.mkdtemp()) / "calls.db"
    env = {**os.environ, "CALLMETER_TOKENS": f"{TOKEN}:acme:ingest+read"}
    server = subprocess.Popen(
        [sys.executable, "-m", "callmeter", "serve", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        url = server.stdout.readline().split()[3]
        for _ in range(600):  # the port is bound; wait until the app answers
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        workers = [subprocess.Popen([sys.executable, __file__, url, name])
                   for name in ("worker-a", "worker-b")]  # fmt: skip
        for w in workers:
            w.wait()
        calls = get(url + "/v1/calls?sort=cost")["calls"]
        print(f"{len(calls)} calls stored")
        for c in calls:
            p95 = "-" if c["e2e_p95"] is None else f"{c['e2e_p95']:.3f} s"
            print(f"  {c['session_id']:<16} {c['labels']['worker']:<9} turns {c['turns']}  "
                  f"cost ${c['cost']:.6f}  e2e p95 {p95}")  # fmt: skip
        now = time.time()
        stats = get(url + f"/v1/stats?since={now - 3600}&until={now + 60}&interval=1h"
                    "&group_by=label:worker")  # fmt: skip
        for b in stats["buckets"]:
            print(f"  {b['group']}: {b['calls']} calls, ${b['cost']:.6f}, "
                  f"tool error rate {b['tool_error_rate']:.0%}")  # fmt: skip
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
