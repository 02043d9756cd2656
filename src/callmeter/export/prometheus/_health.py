"""Health and load of a process that runs calls: CPU utilisation and active calls."""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any

log = logging.getLogger("callmeter.export")


class HealthStatus(enum.StrEnum):
    """What :meth:`CallMonitor.health` answers (and ``/health`` says in its body)."""

    OK = "ok"
    """Ready for more calls (``/health`` answers 200)."""
    UNDER_LOAD = "under load"
    """CPU utilisation over the threshold or active calls at the maximum (503)."""
    STOPPED = "stopped"
    """The monitor was stopped or closed: take no more calls (503)."""


class CPUSampler:
    """Whole-machine CPU utilisation (0-1) from ``psutil.cpu_times()`` deltas.

    A reading covers the time since the previous one, at least ``min_interval`` seconds
    (a reading asked for sooner returns the previous value), so calling it from a load
    function every few hundred milliseconds is cheap. Without psutil it reports 0.0 and
    logs once.
    """

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._psutil: Any = None
        try:
            import psutil

            self._psutil = psutil
            self._last = psutil.cpu_times()
        except ImportError:
            log.warning(
                "callmeter: psutil is not installed, CPU load reads as 0: "
                "pip install 'callmeter[prometheus]'"
            )
            self._last = None
        self._last_at = time.monotonic()
        self._value = 0.0

    def utilisation(self) -> float:
        """CPU busy fraction over the last interval, 0-1."""
        if self._psutil is None:
            return 0.0
        with self._lock:
            now = time.monotonic()
            if now - self._last_at < self.min_interval and self._last_at:
                return self._value
            cur = self._psutil.cpu_times()
            prev, self._last, self._last_at = self._last, cur, now
            total = sum(cur) - sum(prev)
            idle = (cur.idle + getattr(cur, "iowait", 0.0)) - (
                prev.idle + getattr(prev, "iowait", 0.0)
            )
            if total > 0:
                self._value = min(1.0, max(0.0, 1.0 - idle / total))
            return self._value
