"""The optional C implementation of the per-event hot path (``callmeter._speedups``).

Built from ``_speedups.c`` when the package is installed with a C compiler available;
without it (or with ``CALLMETER_PURE_PYTHON=1`` in the environment) :data:`speedups` is
None and the pure-Python functions it mirrors run instead. Both give the same results:
the tests run each C function against its Python counterpart.
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None = None
if os.environ.get("CALLMETER_PURE_PYTHON", "").strip() in ("", "0"):
    try:
        from . import _speedups as speedups  # type: ignore[attr-defined,no-redef]
    except ImportError:
        speedups = None
