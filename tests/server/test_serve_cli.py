"""``callmeter serve``: no configuration needed on loopback, refused elsewhere without tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from callmeter.errors import InvalidArgumentError
from callmeter.server import Tokens
from callmeter.store import Store
from store.factory import make_call

from .conftest import Client, Server


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "CALLMETER_TOKENS"} | (env or {})
    return subprocess.run([sys.executable, "-m", "callmeter", "serve", *args],
                          capture_output=True, text=True, timeout=60, env=e)  # fmt: skip


def test_refuses_a_public_address_without_tokens(tmp_path):
    done = run_serve("--host", "0.0.0.0", "--db", str(tmp_path / "x.db"))
    assert done.returncode == 2
    assert "without tokens" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_bad_options_exit_2(tmp_path, capsys, monkeypatch):
    # in process: what is under test is the option checking, not the process (the test
    # above checks a real process's exit code and stderr)
    from callmeter.cli import run

    monkeypatch.delenv("CALLMETER_TOKENS", raising=False)
    assert run(["serve", "--port", "70000"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bad = tmp_path / "tokens"
    bad.write_text("short:acme:read\n")
    assert run(["serve", "--tokens", str(bad), "--db", "mysql://nope/x"]) == 2
    err = capsys.readouterr().err
    assert "at least 8" in err and len(err.strip().splitlines()) == 1


def test_no_configuration_on_loopback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("CALLMETER_TOKENS", "CALLMETER_DB")}
    proc = subprocess.Popen([sys.executable, "-m", "callmeter", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert first.startswith("callmeter serving on http://127.0.0.1:")
        assert "loopback only" in second
        s = Server("unused")
        s.url = first.split()[3]
        for _ in range(400):
            try:
                c = Client(s.url)
                if c.get("/health").status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        r = c.post_records(make_call("noauth-1"))
        assert r.status == 200 and r.json()["accepted"] == 14
        assert c.get("/v1/calls").json()["calls"][0]["session_id"] == "noauth-1"
        c.close()
        assert (tmp_path / "callmeter.db").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_tokens_file(tmp_path):
    tf = tmp_path / "tokens"
    tf.write_text("# comment\n\ntok-file-1234:acme:ingest+read\n")
    s = Server(str(tmp_path / "t.db"), "--tokens", str(tf)).start()
    try:
        c = Client(s.url, "tok-file-1234")
        assert c.post_records(make_call("file-1")).status == 200
        assert c.get("/v1/calls").status == 200
        assert c.get("/v1/calls", token="tok-file-9999").status == 401
        c.close()
    finally:
        s.stop()


def test_token_entries_are_checked():
    with pytest.raises(InvalidArgumentError, match="at least 8"):
        Tokens.parse(["short:acme:read"], "x")
    with pytest.raises(InvalidArgumentError, match="scopes"):
        Tokens.parse(["tok-12345678:acme:write"], "x")
    with pytest.raises(InvalidArgumentError, match="TOKEN:TENANT:SCOPES"):
        Tokens.parse(["tok-12345678:acme"], "x")
    with pytest.raises(InvalidArgumentError, match="twice"):
        Tokens.parse(["tok-12345678:a:read", "tok-12345678:b:read"], "x")
    with pytest.raises(InvalidArgumentError, match="tenant"):
        Tokens.parse(["tok-12345678::read"], "x")
    t = Tokens.parse(["# c", "", " tok-12345678 : acme : ingest+read "], "x")
    tok = t.lookup("tok-12345678")
    assert tok is not None and tok.tenant == "acme" and tok.scopes == {"ingest", "read"}
    assert t.lookup("tok-12345679") is None and t.lookup("") is None
    assert t.lookup("\udcff\x00" * 1000) is None


def test_unsupported_database_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="unsupported database"):
        Store("mysql://nope/x")
