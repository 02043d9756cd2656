"""Price lookup: user overrides, then the bundled speech table, then genai-prices.

A :class:`Prices` object answers "what does this provider/model cost?" with a
:class:`ResolvedPrice` that can price an amount of usage (see :mod:`.cost`) and says where
its rates came from. ``genai-prices`` (LLM prices) is imported the first time a model is
not found in the user's or the bundled table, so ``import callmeter`` stays light.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..errors import InvalidArgumentError, PriceFileError

__all__ = [
    "ENV_VAR",
    "PriceEntry",
    "PriceFileError",
    "PriceSource",
    "Prices",
    "ResolvedPrice",
    "default_prices",
    "resolve_prices",
]

ENV_VAR = "CALLMETER_PRICES"
"""Environment variable naming a TOML price file that overrides bundled and genai-prices rates."""

log = logging.getLogger("callmeter.pricing")


class PriceEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The rates of one provider/model, in USD. Unset rates are not billed.

    Token rates are per million tokens and use genai-prices' names and semantics: input
    tokens include cached and audio input tokens; a more specific rate (``cache_read_mtok``,
    ``input_audio_mtok`` ...) replaces the general one for the tokens it covers, and tokens
    whose specific rate is unset are billed at the general rate.
    """

    kind: Literal["llm", "realtime", "stt", "tts", "call"] | None = None
    input_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    input_audio_mtok: Decimal | None = None
    output_audio_mtok: Decimal | None = None
    cache_audio_read_mtok: Decimal | None = None
    audio_minute: Decimal | None = None
    """Per minute of audio (STT: audio transcribed; TTS: audio produced)."""
    mchars: Decimal | None = None
    """Per million characters (TTS: characters synthesized)."""
    request: Decimal | None = None
    """Per request."""
    call_minute: Decimal | None = None
    """Per minute of the whole call (``kind = "call"``: telephony, hosting)."""
    min_seconds: Decimal | None = None
    """Billing rule: each request's audio (for ``call``: the call) is billed as at least
    this many seconds. Requests that report no audio are not billed a minimum."""
    increment_seconds: Decimal | None = None
    """Billing rule: each request's billed audio (for ``call``: the call's duration) is
    rounded up to a whole number of these seconds."""
    plan: str | None = None
    """The vendor plan these rates assume (for vendors that sell plan tiers)."""
    plans: dict[str, dict[str, Decimal]] = {}
    """Rates under other plans: ``{plan: {rate: value}}``; a price file or ``Prices(plans=)``
    picks one (see ``docs/cost.md``)."""
    source: str | None = None
    """Where the rates were published (URL)."""
    checked: dt.date | None = None
    """The date the rates were entered or last checked against ``source``."""
    notes: str | None = None
    aliases: list[str] = []
    """Other model names billed at these rates."""


RATE_FIELDS: tuple[str, ...] = (
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_mtok",
    "input_audio_mtok",
    "output_audio_mtok",
    "cache_audio_read_mtok",
    "audio_minute",
    "mchars",
    "request",
    "call_minute",
)

RATE_UNITS: dict[str, str] = {
    "input_mtok": "per 1M input tokens",
    "cache_read_mtok": "per 1M cached input tokens (cache reads)",
    "cache_write_mtok": "per 1M cache-write tokens",
    "output_mtok": "per 1M output tokens",
    "input_audio_mtok": "per 1M input audio tokens",
    "output_audio_mtok": "per 1M output audio tokens",
    "cache_audio_read_mtok": "per 1M cached input audio tokens",
    "audio_minute": "per audio minute",
    "mchars": "per 1M characters",
    "request": "per request",
    "call_minute": "per minute of the call",
}

SETTINGS_TABLE = "callmeter"
"""Top-level table of a price file that holds settings, not prices: ``plans`` (provider
or ``provider/model`` -> plan name) and ``call_charges`` (``provider/model`` names of
``kind = "call"`` entries to charge every call)."""


@dataclass(frozen=True, slots=True)
class PriceSource:
    """Where a price came from.

    ``kind`` is ``override`` (a user file, env-var file or dict), ``bundled`` (callmeter's
    speech table) or ``genai-prices``; ``origin`` is the file path, ``"dict in code"`` or the
    genai-prices version.
    """

    kind: Literal["override", "bundled", "genai-prices"]
    origin: str
    url: str | None = None
    checked: dt.date | None = None
    notes: str | None = None

    def describe(self) -> str:
        """One line for people."""
        label = {"override": "user override", "bundled": "callmeter speech table"}
        parts = [
            self.origin if self.kind == "genai-prices" else f"{label[self.kind]} {self.origin}"
        ]
        if self.url:
            parts.append(f"source {self.url}")
        if self.checked:
            parts.append(f"entered {self.checked.isoformat()}")
        if self.notes and self.notes.startswith("plan "):
            parts.append(self.notes.split(";")[0])
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """The price callmeter charges for one provider/model.

    Exactly one of ``entry`` (a table rate: override or bundled) and ``genai`` (a
    genai-prices ``(Provider, ModelInfo)`` pair) is set.
    """

    provider: str | None
    model: str
    source: PriceSource
    entry: PriceEntry | None = None
    genai: tuple[Any, Any] | None = field(default=None, repr=False)
    table_name: str | None = None
    """``provider/model`` of the table entry that matched (after name normalisation)."""
    linear: PriceEntry | None = None
    """For a genai-prices price with flat rates only: the same rates as an entry, so a
    summary prices many turns quickly. None when tiers or other units need genai-prices."""

    @property
    def rates(self) -> PriceEntry | None:
        """Flat rates callmeter can apply itself (table entry or flat genai-prices price)."""
        return self.entry if self.entry is not None else self.linear

    @property
    def matched(self) -> str:
        """``provider/model`` as the price table names it (genai-prices resolves aliases)."""
        if self.genai is not None:
            return f"{self.genai[0].id}/{self.genai[1].id}"
        return self.table_name or f"{self.provider or '*'}/{self.model}"

    def rate_lines(self) -> list[tuple[str, str]]:
        """``(rate, unit)`` pairs for display."""
        if self.entry is not None:
            return entry_rate_lines(self.entry)
        assert self.genai is not None
        model_price = self.genai[1].get_prices(dt.datetime.now(tz=dt.UTC))
        lines: list[tuple[str, str]] = []
        for key, value in vars(model_price).items():
            if value is None or key.startswith("_"):
                continue
            unit = RATE_UNITS.get(key, "per " + key.replace("_", " "))
            if isinstance(value, Decimal):
                lines.append((f"${value}", unit))
                continue
            lines.append((f"${value.base}", unit))  # genai-prices TieredPrices
            for tier in value.tiers:
                lines.append(
                    (f"${tier.price}", f"{unit}, requests over {tier.start:,} input tokens")
                )
        return lines


def entry_rate_lines(e: PriceEntry) -> list[tuple[str, str]]:
    """``(rate, unit)`` pairs of a table entry, billing rules included."""
    lines = [
        (f"${getattr(e, name)}", RATE_UNITS[name])
        for name in RATE_FIELDS
        if getattr(e, name) is not None
    ]
    if e.min_seconds is not None:
        lines.append((f"{e.min_seconds} s", "minimum billed duration per request (or call)"))
    if e.increment_seconds is not None:
        lines.append((f"{e.increment_seconds} s", "billing increment (duration rounded up)"))
    return lines


_Key = tuple[str, str]  # (provider or "", model), lower-case


def _norm(s: str | None) -> str:
    return (s or "").strip().lower()


class PriceTable(dict[_Key, PriceEntry]):
    """Entries of one price file or dict, by ``(provider, model)`` (aliases included), plus
    the file's settings (``[callmeter]`` table)."""

    rows: list[tuple[str, str, PriceEntry]]
    """``(provider, model, entry)`` once per entry, in file order (no aliases)."""
    plans: dict[str, str]
    """Plan choices: provider or ``provider/model`` (lower-case) -> plan name."""
    call_charges: list[str]
    """``provider/model`` of the call-level entries charged on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = []
        self.plans = {}
        self.call_charges = []

    def name_of(self, entry: PriceEntry, key: _Key) -> str:
        """``provider/model`` under which ``entry`` is listed (its main name, not an alias)."""
        for prov, model, e in self.rows:
            if e is entry:
                return f"{_norm(prov) or '*'}/{_norm(model)}"
        return f"{key[0] or '*'}/{key[1]}"


def _check_rate(
    name: str, value: Any, path: str, file: str, text: str | None, where: tuple
) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        unit = "seconds" if name.endswith("_seconds") else "USD"
        raise PriceFileError(
            f"{name} must be a finite, non-negative number of {unit}, got {value!r}",
            file=file,
            line=_find_line(text, where, name),
            field=f"{path}.{name}",
        )


def _parse_entries(data: Any, file: str, text: str | None) -> PriceTable:
    """Validate ``{provider: {model: {...}}}`` (or ``{"provider/model": {...}}``) data."""
    if not isinstance(data, Mapping):
        raise PriceFileError("expected a table of providers", file=file)
    out = PriceTable()
    for provider, models in data.items():
        if not isinstance(provider, str):
            raise PriceFileError(f"provider names must be strings, got {provider!r}", file=file)
        if provider == SETTINGS_TABLE:
            _parse_settings(models, out, file, text)
            continue
        if "/" in provider:  # flat "provider/model" key (dicts in code)
            prov, _, model = provider.partition("/")
            pairs: Iterable[tuple[str, str, Any]] = [(prov, model, models)]
        elif isinstance(models, Mapping):
            pairs = [(provider, m, e) for m, e in models.items()]
        else:
            raise PriceFileError(
                f'[{provider}] must be a table of models, e.g. [{provider}."model-name"]',
                file=file,
                line=_find_line(text, (provider,), None),
                field=provider,
            )
        for prov, model, raw in pairs:
            path = f"{prov}.{model}"
            if not isinstance(raw, Mapping):
                raise PriceFileError(
                    f"[{path}] must be a table of rates such as input_mtok = 0.15",
                    file=file,
                    line=_find_line(text, (prov, model), None),
                    field=path,
                )
            raw = dict(raw)
            plans = raw.pop("plans", None)
            try:
                entry = msgspec.convert(raw, PriceEntry, str_keys=True)
            except msgspec.ValidationError as e:
                name = _error_field(str(e))
                raise PriceFileError(
                    f"invalid price for {path}: {e}",
                    file=file,
                    line=_find_line(text, (prov, model), name),
                    field=f"{path}.{name}" if name else path,
                ) from None
            for name in (*RATE_FIELDS, "min_seconds"):
                value = getattr(entry, name)
                if value is not None:
                    _check_rate(name, value, path, file, text, (prov, model))
            inc = entry.increment_seconds
            if inc is not None and (not inc.is_finite() or inc <= 0):
                raise PriceFileError(
                    f"increment_seconds must be a positive number of seconds, got {inc}",
                    file=file,
                    line=_find_line(text, (prov, model), "increment_seconds"),
                    field=f"{path}.increment_seconds",
                )
            if all(getattr(entry, name) is None for name in RATE_FIELDS):
                raise PriceFileError(
                    f"{path} sets no rate; set at least one of {', '.join(RATE_FIELDS)}",
                    file=file,
                    line=_find_line(text, (prov, model), None),
                    field=path,
                )
            if plans is not None:
                entry = msgspec.structs.replace(
                    entry, plans=_parse_plans(plans, path, file, text, (prov, model))
                )
            out.rows.append((prov, model, entry))
            for name in (model, *entry.aliases):
                out[(_norm(prov), _norm(name))] = entry
    return out


def _parse_plans(
    plans: Any, path: str, file: str, text: str | None, where: tuple
) -> dict[str, dict[str, Decimal]]:
    if not isinstance(plans, Mapping):
        raise PriceFileError(
            "plans must be a table of plans, e.g. plans.scale = { mchars = 37.4 }",
            file=file,
            line=_find_line(text, where, "plans"),
            field=f"{path}.plans",
        )
    out: dict[str, dict[str, Decimal]] = {}
    for plan, rates in plans.items():
        if not isinstance(rates, Mapping) or not rates:
            raise PriceFileError(
                f"plan {plan!r} must be a table of rates, e.g. {{ mchars = 37.4 }}",
                file=file,
                line=_find_line(text, where, "plans"),
                field=f"{path}.plans.{plan}",
            )
        parsed: dict[str, Decimal] = {}
        for name, value in rates.items():
            if name not in RATE_FIELDS:
                raise PriceFileError(
                    f"unknown rate {name!r} in plan {plan!r}; rates: {', '.join(RATE_FIELDS)}",
                    file=file,
                    line=_find_line(text, (*where, "plans", plan), name),
                    field=f"{path}.plans.{plan}.{name}",
                )
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                with contextlib.suppress(ArithmeticError):
                    # a float as written (0.1 -> 0.1), as for the entry's own rates
                    value = Decimal(str(value) if isinstance(value, float) else value)
            _check_rate(name, value, f"{path}.plans.{plan}", file, text, (*where, "plans", plan))
            parsed[name] = value
        out[str(plan)] = parsed
    return out


def _parse_settings(raw: Any, out: PriceTable, file: str, text: str | None) -> None:
    def bad(message: str, key: str | None) -> PriceFileError:
        return PriceFileError(
            message,
            file=file,
            line=_find_line(text, (SETTINGS_TABLE,), key),
            field=f"{SETTINGS_TABLE}.{key}" if key else SETTINGS_TABLE,
        )

    if not isinstance(raw, Mapping):
        raise bad(f"[{SETTINGS_TABLE}] must be a table (plans, call_charges)", None)
    for key, value in raw.items():
        if key == "plans":
            if not isinstance(value, Mapping) or not all(
                isinstance(v, str) for v in value.values()
            ):
                raise bad('plans must map a provider (or "provider/model") to a plan name', key)
            out.plans.update({_norm(k): v for k, v in value.items()})
        elif key == "call_charges":
            if not isinstance(value, list) or not all(
                isinstance(v, str) and "/" in v for v in value
            ):
                raise bad('call_charges must be a list of "provider/model" names', key)
            out.call_charges.extend(value)
        else:
            raise bad(f"unknown setting {key!r} (known: plans, call_charges)", key)


def _error_field(message: str) -> str | None:
    m = re.search(r"unknown field `([^`]+)`", message)
    if m:
        return m.group(1)
    m = re.search(r"- at `\$\.([A-Za-z0-9_]+)", message)
    return m.group(1) if m else None


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("([^"]*)"|'([^']*)'|[A-Za-z0-9_-]+)\s*=""")


def _split_dotted(key: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s"\']+)', key)
    return tuple(next(p for p in groups if p) for groups in parts)


def _find_line(text: str | None, table: tuple[str, ...], key: str | None) -> int | None:
    """1-based line where ``table.key`` is set, scanning the file.

    Tries ``key = ...`` inside ``[table]``, then the ``[table]`` header, then the same one
    level up (``model = ...`` inside ``[provider]``).
    """
    if text is None:
        return None
    path = tuple(_norm(p) for p in (*table, *([key] if key else [])))
    lines = text.splitlines()
    while path:
        parent, last = path[:-1], path[-1]
        current: tuple[str, ...] = ()
        header_line: int | None = None
        for i, line in enumerate(lines, start=1):
            h = _HEADER.match(line)
            if h:
                current = tuple(_norm(p) for p in _split_dotted(h.group(1)))
                if current == path and header_line is None:
                    header_line = i
                continue
            k = _KEY.match(line)
            if k and current == parent and _norm(k.group(2) or k.group(3) or k.group(1)) == last:
                return i
        if header_line is not None:
            return header_line
        path = parent
    return None


MAX_CACHED_NAMES = 4096
"""Provider/model names whose lookup a :class:`Prices` remembers (then it starts afresh)."""

MAX_PRICE_FILE_BYTES = 4 * 1024 * 1024
"""Price files larger than this (4 MiB) are refused: a real one is a few kilobytes."""


def load_price_file(path: str | os.PathLike[str]) -> PriceTable:
    """Read and validate a TOML price file. Raises :class:`PriceFileError`.

    Only a regular file of at most :data:`MAX_PRICE_FILE_BYTES` is read, so a FIFO, a
    device such as ``/dev/zero`` or a huge file fails at once instead of hanging.
    """
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise PriceFileError(
                "not a regular file (a price file is a TOML text file)", file=str(p)
            )
        if st.st_size > MAX_PRICE_FILE_BYTES:
            raise PriceFileError(
                f"{st.st_size} bytes is too large for a price file "
                f"(at most {MAX_PRICE_FILE_BYTES})",
                file=str(p),
            )
        with open(p, "rb") as f:
            data = f.read(MAX_PRICE_FILE_BYTES + 1)
    except OSError as e:
        raise PriceFileError(f"cannot read price file: {e.strerror or e}", file=str(p)) from None
    if len(data) > MAX_PRICE_FILE_BYTES:
        raise PriceFileError(f"larger than {MAX_PRICE_FILE_BYTES} bytes", file=str(p))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PriceFileError(f"not UTF-8 text (TOML files are UTF-8): {e}", file=str(p)) from None
    return _parse_toml(text, str(p))


def _parse_toml(text: str, file: str) -> PriceTable:
    import tomllib  # only when a price file is read

    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise PriceFileError(
            f"not valid TOML: {e}", file=file, line=int(m.group(1)) if m else None
        ) from None
    except RecursionError:
        raise PriceFileError("nested too deeply to be a price table", file=file) from None
    try:
        return _parse_entries(data, file, text)
    except RecursionError:
        raise PriceFileError("nested too deeply to be a price table", file=file) from None


_bundled_lock = threading.Lock()
_bundled: PriceTable | None = None
BUNDLED_FILE = "speech.toml"


def bundled_entries() -> PriceTable:
    """The bundled speech price table (parsed once per process)."""
    global _bundled
    with _bundled_lock:
        if _bundled is None:
            from importlib import resources

            res = resources.files(__package__).joinpath("data", BUNDLED_FILE)
            _bundled = _parse_toml(res.read_text(encoding="utf-8"), f"callmeter/{BUNDLED_FILE}")
        return _bundled


def genai_prices_version() -> str:
    """The installed genai-prices version (imports it)."""
    import genai_prices

    return str(genai_prices.__version__)


PriceOverrides = Mapping[str, Any] | str | os.PathLike[str]
"""A dict of rates (``{"provider": {"model": {...}}}`` or ``{"provider/model": {...}}``) or
the path of a TOML price file."""


class Prices:
    """A pricing configuration: where callmeter looks up rates, first match wins.

    1. ``overrides`` (dicts and/or TOML file paths, earlier ones win),
    2. the file named by ``$CALLMETER_PRICES`` (if ``env`` and the variable is set),
    3. the bundled speech table (if ``bundled``),
    4. genai-prices' LLM price snapshot (if ``genai``).

    Provider and model names are normalised first with the bundled name table
    (``aura-2-thalia-en`` from ``Deepgram`` is priced as ``deepgram/aura-2``), see
    :mod:`.names`. ``plans`` picks a vendor plan for entries that have plan tiers
    (``{"cartesia": "scale"}``; a price file's ``[callmeter] plans`` does the same).
    ``call_charges`` names ``kind = "call"`` entries (``"twilio/voice-inbound"``) charged
    per minute of every call; a price file's ``[callmeter] call_charges`` adds to them.

    Override files are read and validated here, so a malformed file (including the
    ``$CALLMETER_PRICES`` one, when ``env``) fails at construction with
    :class:`PriceFileError`. The default prices a collector uses when given none are
    lenient instead (see :func:`default_prices`). Lookups never raise; they are cached.
    """

    env_error: PriceFileError | None
    """Why the ``$CALLMETER_PRICES`` file was left out of these prices (only the default
    prices leave a malformed file out; an explicit :class:`Prices` raises instead)."""

    def __init__(
        self,
        overrides: PriceOverrides | Iterable[PriceOverrides] | None = None,
        *,
        env: bool = True,
        bundled: bool = True,
        genai: bool = True,
        plans: Mapping[str, str] | None = None,
        call_charges: Iterable[str] | None = None,
    ) -> None:
        if overrides is None:
            items: list[PriceOverrides] = []
        elif isinstance(overrides, Mapping | str | os.PathLike):
            items = [overrides]
        elif isinstance(overrides, bytes | bytearray) or not hasattr(overrides, "__iter__"):
            raise InvalidArgumentError(
                "price overrides must be a dict, a TOML file path or a list of them, "
                f"got {type(overrides).__name__}"
            )
        else:
            items = list(overrides)
        self._tables: list[tuple[PriceSource, PriceTable]] = []
        for item in items:
            if isinstance(item, Mapping):
                self._tables.append(
                    (
                        PriceSource("override", "dict in code"),
                        _parse_entries(item, "<prices dict>", None),
                    )
                )
            elif isinstance(item, str | os.PathLike):
                self._tables.append(
                    (PriceSource("override", os.fspath(item)), load_price_file(item))
                )
            else:
                raise InvalidArgumentError(
                    f"price overrides must be a dict or a TOML file path, got {type(item).__name__}"
                )
        self._plan_args = _check_plans(plans)
        self._charge_args = check_call_charges(call_charges, "call_charges")
        self.env_error = None
        if env:
            self._add_env_file(strict=True)
        self._bundled = bundled
        self._genai = genai
        self._cache: dict[tuple[str, str], ResolvedPrice | None] = {}
        self._table_cache: dict[tuple[str, str], ResolvedPrice | None] = {}
        self._lock = threading.Lock()

    def _add_env_file(self, *, strict: bool) -> None:
        """Add the ``$CALLMETER_PRICES`` table. A malformed file raises when ``strict``;
        otherwise it is logged (once per file and error) and left out."""
        env_file = os.environ.get(ENV_VAR)
        if not env_file:
            return
        try:
            table = load_price_file(env_file)
        except PriceFileError as e:
            if strict:
                raise
            self.env_error = e
            _log_env_error_once(e)
            return
        self._tables.append((PriceSource("override", env_file), table))

    def _all_tables(self) -> list[tuple[PriceSource, PriceTable]]:
        tables = list(self._tables)
        if self._bundled:
            tables.append((PriceSource("bundled", f"callmeter/{BUNDLED_FILE}"), bundled_entries()))
        return tables

    @property
    def plans(self) -> dict[str, str]:
        """Plan choices in force: ``Prices(plans=)`` first, then the override files'."""
        out: dict[str, str] = {}
        for _, table in reversed(self._tables):
            out.update(table.plans)
        out.update(self._plan_args)
        return out

    @property
    def call_charges(self) -> list[str]:
        """``provider/model`` of the call-level entries charged per minute of every call."""
        out = list(self._charge_args)
        for _, table in self._tables:
            out.extend(c for c in table.call_charges if c not in out)
        return out

    def lookup(self, model: str, provider: str | None = None) -> ResolvedPrice | None:
        """The price of ``model`` (from ``provider`` when given), or None if unknown."""
        key = (_norm(provider), _norm(model))
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find_tables(key, model, provider)
        if found is None and self._genai and key[1]:
            prov = _norm_provider(key[0])
            found = self._find_genai(model, prov or provider)
        with self._lock:
            if len(self._cache) >= MAX_CACHED_NAMES:  # names come from events: stay bounded
                self._cache.clear()
            self._cache[key] = found
        return found

    def billing_rule(self, model: str | None, provider: str | None) -> tuple[int, int] | None:
        """``(minimum, increment)`` in microseconds of the billing rule of a table entry
        for this model, or None. Never imports genai-prices (it is read while collecting)."""
        if not model:
            return None
        key = (_norm(provider), _norm(model))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._find_tables(key, model, provider)
        return rule_of(hit.entry) if hit is not None and hit.entry is not None else None

    def _find_tables(
        self, key: tuple[str, str], model: str, provider: str | None
    ) -> ResolvedPrice | None:
        try:
            return self._table_cache[key]
        except KeyError:
            pass
        found = self._search_tables(key, model, provider)
        with self._lock:
            if len(self._table_cache) >= MAX_CACHED_NAMES:
                self._table_cache.clear()
            self._table_cache[key] = found
        return found

    def _search_tables(
        self, key: tuple[str, str], model: str, provider: str | None
    ) -> ResolvedPrice | None:
        tables = self._all_tables()
        names = _bundled_names()
        prov = names.provider(key[0]) if names is not None else key[0]
        candidates = [(prov, key[1])]
        if names is not None:
            mapped = names.model(key[0], prov, key[1])
            if mapped is not None and mapped != key[1]:
                candidates.append((prov, mapped))
        for k in candidates:
            for src, table in tables:
                entry = table.get(k)
                if entry is None and k[0]:
                    entry = table.get(("", k[1]))  # provider-less override entry
                if entry is None and not k[0]:
                    entry = next((e for (p, m), e in table.items() if m == k[1]), None)
                if entry is not None:
                    found = entry
                    entry, plan = self._apply_plan(entry, k)
                    notes = entry.notes
                    if plan is not None:
                        notes = f"plan {plan!r}" + (f"; {notes}" if notes else "")
                    src = PriceSource(src.kind, src.origin, entry.source, entry.checked, notes)
                    return ResolvedPrice(
                        provider, model, src, entry=entry, table_name=table.name_of(found, k)
                    )
        return None

    def _apply_plan(self, entry: PriceEntry, key: tuple[str, str]) -> tuple[PriceEntry, str | None]:
        if not entry.plans and entry.plan is None:
            return entry, None
        plans = self.plans
        chosen = plans.get(f"{key[0]}/{key[1]}") or plans.get(key[0])
        if chosen is None or chosen == entry.plan:
            return entry, entry.plan
        rates = entry.plans.get(chosen)
        if rates is None:
            _log_unknown_plan_once(key, chosen, entry)
            return entry, entry.plan
        return msgspec.structs.replace(entry, plan=chosen, **rates), chosen

    def _find_genai(self, model: str, provider: str | None) -> ResolvedPrice | None:
        try:
            from genai_prices import data_snapshot

            snap = data_snapshot.get_snapshot()
            pid = provider.strip() if provider and _norm(provider) != "unknown" else None
            if pid is not None and data_snapshot.find_provider_by_id(snap.providers, pid) is None:
                pid = None  # a provider genai-prices does not know: match on the model name
            prov, info = snap.find_provider_model(model, None, pid, None)
        except LookupError:
            return None
        except Exception:  # a broken genai-prices install must not break measurement
            log.exception("genai-prices lookup failed for %s/%s", provider, model)
            return None
        try:
            linear = _flat_rates(prov, info)
        except Exception:
            linear = None
        note = getattr(info, "price_comments", None)
        origin = f"genai-prices {genai_prices_version()} (offline snapshot)"
        src = PriceSource("genai-prices", origin, notes=note)
        return ResolvedPrice(provider, model, src, genai=(prov, info), linear=linear)

    def entries(self, kind: str | None = None) -> list[tuple[str, str, PriceEntry, PriceSource]]:
        """Every table entry (overrides, then bundled), once per ``provider/model``, with
        the plan choices applied; ``kind`` keeps only entries of that kind."""
        out: list[tuple[str, str, PriceEntry, PriceSource]] = []
        seen: set[tuple[str, str]] = set()
        for src, table in self._all_tables():
            for prov, model, entry in table.rows:
                k = (_norm(prov), _norm(model))
                if k in seen or (kind is not None and entry.kind != kind):
                    continue
                seen.add(k)
                entry, _ = self._apply_plan(entry, k)
                out.append(
                    (
                        prov,
                        model,
                        entry,
                        PriceSource(src.kind, src.origin, entry.source, entry.checked, entry.notes),
                    )
                )
        return out

    def preload(self) -> None:
        """Import genai-prices and read the bundled tables now (they load lazily otherwise)."""
        if self._bundled:
            bundled_entries()
        _bundled_names()
        if self._genai:
            self.lookup("gpt-4o-mini", "openai")


def billing_rule(price: ResolvedPrice | None) -> tuple[int, int] | None:
    """The per-request billing rule of a resolved price, or None (none, or no price)."""
    if price is None or price.entry is None:
        return None
    return rule_of(price.entry)


def rule_of(entry: PriceEntry) -> tuple[int, int] | None:
    """An entry's billing rule as ``(minimum, increment)`` microseconds, or None."""
    if entry.min_seconds is None and entry.increment_seconds is None:
        return None
    low = int(entry.min_seconds * 1_000_000) if entry.min_seconds is not None else 0
    inc = int(entry.increment_seconds * 1_000_000) if entry.increment_seconds is not None else 1
    return low, max(inc, 1)


def _norm_provider(provider: str) -> str:
    names = _bundled_names()
    return names.provider(provider) if names is not None else provider


_names_broken = False


def _bundled_names() -> Any:
    global _names_broken
    from .names import bundled_names

    if _names_broken:
        return None
    try:
        return bundled_names()
    except Exception:  # a broken install must not break measurement
        _names_broken = True
        log.exception(
            "callmeter: the bundled model-name table cannot be read; names are used as reported"
        )
        return None


def _check_plans(plans: Mapping[str, str] | None) -> dict[str, str]:
    if plans is None:
        return {}
    if not isinstance(plans, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in plans.items()
    ):
        raise InvalidArgumentError(
            'plans must be a dict of provider (or "provider/model") to plan name, '
            f'e.g. {{"cartesia": "scale"}}; got {plans!r}'
        )
    return {_norm(k): v for k, v in plans.items()}


def check_call_charges(charges: Iterable[str] | None, what: str) -> list[str]:
    """Validate a list of ``provider/model`` call-charge names (raises InvalidArgumentError)."""
    if charges is None:
        return []
    if isinstance(charges, str):
        charges = [charges]
    try:
        items = list(charges)
    except TypeError:
        items = [charges]  # type: ignore[list-item]
    for c in items:
        if not isinstance(c, str) or "/" not in c:
            raise InvalidArgumentError(
                f'{what} must be a list of "provider/model" names of kind "call" price '
                f'entries, e.g. ["twilio/voice-inbound"]; got {c!r}'
            )
    return items


_plan_logged: set[tuple[str, str, str]] = set()


def _log_unknown_plan_once(key: tuple[str, str], plan: str, entry: PriceEntry) -> None:
    k = (*key, plan)
    if k in _plan_logged:
        return
    _plan_logged.add(k)
    log.error(
        "plan %r chosen for %s/%s is not one of its plans (%s); its %r rates are used",
        plan,
        *key,
        ", ".join(entry.plans) or "none",
        entry.plan,
    )


_GENAI_TOKEN_KEYS = frozenset(RATE_FIELDS[:7])
# Separate usage families callmeter never reports: rates for them add nothing.
_GENAI_IGNORED = re.compile(r"^[a-z_]+_(searches|executions)_kcount$")


def _flat_rates(provider: Any, info: Any) -> PriceEntry | None:
    """genai-prices' current rates for ``info`` as a :class:`PriceEntry`, when they are
    flat token rates that callmeter's arithmetic applies exactly as genai-prices does."""
    if provider.id == "groq" and info.id.startswith("whisper"):
        return None  # genai-prices applies a per-request minimum here
    model_price = info.get_prices(dt.datetime.now(tz=dt.UTC))
    rates: dict[str, Decimal] = {}
    for key, value in vars(model_price).items():
        if value is None or key.startswith("_") or _GENAI_IGNORED.match(key):
            continue
        if not isinstance(value, Decimal):
            return None  # tiered
        if key in _GENAI_TOKEN_KEYS:
            rates[key] = value
        elif key == "requests_kcount":
            rates["request"] = value / 1000
        else:
            return None
    return PriceEntry(**rates) if rates else None


_env_logged: set[str] = set()
_env_logged_lock = threading.Lock()


def _log_env_error_once(e: PriceFileError) -> None:
    with _env_logged_lock:
        if str(e) in _env_logged:
            return
        _env_logged.add(str(e))
    log.error(
        "$%s names a price file that cannot be used, so it is ignored and costs use the "
        "bundled speech table and genai-prices: %s. Fix the file (check it with `callmeter "
        "prices MODEL`) or unset %s.",
        ENV_VAR,
        e,
        ENV_VAR,
    )


def _with_env(overrides: PriceOverrides | Iterable[PriceOverrides] | None) -> Prices:
    """``Prices(overrides)``, except that a malformed ``$CALLMETER_PRICES`` file is logged
    and left out rather than raised: measuring must not fail because of the environment."""
    prices = Prices(overrides, env=False)
    prices._add_env_file(strict=False)
    return prices


_default_lock = threading.Lock()
_default: tuple[str | None, Prices] | None = None


def default_prices() -> Prices:
    """The process-wide default :class:`Prices` (bundled + genai-prices + ``$CALLMETER_PRICES``).

    Rebuilt when ``$CALLMETER_PRICES`` changes. Never raises: a malformed or missing
    ``$CALLMETER_PRICES`` file is logged once as an error on the ``callmeter.pricing``
    logger (naming file, line and field) and left out; ``Prices.env_error`` says why.
    """
    global _default
    env_file = os.environ.get(ENV_VAR) or None
    with _default_lock:
        if _default is None or _default[0] != env_file:
            _default = (env_file, _with_env(None))
        return _default[1]


def resolve_prices(prices: Prices | PriceOverrides | bool | None) -> Prices | None:
    """What ``UsageCollector(prices=...)`` means: None/True -> the defaults, False -> no
    pricing, a :class:`Prices` as is, a dict or file path -> the defaults plus those rates.

    A malformed dict or file given here raises :class:`PriceFileError`; a malformed
    ``$CALLMETER_PRICES`` file does not (see :func:`default_prices`).
    """
    if prices is False:
        return None
    if prices is None or prices is True:
        return default_prices()
    if isinstance(prices, Prices):
        return prices
    return _with_env(prices)
