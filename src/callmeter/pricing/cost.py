"""Cost arithmetic: exact USD (``decimal.Decimal``) for usage priced by :mod:`.pricing`.

The collector's per-model totals hold most of what pricing needs; a :class:`CostTracker`
fed the same events keeps the rest (per-turn usage: an append per event), and
:func:`price_tracker` turns both into money when a summary is asked for. Requests with at
least :data:`LARGE_REQUEST_TOKENS` input tokens are kept individually so that
genai-prices' tiered rates (a higher rate above e.g. 200k input tokens *per request*) are
applied per request, as providers bill them; smaller ones are added up and billed at the
base (lowest-tier) rates, which is exact because each of them is below the lowest tier
start.

Speech requests are also counted by which quantities they carry (tokens, audio seconds,
characters), so that a request carrying none of the quantities its model's price bills
(a TTS request reporting only characters for a price per audio minute) makes the total a
lower bound instead of adding nothing to it.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ..model.types import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics
from .prices import Prices, ResolvedPrice

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
threshold in genai-prices' snapshot is 32k tokens); smaller ones are priced in aggregate
at the base-tier rates."""
MAX_LARGE_REQUESTS = 10_000
"""Per model (and per turn), large requests kept individually; beyond this they are
priced in aggregate with each other, which can only pick a higher tier."""
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
    """Requests below :data:`LARGE_REQUEST_TOKENS`: priced together at base-tier rates."""
    large: list[Amounts] = field(default_factory=list)
    """Large requests, priced one by one."""
    overflow: Amounts = field(default_factory=Amounts)
    """Large requests beyond :data:`MAX_LARGE_REQUESTS`, priced together (tier from the sum)."""
    unreported: int = 0
    quantities: list[int] | None = None
    """Speech requests per quantity mask (``_Q_*`` bits), or None. For a turn, 1 stands
    for "some"."""


# Bits of a speech request's quantity mask: which billable quantities it carries.
_Q_INPUT = 1
_Q_INPUT_AUDIO = 2
_Q_OUTPUT = 4
_Q_AUDIO = 8
_Q_CHARS = 16
_N_MASKS = 32


def speech_mask(m: STTMetrics | TTSMetrics) -> int:
    """The ``_Q_*`` bits of the billable quantities a speech request carries."""
    mask = _Q_AUDIO if m.audio_duration else 0
    if m.input_tokens:
        mask |= _Q_INPUT
    if m.output_tokens:
        mask |= _Q_OUTPUT
    if m.__class__ is TTSMetrics:
        if m.characters_count:
            mask |= _Q_CHARS
    elif m.input_audio_tokens:
        mask |= _Q_INPUT_AUDIO
    return mask


def _probe(mask: int) -> Amounts:
    """Usage with a sizeable amount of each quantity in ``mask`` (and no request)."""
    big = 1_000_000
    audio_tokens = big if mask & _Q_INPUT_AUDIO else 0
    return Amounts(
        0,
        (big if mask & _Q_INPUT else 0) + audio_tokens,
        input_audio_tokens=audio_tokens,
        output_tokens=big if mask & _Q_OUTPUT else 0,
        audio_seconds=60.0 if mask & _Q_AUDIO else 0.0,
        characters=big if mask & _Q_CHARS else 0,
    )


class _Turn:
    """Usage of one turn. Events are queued as they come (cheap) and folded into per-model
    vectors (:class:`Amounts` field order, then unreported requests) when the turn is
    priced or :data:`MAX_PENDING` events are queued."""

    __slots__ = ("cost", "large", "overflow", "partial", "pending", "vectors")

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.vectors: dict[ModelKey, list[Any]] = {}
        self.large: dict[ModelKey, list[Amounts]] = {}
        self.overflow: dict[ModelKey, Amounts] = {}
        self.cost: Decimal | None = None
        """Cached price of the turn; reset when the turn gets more usage."""
        self.partial = False
        """Whether :attr:`cost` is a lower bound (valid while ``cost`` is set)."""

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
                v = vectors[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0]
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
                v[_M] |= 1 << speech_mask(m)
            elif t is TTSMetrics:
                v[0] += 1
                v[1] += m.input_tokens
                v[4] += m.output_tokens
                v[8] += m.audio_duration
                v[9] += m.characters_count
                v[_M] |= 1 << speech_mask(m)
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
                self.overflow.setdefault(key, Amounts()).add(a)

    def buckets(self) -> dict[ModelKey, _Bucket]:
        self.fold()
        out: dict[ModelKey, _Bucket] = {}
        for key, v in self.vectors.items():
            out[key] = _Bucket(Amounts(*v[:_N]), [], Amounts(), v[_N], _mask_list(v[_M]))
        for key, lst in self.large.items():
            out.setdefault(key, _Bucket()).large.extend(lst)
        for key, a in self.overflow.items():
            out.setdefault(key, _Bucket()).overflow.add(a)
        return out


def _mask_list(bits: int | None) -> list[int] | None:
    """A turn's set of masks as per-mask counts (1: some requests)."""
    if not bits:
        return None
    return [(bits >> mask) & 1 for mask in range(_N_MASKS)]


def _astuple(a: Amounts) -> tuple[Any, ...]:
    return tuple(getattr(a, f) for f in Amounts.__dataclass_fields__)


_N = 10  # number of Amounts fields; index _N of a turn vector counts unreported requests
_M = 11  # index of a turn vector's set of speech quantity masks (bit 1 << mask)
MAX_PENDING = 256
"""Events a turn queues before adding them up (bounds memory for very long turns)."""


class CostTracker:
    """What the collector's per-model totals do not hold but pricing needs.

    * requests of at least :data:`LARGE_REQUEST_TOKENS` input tokens, one by one (tiers);
    * cached audio tokens of realtime responses;
    * speech (STT, TTS) requests counted by which quantities they carry, so requests that
      carry nothing their price bills are noticed;
    * usage per turn (``speech_id``) and model, for at most ``max_turns`` turns (the most
      recent; older ones are counted in :attr:`dropped_turns`), so memory stays bounded.
    """

    __slots__ = (
        "_cached_audio",
        "_large",
        "_max_turns",
        "_overflow",
        "_quantities",
        "_turns",
        "dropped_turns",
    )

    def __init__(self, max_turns: int = DEFAULT_MAX_TURNS) -> None:
        self._max_turns = max_turns
        self._large: dict[ModelKey, list[Amounts]] = {}
        self._overflow: dict[ModelKey, Amounts] = {}
        self._cached_audio: dict[ModelKey, int] = {}
        # kind -> model -> provider -> requests per quantity mask (nested: cheaper per event)
        self._quantities: dict[str, dict[str | None, dict[str | None, list[int]]]] = {
            "stt": {},
            "tts": {},
        }
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self.dropped_turns = 0

    def add_batch(self, events: Iterable[Any]) -> None:
        """Account events, in order. The common case costs a dict lookup and an append
        (and for speech, counting which quantities the request carries)."""
        turns = self._turns
        q_stt, q_tts = self._quantities["stt"], self._quantities["tts"]
        for m in events:
            t = m.__class__
            if t is LLMMetrics:
                if m.prompt_tokens >= LARGE_REQUEST_TOKENS and m.usage_reported:
                    self._call_large("llm", m)
            elif t is RealtimeModelMetrics:
                self._call_large("realtime", m)
            elif t is STTMetrics or t is TTSMetrics:
                mask = speech_mask(m)
                by_model = q_tts if t is TTSMetrics else q_stt
                md = m.metadata
                model, provider = (None, None) if md is None else (md.model_name, md.model_provider)
                by_provider = by_model.get(model)
                if by_provider is None:
                    by_provider = by_model[model] = {}
                counts = by_provider.get(provider)
                if counts is None:
                    counts = by_provider[provider] = [0] * _N_MASKS
                counts[mask] += 1
            else:
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
            else:
                self._overflow.setdefault(key, Amounts()).add(a)

    def call_bucket(self, key: ModelKey, mu: Any) -> _Bucket:
        """The whole call's usage of one model: the collector's totals ``mu`` (a
        ``ModelUsage``) with large requests split out."""
        large = self._large.get(key, [])
        overflow = self._overflow.get(key) or Amounts()
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
        for a in (*large, overflow):
            small.requests -= a.requests
            small.input_tokens -= a.input_tokens
            small.cache_read_tokens -= a.cache_read_tokens
            small.cache_write_tokens -= a.cache_write_tokens
            small.output_tokens -= a.output_tokens
            small.input_audio_tokens -= a.input_audio_tokens
            small.output_audio_tokens -= a.output_audio_tokens
            small.cache_audio_read_tokens -= a.cache_audio_read_tokens
        by_model = self._quantities.get(key[0])
        quantities = by_model.get(key[2], {}).get(key[1]) if by_model is not None else None
        return _Bucket(small, large, overflow, unreported, quantities)


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


def price_amounts(
    price: ResolvedPrice, a: Amounts, kind: str, *, base_tier: bool = False
) -> Decimal:
    """USD for ``a`` at ``price``. ``a`` may aggregate several requests (``a.requests``).

    genai-prices picks a tiered rate from the input tokens of ``a`` as a whole, which is
    right for one request. For an aggregate of requests that are each below the lowest
    tier start (:data:`LARGE_REQUEST_TOKENS`), pass ``base_tier=True``: tiered rates are
    then billed at their base rate.
    """
    e = price.rates
    if e is None:
        return _genai_cost(price, a, kind, base_tier)
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


def _genai_cost(price: ResolvedPrice, a: Amounts, kind: str, base_tier: bool = False) -> Decimal:
    assert price.genai is not None
    provider, info = price.genai
    usage = genai_usage(a, kind)
    base = _base_tier_prices(info.get_prices(_now())) if base_tier else None
    if base is None:
        calc = info.calc_price(usage, provider)
        total: Decimal = calc.total_price
        model_price = calc.model_price
    else:  # a tiered price (none of calc_price's per-model special cases applies)
        total = base.calc_price(usage)["total_price"]
        model_price = base
    per_k = getattr(model_price, "requests_kcount", None)
    if isinstance(per_k, Decimal) and a.requests > 1:
        total += per_k * (a.requests - 1) / 1000  # calc_price bills one request per call
    return to_money(total)


_base_tiers: dict[int, tuple[Any, Any]] = {}


def _base_tier_prices(model_price: Any) -> Any:
    """``model_price`` (a genai-prices ``ModelPrice``) with every tiered rate replaced by
    its base rate; None when it has no tiered rate. Cached per snapshot object."""
    hit = _base_tiers.get(id(model_price))
    if hit is not None and hit[0] is model_price:
        return hit[1]
    base_rates = {k: v.base for k, v in vars(model_price).items() if hasattr(v, "tiers")}
    base = None
    if base_rates:
        base = copy.copy(model_price)
        base.__dict__.update(base_rates)
    _base_tiers[id(model_price)] = (model_price, base)  # holds model_price: its id stays valid
    return base


@dataclass(slots=True)
class CostReport:
    """The money side of a summary."""

    total: Decimal = Decimal(0)
    by_model: dict[ModelKey, Decimal | None] = field(default_factory=dict)
    sources: dict[ModelKey, str] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)
    complete: bool = True
    by_turn: dict[str, Decimal] = field(default_factory=dict)
    partial_turns: list[str] = field(default_factory=list)
    """Turns (of ``by_turn``) whose cost is a lower bound: usage of an unpriced model,
    requests without usage, or requests carrying nothing their price bills."""
    unbilled_requests: dict[ModelKey, int] = field(default_factory=dict)
    """Per priced model, speech requests that carry none of the quantities its price bills
    (their cost is unknown; the model is also listed in ``unpriced``)."""


_warned: set[tuple[str | None, str | None, str]] = set()
_warned_lock = threading.Lock()


def _first_time(provider: str | None, model: str | None, topic: str) -> bool:
    with _warned_lock:
        if (provider, model, topic) in _warned:
            return False
        _warned.add((provider, model, topic))
        return True


def _warn_once(provider: str | None, model: str | None, why: str) -> None:
    if not _first_time(provider, model, "unpriced"):
        return
    log.warning(
        "no price for %s/%s (%s): its cost is not in the total, which is now a lower bound; "
        "add it to a price file (see docs/cost.md) to price it",
        provider or "unknown",
        model or "unknown",
        why,
    )


def _warn_unbilled(provider: str | None, model: str | None, n: int) -> None:
    if not _first_time(provider, model, "unbilled"):
        return
    log.warning(
        "%d request(s) of %s/%s carry none of the quantities its price bills (e.g. only "
        "characters for a price per audio minute): their cost is not in the total, which "
        "is now a lower bound; report the billed quantity, or add a rate for the reported "
        "one to a price file (see docs/cost.md)",
        n,
        provider or "unknown",
        model or "unknown",
    )


def _bucket_cost(price: ResolvedPrice, b: _Bucket, kind: str) -> Decimal:
    total = Decimal(0)
    if not b.small.is_empty():
        total += price_amounts(price, b.small, kind, base_tier=True)
    for a in b.large:
        total += price_amounts(price, a, kind)
    if not b.overflow.is_empty():
        total += price_amounts(price, b.overflow, kind)
    return total


class _Coverage:
    """Which speech quantity masks a model's price bills, memoized for one pricing run."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[tuple[ModelKey, int], bool] = {}

    def unbilled(self, key: ModelKey, price: ResolvedPrice, counts: list[int] | None) -> int:
        """Requests in ``counts`` (per quantity mask) that carry nothing ``price`` bills."""
        if not counts:
            return 0
        n = 0
        for mask in range(1, _N_MASKS):  # mask 0: a request that reported no quantity at all
            if counts[mask] and not self._billed(key, price, mask):
                n += counts[mask]
        return n

    def _billed(self, key: ModelKey, price: ResolvedPrice, mask: int) -> bool:
        hit = self._memo.get((key, mask))
        if hit is None:
            kind = key[0]
            try:
                hit = not _has_nonzero_rate(price) or price_amounts(
                    price, _probe(mask), kind
                ) > price_amounts(price, Amounts(), kind)
            except Exception:  # pricing the real usage fails and reports it
                hit = True
            self._memo[(key, mask)] = hit
        return hit


def _label(key: ModelKey) -> str:
    return f"{key[1] or 'unknown'}/{key[2] or 'unknown'}"


def price_tracker(
    tracker: CostTracker, prices: Prices, models: Mapping[ModelKey, Any]
) -> CostReport:
    """Price a call: ``models`` are the collector's per-model totals (``ModelUsage``),
    ``tracker`` what they lack. Never raises: a model whose price cannot be found or
    applied is listed in ``unpriced`` and makes the total a lower bound, as does a priced
    model with speech requests that carry none of the quantities its price bills."""
    report = CostReport()
    resolved: dict[ModelKey, ResolvedPrice] = {}
    coverage = _Coverage()
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
        unbilled = coverage.unbilled(key, price, b.quantities)
        if unbilled:
            report.unbilled_requests[key] = unbilled
            report.unpriced.append(_label(key))
            report.complete = False
            _warn_unbilled(provider, model, unbilled)
    for sid, turn in tracker._turns.items():
        if turn.cost is None:
            t = Decimal(0)
            partial = False
            for key, tb in turn.buckets().items():
                price = resolved.get(key)
                if price is None:
                    partial = partial or _billable(tb) or tb.unreported > 0
                    continue
                try:
                    t += _bucket_cost(price, tb, key[0])
                except Exception:
                    partial = True
                    log.debug("turn %s: pricing %s failed", sid, _label(key), exc_info=True)
                if tb.unreported or coverage.unbilled(key, price, tb.quantities):
                    partial = True
            turn.cost, turn.partial = t, partial
        report.by_turn[sid] = turn.cost
        if turn.partial:
            report.partial_turns.append(sid)
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
    return bool(
        b.large
        or not b.overflow.is_empty()
        or s.input_tokens
        or s.output_tokens
        or s.audio_seconds
        or s.characters
    )


def format_usd(value: Decimal, places: int = 4, *, lower_bound: bool = False) -> str:
    """``value`` rounded for display, e.g. ``$0.0123``; ``≥ $0.0123`` for a lower bound."""
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{'≥ ' if lower_bound else ''}${q}"
