"""The registry service tested on both stores, without HTTP: its functions take the engine
of the ``app`` fixture (which empties the database after each test)."""

from __future__ import annotations

from typing import Any

import pytest

from app.ingest.service import ingest_predictions
from tests.factories import binary_model, prediction


@pytest.fixture
def definition() -> dict[str, Any]:
    """A model's definition as the API hands it to the registry (no policy)."""
    return binary_model()


def store_prediction(app: Any, settings: Any, version: str = "v1") -> None:
    """One prediction of ``fraud`` ``version``, through the ingest service."""
    ingest_predictions(engine=app.state.engine, partitions=app.state.partitions,
                       settings=settings, body={"records": [prediction(0, ver=version)]})
