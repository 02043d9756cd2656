"""Store fixtures: the same tests run on SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import itertools

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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "calls.db")
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"t{next(_db_numbers)}")


@pytest.fixture
def store(store_url):
    s = Store(store_url, prices=None)
    yield s
    s.close()
