"""Per-call latency sketches: DDSketch bins (1 % relative accuracy) in a compact binary form.

A sketch is a map from DDSketch's logarithmic bin key to a count, plus a count of zeros.
Serialized with msgpack it is a few dozen bytes for a call, and sketches of many calls merge
by adding counts, so percentiles over any set of calls come from the call rows alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

ACCURACY = 0.01
_GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_MIN = 1e-9  # values at or below this (seconds) count as zero


class _Wire(msgspec.Struct, array_like=True):
    zeros: int
    keys: list[int]
    counts: list[int]


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Wire)


def key_of(value: float) -> int | None:
    """The DDSketch bin key of ``value`` (None for zero)."""
    if value <= _MIN:
        return None
    return math.ceil(math.log(value) / _LOG_GAMMA)


def value_of(key: int) -> float:
    """The representative value of bin ``key`` (within 1 % of every value in the bin)."""
    return 2.0 * _GAMMA**key / (_GAMMA + 1)


class Sketch:
    """A mergeable latency sketch (DDSketch bins). ``count`` is exact."""

    __slots__ = ("bins", "zeros")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zeros = 0

    @property
    def count(self) -> int:
        """How many values were added."""
        return self.zeros + sum(self.bins.values())

    def add(self, values: Iterable[float]) -> None:
        """Add latencies (seconds); negative or non-finite values are ignored."""
        bins = self.bins
        get = bins.get
        log, ceil, inf = math.log, math.ceil, math.inf
        for v in values:
            if not (v >= 0 and v < inf):
                continue
            if v <= _MIN:
                self.zeros += 1
            else:  # key_of(v), inlined: a call per latency shows at ingest
                k = ceil(log(v) / _LOG_GAMMA)
                bins[k] = get(k, 0) + 1

    def merge(self, other: Sketch) -> None:
        """Add ``other``'s counts to this sketch."""
        self.zeros += other.zeros
        bins = self.bins
        for k, n in other.bins.items():
            bins[k] = bins.get(k, 0) + n

    def merge_bytes(self, data: bytes | None) -> None:
        """Merge a serialized sketch (None or empty bytes add nothing)."""
        if not data:
            return
        w = _dec.decode(data)
        self.zeros += w.zeros
        bins = self.bins
        for k, n in zip(w.keys, w.counts, strict=False):
            bins[k] = bins.get(k, 0) + n

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), within 1 %; None when empty."""
        total = self.count
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        for k in sorted(self.bins):
            seen += self.bins[k]
            if seen > rank:
                return value_of(k)
        return value_of(max(self.bins))

    def quantiles(self, *qs: float) -> list[float | None]:
        """:meth:`quantile` of each of ``qs``, from one pass over the sorted bins."""
        total = self.count
        if total == 0:
            return [None] * len(qs)
        keys = sorted(self.bins)
        out: list[float | None] = []
        for q in qs:
            rank = q * (total - 1)
            seen = self.zeros
            if rank < seen:
                out.append(0.0)
                continue
            for k in keys:
                seen += self.bins[k]
                if seen > rank:
                    out.append(value_of(k))
                    break
            else:
                out.append(value_of(keys[-1]))
        return out

    def to_bytes(self) -> bytes:
        """The sketch serialized (msgpack)."""
        keys = sorted(self.bins)
        return _enc.encode(_Wire(self.zeros, keys, [self.bins[k] for k in keys]))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Sketch:
        """A sketch from :meth:`to_bytes` output (None: an empty sketch)."""
        s = cls()
        s.merge_bytes(data)
        return s
