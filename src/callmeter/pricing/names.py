"""Model-name normalisation: names that framework plugins report -> priced entries.

Framework plugins report provider and model names their own way: LiveKit's Deepgram TTS
plugin reports the voice (``aura-2-thalia-en``), OpenAI's reports the API host as the
provider (``api.openai.com``), AWS's reports ``Amazon Polly`` and the engine. The bundled
``data/names.toml`` maps them to the names of the price tables, as data: provider names
first, then per-provider model patterns (``fnmatch`` globs, first match wins). It also
records, under ``[[reported]]``, the names read from the plugins' source with the entry
each must price as (a test checks every one).
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["NameRules", "bundled_names"]

NAMES_FILE = "names.toml"


@dataclass(frozen=True, slots=True)
class NameRules:
    """Provider aliases and per-provider model patterns (all lower-case)."""

    providers: dict[str, str]
    """Reported provider -> price-table provider."""
    models: dict[str, list[tuple[str, str]]]
    """Provider (reported or price-table) -> ``[(glob pattern, priced model), ...]``."""
    reported: list[dict[str, Any]]
    """Names read from plugin sources: provider, model, priced, source."""

    def provider(self, reported: str) -> str:
        """The price-table provider for a reported (lower-case) provider name."""
        return self.providers.get(reported, reported)

    def model(self, reported_provider: str, provider: str, model: str) -> str | None:
        """The priced model name for a reported (lower-case) model, or None when no
        pattern matches. Patterns under the reported provider name are tried first."""
        for prov in (reported_provider, provider) if reported_provider != provider else (provider,):
            for pattern, target in self.models.get(prov, ()):
                if fnmatch.fnmatchcase(model, pattern):
                    return target
        return None


def parse_names(data: dict[str, Any]) -> NameRules:
    """Build :class:`NameRules` from the parsed ``names.toml``."""
    providers = {k.lower(): v.lower() for k, v in data.get("providers", {}).items()}
    models = {
        prov.lower(): [(pat.lower(), target.lower()) for pat, target in table.items()]
        for prov, table in data.get("models", {}).items()
    }
    return NameRules(providers, models, list(data.get("reported", [])))


_lock = threading.Lock()
_bundled: NameRules | None = None


def bundled_names() -> NameRules:
    """The bundled name table (parsed once per process)."""
    global _bundled
    with _lock:
        if _bundled is None:
            import tomllib
            from importlib import resources

            text = resources.files(__package__).joinpath("data", NAMES_FILE).read_text("utf-8")
            _bundled = parse_names(tomllib.loads(text))
        return _bundled
