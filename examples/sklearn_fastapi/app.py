"""A scikit-learn model served by FastAPI, monitored by modelmon.

At start the app trains a small fraud model (a stand-in for loading yours), registers it,
its version, regularization and weights with modelmon, then logs every prediction; ground
truth arrives later on /feedback. Run it next to `modelmon serve`:

    pip install ./client fastapi uvicorn scikit-learn pandas     # from the repository root
    cd examples/sklearn_fastapi
    MODELMON_URL=http://127.0.0.1:8000 uvicorn app:app --port 9000
    curl -s localhost:9000/predict -H 'content-type: application/json' \
         -d '{"features": {"amount": 250.0, "age": 31, "country": "DE"}, "region": "eu"}'

MODELMON_URL and MODELMON_TOKEN (a token with the admin scope registers; ingest suffices to
log) are read from the environment by the client.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pandas as pd
from fastapi import FastAPI
from modelmon_client import AsyncMonitor
from pydantic import BaseModel
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

MODEL = os.environ.get("MODEL_NAME", "fraud-example")
VERSION = os.environ.get("MODEL_VERSION", "v1")
COUNTRIES = ["DE", "FR", "US", "BR"]


def train(seed: int = 0, n: int = 2000) -> Pipeline:
    """Fraud (1) is likelier for large amounts, young customers and one country."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"amount": rng.gamma(2.0, 50.0, n), "age": rng.integers(18, 80, n),
                      "country": rng.choice(COUNTRIES, n)})
    logit = 0.02 * (x["amount"] - 100) - 0.05 * (x["age"] - 40) + (x["country"] == "BR")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    model = Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), ["amount", "age"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"),
                                     ["country"])])),
        ("clf", LogisticRegression(C=0.5)),
    ])
    return model.fit(x, y)


class Features(BaseModel):
    amount: float
    age: int
    country: str


class PredictRequest(BaseModel):
    features: Features
    region: str


class Feedback(BaseModel):
    prediction_id: str
    is_fraud: bool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.model = train()
    async with AsyncMonitor(model=MODEL, version=VERSION) as monitor:
        await monitor.register_sklearn(app.state.model, categorical=["country"],
                                       cohort_keys=["region"])
        app.state.monitor = monitor
        yield
    # leaving the block flushed what was still buffered


app = FastAPI(title="fraud model", lifespan=lifespan)


@app.post("/predict")
def predict(req: PredictRequest) -> dict[str, object]:
    """Sync route: scikit-learn holds the CPU, so FastAPI runs it in its thread pool;
    ``log`` only appends to the monitor's buffer."""
    started = time.perf_counter()
    features = req.features.model_dump()
    score = float(app.state.model.predict_proba(pd.DataFrame([features]))[0, 1])
    latency_ms = (time.perf_counter() - started) * 1000
    predicted = int(score >= 0.5)
    prediction_id = app.state.monitor.log(
        features=features, prediction={"score": score, "label": predicted},
        cohorts={"region": req.region}, latency_ms=latency_ms)
    return {"prediction_id": prediction_id, "fraud_probability": score, "is_fraud": predicted}


@app.post("/feedback")
async def feedback(fb: Feedback) -> dict[str, str]:
    app.state.monitor.label(fb.prediction_id, int(fb.is_fraud))
    return {"status": "queued"}


@app.get("/monitoring")
async def monitoring() -> dict[str, object]:
    """The client's counters, for a quick look (export_metrics() puts them on /metrics)."""
    s = app.state.monitor.stats
    return {"queued": s.queued, "sent": s.sent, "dropped": s.dropped, "refused": s.refused,
            "pending": s.pending, "last_error": s.last_error}
