"""Put a JSONL file of records (the demo's) into an embedded store for the dashboard."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError

BATCH = 5000


def demo_store(
    jsonl_path: str | os.PathLike[str], db_path: str | os.PathLike[str], *, prices: Any = None
) -> tuple[int, int]:
    """Store the records of ``jsonl_path`` in the SQLite store at ``db_path`` (created if
    missing; idempotent), costed with ``prices`` (as :class:`~callmeter.store.Store` takes
    them; the demo passes its simulated models' rates). Returns ``(stored,
    already_stored)`` record counts."""
    from ...records import RecordReader
    from ...store import Store

    src = Path(jsonl_path)
    if not src.is_file():
        raise InvalidArgumentError(f"{str(src)!r} is not a readable JSONL file")
    stored = dup = 0
    with Store(Path(db_path), prices=prices) as store:
        batch = []
        for rec in RecordReader(src):
            batch.append(rec)
            if len(batch) >= BATCH:
                r = store.ingest(batch)
                stored, dup, batch = stored + r.accepted, dup + r.duplicates, []
        if batch:
            r = store.ingest(batch)
            stored, dup = stored + r.accepted, dup + r.duplicates
    return stored, dup


def dashboard_command(db_path: str | os.PathLike[str]) -> str:
    """The one command that serves the dashboard on ``db_path`` and opens it in a browser."""
    db = shlex.quote(str(db_path))
    py = shlex.quote(sys.executable)  # the interpreter callmeter is installed in (.venv)
    return (f"({py} -m callmeter serve --db {db} --port 8900 &) && sleep 2 && "
            f"{py} -m webbrowser http://127.0.0.1:8900/")  # fmt: skip
