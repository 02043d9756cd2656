"""Provider detection: the ``model_provider`` name of a client, from its base URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import openai

from ...errors import InvalidArgumentError

__all__ = ["LOCAL_PROVIDER", "infer_provider", "provider_of"]

_PROVIDER_HOSTS = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure"),
    ("azure.com", "azure"),
    ("groq.com", "groq"),
    ("together.xyz", "together"),
    ("together.ai", "together"),
    ("deepseek.com", "deepseek"),
    ("mistral.ai", "mistral"),
    ("openrouter.ai", "openrouter"),
    ("fireworks.ai", "fireworks"),
    ("x.ai", "xai"),
    ("cerebras.ai", "cerebras"),
    ("perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "google"),
)
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
LOCAL_PROVIDER = "openai-compatible"
"""Provider name for a server that the base URL does not identify (e.g. vLLM on localhost)."""


def infer_provider(base_url: object) -> str:
    """Provider name for an API base URL: ``openai``, ``azure``, ``groq``, ``together``, ...;
    ``ollama`` for localhost:11434; otherwise ``openai-compatible``."""
    try:
        parts = urlsplit(str(base_url))
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return LOCAL_PROVIDER
    for suffix, name in _PROVIDER_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return name
    if (host in _LOCAL_HOSTS or host.endswith(".local")) and port == 11434:
        return "ollama"
    return LOCAL_PROVIDER


def provider_of(client: Any, provider: str | None) -> str:
    """``provider`` if given (checked), else the name inferred from ``client``."""
    if provider is not None:
        if not isinstance(provider, str) or not provider:
            raise InvalidArgumentError(f"provider must be a non-empty str, got {provider!r}")
        return provider
    if isinstance(client, openai.AzureOpenAI | openai.AsyncAzureOpenAI):
        return "azure"
    return infer_provider(getattr(client, "base_url", ""))
