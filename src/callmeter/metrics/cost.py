"""Cost arithmetic: exact USD (``decimal.Decimal``) for usage priced by :mod:`.pricing`.

The collector's per-model totals hold most of what pricing needs; a :class:`CostTracker`
fed the same events keeps the rest (per-turn usage: an append per event), and
:func:`price_tracker` turns both into money when a summary is asked for. Requests with at
least :data:`LARGE_REQUEST_TOKENS` input tokens are kept individually so that
genai-prices' tiered rates (a higher rate above e.g. 200k input tokens *per request*) are
applied per request, as providers bill them.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .pricing import Prices, ResolvedPrice
from .types import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics

__all__ = [
    "LARGE_REQUEST_TOKENS",
    "Amounts",
    "CostReport",
    "CostTracker",
    "format_usd",
    "price_amounts",
    "price_tracker",
]

log = logging.getLogger("callmeter.pricing")

LARGE_REQUEST_TOKENS = 32_000
"""Requests with this many input tokens or more are priced one by one (the lowest tier
threshold in genai-prices' snapshot is 32k tokens); smaller ones are priced in aggregate."""
MAX_LARGE_REQUESTS = 10_000
"""Per model (and per turn), large requests kept individually; beyond this they are
priced in aggregate, which can only pick a higher tier."""
DEFAULT_MAX_TURNS = 1_000
"""Turns whose cost a collector keeps by default (the most recent ones)."""

_MILLION = Decimal(1_000_000)
_SIXTY = Decimal(60)


@dataclass(slots=True)
class Amounts:
    """Billable quantities. Token counts follow genai-prices: ``input_tokens`` includes
    cached, cache-write and audio input tokens (OpenAI's ``prompt_tokens`` convention)."""

    requests: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    audio_seconds: float = 0.0
    characters: int = 0

    def add(self, o: Amounts) -> None:
        """Add ``o`` to these amounts."""
        self.requests += o.requests
        self.input_tokens += o.input_tokens
        self.cache_read_tokens += o.cache_read_tokens
        self.cache_write_tokens += o.cache_write_tokens
        self.output_tokens += o.output_tokens
        self.input_audio_tokens += o.input_audio_tokens
        self.output_audio_tokens += o.output_audio_tokens
        self.cache_audio_read_tokens += o.cache_audio_read_tokens
        self.audio_seconds += o.audio_seconds
        self.characters += o.characters

    def is_empty(self) -> bool:
        """True when there is nothing to bill (not even a request)."""
        return not (
            self.requests
            or self.input_tokens
            or self.output_tokens
            or self.audio_seconds
            or self.characters
        )


def amounts_of(m: Any) -> Amounts | None:
    """The billable amounts of one metrics event (None: not billable or usage unknown)."""
    t = type(m)
    if t is LLMMetrics:
        if not m.usage_reported:
            return None
        return Amounts(
            1,
            m.prompt_tokens,
            m.prompt_cached_tokens,
            m.cache_creation_tokens,
            m.completion_tokens,
            m.input_audio_tokens,
            m.output_audio_tokens,
        )
    if t is STTMetrics:
        return Amounts(
            1,
            m.input_tokens,
            0,
            0,
            m.output_tokens,
            m.input_audio_tokens,
            audio_seconds=m.audio_duration,
        )
    if t is TTSMetrics:
        return Amounts(
            1,
            m.input_tokens,
            output_tokens=m.output_tokens,
            audio_seconds=m.audio_duration,
            characters=m.characters_count,
        )
    if t is RealtimeModelMetrics:
        i, o = m.input_token_details, m.output_token_details
        cached_audio = i.cached_tokens_details.audio_tokens if i.cached_tokens_details else 0
        return Amounts(
            1,
            m.input_tokens,
            i.cached_tokens,
            0,
            m.output_tokens,
            i.audio_tokens,
            o.audio_tokens,
            cached_audio,
        )
    return None


_KIND = {LLMMetrics: "llm", STTMetrics: "stt", TTSMetrics: "tts", RealtimeModelMetrics: "realtime"}

ModelKey = tuple[str, str | None, str | None]
"""``(kind, provider, model)``, as :class:`~callmeter.metrics.UsageCollector` keys models."""


@dataclass(slots=True)
class _Bucket:
    small: Amounts = field(default_factory=Amounts)
    large: list[Amounts] = field(default_factory=list)
    unreported: int = 0


class _Turn:
    """Usage of one turn. Events are queued as they come (cheap) and folded into per-model
    vectors (:class:`Amounts` field order, then unreported requests) when the turn is
    priced or :data:`MAX_PENDING` events are queued."""

    __slots__ = ("cost", "large", "pending", "vectors")

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.vectors: dict[ModelKey, list[Any]] = {}
        self.large: dict[ModelKey, list[Amounts]] = {}
        self.cost: Decimal | None = None
        """Cached price of the turn; reset when the turn gets more usage."""

    def fold(self) -> None:
        """Add the queued events to the per-model vectors."""
        pending, self.pending = self.pending, []
        vectors = self.vectors
        for m in pending:
            t = m.__class__
            kind = _KIND[t]
            md = m.metadata
            key = (kind, None, None) if md is None else (kind, md.model_provider, md.model_name)
            v = vectors.get(key)
            if v is None:
                v = vectors[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, 0]
            if t is LLMMetrics:
                if not m.usage_reported:
                    v[_N] += 1
                elif m.prompt_tokens >= LARGE_REQUEST_TOKENS:
                    self._large(key, amounts_of(m))
                else:
                    v[0] += 1
                    v[1] += m.prompt_tokens
                    v[2] += m.prompt_cached_tokens
                    v[3] += m.cache_creation_tokens
                    v[4] += m.completion_tokens
                    v[5] += m.input_audio_tokens
                    v[6] += m.output_audio_tokens
            elif t is STTMetrics:
                v[0] += 1
                v[1] += m.input_tokens
                v[4] += m.output_tokens
                v[5] += m.input_audio_tokens
                v[8] += m.audio_duration
            elif t is TTSMetrics:
                v[0] += 1
                v[1] += m.input_tokens
                v[4] += m.output_tokens
                v[8] += m.audio_duration
                v[9] += m.characters_count
            else:  # realtime
                a = amounts_of(m)
                assert a is not None
                if a.input_tokens >= LARGE_REQUEST_TOKENS:
                    self._large(key, a)
                else:
                    for i, x in enumerate(_astuple(a)):
                        v[i] += x

    def _large(self, key: ModelKey, a: Amounts | None) -> None:
        if a is not None:
            lst = self.large.setdefault(key, [])
            if len(lst) < MAX_LARGE_REQUESTS:
                lst.append(a)
            else:
                v = self.vectors[key]
                for i, x in enumerate(_astuple(a)):
                    v[i] += x

    def buckets(self) -> dict[ModelKey, _Bucket]:
        self.fold()
        out: dict[ModelKey, _Bucket] = {}
        for key, v in self.vectors.items():
            out[key] = _Bucket(Amounts(*v[:_N]), [], v[_N])
        for key, lst in self.large.items():
            out.setdefault(key, _Bucket()).large.extend(lst)
        return out


def _astuple(a: Amounts) -> tuple[Any, ...]:
    return tuple(getattr(a, f) for f in Amounts.__dataclass_fields__)


_N = 10  # number of Amounts fields; index _N of a turn vector counts unreported requests
MAX_PENDING = 256
"""Events a turn queues before adding them up (bounds memory for very long turns)."""


class CostTracker:
    """What the collector's per-model totals do not hold but pricing needs.

    * requests of at least :data:`LARGE_REQUEST_TOKENS` input tokens, one by one (tiers);
    * cached audio tokens of realtime responses;
    * usage per turn (``speech_id``) and model, for at most ``max_turns`` turns (the most
      recent; older ones are counted in :attr:`dropped_turns`), so memory stays bounded.
    """

    __slots__ = ("_cached_audio", "_large", "_max_turns", "_turns", "dropped_turns")

    def __init__(self, max_turns: int = DEFAULT_MAX_TURNS) -> None:
        self._max_turns = max_turns
        self._large: dict[ModelKey, list[Amounts]] = {}
        self._cached_audio: dict[ModelKey, int] = {}
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self.dropped_turns = 0

    def add(self, m: Any) -> None:
        """Account one metrics event (ignores events that bill nothing)."""
        self.add_batch((m,))

    def add_batch(self, events: Iterable[Any]) -> None:
        """Account events, in order. The common case costs a dict lookup and an append."""
        turns = self._turns
        for m in events:
            t = m.__class__
            if t is LLMMetrics:
                if m.prompt_tokens >= LARGE_REQUEST_TOKENS and m.usage_reported:
                    self._call_large("llm", m)
            elif t is RealtimeModelMetrics:
                self._call_large("realtime", m)
            elif t is not STTMetrics and t is not TTSMetrics:
                continue
            sid = m.speech_id
            if sid is None:
                continue
            turn = turns.get(sid)
            if turn is None:
                turn = turns[sid] = _Turn()
                if len(turns) > self._max_turns:
                    turns.popitem(last=False)
                    self.dropped_turns += 1
            turn.cost = None
            pending = turn.pending
            pending.append(m)
            if len(pending) >= MAX_PENDING:
                turn.fold()

    def _call_large(self, kind: str, m: Any) -> None:
        md = m.metadata
        key = (kind, None, None) if md is None else (kind, md.model_provider, md.model_name)
        a = amounts_of(m)
        if a is None:
            return
        if a.cache_audio_read_tokens:
            self._cached_audio[key] = self._cached_audio.get(key, 0) + a.cache_audio_read_tokens
        if a.input_tokens >= LARGE_REQUEST_TOKENS:
            lst = self._large.setdefault(key, [])
            if len(lst) < MAX_LARGE_REQUESTS:
                lst.append(a)

    def call_bucket(self, key: ModelKey, mu: Any) -> _Bucket:
        """The whole call's usage of one model: the collector's totals ``mu`` (a
        ``ModelUsage``) with large requests split out."""
        large = self._large.get(key, [])
        unreported = mu.usage_unreported
        small = Amounts(
            mu.requests - unreported,
            mu.prompt_tokens,
            mu.prompt_cached_tokens,
            mu.cache_creation_tokens,
            mu.completion_tokens,
            mu.input_audio_tokens,
            mu.output_audio_tokens,
            self._cached_audio.get(key, 0),
            mu.audio_duration,
            mu.characters_count,
        )
        for a in large:
            small.requests -= a.requests
            small.input_tokens -= a.input_tokens
            small.cache_read_tokens -= a.cache_read_tokens
            small.cache_write_tokens -= a.cache_write_tokens
            small.output_tokens -= a.output_tokens
            small.input_audio_tokens -= a.input_audio_tokens
            small.output_audio_tokens -= a.output_audio_tokens
            small.cache_audio_read_tokens -= a.cache_audio_read_tokens
        return _Bucket(small, large, unreported)


# Token units: (rate name, Amounts field, dimensions). A unit covers the tokens of every
# unit whose dimensions are a superset of its own (genai-prices' model).
_UNITS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("input_mtok", "input_tokens", frozenset({"in"})),
    ("cache_read_mtok", "cache_read_tokens", frozenset({"in", "cache_read"})),
    ("cache_write_mtok", "cache_write_tokens", frozenset({"in", "cache_write"})),
    ("input_audio_mtok", "input_audio_tokens", frozenset({"in", "audio"})),
    ("cache_audio_read_mtok", "cache_audio_read_tokens", frozenset({"in", "audio", "cache_read"})),
    ("output_mtok", "output_tokens", frozenset({"out"})),
    ("output_audio_mtok", "output_audio_tokens", frozenset({"out", "audio"})),
)


@functools.cache
def _plan(priced: frozenset[str]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """For the priced token units, most specific first: (rate, field, indexes of the
    already-listed units it covers)."""
    units = sorted((u for u in _UNITS if u[0] in priced), key=lambda u: -len(u[2]))
    return tuple(
        (rate, fld, tuple(j for j in range(i) if dims < units[j][2]))
        for i, (rate, fld, dims) in enumerate(units)
    )


def _leaf_token_counts(a: Amounts, priced: frozenset[str]) -> list[tuple[str, int]]:
    """Tokens billed at each priced token rate, genai-prices style.

    A token is billed at the most specific priced rate that covers it; e.g. cached
    tokens are billed at ``input_mtok`` when ``cache_read_mtok`` is unset.
    """
    leaves: list[int] = []
    out: list[tuple[str, int]] = []
    for rate, fld, covered in _plan(priced):
        n = getattr(a, fld) - sum(leaves[j] for j in covered)
        if n < 0:
            raise ValueError(
                f"{fld} ({getattr(a, fld)}) is less than the more specific token counts it "
                "includes; prompt_tokens must include cached, cache-write and audio input "
                "tokens (OpenAI's convention)"
            )
        leaves.append(n)
        out.append((rate, n))
    return out


def price_amounts(price: ResolvedPrice, a: Amounts, kind: str) -> Decimal:
    """USD for ``a`` at ``price``. ``a`` may aggregate several requests (``a.requests``)."""
    e = price.rates
    if e is None:
        return _genai_cost(price, a, kind)
    total = Decimal(0)
    priced = frozenset(name for name in _TOKEN_RATES if getattr(e, name) is not None)
    for name, count in _leaf_token_counts(a, priced):
        if count:
            total += getattr(e, name) * count / _MILLION
    if e.audio_minute is not None and a.audio_seconds:
        total += e.audio_minute * audio_seconds(a) / _SIXTY
    if e.mchars is not None and a.characters:
        total += e.mchars * a.characters / _MILLION
    if e.request is not None:
        total += e.request * a.requests
    return to_money(total)


def audio_seconds(a: Amounts) -> Decimal:
    """Audio seconds as a Decimal rounded to the microsecond (float sums carry noise below)."""
    return Decimal(repr(a.audio_seconds)).quantize(_MICRO)


def to_money(value: Decimal) -> Decimal:
    """``value`` unchanged when it has at most 12 decimal places, else rounded to 1e-12 USD.

    Token and character rates give terminating decimals, kept exact; a per-minute rate
    divided by 60 may not terminate and is rounded to a millionth of a micro-dollar.
    """
    if value.as_tuple().exponent >= -12:  # type: ignore[operator]
        return value
    return value.quantize(_PICO, rounding=ROUND_HALF_EVEN)


_MICRO = Decimal("0.000001")
_PICO = Decimal("1e-12")


_TOKEN_RATES = (
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_mtok",
    "input_audio_mtok",
    "output_audio_mtok",
    "cache_audio_read_mtok",
)


def genai_usage(a: Amounts, kind: str) -> Any:
    """``a`` as a genai-prices ``Usage`` (imports genai-prices)."""
    from genai_prices import Usage

    values: dict[str, int | Decimal] = {
        "input_tokens": a.input_tokens,
        "cache_read_tokens": a.cache_read_tokens,
        "cache_write_tokens": a.cache_write_tokens,
        "output_tokens": a.output_tokens,
        "input_audio_tokens": a.input_audio_tokens,
        "output_audio_tokens": a.output_audio_tokens,
        "cache_audio_read_tokens": a.cache_audio_read_tokens,
    }
    if kind == "stt" and a.audio_seconds:
        values["audio_seconds"] = values["input_audio_seconds"] = audio_seconds(a)
    if kind == "tts":
        if a.audio_seconds:
            values["audio_seconds"] = values["output_audio_seconds"] = audio_seconds(a)
        if a.characters:
            values["input_characters"] = a.characters
    return Usage(**{k: v for k, v in values.items() if v})


def _genai_cost(price: ResolvedPrice, a: Amounts, kind: str) -> Decimal:
    assert price.genai is not None
    provider, info = price.genai
    calc = info.calc_price(genai_usage(a, kind), provider)
    total: Decimal = calc.total_price
    per_k = getattr(calc.model_price, "requests_kcount", None)
    if isinstance(per_k, Decimal) and a.requests > 1:
        total += per_k * (a.requests - 1) / 1000  # calc_price bills one request per call
    return to_money(total)


@dataclass(slots=True)
class CostReport:
    """The money side of a summary."""

    total: Decimal = Decimal(0)
    by_model: dict[ModelKey, Decimal | None] = field(default_factory=dict)
    sources: dict[ModelKey, str] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)
    complete: bool = True
    by_turn: dict[str, Decimal] = field(default_factory=dict)


_warned: set[tuple[str | None, str | None]] = set()
_warned_lock = threading.Lock()


def _warn_once(provider: str | None, model: str | None, why: str) -> None:
    with _warned_lock:
        if (provider, model) in _warned:
            return
        _warned.add((provider, model))
    log.warning(
        "no price for %s/%s (%s): its cost is not in the total, which is now a lower bound; "
        "add it to a price file (see docs/cost.md) to price it",
        provider or "unknown",
        model or "unknown",
        why,
    )


def _bucket_cost(price: ResolvedPrice, b: _Bucket, kind: str) -> Decimal:
    total = Decimal(0)
    if not b.small.is_empty():
        total += price_amounts(price, b.small, kind)
    for a in b.large:
        total += price_amounts(price, a, kind)
    return total


def _label(key: ModelKey) -> str:
    return f"{key[1] or 'unknown'}/{key[2] or 'unknown'}"


def price_tracker(
    tracker: CostTracker, prices: Prices, models: Mapping[ModelKey, Any]
) -> CostReport:
    """Price a call: ``models`` are the collector's per-model totals (``ModelUsage``),
    ``tracker`` what they lack. Never raises: a model whose price cannot be found or
    applied is listed in ``unpriced`` and makes the total a lower bound."""
    report = CostReport()
    resolved: dict[ModelKey, ResolvedPrice] = {}
    for key, mu in models.items():
        kind, provider, model = key
        b = tracker.call_bucket(key, mu)
        price = prices.lookup(model, provider) if model else None
        cost: Decimal | None = None
        why = "model name unknown" if not model else "not in any price table"
        if price is not None:
            try:
                cost = _bucket_cost(price, b, kind)
            except Exception as e:  # bad usage data must not break the summary
                price, why = None, f"pricing failed: {e}"
        if cost == 0 and price is not None and _billable(b) and _has_nonzero_rate(price):
            price, cost, why = None, None, "its price has no rate for the usage reported"
        report.by_model[key] = cost
        if cost is None or price is None:
            if _billable(b) or b.unreported:
                report.unpriced.append(_label(key))
                report.complete = False
                _warn_once(provider, model, why)
            continue
        resolved[key] = price
        report.sources[key] = price.source.describe()
        report.total += cost
        if b.unreported:
            report.complete = False  # requests without usage cost something unknown
    for sid, turn in tracker._turns.items():
        if turn.cost is None:
            t = Decimal(0)
            for key, tb in turn.buckets().items():
                price = resolved.get(key)
                if price is not None:
                    try:
                        t += _bucket_cost(price, tb, key[0])
                    except Exception:
                        log.debug("turn %s: pricing %s failed", sid, _label(key), exc_info=True)
            turn.cost = t
        report.by_turn[sid] = turn.cost
    return report


def _has_nonzero_rate(price: ResolvedPrice) -> bool:
    """False for a free model (all rates 0), whose zero cost is real."""
    if price.rates is not None:
        return any(getattr(price.rates, n) for n in (*_TOKEN_RATES, "audio_minute", "mchars"))
    try:
        mp = price.genai[1].get_prices(_now()) if price.genai else None
    except Exception:
        return True
    return any(_rate_value(v) > 0 for v in vars(mp).values()) if mp else True


def _rate_value(v: Any) -> Decimal:
    if isinstance(v, Decimal):
        return v
    base = getattr(v, "base", None)  # genai-prices TieredPrices
    return base if isinstance(base, Decimal) else Decimal(0)


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(tz=dt.UTC)


def _billable(b: _Bucket) -> bool:
    s = b.small
    return bool(b.large or s.input_tokens or s.output_tokens or s.audio_seconds or s.characters)


def format_usd(value: Decimal, places: int = 4, *, lower_bound: bool = False) -> str:
    """``value`` rounded for display, e.g. ``$0.0123``; ``≥ $0.0123`` for a lower bound."""
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{'≥ ' if lower_bound else ''}${q}"
