"""Cost arithmetic: exact USD (``decimal.Decimal``) for the quantities of a :class:`.Ledger`.

:func:`price_ledger` prices every part of a call (each turn, the unattributed usage, the
dropped turns) per model, and adds the parts up: the call total is the sum of its parts,
exactly, and a model's cost is the sum of its cost in each part. Requests with at least
:data:`LARGE_REQUEST_TOKENS` input tokens are kept one by one by the ledger so that
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

from .ledger import (
    AUDIO_SECONDS,
    DEFAULT_MAX_TURNS,
    LARGE_REQUEST_TOKENS,
    MASKS,
    Q_AUDIO,
    Q_CHARS,
    Q_INPUT,
    Q_INPUT_AUDIO,
    Q_OUTPUT,
    UNREPORTED,
    Amounts,
    Ledger,
    ModelKey,
    Part,
    amounts_of,
    apply_rule,
)
from .prices import Prices, ResolvedPrice, billing_rule, rule_of

__all__ = [
    "DEFAULT_MAX_TURNS",
    "LARGE_REQUEST_TOKENS",
    "Amounts",
    "CostReport",
    "Ledger",
    "amounts_of",
    "billing_rule",
    "format_usd",
    "price_amounts",
    "price_ledger",
]

log = logging.getLogger("callmeter.pricing")

_MONEY = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The decimal context money is computed in (Python's default one), whatever the caller's."""
_MILLION = Decimal(1_000_000)
_US_PER_MINUTE = Decimal(60_000_000)
_ = AUDIO_SECONDS  # re-exported layout index, used by the summary


def _probe(mask: int) -> Amounts:
    """Usage with a sizeable amount of each quantity in ``mask`` (and no request)."""
    big = 1_000_000
    audio_tokens = big if mask & Q_INPUT_AUDIO else 0
    return Amounts(
        0,
        (big if mask & Q_INPUT else 0) + audio_tokens,
        input_audio_tokens=audio_tokens,
        output_tokens=big if mask & Q_OUTPUT else 0,
        audio_us=60_000_000 if mask & Q_AUDIO else 0,
        characters=big if mask & Q_CHARS else 0,
    )


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
    if e.audio_minute is not None and a.audio_us:
        total += e.audio_minute * a.audio_us / _US_PER_MINUTE
    if e.mchars is not None and a.characters:
        total += e.mchars * a.characters / _MILLION
    if e.request is not None:
        total += e.request * a.requests
    return to_money(total)


def audio_seconds(a: Amounts) -> Decimal:
    """Billed audio seconds as an exact Decimal (the ledger counts whole microseconds)."""
    return Decimal(a.audio_us) / _MILLION


def to_money(value: Decimal) -> Decimal:
    """``value`` unchanged when it has at most 12 decimal places, else rounded to 1e-12 USD.

    Token and character rates give terminating decimals, kept exact; a per-minute rate
    divided by 60 may not terminate and is rounded to a millionth of a micro-dollar.
    """
    if value.as_tuple().exponent >= -12:  # type: ignore[operator]
        return value
    return value.quantize(_PICO, rounding=ROUND_HALF_EVEN)


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
    if kind == "stt" and a.audio_us:
        values["audio_seconds"] = values["input_audio_seconds"] = audio_seconds(a)
    if kind == "tts":
        if a.audio_us:
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
    """The money side of a summary. ``total == sum(by_turn.values()) + unattributed +
    dropped_turns_cost``, exactly."""

    total: Decimal = Decimal(0)
    by_model: dict[ModelKey, Decimal | None] = field(default_factory=dict)
    """USD per model, call-level charges included (kind ``call``); None: not priced."""
    sources: dict[ModelKey, str] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)
    complete: bool = True
    by_kind: dict[str, Decimal] = field(default_factory=dict)
    """USD per kind (``llm``, ``stt``, ``tts``, ``realtime``, ``call``) that had usage."""
    by_turn: dict[str, Decimal] = field(default_factory=dict)
    partial_turns: list[str] = field(default_factory=list)
    """Turns (of ``by_turn``) whose cost is a lower bound: usage of an unpriced model,
    requests without usage, or requests carrying nothing their price bills."""
    unattributed: Decimal = Decimal(0)
    """USD of usage in no turn (no ``speech_id``) plus call-level charges."""
    dropped_turns_cost: Decimal = Decimal(0)
    """USD of the turns no longer kept in ``by_turn`` (``max_cost_turns``)."""
    dropped_turns: int = 0
    unbilled_requests: dict[ModelKey, int] = field(default_factory=dict)
    """Per priced model, speech requests that carry none of the quantities its price bills
    (their cost is unknown; the model is also listed in ``unpriced``)."""
    notes: list[str] = field(default_factory=list)
    """Why the total is a lower bound, one line per reason."""


_warned: set[tuple[str | None, str | None, str]] = set()
_warned_lock = threading.Lock()


_MAX_WARNED = 4096
"""Distinct warnings remembered; beyond this, further ones are not logged (names come
from events, so memory stays bounded)."""


def _first_time(provider: str | None, model: str | None, topic: str) -> bool:
    with _warned_lock:
        if (provider, model, topic) in _warned or len(_warned) >= _MAX_WARNED:
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


def _warn_split(provider: str | None, model: str | None, n: int) -> None:
    if not _first_time(provider, model, "split"):
        return
    log.warning(
        "%d request(s) of %s/%s report input tokens but not how many are audio tokens, "
        "which its price bills at a higher rate: they are billed at the text rate and the "
        "total is a lower bound; report input_audio_tokens (stt_request().set_usage(..., "
        "input_audio_tokens=N))",
        n,
        provider or "unknown",
        model or "unknown",
    )


class _Coverage:
    """Which speech quantity masks a model's price bills, memoized for one pricing run."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[tuple[ModelKey, int], bool] = {}

    def unbilled(self, key: ModelKey, price: ResolvedPrice, counts: dict[int, int] | None) -> int:
        """Requests in ``counts`` (per quantity mask) that carry nothing ``price`` bills."""
        if not counts:
            return 0
        n = 0
        for mask, count in counts.items():  # mask 0: a request that reported no quantity
            if mask and count and not self._billed(key, price, mask):
                n += count
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


def split_unknown(key: ModelKey, price: ResolvedPrice, counts: dict[int, int] | None) -> int:
    """STT requests that report input tokens but no input audio tokens, for a price whose
    audio token rate is higher than its text rate (the split matters, and is unknown)."""
    if not counts or key[0] != "stt":
        return 0
    e = price.rates
    if e is None or e.input_audio_mtok is None or e.input_audio_mtok <= (e.input_mtok or 0):
        return 0
    return sum(n for mask, n in counts.items() if mask & Q_INPUT and not mask & Q_INPUT_AUDIO)


def _label(key: ModelKey) -> str:
    return f"{key[1] or 'unknown'}/{key[2] or 'unknown'}"


def _part_cost(price: ResolvedPrice, part: Part, key: ModelKey) -> Decimal:
    small, large, overflow = part.amounts(key)
    kind = key[0]
    total = Decimal(0)
    if not small.is_empty():
        total += price_amounts(price, small, kind, base_tier=True)
    for a in large:
        total += price_amounts(price, a, kind)
    if overflow is not None and not overflow.is_empty():
        total += price_amounts(price, overflow, kind)
    return total


@dataclass(slots=True)
class _PartCost:
    cost: Decimal | None
    billable: bool
    unreported: int
    unbilled: int
    split: int
    failed: str | None


class _Pricer:
    """Prices parts of one ledger; the per-part results are cached on the parts."""

    def __init__(self, prices: Prices) -> None:
        self.prices = prices
        self.resolved: dict[ModelKey, ResolvedPrice | None] = {}
        self.coverage = _Coverage()

    def price(self, key: ModelKey) -> ResolvedPrice | None:
        try:
            return self.resolved[key]
        except KeyError:
            pass
        p = self.prices.lookup(key[2], key[1]) if key[2] else None
        self.resolved[key] = p
        return p

    def part(self, part: Part) -> dict[ModelKey, _PartCost]:
        if part.cost is not None:
            return part.cost  # type: ignore[no-any-return]
        out: dict[ModelKey, _PartCost] = {}
        for key, v in part.vectors.items():
            small, large, overflow = part.amounts(key)
            billable = small.billable() or bool(large) or overflow is not None
            pc = _PartCost(None, billable, v[UNREPORTED], 0, 0, None)
            price = self.price(key)
            if price is not None:
                try:
                    pc.cost = _part_cost(price, part, key)
                except Exception as e:  # bad usage data must not break the summary
                    pc.failed = f"pricing failed: {e}"
                masks = v[MASKS]
                pc.unbilled = self.coverage.unbilled(key, price, masks)
                pc.split = split_unknown(key, price, masks)
            out[key] = pc
        part.cost = out
        return out


def price_ledger(ledger: Ledger, prices: Prices, call_charges: Iterable[str] = ()) -> CostReport:
    """Price a call from its ledger, plus ``call_charges`` (``provider/model`` of
    ``kind = "call"`` entries, charged per minute of ``ledger.call_duration``) and the
    prices' own call charges. Never raises: a model whose price cannot be found or
    applied is listed in ``unpriced`` and makes the total a lower bound, as does a priced
    model with speech requests that carry none of the quantities its price bills."""
    ledger.fold_all()
    charges: list[str] = []
    seen: set[str] = set()
    for c in (*prices.call_charges, *call_charges):  # each charge once, however it is spelt
        k = "/".join(p.strip().lower() for p in c.partition("/")[::2])
        if k not in seen:
            seen.add(k)
            charges.append(c)
    cache_key = (ledger.version, ledger.dropped_events, id(prices), tuple(charges))
    hit = ledger.report_cache
    if hit is not None and hit[0] == cache_key:
        return hit[1]  # type: ignore[no-any-return]
    with localcontext(_MONEY):  # the caller's decimal context must not change the money
        report = _price_ledger(ledger, prices, charges)
    ledger.report_cache = (cache_key, report)
    return report


def _price_ledger(ledger: Ledger, prices: Prices, charges: list[str]) -> CostReport:
    pricer = _Pricer(prices)
    report = CostReport(dropped_turns=ledger.dropped_turns)
    parts: list[tuple[str | None, Part, dict[ModelKey, _PartCost]]] = [
        (sid, part, pricer.part(part)) for sid, part in ledger.turns.items()
    ]
    unattributed = (None, ledger.unattributed, pricer.part(ledger.unattributed))
    dropped = (None, ledger.dropped, pricer.part(ledger.dropped))
    model: dict[ModelKey, _PartCost] = {}
    for _, _, costs in (*parts, unattributed, dropped):
        for key, pc in costs.items():
            m = model.get(key)
            if m is None:
                model[key] = _PartCost(
                    pc.cost, pc.billable, pc.unreported, pc.unbilled, pc.split, pc.failed
                )
                continue
            if pc.cost is not None and m.cost is not None:
                m.cost += pc.cost
            m.billable = m.billable or pc.billable
            m.unreported += pc.unreported
            m.unbilled += pc.unbilled
            m.split += pc.split
            m.failed = m.failed or pc.failed
    excluded: set[ModelKey] = set()
    for key in ledger.totals:
        kind, provider, name = key
        m = model.get(key) or _PartCost(None, False, 0, 0, 0, None)
        price = pricer.price(key)
        why = "model name unknown" if not name else "not in any price table"
        if price is not None and m.failed:
            price, why = None, m.failed
        if price is not None and m.cost == 0 and m.billable and _has_nonzero_rate(price):
            price, why = None, "its price has no rate for the usage reported"
        if price is None or m.cost is None:
            excluded.add(key)
            report.by_model[key] = None
            if m.billable or m.unreported:
                report.unpriced.append(_label(key))
                report.complete = False
                report.notes.append(f"{_label(key)}: no price ({why})")
                _warn_once(provider, name, why)
            continue
        report.by_model[key] = m.cost
        report.sources[key] = price.source.describe()
        report.total += m.cost
        report.by_kind[kind] = report.by_kind.get(kind, Decimal(0)) + m.cost
        if m.unreported:
            report.complete = False  # requests without usage cost something unknown
            report.notes.append(f"{_label(key)}: {m.unreported} request(s) reported no usage")
        if m.unbilled:
            report.unbilled_requests[key] = m.unbilled
            report.unpriced.append(_label(key))
            report.complete = False
            report.notes.append(
                f"{_label(key)}: {m.unbilled} request(s) carry nothing its price bills"
            )
            _warn_unbilled(provider, name, m.unbilled)
        if m.split:
            report.complete = False
            report.notes.append(
                f"{_label(key)}: {m.split} request(s) without input audio tokens billed at "
                "the text rate"
            )
            _warn_split(provider, name, m.split)

    def part_total(costs: dict[ModelKey, _PartCost]) -> tuple[Decimal, bool]:
        total, partial = Decimal(0), False
        for key, pc in costs.items():
            if key in excluded:
                partial = partial or pc.billable or pc.unreported > 0
                continue
            if pc.cost is not None:
                total += pc.cost
            if pc.unreported or pc.unbilled or pc.split:
                partial = True
        return total, partial

    for sid, _, costs in parts:
        total, partial = part_total(costs)
        report.by_turn[sid] = total  # type: ignore[index]
        if partial:
            report.partial_turns.append(sid)  # type: ignore[arg-type]
    report.unattributed = part_total(unattributed[2])[0]
    report.dropped_turns_cost = part_total(dropped[2])[0]
    if ledger.dropped_events:
        report.complete = False
        report.notes.append(
            f"{ledger.dropped_events} malformed metrics event(s) left out (see the log)"
        )
    for name in charges:
        cost = _call_charge(prices, name, ledger.call_duration, report)
        if cost is not None:
            report.total += cost
            report.unattributed += cost
            report.by_kind["call"] = report.by_kind.get("call", Decimal(0)) + cost
    return report


def _call_charge(
    prices: Prices, name: str, duration: float | None, report: CostReport
) -> Decimal | None:
    provider, _, model = name.partition("/")
    key: ModelKey = ("call", provider, model)
    price = prices.lookup(model, provider)
    e = price.entry if price is not None else None
    report.by_model[key] = None
    if e is None or e.call_minute is None:
        why = "not a call-level entry (kind call, call_minute)" if e else "not in any price table"
        report.unpriced.append(_label(key))
        report.complete = False
        report.notes.append(f"{name}: call charge has no price ({why})")
        _warn_once(provider, model, why)
        return None
    if duration is None:
        report.complete = False
        report.notes.append(
            f"{name}: call duration unknown (close the session, or pass the close event or "
            "set_call_duration() to the collector)"
        )
        return None
    assert price is not None
    try:
        billed = apply_rule(round(duration * 1_000_000), rule_of(e))
        cost = to_money(e.call_minute * billed / _US_PER_MINUTE)
    except Exception as exc:  # e.g. an absurd rate that overflows: never raise from a summary
        report.unpriced.append(_label(key))
        report.complete = False
        report.notes.append(f"{name}: call charge has no price (pricing failed: {exc!r})")
        _warn_once(provider, model, f"pricing failed: {exc!r}")
        return None
    report.by_model[key] = cost
    report.sources[key] = price.source.describe()
    return cost


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


def format_usd(value: Decimal, places: int = 4, *, lower_bound: bool = False) -> str:
    """``value`` rounded for display, e.g. ``$0.0123``; ``≥ $0.0123`` for a lower bound."""
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{'≥ ' if lower_bound else ''}${q}"
