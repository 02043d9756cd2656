"""Bearer tokens: ``TOKEN:TENANT:SCOPES`` entries, looked up in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError

_BOTH = frozenset({"ingest", "read"})
SCOPES = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "ingest+read": _BOTH,
    "read+ingest": _BOTH,
}
"""The scope strings a token may have."""


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token's tenant and scopes (the secret is kept only as a SHA-256 digest)."""

    digest: bytes
    tenant: str
    scopes: frozenset[str]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Tokens:
    """The tokens a server accepts. Empty means no authentication (loopback only)."""

    def __init__(self, tokens: list[Token] | None = None) -> None:
        self._tokens = list(tokens or [])

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def parse(cls, entries: list[str], source: str) -> Tokens:
        """Tokens from ``TOKEN:TENANT:SCOPES`` entries (blank entries and ``#`` comments skip)."""
        out: list[Token] = []
        seen: set[bytes] = set()
        for n, raw in enumerate(entries, 1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            parts = entry.split(":")
            where = f"{source} entry {n}"
            if len(parts) != 3:
                raise InvalidArgumentError(f"{where}: expected TOKEN:TENANT:SCOPES")
            secret, tenant, scopes = (p.strip() for p in parts)
            if len(secret) < 8:
                raise InvalidArgumentError(f"{where}: the token must be at least 8 characters")
            if not tenant:
                raise InvalidArgumentError(f"{where}: the tenant is empty")
            if scopes not in SCOPES:
                raise InvalidArgumentError(
                    f"{where}: scopes must be ingest, read or ingest+read, got {scopes!r}"
                )
            digest = _digest(secret)
            if digest in seen:
                raise InvalidArgumentError(f"{where}: the same token is listed twice")
            seen.add(digest)
            out.append(Token(digest, tenant, SCOPES[scopes]))
        return cls(out)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Tokens:
        """Tokens from a file (one entry per line), else from ``$CALLMETER_TOKENS``
        (comma-separated), else none."""
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidArgumentError(f"cannot read the tokens file {path!r}: {exc}") from None
            return cls.parse(text.splitlines(), str(path))
        env = os.environ.get("CALLMETER_TOKENS", "")
        return cls.parse(env.split(","), "$CALLMETER_TOKENS")

    def lookup(self, secret: str) -> Token | None:
        """The token matching ``secret``; every token is compared, in constant time."""
        digest = _digest(secret)
        found = None
        for t in self._tokens:
            if hmac.compare_digest(digest, t.digest):
                found = t
        return found
