"""Pricing: where rates come from (:mod:`.prices`) and the exact USD arithmetic (:mod:`.cost`)."""

from .prices import ENV_VAR, PriceFileError, Prices, ResolvedPrice, default_prices, resolve_prices

__all__ = [
    "ENV_VAR",
    "PriceFileError",
    "Prices",
    "ResolvedPrice",
    "default_prices",
    "resolve_prices",
]
