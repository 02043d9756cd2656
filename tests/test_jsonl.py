"""JSONLWriter: every event of many concurrent sessions, one JSON object per line."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from callmeter import AgentSession, InvalidArgumentError, metrics
from callmeter.errors import SinkClosedError
from callmeter.export import JSONLWriter, SinkBase
from callmeter.model.events import MetricsCollectedEvent, SessionStartedEvent
from callmeter.records import RecordReader


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


# every record written or counted ----------------------------------------------------------


class Witness(SinkBase):
    """Remembers every record its sessions emitted (and a tag of the moment)."""

    def __init__(self, tag=lambda: 0):
        super().__init__()
        self.seen: list[tuple[str, int, int]] = []
        self._tag = tag

    def receive(self, record):
        self.seen.append((record.session_id, record.seq, self._tag()))

    @property
    def ids(self) -> set[tuple[str, int]]:
        return {(sid, seq) for sid, seq, _ in self.seen}


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.001)


def ids_in(source) -> Counter:
    reader = RecordReader(source)
    return Counter((r.session_id, r.seq) for r in reader)


def run_sessions(sinks, stop: threading.Event, name: str, per_session: int = 20) -> None:
    k = 0
    while not stop.is_set():
        s = AgentSession(session_id=f"{name}-{k}")
        for sink in sinks:
            sink.attach(s)
        with s:
            for _ in range(per_session):
                with s.tool_call("t"):
                    pass
        k += 1


def start_writers(sinks, n: int = 4):
    stop = threading.Event()
    threads = [threading.Thread(target=run_sessions, args=(sinks, stop, f"w{i}")) for i in range(n)]
    for t in threads:
        t.start()
    return stop, threads


@pytest.mark.parametrize("sync", ["interval", "session", "record"])
def test_eight_threads_of_sessions_lines_whole_seq_gap_free(tmp_path, sync):
    path = tmp_path / "t.jsonl"
    writer = JSONLWriter(path, flush_interval=0.002, sync=sync)

    def run(i: int) -> None:
        for k in range(4):
            s = writer.attach(AgentSession(session_id=f"th{i}-{k}"))
            with s:
                for _ in range(100):
                    with s.tool_call("t"):
                        pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    reader = RecordReader(path)
    by_session: dict[str, list[int]] = {}
    for r in reader:
        by_session.setdefault(r.session_id, []).append(r.seq)
    assert reader.stats.skipped_total == 0  # no interleaved or partial line
    assert len(by_session) == 32 and writer.dropped == 0
    for seqs in by_session.values():
        assert sorted(seqs) == list(range(102))  # every record once, no gap


def test_records_of_sessions_attached_after_close_are_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    writer = JSONLWriter(path)
    s = writer.attach(AgentSession(session_id="open"))
    s.start()
    writer.close()
    for _ in range(7):
        with s.tool_call("t"):
            pass
    s.close()
    assert writer.dropped == 8
    assert [r.seq for r in RecordReader(path)] == [0]


def test_a_partial_last_line_is_ended_before_the_next_record(tmp_path):
    path = tmp_path / "crash.jsonl"
    path.write_bytes(b'{"event":"session_started","session_id":"old","se')
    with JSONLWriter(path) as writer, writer.attach(AgentSession(session_id="new")):
        pass
    reader = RecordReader(path)
    assert [type(r).__name__ for r in reader] == ["SessionStartedEvent", "CloseEvent"]
    assert [(e.line, e.kind) for e in reader.errors] == [(1, "malformed")]
    # a complete last line without its newline stays a record
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with JSONLWriter(path) as writer, writer.attach(AgentSession(session_id="again")):
        pass
    assert len(list(RecordReader(path))) == 4


def test_an_unencodable_record_costs_only_itself(tmp_path):
    path = tmp_path / "e.jsonl"
    bad = MetricsCollectedEvent(
        session_id="x", seq=1, created_at=1.0, labels={"k": object()},  # type: ignore[dict-item]
        metrics=metrics.ToolMetrics(timestamp=1.0, started_at=1.0, duration=0.0, tool_name="t"),
    )  # fmt: skip
    good = [SessionStartedEvent(session_id="x", seq=i, created_at=1.0) for i in (0, 2)]
    with JSONLWriter(path, flush_interval=60) as writer:
        for r in (good[0], bad, good[1]):
            writer.receive(r)
    assert [r.seq for r in RecordReader(path)] == [0, 2] and writer.dropped == 1


def test_rotation_by_rename_while_sessions_write(tmp_path):
    path = tmp_path / "calls.jsonl"
    writer = JSONLWriter(path, flush_interval=0.002)
    witness = Witness()
    stop, threads = start_writers([writer, witness])
    try:
        for i in range(5):
            time.sleep(0.04)
            wait_for(path.exists)  # the writer recreates it with its next batch
            os.rename(path, tmp_path / f"calls.jsonl.{i}")  # logrotate's "create" mode
        time.sleep(0.04)
    finally:
        stop.set()
    for t in threads:
        t.join()
    writer.close()
    found = Counter()
    for f in tmp_path.iterdir():
        found += ids_in(f)
    assert writer.dropped == 0
    assert set(found) == witness.ids and max(found.values()) == 1  # each record once
    assert len(witness.ids) > 200
    assert len(ids_in(path)) > 0  # the writer reopened the path after the last rotation


def test_rotation_by_delete_while_sessions_write(tmp_path):
    path = tmp_path / "calls.jsonl"
    writer = JSONLWriter(path, flush_interval=0.002)
    generation = [0]
    witness = Witness(tag=lambda: generation[0])
    stop, threads = start_writers([witness, writer])  # tagged before the writer has it
    held = []  # the deleted files, read through fds kept open
    try:
        for _ in range(4):
            time.sleep(0.04)
            wait_for(path.exists)
            held.append(os.open(path, os.O_RDONLY))
            os.unlink(path)
            generation[0] += 1
        time.sleep(0.04)
    finally:
        stop.set()
    for t in threads:
        t.join()
    writer.close()
    files = []
    for fd in held:
        with os.fdopen(fd, "rb") as f:
            files.append(ids_in(f))
    files.append(ids_in(path))
    assert writer.dropped == 0
    assert all(max(c.values()) == 1 for c in files)  # no record twice in one file
    for sid, seq, gen in witness.seen:
        # a record emitted after the g-th deletion is in a file that was created after it
        assert any((sid, seq) in files[g] for g in range(gen, len(files))), (sid, seq, gen)
    assert len(witness.seen) > 200


def test_a_vanished_directory_counts_until_it_is_back(tmp_path, caplog):
    d = tmp_path / "logs"
    d.mkdir()
    writer = JSONLWriter(d / "calls.jsonl", flush_interval=60)
    s = writer.attach(AgentSession(session_id="d"))
    s.start()
    writer.flush()
    os.rename(d, tmp_path / "logs.old")
    with caplog.at_level(logging.WARNING, logger="callmeter.export"):
        for _ in range(3):
            with s.tool_call("t"):
                pass
        writer.flush()
    assert writer.dropped == 3
    assert any("cannot open" in r.getMessage() for r in caplog.records)
    d.mkdir()
    s.close()
    writer.close()
    assert [r.seq for r in RecordReader(d / "calls.jsonl")] == [4]
    assert [r.seq for r in RecordReader(tmp_path / "logs.old" / "calls.jsonl")] == [0]


def test_dev_full_counts_every_record_and_logs_once(caplog):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with caplog.at_level(logging.WARNING, logger="callmeter.export"):
        writer = JSONLWriter("/dev/full", flush_interval=0.001)
        for i in range(3):
            with writer.attach(AgentSession(session_id=f"f{i}")) as s, s.tool_call("t"):
                pass
            writer.flush()
        writer.close()
    assert writer.dropped == 9
    logged = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(logged) == 1 and "No space left" in logged[0].getMessage()


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_then_freed_drops_exactly_what_is_missing(small_tmpfs):
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.ftruncate(fd, os.fstat(fd).st_size - 24 * 1024)  # leave 24 KiB
    os.close(fd)
    path = small_tmpfs / "calls.jsonl"
    writer = JSONLWriter(path, flush_interval=0.001)
    witness = Witness()

    def calls(prefix: str, n: int) -> None:
        for k in range(n):
            s = AgentSession(session_id=f"{prefix}{k}", labels={"pad": "p" * 50})
            writer.attach(s)
            witness.attach(s)
            with s:
                for _ in range(10):
                    with s.tool_call("t"):
                        pass
            writer.flush()

    calls("full", 100)  # ~ 300 KiB of records for 24 KiB of space
    assert writer.dropped > 0
    full_drops = writer.dropped
    filler.unlink()  # space again
    calls("freed", 20)
    writer.close()
    reader = RecordReader(path)
    found = Counter((r.session_id, r.seq) for r in reader)
    assert max(found.values()) == 1
    assert set(found) <= witness.ids
    assert writer.dropped == len(witness.ids) - len(found) == full_drops
    assert all(sid.startswith("full") for sid, _ in witness.ids - set(found))
    # partial lines were ended: no record lost to a line it shared with a cut one
    assert set(reader.stats.skipped) <= {"malformed"}
    assert path.read_bytes().endswith(b"\n")


CHILD = r"""
import mmap, os, sys, time
from callmeter import AgentSession
from callmeter.export import JSONLWriter

path, sync, progress = sys.argv[1:4]
writer = JSONLWriter(path, sync=sync, flush_interval=0.2)
fd = os.open(progress, os.O_RDWR)
mm = mmap.mmap(fd, 0)
times = memoryview(mm).cast("d")  # [0]: records emitted so far; [1 + n]: when n returned
cap = len(times) - 1
n = 0


def done():
    global n
    times[1 + n] = time.monotonic()
    n += 1
    times[0] = n


print("ready", flush=True)
k = 0
while n + 12 < cap:
    s = writer.attach(AgentSession(session_id=f"c{k}"))
    s.start()
    done()
    for _ in range(10):
        with s.tool_call("t"):
            pass
        done()
    s.close()
    done()
    k += 1
time.sleep(60)
"""


@pytest.mark.parametrize("sync", ["interval", "session", "record"])
def test_kill_9_loses_at_most_the_documented_bound(tmp_path, sync):
    path = tmp_path / "calls.jsonl"
    progress = tmp_path / "progress"
    cap = 400_000
    progress.write_bytes(b"\0" * 8 * (cap + 1))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), sync, str(progress)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with open(progress, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            times = memoryview(mm).cast("d")
            deadline = time.monotonic() + 30
            while times[0] < 3000 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            child.wait(10)
            emitted = int(times[0])
            stamps = list(times[1 : emitted + 2])
            del times
            mm.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert emitted >= 3000
    data = path.read_bytes()
    assert data.endswith(b"\n")  # no partial line
    reader = RecordReader(path)
    order = [(r.session_id, r.seq) for r in reader]
    assert reader.stats.skipped_total == 0
    written = len(order)
    # the file holds a prefix of the stream: record n is session c{n // 12}, seq n % 12
    assert order == [(f"c{n // 12}", n % 12) for n in range(written)]
    lost = emitted - written
    if sync == "interval":
        # what a kill loses was emitted during the last flush interval (+ a batch's write)
        assert lost <= 0 or killed_at - stamps[written] < 0.2 + 1.0, (lost, emitted)
    elif sync == "session":
        assert written >= emitted // 12 * 12  # every closed session is complete
    else:
        assert lost <= 0  # every record whose call returned is in the file


def test_sync_modes_write_before_returning(tmp_path):
    path = tmp_path / "r.jsonl"
    with JSONLWriter(path, sync="record", flush_interval=60) as writer:
        s = writer.attach(AgentSession(session_id="r"))
        s.start()
        assert len(path.read_bytes().splitlines()) == 1  # no flush, no wait
        with s.tool_call("t"):
            pass
        assert len(path.read_bytes().splitlines()) == 2
    path = tmp_path / "s.jsonl"
    with JSONLWriter(path, sync="session", fsync=True, flush_interval=60) as writer:
        with writer.attach(AgentSession(session_id="s")) as s:
            with s.tool_call("t"):
                pass
            assert path.read_bytes() == b""  # buffered while the session runs
        assert len(path.read_bytes().splitlines()) == 3  # written when its close returned
    path = tmp_path / "f.jsonl"
    with (
        JSONLWriter(path, fsync=True, flush_interval=0.001) as writer,
        writer.attach(AgentSession(session_id="f")),
    ):
        pass
    assert len(list(RecordReader(path))) == 2


def test_sync_record_mode_counts_after_close(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = JSONLWriter(path, sync="record")
    s = writer.attach(AgentSession(session_id="r"))
    s.start()
    writer.close()
    s.close()
    assert writer.dropped == 1 and len(path.read_bytes().splitlines()) == 1


def test_sync_and_path_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="sync must be one of"):
        JSONLWriter(tmp_path / "x.jsonl", sync="always")
    with pytest.raises(InvalidArgumentError, match="fsync"):
        JSONLWriter(tmp_path / "x.jsonl", fsync="yes")  # type: ignore[arg-type]
    for bad in (None, 3):
        with pytest.raises(InvalidArgumentError, match="path"):
            JSONLWriter(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="cannot open"):
        JSONLWriter(tmp_path)  # a directory
