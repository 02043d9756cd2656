"""The per-event path of a UsageCollector: check an event and append it to the batch.

:class:`Collecting` is the reference implementation in Python. When the optional C
extension is built, :data:`CollectingBase` puts its C counterpart
(``callmeter._speedups.CollectorCore``) in front of it; the C ``collect`` calls the
Python methods below for everything but the common case, so both behave the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .._native import CState, speedups
from ..model import validate
from ..model.events import CloseEvent
from ..model.types import AgentMetrics

if TYPE_CHECKING:
    from .collector import UsageCollector

logger = logging.getLogger("callmeter.metrics")
_CHECKS = validate.CHECKS
_last_valid = validate.last_valid


class Collecting:
    """``collect`` and ``__call__``; mixed into :class:`UsageCollector`."""

    __slots__ = ()

    def collect(self: UsageCollector, metrics: AgentMetrics) -> None:
        """Add one metrics event; an invalid one is rejected (logged, counted). Never raises.

        Event types without totals (``VADMetrics``) are kept but add to no total.
        """
        if metrics is not _last_valid.event:  # not just validated by a session
            if type(metrics) is CloseEvent:  # the call's end: prices call-level charges
                self._collect_close(metrics)
                return
            fn = _CHECKS.get(type(metrics))
            try:
                ok = fn is not None and fn(metrics) is None
            except Exception:
                ok = False
            if not ok:
                self._collect_slow(metrics)
                return
        elif type(metrics) not in _CHECKS:  # a subclass a session accepted: counted as its base
            self._collect_slow(metrics)
            return
        buf = self._buf
        buf.append(metrics)  # atomic: no lock on the per-event path
        if len(buf) >= self._batch:
            self._flush()

    __call__ = collect

    def _collect_slow(self: UsageCollector, metrics: Any) -> None:
        # The full check: it names the bad field, and accepts valid subclasses.
        reason = validate.check(metrics)
        if reason is not None:
            self._rejects.reject("UsageCollector", reason, metrics)
            self.note_rejected(metrics)
            return
        buf = self._buf
        buf.append(validate.as_counted(metrics))
        if len(buf) >= self._batch:
            self._flush()


CollectingBase = Collecting
"""Collecting, with its common case in C when the extension is built."""
if not TYPE_CHECKING and speedups is not None:
    speedups.configure_collect(
        CloseEvent, _CHECKS, _last_valid, Collecting.collect, validate.as_counted
    )

    class CollectingBase(speedups.CollectorCore, Collecting, CState):
        """:class:`Collecting` with its common case in C."""

        __slots__ = ()
