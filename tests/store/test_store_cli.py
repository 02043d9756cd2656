"""``callmeter import`` and ``callmeter store prune``."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from callmeter.cli import app
from callmeter.records import encode_lines
from callmeter.store import Store, queries

from .factory import make_call

runner = CliRunner()


def test_import_is_idempotent(tmp_path):
    f = tmp_path / "calls.jsonl"
    recs = make_call("imp-1") + make_call("imp-2")
    f.write_bytes(encode_lines(recs) + b"{broken\n" + b"\xff\xfe\n")
    db = str(tmp_path / "s.db")
    out = runner.invoke(app, ["import", str(f), "--db", db])
    assert out.exit_code == 0, out.output
    assert "imported 28 record(s); 0 already stored, 2 invalid line(s) skipped" in out.stdout
    again = runner.invoke(app, ["import", str(f), str(f), "--db", db, "--tenant", "default"])
    assert "imported 0 record(s); 56 already stored" in again.stdout
    with Store(db, prices=False) as s:
        assert {c["session_id"] for c in queries.list_calls(s, "default").calls} == {
            "imp-1", "imp-2"
        }  # fmt: skip


def test_import_errors_exit_2(tmp_path):
    out = runner.invoke(app, ["import", str(tmp_path / "missing.jsonl")])
    assert out.exit_code == 2 and "not a readable file" in out.output
    f = tmp_path / "x.jsonl"
    f.write_text("")
    out = runner.invoke(app, ["import", str(f), "--db", "mysql://x/y"])
    assert out.exit_code == 2 and "unsupported database" in out.output


def test_prune(tmp_path):
    db = str(tmp_path / "s.db")
    now = time.time()
    with Store(db, prices=False) as s:
        s.ingest(make_call("old", t0=now - 100 * 86_400) + make_call("new", t0=now - 3600))
    out = runner.invoke(app, ["store", "prune", "--older-than", "90d", "--db", db])
    assert out.exit_code == 0, out.output
    assert "pruned 1 call(s) and 14 record(s)" in out.stdout
    with Store(db, prices=False) as s:
        assert [c["session_id"] for c in queries.list_calls(s, "default").calls] == ["new"]
    bad = runner.invoke(app, ["store", "prune", "--older-than", "ninety days", "--db", db])
    assert bad.exit_code == 2 and "--older-than" in bad.output
