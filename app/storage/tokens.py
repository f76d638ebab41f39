"""API tokens and the audit log, in the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from app.auth import StoredToken, digest, new_token
from app.storage.db import as_utc
from app.storage.tables import api_tokens, audit_log


def _row(r: Any) -> StoredToken:
    return StoredToken(id=r.id, name=r.name, digest=r.digest, scopes=frozenset(r.scopes),
                       models=None if r.models is None else frozenset(r.models),
                       created_at=as_utc(r.created_at), expires_at=as_utc(r.expires_at),
                       revoked_at=as_utc(r.revoked_at))


def create(*, conn: Connection, name: str, scopes: list[str], models: list[str] | None,
           expires_at: datetime | None) -> tuple[StoredToken, str]:
    """Store a new token; returns it and the token itself (shown once, never stored)."""
    token_id, token = new_token()
    conn.execute(insert(api_tokens).values(
        id=token_id, name=name, digest=digest(token), scopes=sorted(set(scopes)),
        models=None if models is None else sorted(set(models)),
        created_at=datetime.now(UTC), expires_at=expires_at))
    return get(conn=conn, token_id=token_id), token


def get(*, conn: Connection, token_id: str) -> StoredToken | None:
    r = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return None if r is None else _row(r)


def list_all(*, conn: Connection) -> list[StoredToken]:
    return [_row(r) for r in conn.execute(select(api_tokens).order_by(api_tokens.c.created_at))]


def revoke(*, conn: Connection, token_id: str) -> bool:
    res = conn.execute(update(api_tokens).where(api_tokens.c.id == token_id,
                                                api_tokens.c.revoked_at.is_(None))
                       .values(revoked_at=datetime.now(UTC)))
    return res.rowcount > 0


def audit(*, conn: Connection, token_id: str | None, token_name: str | None, action: str,
          target: str, status: int) -> None:
    conn.execute(insert(audit_log).values(at=datetime.now(UTC), token_id=token_id,
                                          token_name=token_name, action=action[:64],
                                          target=target[:512], status=status))


def audit_entries(*, conn: Connection, limit: int = 100) -> list[Any]:
    return list(conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)))
