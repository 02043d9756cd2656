"""Encoding and decoding records: the one wire format (JSON, one record per JSONL line)."""

from __future__ import annotations

import re

import msgspec

from ..errors import InvalidArgumentError, InvalidRecordError
from ..model.events import RECORD_VERSION, Record

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_AT = re.compile(r" - at `([^`]+)`$")

KINDS: tuple[str, ...] = (
    "malformed",
    "too_long",
    "truncated",
    "unknown_event",
    "unknown_metric",
    "unknown_version",
    "invalid",
)
"""Why a line is skipped: not JSON / not UTF-8 / nested too deeply; over the line limit; a
partial last line (a crashed writer); an event or metrics type or a format version of a
newer callmeter; a field missing, of the wrong type or out of range."""


def encode(record: Record) -> bytes:
    """One record as JSON bytes (no newline)."""
    return _encoder.encode(record)


def encode_lines(records: list[Record]) -> bytes:
    """Records as JSONL: one JSON object per line, each line ending in ``\\n``."""
    return _encoder.encode_lines(records)


def encode_into(record: Record, buf: bytearray) -> None:
    """Append one record and its ``\\n`` to ``buf`` (a writer's batch buffer)."""
    _encoder.encode_into(record, buf, -1)
    buf += b"\n"


def decode(data: bytes | bytearray | memoryview | str) -> Record:
    """Decode and validate one record (surrounding whitespace allowed).

    Raises :class:`~callmeter.errors.InvalidRecordError` whose ``kind`` (one of
    :data:`KINDS`) tells a malformed line from an unknown (newer) event, metrics type or
    format version and from an invalid field; :class:`~callmeter.errors.InvalidArgumentError`
    when ``data`` is not bytes or str.
    """
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise InvalidArgumentError(
            f"decode() needs the bytes or str of one record, got {type(data).__name__}"
        )
    try:
        record = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise classify(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"not valid JSON: {exc}", kind="malformed") from None
    except UnicodeError as exc:
        raise InvalidRecordError(f"not UTF-8: {exc}", kind="malformed") from None
    except RecursionError:
        raise InvalidRecordError("nested too deeply", kind="malformed") from None
    if record.v > RECORD_VERSION:
        raise InvalidRecordError(
            f"record format version {record.v} is newer than this callmeter reads "
            f"({RECORD_VERSION}): upgrade callmeter",
            kind="unknown_version",
            field="$.v",
        )
    return record


def classify(exc: msgspec.ValidationError) -> InvalidRecordError:
    """An :class:`InvalidRecordError` for a msgspec validation error of a record."""
    text = str(exc)
    m = _AT.search(text)
    field = m.group(1) if m else None
    if text.startswith("Invalid value") and field == "$.event":
        return InvalidRecordError(f"unknown event type ({text})", kind="unknown_event", field=field)
    if text.startswith("Invalid value") and field is not None and field.endswith(".type"):
        return InvalidRecordError(
            f"unknown metrics type ({text})", kind="unknown_metric", field=field
        )
    return InvalidRecordError(f"invalid record: {text}", kind="invalid", field=field)
