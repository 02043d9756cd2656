"""Streaming reader of JSONL record files: line by line, in bounded memory.

Tolerates what real files contain: a UTF-8 BOM, CRLF line ends, blank lines, a partial last
line (a crashed writer), non-UTF-8 bytes, deep nesting, overlong lines, out-of-range values
and event or metric types written by a newer callmeter. A bad line never stops the read: it
is skipped, counted by kind in :attr:`RecordReader.stats` and (the first
``max_errors`` of them) listed with its line number in :attr:`RecordReader.errors`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import InvalidArgumentError, InvalidRecordError
from ..model.events import Record
from .codec import decode

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
"""Lines longer than this (16 MiB) are skipped as ``too_long`` without being held in memory."""
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class LineError:
    """A line that was skipped: its 1-based number, why (``kind``, one of
    :data:`~callmeter.records.codec.KINDS`), a message and the offending field's JSON path
    when known."""

    line: int
    kind: str
    message: str
    field: str | None = None


@dataclass(slots=True)
class ReadStats:
    """What a read saw. ``skipped`` counts skipped lines by kind (see InvalidRecordError)."""

    lines: int = 0
    records: int = 0
    blank: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_total(self) -> int:
        """Lines skipped for any reason."""
        return sum(self.skipped.values())


class RecordReader:
    """Iterate the records of a JSONL file (a path or a binary file object).

    ``for record in RecordReader(path): ...`` yields valid records in file order. Memory is
    bounded by ``max_line_bytes`` whatever the file size. :attr:`position` and :attr:`size`
    (bytes) support progress displays.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_errors: int = 1000,
    ) -> None:
        if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
            raise InvalidArgumentError(f"max_line_bytes must be an int, got {max_line_bytes!r}")
        if max_line_bytes < 1:
            raise InvalidArgumentError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
            raise InvalidArgumentError(f"max_errors must be an int >= 0, got {max_errors!r}")
        if not isinstance(source, str | os.PathLike) and not callable(
            getattr(source, "readline", None)
        ):
            raise InvalidArgumentError(
                f"RecordReader needs a path or a binary file object, got {type(source).__name__}"
            )
        self._source = source
        self.max_line_bytes = max_line_bytes
        self.max_errors = max_errors
        self.stats = ReadStats()
        self.errors: list[LineError] = []
        """The first ``max_errors`` skipped lines (all are counted in :attr:`stats`)."""
        self.position = 0
        """Bytes consumed so far."""
        self.size: int | None = None
        """The file's size in bytes when known."""

    def _open(self) -> tuple[BinaryIO, bool]:
        src = self._source
        if isinstance(src, str | os.PathLike):
            try:
                f = open(src, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by __iter__
            except OSError as exc:
                raise InvalidArgumentError(
                    f"cannot read {os.fspath(src)!r}: {exc.strerror or exc}"
                ) from None
            try:
                self.size = os.fstat(f.fileno()).st_size
            except OSError:
                self.size = None
            return f, True
        return src, False

    def _skip(self, n: int, kind: str, message: str, field: str | None) -> None:
        self.stats.skipped[kind] += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(LineError(n, kind, message, field))

    def __iter__(self) -> Iterator[Record]:
        f, owned = self._open()
        try:
            yield from self._lines(f)
        finally:
            if owned:
                f.close()

    def _lines(self, f: BinaryIO) -> Iterator[Record]:
        limit = self.max_line_bytes
        stats = self.stats
        n = 0
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            if not isinstance(raw, bytes | bytearray):
                raise InvalidArgumentError("RecordReader needs a file opened in binary mode ('rb')")
            n += 1
            self.position += len(raw)
            cut = len(raw) > limit and not raw.endswith(b"\n")
            if n == 1 and raw.startswith(_BOM):
                raw = raw[3:]
                if cut:  # the limit applies to the line without its BOM
                    more = f.readline(limit + 1 - len(raw))
                    self.position += len(more)
                    raw += more
                    cut = len(raw) > limit and not raw.endswith(b"\n")
            if cut:
                while raw and not raw.endswith(b"\n"):  # skip the rest, 1 MiB at a time
                    raw = f.readline(1 << 20)
                    self.position += len(raw)
                stats.lines += 1
                self._skip(n, "too_long", f"line longer than {limit} bytes", None)
                continue
            body = raw.strip()
            if not body:
                stats.blank += 1
                continue
            stats.lines += 1
            try:
                record = decode(body)
            except InvalidRecordError as exc:
                if not raw.endswith(b"\n") and exc.kind == "malformed":
                    why = f"partial last line (a writer stopped mid-line): {exc}"
                    self._skip(n, "truncated", why, None)
                else:
                    self._skip(n, exc.kind, str(exc), exc.field)
                continue
            stats.records += 1
            yield record


def read_records(
    source: str | os.PathLike[str] | BinaryIO, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[Record]:
    """Shorthand: the valid records of a JSONL file (bad lines skipped; use
    :class:`RecordReader` to see what was skipped)."""
    return iter(RecordReader(source, max_line_bytes=max_line_bytes))
