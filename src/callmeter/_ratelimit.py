"""Rate-limited logging: a problem that repeats per event is logged, not logged per event."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLog:
    """Logs at most one message per ``interval`` seconds per key; says how many it held back.

    Thread-safe. ``log(key, level, msg, *args)`` returns True when the message was logged.
    """

    __slots__ = ("_interval", "_last", "_lock", "_logger", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, key: str, level: int, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._suppressed.pop(key, 0)
        if held:
            msg = f"{msg} ({held} similar messages suppressed)"
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True
