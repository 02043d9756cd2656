"""Store fixtures: the same tests run on SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import pytest

from callmeter.store import Store


@pytest.fixture(params=["sqlite"])
def store_url(request, tmp_path) -> str:
    return str(tmp_path / "calls.db")


@pytest.fixture
def store(store_url):
    s = Store(store_url, prices=None)
    yield s
    s.close()
