"""JSON encoding and decoding of metrics events; decoding is the validation boundary."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from ..errors import InvalidMetricsError
from .types import AgentMetrics

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoder_one = msgspec.json.Decoder(AgentMetrics)
_decoder_many = msgspec.json.Decoder(list[AgentMetrics])
_FIELD_RE = re.compile(r"at `([^`]+)`")
_MISSING_RE = re.compile(r"missing required field `([^`]+)`")


def _invalid(exc: msgspec.MsgspecError) -> InvalidMetricsError:
    text = str(exc)
    path = _FIELD_RE.search(text)
    missing = _MISSING_RE.search(text)
    if missing:
        field = f"{path.group(1)}.{missing.group(1)}" if path else f"$.{missing.group(1)}"
    else:
        field = path.group(1) if path else None
    if "Invalid value" in text and field and field.endswith(".type"):
        text = f"unknown metrics type ({text})"
    if "Number out of range" in text:
        text = f"{text} (NaN and infinity are not allowed)"
    where = f" in field {field!r}" if field else ""
    return InvalidMetricsError(f"invalid metrics event{where}: {text}", field=field)


def encode(metrics: AgentMetrics | list[AgentMetrics]) -> bytes:
    """Encode one metrics event, or a list of them, as JSON bytes (the ``type`` tag included)."""
    return _encoder.encode(metrics)


def to_dict(metrics: AgentMetrics) -> dict[str, Any]:
    """A metrics event as plain JSON-compatible builtins (``type`` included)."""
    return msgspec.to_builtins(metrics)


def decode(data: bytes | str) -> AgentMetrics:
    """Decode and validate one metrics event from JSON.

    Raises :class:`~callmeter.errors.InvalidMetricsError` naming the field on an unknown
    ``type``, a missing required field, a wrong type, a negative duration or count, or a
    non-finite number.
    """
    try:
        return _decoder_one.decode(data)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidMetricsError(f"invalid metrics JSON: {exc}") from None


def decode_list(data: bytes | str) -> list[AgentMetrics]:
    """Decode and validate a JSON array of metrics events of any types."""
    try:
        return _decoder_many.decode(data)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidMetricsError(f"invalid metrics JSON: {exc}") from None


def from_dict(data: Any, type: type[T] | Any = AgentMetrics) -> Any:
    """Validate already-parsed builtins (e.g. a dict from another decoder) as a metrics event."""
    try:
        return msgspec.convert(data, type)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
