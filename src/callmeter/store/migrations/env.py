"""Alembic environment of the callmeter store: runs on the connection the store passes in."""

from __future__ import annotations

from alembic import context

from callmeter.store.schema import metadata

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # several servers may start at once on one database: the first migrates, the others
    # wait here (until its transaction ends) and then find the schema current. SQLite
    # needs nothing: the store's write transactions begin IMMEDIATE.
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242424243)")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
