"""The ledger: one accumulator of billable quantities, per model and per turn.

Every billable event (LLM, STT, TTS, realtime) goes to exactly one *part* of the call: its
turn (``speech_id``), or the unattributed part when it has none. A part keeps, per
``(kind, provider, model)``, one vector of quantities (requests, token counts, billed
audio, characters, ...). The call's per-model totals are the sum of the parts, kept as
the parts are added up; the summary's usage figures and the pricing both read them, so
each number is kept once.

The per-event cost is an append to the part's queue; quantities are added up in batches
(:data:`MAX_PENDING` events, or when totals are read). Per-request billing rules (a
minimum billed duration, rounding up to an increment) are applied to each request as it
is added up, so every part holds billed quantities and the call total is the sum of its
parts. At most ``max_turns`` turns are kept; older ones are folded into the *dropped*
part, whose cost still counts in the call total.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from operator import add
from typing import Any

from ..model.events import CloseEvent
from ..model.types import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics

__all__ = [
    "DEFAULT_MAX_TURNS",
    "LARGE_REQUEST_TOKENS",
    "MAX_LARGE_REQUESTS",
    "MAX_PENDING",
    "Amounts",
    "Ledger",
    "ModelKey",
    "Part",
    "apply_rule",
    "requests_of",
]

log = logging.getLogger("callmeter.pricing")

LARGE_REQUEST_TOKENS = 32_000
"""Requests with this many input tokens or more are kept one by one (the lowest tier
threshold in genai-prices' snapshot is 32k tokens); smaller ones are added up and priced
at the base-tier rates."""
MAX_LARGE_REQUESTS = 10_000
"""Per model and part, large requests kept individually; beyond this they are added up
with each other, which can only pick a higher tier."""
DEFAULT_MAX_TURNS = 1_000
"""Turns whose cost a collector keeps by default (the most recent ones)."""
MAX_PENDING = 256
"""Events a part queues before adding them up (bounds memory for very long turns)."""

ModelKey = tuple[str, str | None, str | None]
"""``(kind, provider, model)``, as :class:`~callmeter.metrics.UsageCollector` keys models."""

_KIND = {LLMMetrics: "llm", STTMetrics: "stt", TTSMetrics: "tts", RealtimeModelMetrics: "realtime"}


@dataclass(slots=True)
class Amounts:
    """Billable quantities. Token counts follow genai-prices: ``input_tokens`` includes
    cached, cache-write and audio input tokens (OpenAI's ``prompt_tokens`` convention).
    ``audio_us`` is *billed* audio in microseconds (after per-request billing rules)."""

    requests: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    audio_us: int = 0
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
        self.audio_us += o.audio_us
        self.characters += o.characters

    def sub(self, o: Amounts) -> None:
        """Subtract ``o`` from these amounts."""
        self.requests -= o.requests
        self.input_tokens -= o.input_tokens
        self.cache_read_tokens -= o.cache_read_tokens
        self.cache_write_tokens -= o.cache_write_tokens
        self.output_tokens -= o.output_tokens
        self.input_audio_tokens -= o.input_audio_tokens
        self.output_audio_tokens -= o.output_audio_tokens
        self.cache_audio_read_tokens -= o.cache_audio_read_tokens
        self.audio_us -= o.audio_us
        self.characters -= o.characters

    def is_empty(self) -> bool:
        """True when there is nothing to bill (not even a request)."""
        return not (
            self.requests
            or self.input_tokens
            or self.output_tokens
            or self.audio_us
            or self.characters
        )

    def billable(self) -> bool:
        """True when some quantity is billable (requests alone are not)."""
        return bool(self.input_tokens or self.output_tokens or self.audio_us or self.characters)


# Vector layout of a part's per-model quantities: Amounts fields 0-9, then:
UNREPORTED = 10
"""LLM requests whose provider reported no usage."""
AUDIO_SECONDS = 11
"""Audio seconds as reported (float sum), before billing rules."""
MASKS = 12
"""Speech requests per quantity mask (``{mask: count}``), or None."""
DURATION = 13
"""Sum of request durations, seconds (every request, usage reported or not)."""
ERRORS = 14
"""Requests that ended with an error (LLM, STT, TTS)."""
_VLEN = 15


def vector_layout() -> tuple[int, ...]:
    """Indices of requests, prompt, cached, created, completion, audio in, audio out,
    unreported, duration and errors in a vector, and its length (for the C hot path)."""
    return (0, 1, 2, 3, 4, 5, 6, UNREPORTED, DURATION, ERRORS, _VLEN)


def _vector() -> list[Any]:
    return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, None, 0.0, 0]


def requests_of(key: ModelKey, v: list[Any]) -> int:
    """Every request of a vector: an LLM's ``v[0]`` counts only those with usage."""
    return v[0] + v[UNREPORTED] if key[0] == "llm" else v[0]


# Bits of a speech request's quantity mask: which billable quantities it carries.
Q_INPUT = 1
Q_INPUT_AUDIO = 2
Q_OUTPUT = 4
Q_AUDIO = 8
Q_CHARS = 16
N_MASKS = 32


def apply_rule(us: int, rule: tuple[int, int] | None) -> int:
    """Billed microseconds of one request of ``us`` microseconds under ``rule``
    (``(minimum, increment)`` microseconds); nothing reported bills nothing."""
    if rule is None or us <= 0:
        return us
    low, inc = rule
    if us < low:
        us = low
    return -(-us // inc) * inc


def amounts_of(m: Any, rule: tuple[int, int] | None = None) -> Amounts | None:
    """The billable amounts of one metrics event, as the ledger counts them (None: not
    billable, or usage not reported). ``rule`` is the model's per-request billing rule
    (see :func:`~callmeter.pricing.prices.billing_rule`), applied to speech audio."""
    t = m.__class__
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
    if t is STTMetrics or t is TTSMetrics:
        us = round(m.audio_duration * 1_000_000)  # NaN and inf raise here
        if us < 0:
            raise ValueError(f"audio_duration must be non-negative, got {m.audio_duration}")
        billed = apply_rule(us, rule)
        if t is TTSMetrics:  # a TTS model's output tokens are audio tokens
            out = m.output_tokens
            return Amounts(1, m.input_tokens, 0, 0, out, 0, out, 0, billed, m.characters_count)
        return Amounts(
            1, m.input_tokens, 0, 0, m.output_tokens, m.input_audio_tokens, 0, 0, billed, 0
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


class Part:
    """The billable quantities of one part of a call (a turn, the unattributed usage or
    the dropped turns): per-model vectors plus large requests kept one by one."""

    __slots__ = ("cost", "large", "overflow", "pending", "vectors")

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.vectors: dict[ModelKey, list[Any]] = {}
        self.large: dict[ModelKey, list[Amounts]] = {}
        self.overflow: dict[ModelKey, Amounts] = {}
        self.cost: Any = None
        """Pricing's cache for this part; reset whenever the part gets more usage."""

    def amounts(self, key: ModelKey) -> tuple[Amounts, list[Amounts], Amounts | None]:
        """``(small, large, overflow)``: requests below :data:`LARGE_REQUEST_TOKENS`
        added up, large requests one by one, and large ones beyond the cap added up."""
        v = self.vectors[key]
        small = Amounts(*v[:10])
        large = self.large.get(key, [])
        overflow = self.overflow.get(key)
        for a in large:
            small.sub(a)
        if overflow is not None:
            small.sub(overflow)
        return small, large, overflow

    def merge(self, other: Part) -> None:
        """Add ``other`` (already folded) to this part."""
        for key, v in other.vectors.items():
            mine = self.vectors.get(key)
            if mine is None:
                self.vectors[key] = mine = _vector()
            _add_vector(mine, v)
        for key, lst in other.large.items():
            for a in lst:
                _keep_large(self, key, a)
        for key, a in other.overflow.items():
            self.overflow.setdefault(key, Amounts()).add(a)
        self.cost = None


def _add_vector(into: list[Any], v: list[Any]) -> None:
    m = v[MASKS]
    into[:MASKS] = map(add, into[:MASKS], v[:MASKS])
    into[DURATION] += v[DURATION]
    into[ERRORS] += v[ERRORS]
    if m is not None:
        im = into[MASKS]
        if im is None:
            into[MASKS] = dict(m)
        else:
            for mask, n in m.items():
                im[mask] = im.get(mask, 0) + n


def _keep_large(part: Part, key: ModelKey, a: Amounts) -> None:
    lst = part.large.setdefault(key, [])
    if len(lst) < MAX_LARGE_REQUESTS:
        lst.append(a)
    else:
        part.overflow.setdefault(key, Amounts()).add(a)


RuleLookup = Callable[[str | None, str | None], "tuple[int, int] | None"]
"""``(model, provider) -> (minimum, increment)`` microseconds, or None."""


class Ledger:
    """Billable quantities of a call, per model and per turn (see the module docstring).

    ``rules`` gives the per-request billing rule of a model (from the price tables);
    ``max_turns`` bounds the turns kept individually. Not thread-safe, like the collector
    that feeds it.
    """

    __slots__ = (
        "_last_dropped",
        "_max_turns",
        "_rule_cache",
        "_rules",
        "call_duration",
        "dropped",
        "dropped_events",
        "dropped_turns",
        "report_cache",
        "totals",
        "turns",
        "unattributed",
        "version",
    )

    def __init__(self, rules: RuleLookup | None = None, max_turns: int = DEFAULT_MAX_TURNS) -> None:
        self._rules = rules
        self._rule_cache: dict[ModelKey, tuple[int, int] | None] = {}
        self._max_turns = max_turns
        self._last_dropped: str | None = None
        self.turns: OrderedDict[str, Part] = OrderedDict()
        """The most recent turns, by ``speech_id``."""
        self.unattributed = Part()
        """Usage of events without a ``speech_id``."""
        self.dropped = Part()
        """Usage of turns no longer kept (beyond ``max_turns``)."""
        self.dropped_turns = 0
        """Turns folded into :attr:`dropped`."""
        self.dropped_events = 0
        """Malformed events left out (logged)."""
        self.totals: dict[ModelKey, list[Any]] = {}
        """The call's per-model vectors: the sum of every part."""
        self.call_duration: float | None = None
        """The call's duration in seconds, from a ``close`` event or set by the caller."""
        self.version = 0
        """Bumped whenever quantities change (pricing caches on it)."""
        self.report_cache: Any = None
        """Pricing's cache of the last report, keyed on :attr:`version`."""

    def add_llm(
        self,
        part: Part,
        key: ModelKey,
        requests: int,
        prompt: int,
        cached: int,
        created: int,
        completion: int,
        audio_in: int,
        audio_out: int,
        unreported: int,
        duration: float,
        errors: int,
    ) -> None:
        """Add the sums of a run of LLM events of one part and model (requests with usage,
        their token counts, requests without usage, durations, errors) to the part's
        vector and to the call totals. Large requests go to :meth:`keep_large` as well."""
        vectors, totals = part.vectors, self.totals
        v = vectors.get(key)
        if v is None:
            v = vectors[key] = _vector()
        t = totals.get(key)
        if t is None:
            t = totals[key] = _vector()
        for x in (v, t):
            x[0] += requests
            x[1] += prompt
            x[2] += cached
            x[4] += completion
            if created or audio_in or audio_out:
                x[3] += created
                x[5] += audio_in
                x[6] += audio_out
            x[UNREPORTED] += unreported
            x[DURATION] += duration
            x[ERRORS] += errors
        part.cost = None
        self.version += 1

    def queue(self, m: Any) -> None:
        """Queue one STT, TTS or realtime event on its part (added up in batches)."""
        part = self.part(m.speech_id)
        pending = part.pending
        pending.append(m)
        if len(pending) >= MAX_PENDING:
            self.fold(part)

    def keep_large(self, part: Part, key: ModelKey, a: Amounts) -> None:
        """Keep one request's amounts individually (large, or breaking the convention);
        they are also in the sums passed to :meth:`add_llm`."""
        _keep_large(part, key, a)

    def part(self, sid: str | None) -> Part:
        """The part events with ``speech_id`` ``sid`` belong to (created if new; an old
        turn may be folded into the dropped part to make room)."""
        if sid is None:
            return self.unattributed
        part = self.turns.get(sid)
        if part is not None:
            return part
        if not self._max_turns:  # no turn is kept: straight to the dropped part
            part = self.dropped
            part.cost = None
            if sid != self._last_dropped:
                self._last_dropped = sid
                self.dropped_turns += 1
            return part
        part = self.turns[sid] = Part()
        if len(self.turns) > self._max_turns:
            self._drop_oldest()
        return part

    def _close(self, ev: CloseEvent) -> None:
        d = ev.duration
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d < float("inf"):
            log.error("callmeter: ignored the duration of a malformed close event: %r", d)
            return
        self.set_call_duration(float(d))

    def set_call_duration(self, seconds: float | None) -> None:
        """Set the call's duration (seconds) for call-level charges."""
        self.call_duration = seconds
        self.version += 1

    def _drop_oldest(self) -> None:
        _, part = self.turns.popitem(last=False)
        dropped = self.dropped
        if part.vectors:  # folded before: its vectors are already in the totals
            dropped.merge(part)
        # the rest is queued on the dropped part and added up with it, in batches
        pending = dropped.pending
        pending.extend(part.pending)
        if len(pending) >= MAX_PENDING:
            self.fold(dropped)
        dropped.cost = None
        self.dropped_turns += 1

    def model_totals(self) -> dict[ModelKey, list[Any]]:
        """The call's per-model vectors, every queued event added up."""
        self.fold_all()
        return self.totals

    def fold_all(self) -> None:
        """Add up every queued event."""
        for part in (self.unattributed, self.dropped, *self.turns.values()):
            if part.pending:
                self.fold(part)

    def fold(self, part: Part) -> None:
        """Add a part's queued events to its vectors and to the call totals."""
        pending, part.pending = part.pending, []
        if not pending:
            return
        try:
            delta = self._sum(part, pending)
        except Exception:
            # A malformed event (e.g. None where a count belongs): add the others one by
            # one and leave it out (_sum changes nothing until it has added up all events).
            delta = {}
            for m in pending:
                try:
                    one = self._sum(part, [m])
                except Exception as exc:
                    self.dropped_events += 1
                    log.error("callmeter: left out a malformed metrics event (%s): %r", exc, m)
                    continue
                for key, v in one.items():
                    d = delta.get(key)
                    if d is None:
                        delta[key] = v
                    else:
                        _add_vector(d, v)
        vectors, totals = part.vectors, self.totals
        for key, d in delta.items():
            t = totals.get(key)
            if t is None:
                totals[key] = t = _vector()
            _add_vector(t, d)
            v = vectors.get(key)
            if v is None:
                vectors[key] = d  # a fresh vector, now the part's
            else:
                _add_vector(v, d)
        part.cost = None
        self.version += 1

    def _rule(self, key: ModelKey) -> tuple[int, int] | None:
        try:
            return self._rule_cache[key]
        except KeyError:
            pass
        rule = None
        if self._rules is not None:
            try:
                rule = self._rules(key[2], key[1])
            except Exception:
                log.exception("callmeter: billing rule lookup failed for %s/%s", key[1], key[2])
        self._rule_cache[key] = rule
        return rule

    def _sum(self, part: Part, events: list[Any]) -> dict[ModelKey, list[Any]]:
        delta: dict[ModelKey, list[Any]] = {}
        rules: dict[ModelKey, tuple[int, int] | None] = {}
        large: list[tuple[ModelKey, Amounts]] = []
        for m in events:
            t = m.__class__
            kind = _KIND[t]
            md = m.metadata
            key = (kind, None, None) if md is None else (kind, md.model_provider, md.model_name)
            v = delta.get(key)
            if v is None:
                v = delta[key] = _vector()
                rules[key] = self._rule(key) if t is STTMetrics or t is TTSMetrics else None
            v[DURATION] += m.duration
            if t is not RealtimeModelMetrics and m.error is not None:
                v[ERRORS] += 1
            if t is LLMMetrics:
                if not m.usage_reported:
                    v[UNREPORTED] += 1
                    continue
                prompt = m.prompt_tokens
                v[0] += 1
                v[1] += prompt
                v[2] += m.prompt_cached_tokens
                v[4] += m.completion_tokens
                if m.cache_creation_tokens or m.input_audio_tokens or m.output_audio_tokens:
                    v[3] += m.cache_creation_tokens
                    v[5] += m.input_audio_tokens
                    v[6] += m.output_audio_tokens
                # large requests, and requests whose counts break the convention (so that
                # they are priced, or refused, on their own, not hidden in a sum)
                if (
                    prompt >= LARGE_REQUEST_TOKENS
                    or m.prompt_cached_tokens + m.cache_creation_tokens > prompt
                    or m.input_audio_tokens > prompt
                ):
                    large.append(
                        (
                            key,
                            Amounts(
                                1,
                                prompt,
                                m.prompt_cached_tokens,
                                m.cache_creation_tokens,
                                m.completion_tokens,
                                m.input_audio_tokens,
                                m.output_audio_tokens,
                            ),
                        )
                    )
            elif t is STTMetrics or t is TTSMetrics:
                audio = m.audio_duration
                us = round(audio * 1_000_000)  # NaN and inf raise here
                if us < 0:
                    raise ValueError(f"audio_duration must be a non-negative number, got {audio}")
                rule = rules[key]
                billed_before = v[8]
                v[0] += 1
                v[8] += us if rule is None else apply_rule(us, rule)
                v[AUDIO_SECONDS] += audio
                mask = Q_AUDIO if us else 0
                n = m.input_tokens
                if n:
                    v[1] += n
                    mask |= Q_INPUT
                n = m.output_tokens
                if n:
                    v[4] += n
                    mask |= Q_OUTPUT
                    if t is TTSMetrics:
                        v[6] += n  # a TTS model's output tokens are audio tokens
                if t is TTSMetrics:
                    n = m.characters_count
                    if n:
                        v[9] += n
                        mask |= Q_CHARS
                else:
                    n = m.input_audio_tokens
                    if n:
                        v[5] += n
                        mask |= Q_INPUT_AUDIO
                        if n > m.input_tokens:  # breaks the convention: priced on its own
                            large.append(
                                (
                                    key,
                                    Amounts(
                                        1,
                                        m.input_tokens,
                                        output_tokens=m.output_tokens,
                                        input_audio_tokens=n,
                                        audio_us=v[8] - billed_before,
                                    ),
                                )
                            )
                masks = v[MASKS]
                if masks is None:
                    masks = v[MASKS] = {}
                masks[mask] = masks.get(mask, 0) + 1
            else:  # realtime
                i, o = m.input_token_details, m.output_token_details
                cd = i.cached_tokens_details
                a = (
                    m.input_tokens,
                    i.cached_tokens,
                    0,
                    m.output_tokens,
                    i.audio_tokens,
                    o.audio_tokens,
                    cd.audio_tokens if cd else 0,
                )
                v[0] += 1
                v[1] += a[0]
                v[2] += a[1]
                v[4] += a[3]
                v[5] += a[4]
                v[6] += a[5]
                v[7] += a[6]
                if a[0] >= LARGE_REQUEST_TOKENS or a[1] > a[0] or a[4] > a[0] or a[6] > a[1]:
                    large.append((key, Amounts(1, *a)))
        for key, a in large:
            _keep_large(part, key, a)
        return delta
