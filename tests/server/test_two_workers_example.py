"""examples/two_workers.py runs and every call of both workers reaches the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two_workers.py"


def test_two_workers_example():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "worker-a: 30 records acknowledged, 0 dropped" in out
    assert "worker-b: 30 records acknowledged, 0 dropped" in out
    assert "6 calls stored" in out
    assert "worker-a: 3 calls" in out and "worker-b: 3 calls" in out
