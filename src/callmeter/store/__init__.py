"""The call store: calls, turns and records on SQLite (embedded) or PostgreSQL.

``Store()`` opens ``$CALLMETER_DB`` or ``./callmeter.db``; ``Store("postgresql://...")``
a PostgreSQL database. Needs the ``store`` extra: ``pip install 'callmeter[store]'``.
Queries for lists and statistics live in :mod:`callmeter.store.queries`.
"""

from .store import DEFAULT_TENANT, IngestResult, PruneResult, Store, check_record, resolve_url

__all__ = ["DEFAULT_TENANT", "IngestResult", "PruneResult", "Store", "check_record", "resolve_url"]
