"""JSONLWriter: append every record of the attached sessions to a JSON Lines file.

One record per line (see docs/records.md); :class:`callmeter.records.RecordReader` and
``callmeter report`` read them back. A :class:`~callmeter.export.sink.QueueSink`: the
handlers only append to an in-memory queue, one background thread encodes and writes in
batches, so the agent's event loop never waits on the disk and lines from concurrent
sessions never interleave.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidArgumentError
from ..model.events import Record
from ..records.codec import encode_lines
from .sink import QueueSink

EVENTS: tuple[str, ...] = (
    "session_started",
    "metrics_collected",
    "latency_budget_exceeded",
    "close",
)
"""The session events a :class:`JSONLWriter` records (every record event)."""


class JSONLWriter(QueueSink):
    """Appends the records of every attached session to ``path`` (created if missing).

    Records are written within ``flush_interval`` seconds, and at once when a session
    closes; :meth:`close` writes everything still queued. At most ``max_pending`` records
    wait in memory; beyond that new ones are dropped and counted in :attr:`dropped`, as
    are records that could not be written. If the file ends in a partial line (a writer
    that crashed mid-line), the next record starts on a new line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.2,
        max_pending: int = 1_000_000,
    ) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidArgumentError(f"max_pending must be a positive int, got {max_pending!r}")
        self.path = Path(path)
        self._file = self._open(self.path)
        try:
            super().__init__(
                max_queue=max_pending, flush_interval=flush_interval, name="callmeter-jsonl"
            )
        except BaseException:
            self._file.close()
            raise

    def __repr__(self) -> str:
        return f"JSONLWriter({str(self.path)!r})"

    @staticmethod
    def _open(path: Path) -> BinaryIO:
        try:
            f = open(path, "ab")  # noqa: SIM115 - closed by close_resources()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot open {str(path)!r} for appending: {exc.strerror or exc}"
            ) from None
        try:
            if f.tell() > 0:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")  # end a crashed writer's partial line
                        f.flush()
        except OSError:
            pass
        return f

    def write_batch(self, records: list[Record]) -> None:
        """Encode ``records`` as lines and append them in one write."""
        try:
            data = encode_lines(records)
        except Exception:  # one record that cannot be encoded must not cost the batch
            parts = []
            for r in records:
                try:
                    parts.append(encode_lines([r]))
                except Exception as exc:
                    self._drop(1, f"cannot encode a {r.__class__.__name__}: {exc}")
            data = b"".join(parts)
        self._file.write(data)
        self._file.flush()

    def close_resources(self) -> None:
        """Close the file."""
        self._file.close()
