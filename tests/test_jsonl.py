"""JSONLWriter: every event of many concurrent sessions, one JSON object per line."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from callmeter import AgentSession, InvalidArgumentError, metrics
from callmeter.errors import SinkClosedError
from callmeter.export import JSONLWriter


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def one_call(writer: JSONLWriter, i: int) -> None:
    s = writer.attach(AgentSession(session_id=f"c{i}", agent_name="a", labels={"n": str(i)}))
    s.set_latency_budget(e2e=0.001)
    async with s:
        for k in range(3):
            async with s.turn(speech_id=f"c{i}-t{k}") as turn:
                turn.user_stopped_speaking()
                async with s.llm_generation(model="m", provider="p") as gen:
                    await asyncio.sleep(0.002)
                    gen.first_token()
                    gen.set_usage(prompt_tokens=10, completion_tokens=2)
                await asyncio.gather(*(asyncio.create_task(tool(s, j)) for j in range(2)))


async def tool(s: AgentSession, j: int) -> None:
    async with s.tool_call(f"tool{j}"):
        await asyncio.sleep(0.001)


async def test_many_concurrent_sessions_every_event_once(tmp_path):
    path = tmp_path / "calls.jsonl"
    async with JSONLWriter(path) as writer:
        await asyncio.gather(*(one_call(writer, i) for i in range(40)))
    rows = read(path)
    # per call: started + 3 x (llm + 2 tools + turn + budget) + close
    assert len(rows) == 40 * (2 + 3 * 5)
    by_call: dict[str, list[dict]] = {}
    for r in rows:
        by_call.setdefault(r["session_id"], []).append(r)
    assert len(by_call) == 40
    for sid, rs in by_call.items():
        names = [r["event"] for r in rs]
        assert names[0] == "session_started" and names[-1] == "close"
        assert names.count("metrics_collected") == 12
        types = [r["metrics"]["type"] for r in rs if r["event"] == "metrics_collected"]
        assert types.count("turn_metrics") == 3
        assert names.count("latency_budget_exceeded") == 3
        assert all(r["agent_name"] == "a" and r["labels"] == {"n": sid[1:]} for r in rs)
    m = next(r for r in rows if r["event"] == "metrics_collected")
    decoded = metrics.decode(json.dumps(m["metrics"]))
    assert isinstance(decoded, metrics.LLMMetrics | metrics.ToolMetrics)
    turn = next(
        r["metrics"]
        for r in rows
        if r["event"] == "metrics_collected" and r["metrics"]["type"] == "turn_metrics"
    )
    assert isinstance(metrics.decode(json.dumps(turn)), metrics.TurnMetrics)
    budget = next(r for r in rows if r["event"] == "latency_budget_exceeded")
    assert budget["exceeded"][0]["name"] == "e2e" and budget["turn"]["type"] == "turn_metrics"
    assert writer.dropped == 0


def test_sessions_in_many_threads_write_whole_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = JSONLWriter(path, flush_interval=0.01)

    def run(i: int) -> None:
        s = writer.attach(AgentSession(session_id=f"th{i}"))
        with s:
            for _ in range(200):
                with s.tool_call("t"):
                    pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    rows = read(path)  # every line parses: no interleaved partial lines
    assert len(rows) == 8 * 202


def test_flush_detach_and_close(tmp_path):
    path = tmp_path / "f.jsonl"
    writer = JSONLWriter(path, flush_interval=60)  # only explicit flushes / closes write
    s = writer.attach(AgentSession(session_id="x"))
    assert writer.attach(s) is s  # attaching twice records once
    s.start()
    with s.tool_call("t"):
        pass
    assert path.read_bytes() == b""  # nothing written on the caller's thread
    writer.flush()
    assert [r["event"] for r in read(path)] == ["session_started", "metrics_collected"]
    writer.detach(s)
    with s.tool_call("ignored"):
        pass
    s.close()
    writer.close()
    writer.close()  # idempotent
    assert len(read(path)) == 2
    s2 = AgentSession()
    with pytest.raises(SinkClosedError, match="is closed"):
        writer.attach(s2)  # attaching to a closed writer is refused, not silently ignored
    s2.start()
    assert len(read(path)) == 2  # a closed writer records nothing more


def test_session_close_flushes_without_waiting_for_the_interval(tmp_path):
    path = tmp_path / "c.jsonl"
    writer = JSONLWriter(path, flush_interval=60)
    with writer.attach(AgentSession(session_id="y")):
        pass
    for _ in range(500):  # the writer thread wakes on close; give it up to 5 s
        if path.read_bytes().count(b"\n") == 2:
            break
        threading.Event().wait(0.01)
    assert [r["event"] for r in read(path)] == ["session_started", "close"]
    writer.close()


def test_queue_bound_drops_and_counts(tmp_path):
    writer = JSONLWriter(tmp_path / "d.jsonl", flush_interval=60, max_pending=5)
    s = writer.attach(AgentSession())
    for _ in range(20):
        with s.tool_call("t"):
            pass
    assert writer.dropped >= 15
    writer.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot open"):
        JSONLWriter(tmp_path / "missing" / "x.jsonl")
    with pytest.raises(InvalidArgumentError, match="flush_interval"):
        JSONLWriter(tmp_path / "x.jsonl", flush_interval=0)
    with pytest.raises(InvalidArgumentError, match="max_pending"):
        JSONLWriter(tmp_path / "x.jsonl", max_pending=0)
    with JSONLWriter(tmp_path / "x.jsonl") as w, pytest.raises(InvalidArgumentError):
        w.attach("not a session")  # type: ignore[arg-type]


def test_closed_sessions_are_detached_and_freed(tmp_path):
    import gc
    import weakref

    with JSONLWriter(tmp_path / "calls.jsonl") as writer:
        refs = []
        for i in range(50):
            s = writer.attach(AgentSession(session_id=f"s{i}"))
            with s, s.tool_call("t"):
                pass
            refs.append(weakref.ref(s))
            del s
        gc.collect()
        assert writer._sessions == {}
        assert sum(r() is not None for r in refs) == 0
    rows = read(tmp_path / "calls.jsonl")
    assert len(rows) == 50 * 3  # started, tool metric, close for each
