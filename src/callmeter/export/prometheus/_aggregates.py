"""Plain-Python aggregates a :class:`~callmeter.export.prometheus.CallMonitor` keeps between
scrapes: fixed-bucket histograms, capped label values, per-model usage and cost.

The monitor folds records into these in batches and renders them at scrape time.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from bisect import bisect_left
from decimal import Decimal
from typing import Any

from ...pricing.cost import LARGE_REQUEST_TOKENS, Amounts, price_amounts

log = logging.getLogger("callmeter.export")

CALL_BUCKETS: tuple[float, ...] = (
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0,
    1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
)  # fmt: skip
"""Call duration buckets in seconds: 1 s to 24 h."""

VOICE_BUCKETS: tuple[float, ...] = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
"""Latency buckets in seconds for voice: dense between 0.1 and 3 s, where a conversation
feels fluent or not."""

OTHER = "other"
"""The label value every name beyond a cap shares."""
UNKNOWN = "unknown"
"""The label value of a missing provider or model."""
MAX_LABEL_LENGTH = 128


def check_buckets(name: str, buckets: Any) -> tuple[float, ...]:
    """``buckets`` as a sorted tuple of distinct finite positive floats, or raise."""
    from ...errors import InvalidArgumentError

    try:
        values = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{name} must be a sequence of numbers of seconds, got {buckets!r}"
        ) from None
    if (
        not values
        or any(not (0 < v < math.inf) for v in values)
        or any(b <= a for a, b in itertools.pairwise(values))
    ):
        raise InvalidArgumentError(
            f"{name} must be increasing, finite and positive (seconds), got {buckets!r}"
        )
    return values


def clean_label(value: str) -> str:
    """A label value that always encodes: invalid UTF-8 (lone surrogates) replaced,
    at most :data:`MAX_LABEL_LENGTH` characters."""
    if not isinstance(value, str):
        value = str(value)
    if not value:
        return UNKNOWN
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:MAX_LABEL_LENGTH]


class CappedLabels:
    """Maps names to label values: the first ``limit`` distinct names keep theirs, every
    later one is :data:`OTHER`. Memory stays at ``limit`` entries whatever comes in."""

    __slots__ = ("_map", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._map: dict[Any, str] = {}

    def __call__(self, name: Any) -> str:
        value = self._map.get(name)
        if value is not None:
            return value
        if name is None:
            return UNKNOWN
        if len(self._map) >= self.limit:
            return OTHER
        value = self._map[name] = clean_label(name)
        return value

    def __len__(self) -> int:
        return len(self._map)


class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of observed values."""

    __slots__ = ("counts", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.counts = [0] * (n_buckets + 1)
        self.sum = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.sum += value

    def snapshot(self, les: tuple[str, ...]) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs (+Inf last) and the sum, for rendering."""
        out = []
        total = 0
        for le, c in zip(les, self.counts, strict=True):
            total += c
            out.append((le, float(total)))
        return out, self.sum


class HistogramFamily:
    """Histograms of one metric, one per label tuple."""

    __slots__ = ("bounds", "children", "les")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        from prometheus_client.utils import floatToGoString

        self.bounds = bounds
        self.les = (*(floatToGoString(b) for b in bounds), "+Inf")
        self.children: dict[tuple[str, ...], Histogram] = {}

    def child(self, key: tuple[str, ...]) -> Histogram:
        h = self.children.get(key)
        if h is None:
            h = self.children[key] = Histogram(len(self.bounds))
        return h


def valid_seconds(x: Any) -> bool:
    """A real duration: a finite number in [0, 1e9]."""
    return (x.__class__ is float and 0.0 <= x <= 1e9) or (x.__class__ is int and 0 <= x <= 10**9)


class ModelUsage:
    """Usage and cost of one (kind, provider, model), as the monitor folds it."""

    __slots__ = (
        "_cost",
        "_cost_at",
        "kind",
        "large",
        "large_cost",
        "model",
        "price",
        "priced",
        "provider",
        "reasoning",
        "small",
        "unpriced_requests",
    )

    def __init__(self, kind: str, provider: str | None, model: str | None) -> None:
        self.kind = kind
        self.provider = provider
        self.model = model
        self.small = Amounts()
        """Requests below LARGE_REQUEST_TOKENS input tokens, added up (priced at scrape)."""
        self.large = Amounts()
        """Large requests added up (each was priced when folded)."""
        self.large_cost = Decimal(0)
        self.reasoning = 0
        self.unpriced_requests = 0
        self.price: Any = None
        self.priced = False  # looked up yet
        self._cost = Decimal(0)
        self._cost_at = Amounts()  # the part of ``small`` already in _cost

    def add(self, a: Amounts, prices: Any) -> None:
        """Add one request's amounts (a large request is priced now, alone)."""
        if a.input_tokens >= LARGE_REQUEST_TOKENS:
            price = self.lookup(prices)
            if price is not None:
                try:
                    self.large_cost += price_amounts(price, a, self.kind)
                except Exception as e:
                    log.warning("callmeter: cannot price %s/%s: %s", self.provider, self.model, e)
                    self.unpriced_requests += a.requests
            self.large.add(a)
        else:
            self.small.add(a)

    def lookup(self, prices: Any) -> Any:
        if not self.priced:
            self.priced = True
            if prices is not None and self.model:
                try:
                    self.price = prices.lookup(self.model, self.provider)
                except Exception:
                    log.exception("callmeter: price lookup failed for %s", self.model)
        return self.price

    def cost(self, prices: Any) -> Decimal | None:
        """Exact USD so far, or None when the model has no price.

        Only the usage added since the previous call is priced, and added to what was
        priced before: the counter never goes down, even if a rate changes on a date.
        """
        price = self.lookup(prices)
        if price is None:
            return None
        small = self.small
        if self._cost_at.requests != small.requests:
            delta = _minus(small, self._cost_at)
            try:
                self._cost += price_amounts(price, delta, self.kind, base_tier=True)
            except Exception as e:
                log.warning("callmeter: cannot price %s/%s: %s", self.provider, self.model, e)
                return None
            self._cost_at = copy.copy(small)
        return self._cost + self.large_cost

    def tokens(self) -> dict[str, int]:
        """Tokens by kind (input includes cached, cache-write and audio input tokens)."""
        s, g = self.small, self.large
        return {
            "input": s.input_tokens + g.input_tokens,
            "output": s.output_tokens + g.output_tokens,
            "cached_input": s.cache_read_tokens + g.cache_read_tokens,
            "cache_write": s.cache_write_tokens + g.cache_write_tokens,
            "input_audio": s.input_audio_tokens + g.input_audio_tokens,
            "output_audio": s.output_audio_tokens + g.output_audio_tokens,
            "reasoning": self.reasoning,
        }

    @property
    def requests(self) -> int:
        return self.small.requests + self.large.requests


def _minus(a: Amounts, b: Amounts) -> Amounts:
    return Amounts(
        a.requests - b.requests,
        a.input_tokens - b.input_tokens,
        a.cache_read_tokens - b.cache_read_tokens,
        a.cache_write_tokens - b.cache_write_tokens,
        a.output_tokens - b.output_tokens,
        a.input_audio_tokens - b.input_audio_tokens,
        a.output_audio_tokens - b.output_audio_tokens,
        a.cache_audio_read_tokens - b.cache_audio_read_tokens,
        a.audio_us - b.audio_us,
        a.characters - b.characters,
    )
