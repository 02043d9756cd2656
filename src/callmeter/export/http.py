"""HTTPExporter: send every record of the attached sessions to a ``callmeter serve``.

A :class:`~callmeter.export.sink.QueueSink`: the session's handlers only append to a bounded
in-memory queue. The sink's worker thread encodes batches (up to ``batch_size`` records,
every ``flush_interval`` seconds, and at once when a session closes) as gzip JSONL and hands
them to an outbox; a sender thread POSTs the outbox to ``/v1/records`` oldest first,
retrying with exponential backoff and jitter (honouring ``Retry-After``) until the server
acknowledges. With ``spool_dir`` the outbox is a directory: each batch is written there
(fsync'd) before it is sent and deleted once acknowledged, so a server outage or an agent
restart loses nothing. The server stores records idempotently, so a batch re-sent after a
lost answer is counted as duplicates, never stored twice. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import os
import random
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ..errors import InvalidArgumentError
from ..model.events import Record
from ..records.codec import encode_lines
from .sink import QueueSink

logger = logging.getLogger("callmeter.export")

_SUFFIX = ".jsonl.gz"
_PERMANENT = {400, 401, 403, 404, 405, 413, 415, 422}
_reply = msgspec.json.Decoder()


class _Outbox:
    """Encoded batches waiting for an acknowledgement: in memory, or files in a spool dir.

    Senders :meth:`claim` the oldest batch nobody is sending, then :meth:`done` it
    (acknowledged, or given up on) or :meth:`release` it (to retry later).
    """

    def __init__(self, spool_dir: Path | None, max_batches: int) -> None:
        self.dir = spool_dir
        self.max_batches = max_batches
        # id -> (data, n) in memory, or id -> path in the spool; oldest first
        self._items: dict[int, Any] = {}
        self._busy: set[int] = set()
        self._counter = 0
        self._lock_file: Any = None
        if spool_dir is not None:
            self._open_spool(spool_dir)

    def _open_spool(self, d: Path) -> None:
        import fcntl

        try:
            d.mkdir(parents=True, exist_ok=True)
            f = open(d / ".lock", "a+b")  # noqa: SIM115 - held for the exporter's life
        except OSError as exc:
            raise InvalidArgumentError(f"cannot use spool_dir {str(d)!r}: {exc}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InvalidArgumentError(
                f"spool_dir {str(d)!r} is in use by another exporter: give each its own"
            ) from None
        self._lock_file = f
        for tmp in d.glob("*.tmp"):  # a batch that was being written when a process died
            with contextlib.suppress(OSError):
                tmp.unlink()
        for path in sorted(d.glob("*" + _SUFFIX)):
            self._counter += 1
            self._items[self._counter] = path

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes, n: int) -> bool:
        """Keep a batch (False when the outbox is full: the batch is not kept)."""
        if len(self._items) >= self.max_batches:
            return False
        self._counter += 1
        if self.dir is None:
            self._items[self._counter] = (data, n)
            return True
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:08d}-{n}{_SUFFIX}"
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._items[self._counter] = path
        return True

    def claim(self) -> tuple[int, bytes, int] | None:
        """The oldest batch nobody is sending (its id, data and record count), or None."""
        gone = []
        found = None
        for key, v in self._items.items():
            if key in self._busy:
                continue
            if self.dir is None:
                found = (key, *v)
                break
            try:
                data = v.read_bytes()
            except OSError:
                gone.append(key)
                continue
            try:
                n = int(v.name[: -len(_SUFFIX)].rsplit("-", 1)[1])
            except (IndexError, ValueError):
                n = 0
            found = (key, data, n)
            break
        for key in gone:
            del self._items[key]
        if found is not None:
            self._busy.add(found[0])
        return found

    def release(self, key: int) -> None:
        """Give a claimed batch back (to be sent again)."""
        self._busy.discard(key)

    def done(self, key: int) -> None:
        """Forget a claimed batch (acknowledged, or given up on)."""
        self._busy.discard(key)
        v = self._items.pop(key, None)
        if self.dir is not None and v is not None:
            with contextlib.suppress(OSError):
                v.unlink()

    def drop_all(self) -> int:
        """Forget every batch in memory; returns their record count."""
        n = sum(k for _, k in self._items.values()) if self.dir is None else 0
        if self.dir is None:
            self._items.clear()
        return n

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class HTTPExporter(QueueSink):
    """Sends records to a callmeter server at ``url`` with bearer ``token``.

    ``spool_dir`` keeps unacknowledged batches on disk (and sends the ones a previous
    process left there). Without it, at most ``max_pending_batches`` wait in memory, beyond
    which batches are dropped and counted in :attr:`dropped`. Retries back off from
    ``retry_base`` to ``retry_max`` seconds (with jitter; ``Retry-After`` when the server
    sends one). A batch the server refuses for good (400, 401, 403, 413) is dropped, counted
    and logged. :attr:`sent` counts records the server acknowledged.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        max_pending_batches: int = 1000,
        timeout: float = 10.0,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        close_timeout: float = 5.0,
        max_in_flight: int = 4,
    ) -> None:
        if not isinstance(url, str):
            raise InvalidArgumentError(f"url must be a str, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentError(f"url must be http(s)://host[:port], got {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise InvalidArgumentError(f"url has a bad port: {url!r}") from None
        if token is not None and (not isinstance(token, str) or not token or "\n" in token):
            raise InvalidArgumentError("token must be a non-empty str on one line, or None")
        for name, v in (("timeout", timeout), ("retry_base", retry_base),
                        ("retry_max", retry_max), ("close_timeout", close_timeout)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
                raise InvalidArgumentError(f"{name} must be a positive number, got {v!r}")
        if (
            isinstance(max_pending_batches, bool)
            or not isinstance(max_pending_batches, int)
            or max_pending_batches < 1
        ):
            raise InvalidArgumentError(
                f"max_pending_batches must be a positive int, got {max_pending_batches!r}"
            )
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or not 1 <= max_in_flight <= 32
        ):
            raise InvalidArgumentError(
                f"max_in_flight must be an int from 1 to 32, got {max_in_flight!r}"
            )
        path = parts.path.rstrip("/")
        self._path = path if path.endswith("/v1/records") else path + "/v1/records"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self.url = url
        self._headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout = float(timeout)
        self.retry_base = float(retry_base)
        self.retry_max = float(retry_max)
        self.close_timeout = float(close_timeout)
        self._outbox = _Outbox(
            Path(spool_dir) if spool_dir is not None else None, max_pending_batches
        )
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._sent = 0
        self._rejected = 0
        self._stop_deadline = 0.0
        self._local = threading.local()  # each sender thread has its own connection
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"callmeter-http-{i}", daemon=True)
            for i in range(max_in_flight)
        ]
        try:
            super().__init__(
                max_queue=max_queue,
                batch_size=batch_size,
                flush_interval=flush_interval,
                name="callmeter-http-batch",
            )
        except BaseException:
            self._outbox.close()
            raise
        for t in self._senders:
            t.start()

    def __repr__(self) -> str:
        return f"HTTPExporter({self.url!r})"

    @property
    def sent(self) -> int:
        """Records the server acknowledged (stored now, or already)."""
        return self._sent

    @property
    def rejected(self) -> int:
        """Records the server refused as invalid (also counted in :attr:`dropped`)."""
        return self._rejected

    @property
    def unsent_batches(self) -> int:
        """Batches waiting for an acknowledgement (in memory or in the spool)."""
        with self._cond:
            return len(self._outbox)

    # the batch worker ----------------------------------------------------------------------

    def write_batch(self, records: list[Record]) -> None:
        """Encode and gzip ``records`` into the outbox (on the sink's worker thread)."""
        data = gzip.compress(encode_lines(records), compresslevel=1)
        with self._cond:
            ok = self._outbox.put(data, len(records))
            self._cond.notify_all()
        if not ok:
            self._drop(len(records), f"the outbox is full ({self._outbox.max_batches} batches)")

    # the sender ------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if getattr(self._local, "conn", None) is None:
            if self._https:
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            conn.connect()
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return self._local.conn

    def _post(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=data, headers=self._headers)
            resp = conn.getresponse()
            body = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._reset()
            return resp.status, headers, body
        except BaseException:
            self._reset()
            raise

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            self._local.conn = None

    def _delay(self, failures: int, retry_after: str | None) -> float:
        if retry_after:
            with contextlib.suppress(ValueError):
                return min(self.retry_max, max(0.0, float(retry_after)))
        base = min(self.retry_max, self.retry_base * 2 ** min(failures - 1, 30))
        return base * random.uniform(0.5, 1.0)

    def _send_loop(self) -> None:
        """One sender: claim the oldest unsent batch, POST it, repeat. Several senders keep
        several batches in flight (order does not matter: ingest is idempotent)."""
        try:
            self._sender_run()
        finally:
            self._reset()

    def _sender_run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while True:
                    if self._stopping and (not len(self._outbox) or self._give_up):
                        return
                    item = self._outbox.claim()
                    if item is not None:
                        break
                    # wake up in time to give up at the close deadline
                    self._cond.wait(0.05 if self._stopping else None)
                self._in_flight += 1
            key, data, n = item
            status, retry_after, why = 0, None, ""
            try:
                status, headers, body = self._post(data)
                retry_after = headers.get("retry-after")
            except (OSError, http.client.HTTPException) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if 200 <= status < 300 or status in _PERMANENT:
                failures = 0
                with self._cond:  # counters are shared by the senders
                    if status in _PERMANENT:
                        self._refused(n, status, body)
                    else:
                        self._acknowledged(n, body)
                    self._outbox.done(key)
                    self._in_flight -= 1
                    self._cond.notify_all()
                continue
            failures += 1
            why = why or f"HTTP {status}"
            delay = self._delay(failures, retry_after)
            self._log.log(
                "retry", logging.WARNING,
                "callmeter: %r could not deliver a batch (%s); retrying in %.1fs", self, why, delay,
            )  # fmt: skip
            with self._cond:
                self._outbox.release(key)
                self._in_flight -= 1
                self._cond.notify_all()
                deadline = time.monotonic() + delay
                while not self._give_up:
                    now = time.monotonic()
                    left = deadline - now
                    if left <= 0:
                        break
                    if self._stopping:  # wake up in time to give up at the close deadline
                        left = min(left, max(0.001, self._stop_deadline - now))
                    self._cond.wait(left)

    @property
    def _give_up(self) -> bool:
        return self._stopping and time.monotonic() >= self._stop_deadline

    def _acknowledged(self, n: int, body: bytes) -> None:
        try:
            reply = _reply.decode(body)
            rejected = len(reply.get("rejected", ()))
        except (msgspec.DecodeError, AttributeError, TypeError):
            rejected = 0
        self._sent += max(0, n - rejected)
        if rejected:
            self._rejected += rejected
            self._drop(rejected, "the server rejected invalid records")

    def _refused(self, n: int, status: int, body: bytes) -> None:
        self._rejected += n
        self._drop(n, f"the server refused the batch (HTTP {status}: {body[:200]!r})")

    # flush and close ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until every record received so far is acknowledged by the server (or
        dropped). False when ``timeout`` seconds passed first; with a spool nothing is lost
        then, the rest is sent later. Call it off the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not super().flush(timeout):
            return False
        with self._cond:
            while len(self._outbox) or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close_resources(self) -> None:
        """Try for ``close_timeout`` seconds to deliver the outbox, then stop. What is left
        stays in the spool (sent by the next exporter on it), or is dropped and counted."""
        self._stop_sender(self.close_timeout)

    def _stop_sender(self, timeout: float) -> None:
        with self._cond:
            self._stop_deadline = time.monotonic() + timeout
            self._stopping = True
            self._cond.notify_all()
        end = time.monotonic() + timeout + self.timeout + 1
        for t in self._senders:
            t.join(max(0.0, end - time.monotonic()))
        with self._cond:
            left = len(self._outbox)
            if self._outbox.dir is None and left:
                n = self._outbox.drop_all()
                self._drop(n, "the server did not acknowledge them before close")
            elif left:
                logger.warning(
                    "callmeter: %r closed with %d batch(es) in the spool; they are sent on the "
                    "next start", self, left,
                )  # fmt: skip
            self._outbox.close()
