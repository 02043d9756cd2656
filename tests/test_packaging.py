"""Packaging config: every data file ships, and the C extension stays optional.

Reads pyproject.toml, MANIFEST.in and setup.py; builds nothing.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
C_SOURCE = "src/callmeter/_speedups.c"


def package_data() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-data"]


def glob_matches(pattern: str, rel: str) -> bool:
    """Whether `rel` matches `pattern` as setuptools globs it: `*` stays within one
    directory, so compare segment by segment."""
    parts, pats = rel.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True)
    )


def shipped(path: str, data: dict[str, list[str]]) -> bool:
    """Whether the repo path `path` (under src/) is matched by the package-data config."""
    for package, patterns in data.items():
        prefix = "src/" + package.replace(".", "/") + "/"
        if path.startswith(prefix):
            rel = path[len(prefix) :]
            if any(glob_matches(p, rel) for p in patterns):
                return True
    return False


def tracked_data_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(
        ["git", "ls-files", "-z", "src/callmeter"],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    files = [f for f in done.stdout.decode().split("\0") if f and not f.endswith(".py")]
    assert files, "git lists no data files under src/callmeter"
    return files


def test_the_glob_check_is_per_directory_like_setuptools():
    data = {"callmeter": ["demo/data/*.csv", "server/dashboard/static/*"]}
    assert shipped("src/callmeter/demo/data/inventory.csv", data)
    assert shipped("src/callmeter/server/dashboard/static/live.js", data)
    assert not shipped("src/callmeter/demo/data/orders.json", data)
    assert not shipped("src/callmeter/server/dashboard/static/img/logo.png", data)
    assert not shipped("src/callmeter/py.typed", data)


def test_every_tracked_data_file_is_package_data():
    data = package_data()
    missing = [f for f in tracked_data_files() if not shipped(f, data)]
    assert missing == [], f"add these to [tool.setuptools.package-data]: {missing}"


def test_every_package_data_glob_matches_a_tracked_file():
    files = tracked_data_files()
    stale = [
        f"{package}: {pattern}"
        for package, patterns in package_data().items()
        for pattern in patterns
        if not any(shipped(f, {package: [pattern]}) for f in files)
    ]
    assert stale == [], f"package-data globs that match nothing: {stale}"


def test_c_source_is_in_the_sdist():
    assert (ROOT / C_SOURCE).is_file()
    included = []
    for line in (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0] == "include":
            included += words[1:]
    assert any(fnmatch.fnmatchcase(C_SOURCE, p) for p in included), included


def test_the_extension_is_optional_and_built_from_the_c_source():
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Extension"
    ]
    assert len(calls) == 1
    call = calls[0]
    assert ast.literal_eval(call.args[0]) == "callmeter._speedups"
    sources = ast.literal_eval(call.args[1])
    assert sources[0] == C_SOURCE
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/callmeter").glob("*.c"))
    assert sorted(sources) == on_disk, "every C file of the extension is compiled"
    keywords = {k.arg: k.value for k in call.keywords}
    assert "optional" in keywords, "without optional=True a missing compiler fails the install"
    assert ast.literal_eval(keywords["optional"]) is True


def test_the_build_backend_is_setuptools():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    system = config["build-system"]
    assert system["build-backend"] == "setuptools.build_meta"
    assert any(r.replace(" ", "").startswith("setuptools>=") for r in system["requires"])


def test_the_c_extension_is_built_and_used():
    # `make test` installs with a C compiler (.ci/run installs one): the C hot path must be
    # the one under test there, not silently the pure-Python fallback.
    from callmeter._native import speedups
    from callmeter.model import validate
    from callmeter.model.types import LLMMetrics

    if os.environ.get("CALLMETER_PURE_PYTHON", "").strip() not in ("", "0"):
        pytest.skip("CALLMETER_PURE_PYTHON is set: the pure-Python path was asked for")
    assert speedups is not None, "callmeter._speedups was not built: is a C compiler installed?"
    assert validate.CHECKS[LLMMetrics] is speedups.llm_check
    from callmeter import AgentSession
    from callmeter.metrics import UsageCollector
    from callmeter.session import LLMGeneration

    assert issubclass(AgentSession, speedups.SessionCore)
    assert issubclass(UsageCollector, speedups.CollectorCore)
    assert issubclass(LLMGeneration, speedups.GenerationCore)
    assert AgentSession.emit_metrics is speedups.SessionCore.emit_metrics
    assert AgentSession.llm_generation is speedups.SessionCore.llm_generation
    assert UsageCollector.collect is speedups.CollectorCore.collect
