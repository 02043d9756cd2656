"""Optional extras: `import callmeter` stays light, and a missing extra is named."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "openai",
    "aiohttp",
    "genai_prices",
    "ddsketch",
    "prometheus_client",
    "opentelemetry",
    "fastapi",
    "sqlalchemy",
    "livekit",
    "pipecat",
    "rich",
    "typer",
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_callmeter_loads_no_optional_or_heavy_package():
    done = run(
        "import sys, callmeter, callmeter.metrics, callmeter.records, callmeter.export\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# module -> (the third-party package it needs, the extra that installs it)
GUARDED = {
    "callmeter.integrations.openai": ("openai", "openai"),
    "callmeter.agent": ("openai", "openai"),
    "callmeter.integrations.livekit": ("livekit", "livekit"),
    "callmeter.integrations.pipecat": ("pipecat", "pipecat"),
}


@pytest.mark.parametrize("module", GUARDED)
def test_missing_extra_is_named(module):
    package, extra = GUARDED[module]
    done = run(f"import sys; sys.modules[{package!r}] = None\nimport {module}")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError"), last
    assert f"pip install 'callmeter[{extra}]'" in last
