"""Event hot path counted in executed machine instructions (valgrind's callgrind).

Timings on a shared machine vary by 1.5-2x from run to run; instruction counts do not
depend on the load. For each path of ``bench/event_path.py`` (emit + collect, the
``llm_generation`` helper) this runs the path under callgrind for a short and a long run
(after the same warm-up) and divides the difference by the extra events, with the C hot
path and with ``CALLMETER_PURE_PYTHON=1``, and livekit-agents' create + collect as the
baseline, then prints the ratios.

Run: .venv/bin/python bench/event_path_instructions.py   (needs valgrind; about 5 minutes)
Inside valgrind it is started as: event_path_instructions.py --run PATH EVENTS
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

SHORT, LONG = 2000, 10000
WARMUP = 2000


def _run_path(name: str, n: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import event_path

    paths = event_path.callmeter_paths()
    lk = event_path.livekit_paths()
    if lk is not None:
        paths["lk_full"] = lk[1]
    fn = paths[name]
    fn(WARMUP)
    fn(n)


def _instructions(name: str, n: int, pure: bool) -> int:
    env = {**os.environ, "CALLMETER_PURE_PYTHON": "1" if pure else "0"}
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.abspath(__file__), "--run", name, str(n)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    match = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{proc.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_event(name: str, pure: bool = False) -> float:
    """Instructions per event of one path (long run minus short run)."""
    return (_instructions(name, LONG, pure) - _instructions(name, SHORT, pure)) / (LONG - SHORT)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--run":
        _run_path(sys.argv[2], int(sys.argv[3]))
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        raise SystemExit(2)
    try:
        import livekit.agents  # noqa: F401  (the baseline)
    except ImportError:
        print("livekit-agents is not installed (pip install -e '.[bench]')", file=sys.stderr)
        raise SystemExit(2) from None
    from callmeter._native import speedups

    if speedups is None:
        print("callmeter._speedups is not built: only the pure-Python rows are meaningful")
    rows = [
        ("callmeter emit + collect, C hot path", "full", False),
        ("callmeter emit + collect, pure Python", "full", True),
        ("callmeter llm_generation helper, C hot path", "helper", False),
        ("callmeter llm_generation helper, pure Python", "helper", True),
        ("livekit-agents create + ModelUsageCollector.collect", "lk_full", False),
    ]
    counts = {}
    for label, name, pure in rows:
        counts[(name, pure)] = per_event(name, pure)
        print(f"{label:<52} {counts[(name, pure)]:>9,.0f} instructions/event", flush=True)
    lk = counts[("lk_full", False)]
    for name, goal in (("full", 4), ("helper", 2)):
        c, py = counts[(name, False)], counts[(name, True)]
        print(
            f"{name:>6}: {lk / c:.1f}x fewer than LiveKit with C, {lk / py:.1f}x pure Python "
            f"(goal >= {goal}x)"
        )


if __name__ == "__main__":
    main()
