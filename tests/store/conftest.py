"""Store fixtures: the same tests run on SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

import pytest

from callmeter.store import Store

from .pgcluster import Cluster, find_bin

_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    bindir = find_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
        )
    cluster = Cluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An empty, migrated SQLite store, copied for each test (migrating takes longer)."""
    path = tmp_path_factory.mktemp("template") / "calls.db"
    Store(path, prices=False).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster) -> str:
    """An empty, migrated PostgreSQL database, the template of each test's database."""
    Store(pg_cluster.create_database("template_store"), prices=False).close()
    return "template_store"


def new_store_url(request, directory: Path, name: str | None = None) -> str:
    """The URL of a new, empty, migrated store of the backend in ``request.param``: a copy
    of the SQLite template in ``directory``, or a PostgreSQL database from the template
    (called ``name``, or numbered)."""
    if request.param == "sqlite":
        path = directory / "calls.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return str(path)
    cluster = request.getfixturevalue("pg_cluster")
    template = request.getfixturevalue("pg_template")
    return cluster.create_database(name or f"t{next(_db_numbers)}", template=template)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    return new_store_url(request, tmp_path)


@pytest.fixture
def store(store_url):
    s = Store(store_url, prices=None)
    yield s
    s.close()
