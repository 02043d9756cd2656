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


class CState:
    """Mixin for a class with a C base from this module: ``copy`` and ``pickle`` see the
    values in the base's slots, as they see the ``__dict__`` of the pure-Python class, and
    every pickle protocol works (0 and 1 would otherwise try to rebuild the C base)."""

    __slots__ = ()

    def __getstate__(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        base = next(c for c in type(self).__mro__ if c.__module__ == "callmeter._speedups")
        slots = {}
        for name, descr in vars(base).items():
            if isinstance(descr, MemberDescriptorType | GetSetDescriptorType):
                with contextlib.suppress(AttributeError):  # deleted: stays deleted in the copy
                    slots[name] = descr.__get__(self, type(self))
        return getattr(self, "__dict__", None) or None, slots

    def __reduce__(self) -> tuple[Any, ...]:
        return copyreg.__newobj__, (type(self),), self.__getstate__()
