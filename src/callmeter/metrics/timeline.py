"""Interval arithmetic: the wall-clock union of possibly overlapping intervals."""

from __future__ import annotations

from collections.abc import Iterable


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


def clip_intervals(
    intervals: Iterable[tuple[float, float]], lo: float, hi: float
) -> list[tuple[float, float]]:
    """The parts of the intervals that lie within ``[lo, hi]`` (empty parts dropped)."""
    out = []
    for start, end in intervals:
        s, e = max(start, lo), min(end, hi)
        if e > s:
            out.append((s, e))
    return out


class IntervalUnion:
    """Running union of intervals with bounded memory.

    Adding is an append (the hot path); merging happens in batches. At most
    ``max_intervals`` disjoint intervals are kept: beyond that the oldest are folded into a
    finished total and a watermark, and the part of a late interval that starts before the
    watermark is not counted (it cannot be told apart from time already counted). Events
    arrive when they end, so in practice only intervals older than thousands of later
    disjoint ones are affected.
    """

    __slots__ = ("_folded", "_max", "_merged", "_pending", "_watermark")

    def __init__(self, max_intervals: int = 4096) -> None:
        self._max = max_intervals
        self._pending: list[tuple[float, float]] = []
        self._merged: list[tuple[float, float]] = []
        self._folded = 0.0
        self._watermark = float("-inf")

    def add(self, start: float, end: float) -> None:
        """Add the interval ``[start, end]``."""
        pending = self._pending
        pending.append((start, end))
        if len(pending) >= self._max:
            self._compact()

    def extend(self, intervals: list[tuple[float, float]]) -> None:
        """Add many ``(start, end)`` intervals."""
        pending = self._pending
        pending.extend(intervals)
        if len(pending) >= self._max:
            self._compact()

    def _compact(self) -> None:
        pending = self._pending
        watermark = self._watermark
        if pending and min(pending)[0] < watermark:
            pending = [(max(s, watermark), e) for s, e in pending if e > watermark]
        merged = merge_intervals(self._merged + pending)
        self._pending = []
        excess = len(merged) - self._max // 2
        if excess > 0:
            self._folded += sum(e - s for s, e in merged[:excess])
            self._watermark = merged[excess - 1][1]
            merged = merged[excess:]
        self._merged = merged

    def total(self) -> float:
        """Seconds covered by at least one interval."""
        self._compact()
        return self._folded + sum(e - s for s, e in self._merged)

    def clear(self) -> None:
        """Forget every interval."""
        self.__init__(self._max)  # type: ignore[misc]
