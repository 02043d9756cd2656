"""A real ``callmeter serve`` (uvicorn) on loopback, and a small HTTP client for it."""

from __future__ import annotations

import contextlib
import gzip as gz
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import pytest
import uvicorn

from callmeter.records import encode_lines

INGEST_A = "tok-ingest-a-123"
READ_A = "tok-read-a-12345"
BOTH_B = "tok-both-b-12345"
TOKENS = f"{INGEST_A}:acme:ingest,{READ_A}:acme:read,{BOTH_B}:globex:ingest+read"


@contextlib.contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Serve an ASGI app on a real uvicorn in a thread, on a loopback port; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        t.join(10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, url: str, token: str | None = None) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Reply:
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_records(self, records, *, gzip: bool = False, token: str | None = None) -> Reply:
        data = encode_lines(records)
        headers = {"Content-Type": "application/x-ndjson"}
        if gzip:
            data = gz.compress(data)
            headers["Content-Encoding"] = "gzip"
        return self.request("POST", "/v1/records", data, headers, token=token)

    def get(self, path: str, token: str | None = None, **params) -> Reply:
        q = urlencode(params, doseq=True)
        return self.request("GET", f"{path}?{q}" if q else path, token=token)

    def close(self) -> None:
        self.conn.close()


class Server:
    """A ``callmeter serve`` subprocess; :meth:`kill` and :meth:`start` for crash tests."""

    def __init__(self, db: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout: float = 60.0) -> Server:
        cmd = [sys.executable, "-m", "callmeter", "serve", "--db", self.db,
               "--port", str(self.port), *self.args]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("callmeter serving on "):
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[3]
        self.port = urlsplit(self.url).port
        while time.monotonic() < deadline:  # the socket is bound: wait for the app
            try:
                c = Client(self.url)
                if c.get("/health").status == 200:
                    c.close()
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve did not answer /health")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    db = str(tmp_path_factory.mktemp("srv") / "calls.db")
    s = Server(db, "--max-body", "300000", "--max-records", "1000",
               env={"CALLMETER_TOKENS": TOKENS}).start()  # fmt: skip
    yield s
    s.stop()


@pytest.fixture
def client(server) -> Iterator[Client]:
    c = Client(server.url)
    yield c
    c.close()
