"""The JSON Schema of a record, generated from the types.

``python -c "from callmeter.records import json_schema_text as t; print(t(), end='')"
> docs/records.schema.json`` regenerates the committed copy; a test checks that they match.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from ..model.events import RECORD_VERSION, Record


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one record, as msgspec derives it from the types."""
    schema = msgspec.json.schema(Record)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "callmeter record"
    schema["description"] = (
        f"One line of a callmeter JSONL file, one item of an HTTP batch (format version "
        f"{RECORD_VERSION}). See docs/records.md."
    )
    return schema


def json_schema_text() -> str:
    """:func:`json_schema` as the text of docs/records.schema.json (sorted keys, newline)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
