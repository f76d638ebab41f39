"""API tokens: what a token is, how it is checked, what each scope may do. No HTTP here.

A token is ``mm_<id>_<secret>``: the id (12 hex characters) is public and names the token in
listings, logs and the audit; the secret is 256 random bits. The database keeps the id and
the SHA-256 of the whole token, never the token. A plain (unkeyed) SHA-256 is enough here: a
slow or keyed hash protects low-entropy secrets (passwords) against guessing from a leaked
table, and 256 random bits cannot be guessed whatever the hash; it also keeps the check cheap
on the ingest path. The stored and computed digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

SCOPES = ("ingest", "read", "admin", "metrics")
# What each scope may do beyond its name: admin manages everything and reads; read (and
# admin) may scrape /metrics.
IMPLIED = {"admin": {"admin", "read", "metrics"}, "read": {"read", "metrics"},
           "ingest": {"ingest"}, "metrics": {"metrics"}}
_FORMAT = re.compile(r"^mm_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


def new_token() -> tuple[str, str]:
    """(id, token): the token is shown once and never stored."""
    token_id = secrets.token_hex(6)
    return token_id, f"mm_{token_id}_{secrets.token_urlsafe(32)}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    m = _FORMAT.match(token)
    return m.group(1) if m else None


@dataclass(frozen=True)
class StoredToken:
    id: str
    name: str
    digest: str
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.digest, digest(token))

    def usable(self, now: datetime) -> str | None:
        """None, or why the token is refused."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id, name, scopes and models."""

    token_id: str
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None

    def may(self, scope: str) -> bool:
        return any(scope in IMPLIED[s] for s in self.scopes)

    def may_touch(self, model: str) -> bool:
        return self.models is None or model in self.models
