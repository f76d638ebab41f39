"""``modelmon tokens`` and ``modelmon audit``: API tokens and the audit trail, against the
database named by MODELMON_DATABASE_URL (how the first admin token is made)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta

from app.auth import SCOPES
from app.cli.console import add_json

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError("a positive duration such as 90d, 12h or 30m")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _engine():  # noqa: ANN202
    from app.cli.errors import CliError
    from app.settings import get_settings
    from app.storage.db import make_engine, missing_sqlite_file

    settings = get_settings()
    if (missing := missing_sqlite_file(settings.database_url)) is not None:
        raise CliError(f"no SQLite database at {missing} (MODELMON_DATABASE_URL): point "
                       "MODELMON_DATABASE_URL at the service's database, or run modelmon "
                       "migrate to create one")
    return make_engine(settings)


def _create(args: argparse.Namespace) -> int:
    from app.storage import tokens

    engine = _engine()
    expires = datetime.now(UTC) + args.expires if args.expires else None
    with engine.begin() as conn:
        stored, token = tokens.create(conn=conn, name=args.name, scopes=args.scope,
                                      models=args.model or None, expires_at=expires)
        tokens.audit(conn=conn, token_id=None, token_name="cli", action="token.create",
                     target=stored.id, status=201)
    engine.dispose()
    if args.json:
        print(json.dumps({"token": token, "id": stored.id, "name": args.name,
                          "scopes": sorted(stored.scopes),
                          "models": sorted(stored.models) if stored.models else None,
                          "expires_at": expires.isoformat() if expires else None}))
        return 0
    print(token)
    print(f"token {stored.id} ({', '.join(sorted(stored.scopes))}"
          f"{'; models ' + ', '.join(sorted(stored.models)) if stored.models else ''}"
          f"{'; expires ' + expires.isoformat() if expires else ''}): shown once, keep it "
          "secret", file=sys.stderr)
    return 0


def _list(_args: argparse.Namespace) -> int:
    from app.storage import tokens

    engine = _engine()
    with engine.connect() as conn:
        rows = tokens.list_all(conn=conn)
    engine.dispose()
    now = datetime.now(UTC)
    for t in rows:
        print(json.dumps({"id": t.id, "name": t.name, "scopes": sorted(t.scopes),
                          "models": None if t.models is None else sorted(t.models),
                          "created_at": t.created_at.isoformat(),
                          "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                          "state": t.usable(now) or "active"}))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from app.storage import tokens

    engine = _engine()
    with engine.begin() as conn:
        done = tokens.revoke(conn=conn, token_id=args.id)
        if done:
            tokens.audit(conn=conn, token_id=None, token_name="cli", action="token.revoke",
                         target=args.id, status=200)
    engine.dispose()
    if args.json:
        print(json.dumps({"id": args.id, "revoked": done}))
    if not done:
        print(f"no active token {args.id!r}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked (refused everywhere within MODELMON_TOKEN_CACHE_SECONDS)",
          file=sys.stderr)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from app.storage import tokens

    engine = _engine()
    with engine.connect() as conn:
        rows = tokens.audit_entries(conn=conn, limit=args.limit)
    engine.dispose()
    for r in rows:
        at = r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)
        print(json.dumps({"at": at.isoformat(), "token_id": r.token_id,
                          "token_name": r.token_name, "action": r.action, "target": r.target,
                          "status": r.status}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokens", help="create, list and revoke API tokens")
    tsub = tok.add_subparsers(dest="tokens_command", required=True)
    create = tsub.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True,
                        help="ingest, read, admin or metrics (repeat for several)")
    create.add_argument("--model", action="append",
                        help="limit the token to this model (repeat for several; "
                        "default: every model)")
    create.add_argument("--expires", type=duration,
                        help="lifetime, e.g. 90d, 12h (default: never expires)")
    create.add_argument("--name", default="", help="what the token is for")
    add_json(create, "print the token and what it may do as one JSON object (the token is "
             "shown once either way)")
    create.set_defaults(func=_create)
    lst = tsub.add_parser("list", help="list tokens (never their secrets)")
    add_json(lst, "one JSON object a line (this command's only output format)")
    lst.set_defaults(func=_list)
    rev = tsub.add_parser("revoke", help="revoke a token by its id")
    rev.add_argument("id", help="the token's 12-hex-digit id (modelmon tokens list)")
    add_json(rev, 'print {"id": ..., "revoked": true|false} on stdout')
    rev.set_defaults(func=_revoke)
    audit = sub.add_parser("audit", help="the latest administrative actions, newest first")
    audit.add_argument("--limit", type=int, default=100, help="entries at most")
    add_json(audit, "one JSON object a line (this command's only output format)")
    audit.set_defaults(func=_audit)
