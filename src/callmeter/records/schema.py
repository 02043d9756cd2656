"""The JSON Schema of a record, generated from the types."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.events import Record


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one record, as msgspec derives it from the types."""
    schema = msgspec.json.schema(Record)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "callmeter record"
    return schema
