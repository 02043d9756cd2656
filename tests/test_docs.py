"""Every ```python block in README.md and docs/ runs as a program, as a reader would paste it.

Each block runs in its own interpreter, in an empty temporary directory, offline. A block
that is not meant to run on its own is not a ```python block (use ```text).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def _blocks() -> list[tuple[str, int, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((str(path.relative_to(ROOT)), line, m.group(1)))
    return out


BLOCKS = _blocks()


def test_the_docs_have_python_examples():
    assert len(BLOCKS) >= 5  # the collection itself must not silently find nothing


@pytest.mark.parametrize(("doc", "line", "code"), BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_snippet_runs_as_a_program(doc, line, code, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CALLMETER_"))}
    env["NO_COLOR"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"{doc}:{line} fails as a program:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
