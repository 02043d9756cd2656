"""Every example under examples/ runs as documented and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_quickstart():
    out = run("quickstart.py")
    assert "LLM + tool time (plain sum)" in out and "active wall-clock time" in out


def test_call_cost():
    out = run("call_cost.py")
    assert "turn speech_" in out and "unpriced (not in the total)" in out


def test_turn_latency(tmp_path):
    out = run("turn_latency.py", str(tmp_path / "calls.jsonl"), str(tmp_path / "r.html"))
    assert (tmp_path / "r.html").exists() and "HTML report" in out


def test_demo_example():
    assert "Total duration including tool calls" in run("demo.py")
