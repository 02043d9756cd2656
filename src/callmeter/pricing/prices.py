"""Price lookup: user overrides, then the bundled speech table, then genai-prices.

A :class:`Prices` object answers "what does this provider/model cost?" with a
:class:`ResolvedPrice` that can price an amount of usage (see :mod:`.cost`) and says where
its rates came from. ``genai-prices`` (LLM prices) is imported the first time a model is
not found in the user's or the bundled table, so ``import callmeter`` stays light.
"""

from __future__ import annotations

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

from ..errors import CallmeterError, InvalidArgumentError

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


class PriceFileError(CallmeterError, ValueError):
    """A price file (or price dict) is malformed.

    ``file``, ``line`` and ``field`` locate the problem when known (``line`` is 1-based).
    """

    def __init__(
        self, message: str, *, file: str, line: int | None = None, field: str | None = None
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}" + (f" (field {field!r})" if field else ""))
        self.file = file
        self.line = line
        self.field = field


class PriceEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The rates of one provider/model, in USD. Unset rates are not billed.

    Token rates are per million tokens and use genai-prices' names and semantics: input
    tokens include cached and audio input tokens; a more specific rate (``cache_read_mtok``,
    ``input_audio_mtok`` ...) replaces the general one for the tokens it covers, and tokens
    whose specific rate is unset are billed at the general rate.
    """

    kind: Literal["llm", "realtime", "stt", "tts"] | None = None
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
}


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
        return f"{self.provider or '*'}/{self.model}"

    def rate_lines(self) -> list[tuple[str, str]]:
        """``(rate, unit)`` pairs for display."""
        if self.entry is not None:
            return [
                (f"${getattr(self.entry, name)}", RATE_UNITS[name])
                for name in RATE_FIELDS
                if getattr(self.entry, name) is not None
            ]
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


_Key = tuple[str, str]  # (provider or "", model), lower-case


def _norm(s: str | None) -> str:
    return (s or "").strip().lower()


def _parse_entries(data: Any, file: str, text: str | None) -> dict[_Key, PriceEntry]:
    """Validate ``{provider: {model: {...}}}`` (or ``{"provider/model": {...}}``) data."""
    if not isinstance(data, Mapping):
        raise PriceFileError("expected a table of providers", file=file)
    out: dict[_Key, PriceEntry] = {}
    for provider, models in data.items():
        if not isinstance(provider, str):
            raise PriceFileError(f"provider names must be strings, got {provider!r}", file=file)
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
            try:
                entry = msgspec.convert(dict(raw), PriceEntry, str_keys=True)
            except msgspec.ValidationError as e:
                name = _error_field(str(e))
                raise PriceFileError(
                    f"invalid price for {path}: {e}",
                    file=file,
                    line=_find_line(text, (prov, model), name),
                    field=f"{path}.{name}" if name else path,
                ) from None
            for name in RATE_FIELDS:
                value = getattr(entry, name)
                if value is not None and (not value.is_finite() or value < 0):
                    raise PriceFileError(
                        f"{name} must be a finite, non-negative number of USD, got {value}",
                        file=file,
                        line=_find_line(text, (prov, model), name),
                        field=f"{path}.{name}",
                    )
            if all(getattr(entry, name) is None for name in RATE_FIELDS):
                raise PriceFileError(
                    f"{path} sets no rate; set at least one of {', '.join(RATE_FIELDS)}",
                    file=file,
                    line=_find_line(text, (prov, model), None),
                    field=path,
                )
            for name in (model, *entry.aliases):
                out[(_norm(prov), _norm(name))] = entry
    return out


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


MAX_PRICE_FILE_BYTES = 4 * 1024 * 1024
"""Price files larger than this (4 MiB) are refused: a real one is a few kilobytes."""


def load_price_file(path: str | os.PathLike[str]) -> dict[_Key, PriceEntry]:
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


def _parse_toml(text: str, file: str) -> dict[_Key, PriceEntry]:
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
_bundled: dict[_Key, PriceEntry] | None = None
BUNDLED_FILE = "speech.toml"


def bundled_entries() -> dict[_Key, PriceEntry]:
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
    ) -> None:
        if overrides is None:
            items: list[PriceOverrides] = []
        elif isinstance(overrides, Mapping | str | os.PathLike):
            items = [overrides]
        else:
            items = list(overrides)
        self._tables: list[tuple[PriceSource, dict[_Key, PriceEntry]]] = []
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
        self.env_error = None
        if env:
            self._add_env_file(strict=True)
        self._bundled = bundled
        self._genai = genai
        self._cache: dict[tuple[str, str], ResolvedPrice | None] = {}
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

    def lookup(self, model: str, provider: str | None = None) -> ResolvedPrice | None:
        """The price of ``model`` (from ``provider`` when given), or None if unknown."""
        key = (_norm(provider), _norm(model))
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find(key, model, provider)
        with self._lock:
            self._cache[key] = found
        return found

    def _find(self, key: tuple[str, str], model: str, provider: str | None) -> ResolvedPrice | None:
        tables = list(self._tables)
        if self._bundled:
            tables.append((PriceSource("bundled", f"callmeter/{BUNDLED_FILE}"), bundled_entries()))
        for src, table in tables:
            entry = table.get(key)
            if entry is None and key[0]:
                entry = table.get(("", key[1]))  # provider-less override entry
            if entry is None and not key[0]:
                entry = next((e for (p, m), e in table.items() if m == key[1]), None)
            if entry is not None:
                src = PriceSource(src.kind, src.origin, entry.source, entry.checked, entry.notes)
                return ResolvedPrice(provider, model, src, entry=entry)
        if self._genai and key[1]:
            return self._find_genai(model, provider)
        return None

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

    def preload(self) -> None:
        """Import genai-prices and read the bundled table now (they load lazily otherwise)."""
        if self._bundled:
            bundled_entries()
        if self._genai:
            self.lookup("gpt-4o-mini", "openai")


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
