"""Encoding and decoding records: the one wire format (JSON, one record per JSONL line)."""

from __future__ import annotations

import re

import msgspec

from ..errors import InvalidRecordError
from ..model.events import Record

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)
_AT = re.compile(r" - at `([^`]+)`$")


def encode(record: Record) -> bytes:
    """One record as JSON bytes (no newline)."""
    return _encoder.encode(record)


def encode_lines(records: list[Record]) -> bytes:
    """Records as JSONL: one JSON object per line, each line ending in ``\\n``."""
    buf = bytearray()
    enc = _encoder.encode_into
    for r in records:
        enc(r, buf, -1)
        buf += b"\n"
    return bytes(buf)


def decode(data: bytes | str) -> Record:
    """Decode and validate one record.

    Raises :class:`~callmeter.errors.InvalidRecordError` whose ``kind`` tells a malformed
    line from an unknown (newer) event or metric type and from an invalid field.
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise classify(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRecordError(f"not valid JSON: {exc}", kind="malformed") from None
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(f"not UTF-8: {exc.reason}", kind="malformed") from None
    except RecursionError:
        raise InvalidRecordError("nested too deeply", kind="malformed") from None


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
