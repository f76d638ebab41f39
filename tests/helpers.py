"""Reading what was stored, straight from the database, to check the API's claims; waiting
for a served process."""

from __future__ import annotations

import subprocess
import time

import httpx2
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


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``url``/readyz answers 200; fails if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")
