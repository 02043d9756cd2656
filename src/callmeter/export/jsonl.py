"""JSONLWriter: append every record of the attached sessions to a JSON Lines file.

One record per line (see docs/records.md); :class:`callmeter.records.RecordReader` and
``callmeter report`` read them back. A :class:`~callmeter.export.sink.QueueSink`: the
handlers only append to an in-memory queue, one background thread encodes and writes in
batches, so the agent's event loop never waits on the disk and lines from concurrent
sessions never interleave. ``sync="session"`` or ``sync="record"`` trade that for
durability (docs/export.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from bisect import bisect_right
from pathlib import Path

from ..errors import InvalidArgumentError
from ..model.events import RECORD_EVENTS, CloseEvent, Record
from ..records.codec import encode_into
from .sink import QueueSink

EVENTS: tuple[str, ...] = RECORD_EVENTS
"""The session events a :class:`JSONLWriter` records (every record event)."""

SYNC_MODES: tuple[str, ...] = ("interval", "session", "record")
"""When records reach the file: every ``flush_interval`` (default), before a session's
``close`` returns, or before each emitting call returns."""

_CHUNK = 1 << 20  # bytes per os.write(); each chunk's outcome is accounted for


class JSONLWriter(QueueSink):
    """Appends the records of every attached session to ``path`` (created if missing).

    ``sync`` says when a record reaches the file (the operating system's page cache, which
    survives the process being killed):

    - ``"interval"`` (default): within ``flush_interval`` seconds, by the worker thread;
      a killed process loses at most the records of its last ``flush_interval``.
    - ``"session"``: also, a session's ``close`` returns only once all its records are
      written.
    - ``"record"``: each record is written before the call that emitted it goes on (on the
      emitting thread; the event loop waits for the disk).

    ``fsync=True`` also calls fsync after each write (each batch, each session close, each
    record), so that records survive a power loss or an operating system crash, at a cost
    measured in docs/benchmarks.md.

    At most ``max_pending`` records wait in memory; beyond that new ones are dropped. Every
    record is either written or counted in :attr:`dropped` (queue full, disk full, file
    gone, sink closed), never both. When the file at ``path`` is renamed or deleted (log
    rotation) the writer reopens ``path``. If the file ends in a partial line (a writer
    that crashed mid-line, a full disk), the next record starts on a new line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.2,
        max_pending: int = 1_000_000,
        sync: str = "interval",
        fsync: bool = False,
    ) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidArgumentError(f"max_pending must be a positive int, got {max_pending!r}")
        if sync not in SYNC_MODES:
            raise InvalidArgumentError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        if not isinstance(fsync, bool):
            raise InvalidArgumentError(f"fsync must be True or False, got {fsync!r}")
        if not isinstance(path, str | os.PathLike):
            raise InvalidArgumentError(f"path must be a str or a path, got {path!r}")
        self.path = Path(path)
        self.sync = sync
        self.session_timeout = 10.0
        """``sync="session"``: the longest a session's close waits for the disk (seconds)."""
        self.fsync = fsync
        self._io_lock = threading.Lock()  # one writer at a time: worker or emitting thread
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._partial = False  # the file ends mid-line: write "\n" before the next record
        try:
            self._reopen()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot open {str(self.path)!r} for appending: {exc.strerror or exc}"
            ) from None
        try:
            super().__init__(
                max_queue=max_pending, flush_interval=flush_interval, name="callmeter-jsonl"
            )
        except BaseException:
            self._close_fd()
            raise

    def __repr__(self) -> str:
        return f"JSONLWriter({str(self.path)!r})"

    # the file ---------------------------------------------------------------------------

    def _close_fd(self) -> None:
        fd, self._fd, self._ident = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reopen(self) -> None:
        """Open ``path`` for appending (closing the file held before)."""
        self._close_fd()
        flags = os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:  # readable too, to see whether the file ends mid-line
            fd = os.open(self.path, flags | os.O_RDWR, 0o644)
            readable = True
        except PermissionError:
            fd = os.open(self.path, flags | os.O_WRONLY, 0o644)
            readable = False
        try:
            st = os.fstat(fd)
            partial = False
            if st.st_size > 0:
                # a crashed writer's partial line; if unreadable, an extra "\n" is harmless
                partial = not readable or os.pread(fd, 1, st.st_size - 1) != b"\n"
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._partial = partial

    def _current_fd(self) -> int:
        """The fd to write to, reopening ``path`` when it no longer names the open file
        (renamed or deleted by log rotation), as logging's WatchedFileHandler does."""
        try:
            st = os.stat(self.path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        if self._fd is None or ident != self._ident:
            self._reopen()
        assert self._fd is not None
        return self._fd

    def _unlinked(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_nlink == 0
        except OSError:
            return False

    # writing ----------------------------------------------------------------------------

    def _encode(self, records: list[Record]) -> tuple[bytearray, list[int]]:
        """The lines of ``records`` and the end offset of each record's JSON (before its
        newline). A record that cannot be encoded is dropped; the batch goes on."""
        buf = bytearray()
        ends: list[int] = []
        for r in records:
            start = len(buf)
            try:
                encode_into(r, buf)
            except Exception as exc:
                del buf[start:]
                self._drop(1, f"cannot encode a {r.__class__.__name__}: {exc}", "encode")
                continue
            ends.append(len(buf) - 1)
        return buf, ends

    def _write_all(self, fd: int, buf: bytearray, ends: list[int]) -> tuple[int, OSError | None]:
        """Append ``buf`` to ``fd``. Returns how many records' JSON fully landed, and the
        error that stopped the write. A line cut short is ended before the next write."""
        if self._partial:
            try:
                if os.write(fd, b"\n") == 1:
                    self._partial = False
            except OSError as exc:
                return 0, exc
            if self._partial:
                return 0, OSError(errno.ENOSPC, "short write")
        view = memoryview(buf)
        pos = 0
        total = len(buf)
        error: OSError | None = None
        try:
            while pos < total:
                n = os.write(fd, view[pos : pos + _CHUNK])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "short write")
                pos += n
        except OSError as exc:
            error = exc
        finally:
            view.release()
        if pos:
            self._partial = buf[pos - 1] != 0x0A
        # a record is in the file when all of its JSON is; a missing "\n" is added later
        return bisect_right(ends, pos), error

    def _write_records(self, records: list[Record]) -> None:
        """Write ``records``; count as dropped exactly those whose bytes did not land."""
        buf, ends = self._encode(records)
        if not ends:
            return
        try:
            fd = self._current_fd()
        except OSError as exc:
            self._drop(len(ends), f"cannot open {str(self.path)!r}: {exc}", "open")
            return
        landed, error = self._write_all(fd, buf, ends)
        if landed and self._unlinked(fd):
            # deleted while we wrote: those records went nowhere; write them to a new file
            try:
                self._reopen()
                assert self._fd is not None
                cut = ends[landed - 1] + 1
                landed, again = self._write_all(self._fd, buf[:cut], ends[:landed])
                error = again or error
            except OSError as exc:
                landed, error = 0, exc
        if error is not None and error.errno not in (errno.ENOSPC, errno.EDQUOT):
            self._close_fd()  # an I/O error: start afresh from path with the next batch
        if landed < len(ends):
            self._drop(len(ends) - landed, f"cannot write {str(self.path)!r}: {error}", "write")
        if self.fsync and landed:
            self._fsync()

    def _fsync(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            # the records are written (the OS has them), only their durability is unknown
            self._log.log("fsync", logging.WARNING, "callmeter: fsync of %r failed: %s", self, exc)

    def write_batch(self, records: list[Record]) -> None:
        """Append ``records``, one line each (on the worker thread)."""
        with self._io_lock:
            self._write_records(records)

    def receive(self, record: Record) -> None:
        """Take one record: queue it, or (``sync="record"``) write it now."""
        if self.sync == "record":
            with self._io_lock:
                if self._stop:
                    self._drop(1, "the sink is closed", "closed")
                    return
                try:
                    self._write_records([record])
                except Exception as exc:
                    self._drop(1, f"writing failed: {exc}", "write")
            return
        super().receive(record)
        if (
            self.sync == "session"
            and record.__class__ is CloseEvent
            and not self._stop
            and not self.flush(self.session_timeout)
        ):
            self._log.log(
                    "session_timeout", logging.WARNING,
                    "callmeter: %r: a session closed before its records were written "
                    "(the disk took over %s s); they are still queued", self,
                    self.session_timeout,
                )  # fmt: skip

    def close_resources(self) -> None:
        """Close the file."""
        with self._io_lock:
            self._close_fd()
