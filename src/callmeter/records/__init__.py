"""Records: the one format of everything that leaves a process.

A record is a session event (:mod:`callmeter.model.events`) in JSON: a versioned envelope
(``v``, ``event``, ``session_id``, ``seq``, ``created_at``, ``agent_name``, ``labels``) and
the event's own fields (``metrics`` for ``metrics_collected``). JSONL files, HTTP batches
and the store all carry records; ``(session_id, seq)`` identifies one. See docs/records.md.
"""

from ..model.events import (
    RECORD_EVENTS,
    RECORD_TYPES,
    RECORD_VERSION,
    CloseEvent,
    LatencyBudgetExceededEvent,
    MetricsCollectedEvent,
    Record,
    SessionStartedEvent,
)
from .codec import KINDS, decode, encode, encode_lines
from .reader import DEFAULT_MAX_LINE_BYTES, LineError, ReadStats, RecordReader, read_records
from .schema import json_schema, json_schema_text

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "KINDS",
    "RECORD_EVENTS",
    "RECORD_TYPES",
    "RECORD_VERSION",
    "CloseEvent",
    "LatencyBudgetExceededEvent",
    "LineError",
    "MetricsCollectedEvent",
    "ReadStats",
    "Record",
    "RecordReader",
    "SessionStartedEvent",
    "decode",
    "encode",
    "encode_lines",
    "json_schema",
    "json_schema_text",
    "read_records",
]
