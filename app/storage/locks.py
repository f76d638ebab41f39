"""Every PostgreSQL advisory lock the service takes, and its key, in one place.

All are transaction-scoped (released at commit or rollback). Two key spaces: one bigint key
(one lock for the whole database: migrations, partitions, retention) or two int4 keys (a
class and a model or version id). The keys are fixed for good: replicas of two releases
running side by side during a rolling upgrade must take the same locks. On SQLite, which
serialises writers already, every function here holds nothing and succeeds.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# one bigint key: the whole database
MIGRATION = 0x6D6D_4D49_4752  # "mmMIGR": replicas starting together migrate one at a time
PARTITIONS = 0x6D6D_5041_5254  # "mmPART": concurrent CREATE ... PARTITION OF collide
RETENTION = 0x6D6D_5245_5445  # "mmRETE": one replica drops old partitions per tick

# two int4 keys: (class, model id) or (class, version id)
JOBS = {"drift": 1, "calibration": 2, "cohorts": 3, "labels": 4, "retention": 5}  # + model
SUMMARY_UPKEEP = 0x6D6D5355  # "mmSU" + model: rebuilding a model's stale bucket summaries
SUMMARY_BACKFILL = 0x6D6D5356  # + version: folding a version's rows received before summaries
PAIRING = 0x6D6D5041  # "mmPA" + model: shared by prediction batches, exclusive for labels


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def hold(conn: Connection, key: int, sub: int | None = None) -> None:
    """Wait for the lock ``key`` (or ``(key, sub)``) until the transaction ends."""
    if not _postgres(conn):
        return
    if sub is None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :s)"), {"k": key, "s": sub})


def try_hold(conn: Connection, key: int, sub: int | None = None) -> bool:
    """Take the lock without waiting; False when another transaction holds it."""
    if not _postgres(conn):
        return True
    if sub is None:
        return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                 {"k": key}).scalar_one())
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k, :s)"),
                             {"k": key, "s": sub}).scalar_one())


def pairing_sql(model_ids: set[int], *, labels: bool) -> str:
    """Shared (predictions) or exclusive (labels) pairing lock per model, in id order, as
    one string of statements (PostgreSQL), so a writer can send them with other statements
    in one round trip; model ids are integers, written in literally."""
    fn = "pg_advisory_xact_lock" if labels else "pg_advisory_xact_lock_shared"
    return "".join(f"SELECT {fn}({PAIRING}, {int(m)}); " for m in sorted(model_ids))


def hold_pairing(conn: Connection, model_ids: set[int], *, labels: bool) -> None:
    if not _postgres(conn):
        return
    # Through SQLAlchemy, so that errors are wrapped as on every other statement.
    conn.exec_driver_sql(pairing_sql(model_ids, labels=labels))
