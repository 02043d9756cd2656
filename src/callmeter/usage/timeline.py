"""Interval arithmetic: the wall-clock union of possibly overlapping intervals."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from operator import sub
from typing import Any


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sort and merge intervals into disjoint, ordered ``(start, end)`` pairs."""
    ordered = sorted(intervals)
    if not ordered:
        return []
    merged: list[tuple[float, float]] = []
    append = merged.append
    cur_start, cur_end = ordered[0]
    for start, end in ordered:
        if start > cur_end:
            append((cur_start, cur_end))
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    append((cur_start, cur_end))
    return merged


def union_duration(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the intervals, overlaps counted once."""
    return sum(end - start for start, end in merge_intervals(intervals))


class IntervalUnion:
    """Running union of intervals with bounded memory.

    Keeps the union as sorted, disjoint intervals in two parallel lists. An interval that
    starts after (or inside) the last one, the usual case as metrics arrive in end order,
    is an append or an extension; any other is merged in place with two bisections.
    At most ``max_intervals`` disjoint intervals are kept: beyond that the oldest half is
    folded into a finished total and a watermark, and the part of a late interval before
    the watermark is not counted (it cannot be told apart from time already counted).
    """

    __slots__ = ("_ends", "_folded", "_max", "_starts", "_watermark")

    def __init__(self, max_intervals: int = 4096) -> None:
        self._max = max(2, max_intervals)
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._folded = 0.0
        self._watermark = float("-inf")

    def add(self, start: float, end: float) -> None:
        """Add the interval ``[start, end]``."""
        starts, ends = self._starts, self._ends
        if ends and start > ends[-1]:
            starts.append(start)
            ends.append(end)
            if len(starts) > self._max:
                self._fold()
        elif ends and start >= starts[-1]:
            if end > ends[-1]:
                ends[-1] = end
        else:
            self._insert(start, end)

    def add_timed(self, metrics: Iterable[Any]) -> None:
        """Add ``[m.started_at, m.started_at + m.duration]`` for each metric."""
        starts, ends = self._starts, self._ends
        for m in metrics:
            start = m.started_at
            end = start + m.duration
            if ends and start > ends[-1]:
                starts.append(start)
                ends.append(end)
            elif ends and start >= starts[-1]:
                if end > ends[-1]:
                    ends[-1] = end
            else:
                self._insert(start, end)
        if len(starts) > self._max:
            self._fold()

    def _insert(self, start: float, end: float) -> None:
        if end <= self._watermark:
            return
        start = max(start, self._watermark)
        starts, ends = self._starts, self._ends
        lo = bisect_left(ends, start)  # first kept interval that ends at or after start
        hi = bisect_right(starts, end)  # kept intervals that start at or before end
        if lo >= hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
        else:
            starts[lo:hi] = [min(start, starts[lo])]
            ends[lo:hi] = [max(end, ends[hi - 1])]

    def _fold(self) -> None:
        k = len(self._starts) - self._max // 2
        self._folded += sum(map(sub, self._ends[:k], self._starts[:k]))
        self._watermark = self._ends[k - 1]
        del self._starts[:k]
        del self._ends[:k]

    def total(self) -> float:
        """Seconds covered by at least one interval."""
        return self._folded + sum(map(sub, self._ends, self._starts))

    def clear(self) -> None:
        """Forget every interval."""
        self.__init__(self._max)  # type: ignore[misc]
