"""HTTPExporter against a real ``callmeter serve``: outages, restarts, kills, nothing lost."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from callmeter import AgentSession
from callmeter.errors import InvalidArgumentError
from callmeter.export.http import HTTPExporter
from callmeter.store import Store, schema
from server.conftest import Client, Server
from store.factory import make_call

TOKEN = "tok-exporter-123"
ENV = {"CALLMETER_TOKENS": f"{TOKEN}:acme:ingest+read"}


def stored_keys(db: str) -> list[tuple[str, int]]:
    with Store(db, prices=False) as s, s.read_engine.connect() as c:
        q = sa.select(schema.records.c.session_id, schema.records.c.seq).where(
            schema.records.c.tenant == "acme"
        )
        return [tuple(r) for r in c.execute(q)]


def expected(records) -> list[tuple[str, int]]:
    return sorted((r.session_id, r.seq) for r in records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("exp") / "calls.db"), env=ENV).start()
    yield s
    s.stop()


def test_real_sessions_arrive_whole(server):
    exporter = HTTPExporter(server.url, TOKEN, flush_interval=0.05)

    async def call(i: int) -> None:
        s = exporter.attach(AgentSession(session_id=f"real-{i}", agent_name="bot"))
        async with s, s.turn():
            async with s.llm_generation(model="gpt-4o-mini", provider="openai") as g:
                g.first_token()
                g.set_usage(prompt_tokens=10, completion_tokens=5)
            async with s.tool_call("lookup"):
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(call(i) for i in range(20)))
        await exporter.aclose()

    asyncio.run(main())
    assert exporter.dropped == 0 and exporter.sent > 0
    c = Client(server.url, TOKEN)
    calls = c.get("/v1/calls", limit=100).json()["calls"]
    assert len(calls) == 20 and all(x["closed"] and x["llm"]["requests"] == 1 for x in calls)
    assert sum(x["records"] for x in calls) == exporter.sent
    c.close()


def test_server_down_for_a_while_then_up(tmp_path):
    # The outage is 10 s; 3 s here shows the same behaviour in less test time.
    port = free_port()
    db = str(tmp_path / "calls.db")
    exporter = HTTPExporter(f"http://127.0.0.1:{port}", TOKEN, spool_dir=tmp_path / "spool",
                            flush_interval=0.05, retry_base=0.05, retry_max=0.5)  # fmt: skip
    sent: list = []
    t_end = time.monotonic() + 3.0
    i = 0
    while time.monotonic() < t_end:  # calls run while the server is down
        recs = make_call(f"down-{i}", turns=2)
        for r in recs:
            exporter.receive(r)
        sent += recs
        i += 1
        time.sleep(0.05)
    assert exporter.sent == 0 and exporter.unsent_batches > 0
    srv = Server(db, env=ENV)
    srv.port = port
    srv.start()
    try:
        assert exporter.flush(timeout=60)
        exporter.close()
        assert exporter.dropped == 0 and exporter.sent == len(sent)
        keys = stored_keys(db)
        assert sorted(keys) == expected(sent)  # every record once
        assert not list((tmp_path / "spool").glob("*.jsonl.gz"))
    finally:
        srv.stop()


AGENT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from store.factory import make_call
    from callmeter.export.http import HTTPExporter

    url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ex = HTTPExporter(url, {token!r}, spool_dir=spool, flush_interval=0.05,
                      retry_base=0.05, retry_max=0.3)
    for i in range(n):
        for r in make_call(f"agent-{{i}}", turns=2):
            ex.receive(r)
    ok = ex.flush(timeout=float(sys.argv[4]))
    print("flushed" if ok else "spooled", ex.sent, flush=True)
    if not ok:
        time.sleep(600)  # killed here
    ex.close()
    """
)


def test_agent_killed_and_restarted_with_the_same_spool(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = tmp_path / "agent.py"
    script.write_text(AGENT.format(tests=str(Path(__file__).parent), token=TOKEN))
    spool = str(tmp_path / "spool")
    agent = subprocess.Popen([sys.executable, str(script), url, spool, "30", "0.5"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert agent.stdout.readline().split()[0] == "spooled"  # server down: all on disk
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    assert len(list(Path(spool).glob("*.jsonl.gz"))) > 0
    db = str(tmp_path / "calls.db")
    srv = Server(db, env=ENV)
    srv.port = port
    srv.start()
    try:
        again = subprocess.run([sys.executable, str(script), url, spool, "0", "60"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.stdout.startswith("flushed"), again.stderr
        want = expected([r for i in range(30) for r in make_call(f"agent-{i}", turns=2)])
        assert sorted(stored_keys(db)) == want
    finally:
        srv.stop()


def test_server_killed_while_streaming(tmp_path):
    db = str(tmp_path / "calls.db")
    srv = Server(db, env=ENV).start()
    exporter = HTTPExporter(srv.url, TOKEN, spool_dir=tmp_path / "spool", batch_size=100,
                            flush_interval=0.02, retry_base=0.05, retry_max=0.3)  # fmt: skip
    all_recs: list = []
    stop = threading.Event()

    def stream() -> None:
        for i in range(400):  # 7,200 records, streamed until the end of the test
            if stop.is_set():
                return
            recs = make_call(f"crash-{i}", turns=4)
            for r in recs:
                exporter.receive(r)
            all_recs.extend(recs)
            time.sleep(0.01)

    t = threading.Thread(target=stream)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while exporter.sent < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        acknowledged_before_kill = exporter.sent
        assert acknowledged_before_kill >= 500
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        time.sleep(0.5)
        # every record acknowledged before the kill is stored
        assert len(stored_keys(db)) >= acknowledged_before_kill
        srv.start()
    except BaseException:
        stop.set()
        raise
    finally:
        t.join()
    try:
        assert exporter.flush(timeout=60)
        exporter.close()
        keys = stored_keys(db)
        assert len(keys) == len(set(keys))
        assert sorted(keys) == expected(all_recs)  # nothing lost, nothing twice
        assert exporter.dropped == 0
    finally:
        srv.stop()


def test_refused_batches_are_dropped_and_counted(server):
    exporter = HTTPExporter(server.url, "tok-wrong-12345", flush_interval=0.05)
    for r in make_call("refused-1"):
        exporter.receive(r)
    assert exporter.flush(timeout=20)
    exporter.close()
    assert exporter.sent == 0 and exporter.dropped == 14 and exporter.rejected == 14


def test_a_hung_server_never_blocks_the_agent(tmp_path):
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts connections, never answers
    port = hung.getsockname()[1]
    exporter = HTTPExporter(f"http://127.0.0.1:{port}", TOKEN, spool_dir=tmp_path / "spool",
                            timeout=0.3, close_timeout=0.3, flush_interval=0.02)  # fmt: skip

    async def agent() -> float:
        worst = 0.0
        for i in range(200):
            t = time.perf_counter()
            for r in make_call(f"hung-{i}", turns=1):
                exporter.receive(r)
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0)
        return worst

    worst = asyncio.run(agent())
    assert worst < 0.5  # receive() only appends, whatever the peer does
    assert not exporter.flush(timeout=0.5)
    t = time.perf_counter()
    exporter.close()
    assert time.perf_counter() - t < 5
    assert list((tmp_path / "spool").glob("*.jsonl.gz"))  # kept for the next start
    assert exporter.dropped == 0
    hung.close()


def test_arguments_are_checked(tmp_path):
    for bad in (None, 3, "ftp://x", "http://", "localhost:8787", "http://h:99999"):
        with pytest.raises(InvalidArgumentError):
            HTTPExporter(bad, "t")  # type: ignore[arg-type]
    bad_kw = ({"timeout": 0}, {"timeout": float("nan")}, {"retry_max": -1},
              {"batch_size": 0}, {"max_pending_batches": 0}, {"flush_interval": None},
              {"max_in_flight": 0}, {"max_in_flight": 33}, {"max_in_flight": True},
              {"max_in_flight": 2.0})  # fmt: skip
    for kw in bad_kw:
        with pytest.raises(InvalidArgumentError):
            HTTPExporter("http://127.0.0.1:1", "t", **kw)
    with pytest.raises(InvalidArgumentError):
        HTTPExporter("http://127.0.0.1:1", "a\nb")
    one = HTTPExporter("http://127.0.0.1:1", "t", spool_dir=tmp_path / "s", close_timeout=0.1)
    with pytest.raises(InvalidArgumentError, match="in use"):
        HTTPExporter("http://127.0.0.1:1", "t", spool_dir=tmp_path / "s")
    one.close()
    HTTPExporter("http://127.0.0.1:1", "t", spool_dir=tmp_path / "s", close_timeout=0.1).close()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidArgumentError):
        HTTPExporter("http://127.0.0.1:1", "t", spool_dir=f / "sub")


def test_memory_outbox_is_bounded(tmp_path):
    exporter = HTTPExporter(f"http://127.0.0.1:{free_port()}", TOKEN, batch_size=10,
                            max_pending_batches=3, flush_interval=0.01,
                            retry_base=5, close_timeout=0.1)  # fmt: skip
    recs = [r for i in range(10) for r in make_call(f"mem-{i}", turns=1)]  # 70 records
    for r in recs:
        exporter.receive(r)
    exporter.flush(timeout=0.5)
    exporter.close()
    assert exporter.sent == 0 and exporter.dropped == len(recs)


class _SlowPeer:
    """A loopback HTTP peer that answers each POST after ``delay`` seconds, counting how
    many requests it serves at once (the first ``fail`` requests get a 503)."""

    def __init__(self, delay: float, fail: int = 0) -> None:
        import http.server

        peer = self
        self.lock = threading.Lock()
        self.now = self.most = self.posts = 0
        self.fail = fail
        self.bodies: list[bytes] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with peer.lock:
                    peer.now += 1
                    peer.most = max(peer.most, peer.now)
                    peer.posts += 1
                    failing = peer.posts <= peer.fail
                time.sleep(delay)
                with peer.lock:
                    peer.now -= 1
                    if not failing:
                        peer.bodies.append(body)
                reply = b"{}"
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def records(self) -> list[tuple[str, int]]:
        import gzip
        import json

        return sorted((d["session_id"], d["seq"]) for b in self.bodies
                      for d in map(json.loads, gzip.decompress(b).splitlines()))  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("in_flight", [1, 3])
def test_batches_in_flight_are_bounded_and_each_acknowledged(in_flight):
    peer = _SlowPeer(0.1, fail=2)
    exporter = HTTPExporter(peer.url, TOKEN, batch_size=7, max_in_flight=in_flight,
                            flush_interval=0.01, retry_base=0.05, retry_max=0.1)  # fmt: skip
    recs = [r for i in range(8) for r in make_call(f"fl-{i}", turns=1)]  # 56 records, 8 batches
    for r in recs:
        exporter.receive(r)
    assert exporter.flush(timeout=30)
    exporter.close()
    peer.close()
    assert peer.most == in_flight
    assert exporter.sent == len(recs) and exporter.dropped == 0
    assert peer.records() == expected(recs)  # each batch acknowledged once, none lost
