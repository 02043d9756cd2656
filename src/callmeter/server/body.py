"""Parsing an ingest body: JSONL or a JSON array, optionally gzip, into records, their
canonical JSON (what the store keeps), and per-line errors (line numbers from 1)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import msgspec

from ..errors import InvalidRecordError
from ..model.events import RECORD_VERSION, Record
from ..records.codec import decode, encode, encode_lines
from ..store.store import all_storable, check_record, has_nul


class BodyTooLarge(Exception):
    """The body (or its decompressed form, or its record count) is over a limit."""


class BadBody(Exception):
    """The body as a whole cannot be read (bad gzip, not an array...)."""


@dataclass(slots=True)
class Parsed:
    """The valid records of a body, each one's JSON as :func:`~callmeter.records.encode`
    gives it (``bodies``, what the store keeps), and what was wrong with the other lines."""

    records: list[Record] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_lines = msgspec.json.Decoder(Record)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` (every member of it, as ``gzip.decompress`` does),
    refusing (BodyTooLarge) past ``limit`` bytes."""
    out = b""
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadBody(f"not valid gzip: {exc}") from None
        if len(out) > limit:
            raise BodyTooLarge(f"the decompressed body is over {limit} bytes")
        if not d.eof:
            raise BadBody("not valid gzip: the stream is truncated")
        # concatenated gzip members are one gzip file: left unread, their records would be
        # acknowledged without being stored
        data = d.unused_data
        if not data.strip(b"\0"):  # the end (or zero padding after it)
            return out


def _all_valid(data: bytes) -> tuple[list[Record], list[bytes]] | None:
    """Every record of a JSONL body decoded in one call, and all of them re-encoded in one
    call, when every line is a valid record the store can keep; None otherwise (then each
    line is decoded on its own, to say which lines are wrong)."""
    try:
        records = _lines.decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return None
    if not records or max([r.v for r in records]) > RECORD_VERSION or not all_storable(records):
        return None
    if len(records) != data.count(b"\n") + (not data.endswith(b"\n")):
        # not one record a line (blank lines, or several records on one line, which would
        # pass --max-records): each line on its own says which
        return None
    canonical = encode_lines(records)
    if has_nul(canonical):  # check_record names the lines then
        return None
    # JSON escapes every newline inside a string, so the lines of the encoding are the
    # records' encodings
    bodies = canonical.split(b"\n")
    bodies.pop()  # after the last newline
    return records, bodies


def decode_body(
    data: bytes, *, gzipped: bool, max_body: int, json_array: bool, max_records: int
) -> Parsed:
    """:func:`gunzip` (when ``gzipped``) then :func:`parse_body`, in one call (one hop to a
    worker thread)."""
    if gzipped:
        data = gunzip(data, max_body)
    return parse_body(data, json_array=json_array, max_records=max_records)


def parse_body(data: bytes, *, json_array: bool, max_records: int) -> Parsed:
    """Decode every record of ``data``; invalid ones go to ``rejected`` with their line."""
    out = Parsed()
    if json_array:
        try:
            items = _raw_list.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise BadBody(f"not a JSON array of records: {exc}") from None
        if len(items) > max_records:
            raise BodyTooLarge(f"more than {max_records} records in one batch")
        pairs = enumerate((bytes(r) for r in items), 1)
    else:
        lines = None
        if data.count(b"\n") >= max_records:
            lines = data.split(b"\n")
            if sum(1 for x in lines if x.strip()) > max_records:
                raise BodyTooLarge(f"more than {max_records} records in one batch")
        fast = _all_valid(data)
        if fast is not None:
            if len(fast[0]) > max_records:
                raise BodyTooLarge(f"more than {max_records} records in one batch")
            out.records, out.bodies = fast
            return out
        pairs = enumerate(data.split(b"\n") if lines is None else lines, 1)
    for n, line in pairs:
        if not json_array and not line.strip():
            continue
        try:
            record = decode(line)
        except InvalidRecordError as exc:
            out.rejected.append({"line": n, "error": str(exc)})
            continue
        body = encode(record)
        why = check_record(record, body)
        if why is not None:
            out.rejected.append({"line": n, "error": f"cannot be stored: {why}"})
        else:
            out.records.append(record)
            out.bodies.append(body)
    return out
