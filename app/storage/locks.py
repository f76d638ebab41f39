"""Every PostgreSQL advisory lock the service takes, and its key, in one place.

All are transaction-scoped (released at commit or rollback). Two key spaces: one bigint key
(one lock for the whole database: migrations, partitions, retention) or two int4 keys (a
class and a model or version id). The keys are fixed for good: replicas of two releases
running side by side during a rolling upgrade must take the same locks, and a release that
changes which locks an operation takes must still exclude the previous release's (the pairing
stripes: pairing_sql, docs/operations.md). On SQLite, which
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
# (MODELMON_PAIRING_LOCKS=model, and every release before the stripes)
PAIRING_STRIPE = 0x6D6D4C00  # "mmL" + stripe, + model: a label batch's stripe (striped mode)
STRIPES = 16  # label stripes per model: 0x6D6D4C00 to 0x6D6D4C0F


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


def pairing_sql(model_ids: set[int], *, labels: bool, stripe: int | None = None) -> str:
    """The pairing locks of a batch's models (PostgreSQL), in model id order, as one string
    of statements, so a writer can send them with other statements in one round trip; model
    ids are integers, written in literally.

    A pair is counted by the transaction that stores the second of its two halves, so a
    prediction batch and a label batch of one model must not overlap; two prediction batches
    may, and so may two label batches (ON CONFLICT settles a label sent twice). Prediction
    batches take, per model, PAIRING and every stripe, all shared. A label batch takes either
    PAIRING exclusively (``stripe`` None: the protocol of releases before the stripes, which
    serialises a model's label batches) or its one stripe exclusively (striped: label batches
    on other stripes run beside it). Either way it excludes every prediction batch of this
    release; only the first excludes an older release's prediction batches, which take
    PAIRING alone (docs/operations.md, Rolling upgrades)."""
    out = []
    for m in sorted(model_ids):
        m = int(m)
        if not labels:
            calls = [f"pg_advisory_xact_lock_shared({PAIRING}, {m})"] + [
                f"pg_advisory_xact_lock_shared({PAIRING_STRIPE + s}, {m})"
                for s in range(STRIPES)]  # one statement, evaluated left to right
            out.append(f"SELECT {', '.join(calls)}; ")
        elif stripe is None:
            out.append(f"SELECT pg_advisory_xact_lock({PAIRING}, {m}); ")
        else:
            out.append(f"SELECT pg_advisory_xact_lock({PAIRING_STRIPE + stripe % STRIPES}, "
                       f"{m}); ")
    return "".join(out)


def hold_pairing(conn: Connection, model_ids: set[int], *, labels: bool,
                 stripe: int | None = None) -> None:
    if not _postgres(conn):
        return
    # Through SQLAlchemy, so that errors are wrapped as on every other statement.
    conn.exec_driver_sql(pairing_sql(model_ids, labels=labels, stripe=stripe))
