"""The optional C implementation of the per-event hot path (``callmeter._speedups``).

Built from ``_speedups.c`` when the package is installed with a C compiler available;
without it (or with ``CALLMETER_PURE_PYTHON=1`` in the environment) :data:`speedups` is
None and the pure-Python functions it mirrors run instead. Both give the same results:
the tests run each C function against its Python counterpart.
"""

from __future__ import annotations

import contextlib
import copyreg
import os
from types import GetSetDescriptorType, MemberDescriptorType, ModuleType
from typing import Any

speedups: ModuleType | None = None
if os.environ.get("CALLMETER_PURE_PYTHON", "").strip() in ("", "0"):
    try:
        from . import _speedups as speedups  # type: ignore[attr-defined,no-redef]
    except ImportError:
        speedups = None


def c_reduce(obj: object, base: type) -> tuple[Any, ...]:
    """``__reduce__`` for a class with a C base from this module: rebuilt with
    ``cls.__new__`` and :func:`c_state`, with every pickle protocol (0 and 1 would
    otherwise try to rebuild the C base itself)."""
    return copyreg.__newobj__, (type(obj),), c_state(obj, base)


def c_state(obj: object, base: type) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``__getstate__`` for a class with a C base from this module: its ``__dict__`` and
    the values in the base's slots, so ``copy`` and ``pickle`` treat it as they treat the
    pure-Python class (whose state is all in ``__dict__``)."""
    slots = {}
    for name, descr in vars(base).items():
        if isinstance(descr, MemberDescriptorType | GetSetDescriptorType):
            with contextlib.suppress(AttributeError):  # deleted: stays deleted in the copy
                slots[name] = descr.__get__(obj, type(obj))
    return getattr(obj, "__dict__", None) or None, slots
