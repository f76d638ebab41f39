"""Reading what was stored, straight from the database, to check the API's claims."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from app.storage.tables import labels, prediction_keys, predictions


def stored(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (predictions, prediction_keys, labels)
        }


def stored_predictions(engine: Engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(predictions).order_by(predictions.c.prediction_id)))


def stored_labels(engine: Engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(labels).order_by(labels.c.prediction_id)))
