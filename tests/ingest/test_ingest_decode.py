"""The typed fast path accepts only what the complete validator accepts, with the same rows.

Generated batches mix valid records with one-field mutations of every kind the contract
refuses (wrong types, NaN, booleans, huge integers, empty or overlong strings, NUL and lone
surrogate escapes, unknown fields, unknown models and versions, bad timestamps, out-of-range
probabilities and sums, unknown classes, integers that name no class, integers past the float
range, overlong integer labels). For each: when the complete validator refuses, the fast path
must step aside (so the client gets the complete validator's 4xx); when the fast path accepts,
the complete validator accepts the same rows. Integer labels are valid (the decimal string of a
class) and taken on both paths.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.errors import ApiError, DomainError
from app.evaluation.summaries import ModelShape, Rows
from app.ingest import decode, summarize
from app.ingest import validation as v
from app.jsonvalues import parse_json
from app.storage.registry import ModelRow

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIMITS = v.Limits(NOW, timedelta(days=1), timedelta(days=30), 1e-3)
FEATURES = [{"name": "x", "type": "numeric"}, {"name": "y", "type": "numeric"},
            {"name": "c", "type": "categorical"}]


def schemas() -> dict[str, v.ModelSchema]:
    rows = {
        "bin": ModelRow(1, "bin", "binary_classification", FEATURES, ["region"], ["no", "yes"],
                        NOW),
        "multi": ModelRow(2, "multi", "multiclass_classification", FEATURES, ["region"],
                          ["a", "b", "c"], NOW),
        "reg": ModelRow(3, "reg", "regression", FEATURES, [], None, NOW),
        "ints": ModelRow(4, "ints", "binary_classification", FEATURES, [], ["0", "1"], NOW),
        # undeclared features stored, not refused: the fast path must never accept them
        "rec": ModelRow(5, "rec", "regression", FEATURES, [], None, NOW,
                        {"unknown_features": "record"}),
    }
    out = {name: v.ModelSchema.build(r, {"v1": r.id * 10}) for name, r in rows.items()}
    # a second version of "bin" with its own feature list (x kept, y and c removed, n
    # added): its records are the complete validator's alone
    bin_row = rows["bin"]
    out["bin"] = v.ModelSchema.build(bin_row, {"v1": 10, "v2": 11}, {11: [
        {"name": "x", "type": "numeric"}, {"name": "n", "type": "numeric"}]})
    return out


def valid(rng: random.Random, i: int) -> dict:
    model = rng.choice(["bin", "multi", "reg", "ints", "rec"])
    rec: dict = {"model": model, "version": "v1", "prediction_id": f"p{i}",
                 "timestamp": (NOW - timedelta(minutes=rng.randint(0, 5000))).isoformat()}
    if model == "bin" and rng.random() < 0.2:
        rec["version"] = "v2"
    feats = {}
    if rng.random() < 0.9:
        feats["x"] = rng.choice([rng.gauss(0, 1), rng.randint(-5, 5), None])
    if rng.random() < 0.5:
        feats["y"] = round(rng.uniform(-1e6, 1e6), 3)
    if rng.random() < 0.8:
        feats["c"] = rng.choice(["de", "fr", "ü-ß", None, "x" * 200])
    if feats or rng.random() < 0.5:
        rec["features"] = feats
    if model == "bin" or model == "ints":
        rec["prediction"] = {"score": rng.choice([rng.random(), 0, 1])}
        # integer labels are the classes' decimal strings
        if rng.random() < 0.3:
            rec["prediction"]["label"] = rng.choice(["no", "yes"] if model == "bin"
                                                    else ["0", "1", 0, 1])
        if rng.random() < 0.3:
            rec["label"] = rng.choice(["no", "yes"] if model == "bin" else ["0", "1", 0, 1])
    elif model == "multi":
        p = [rng.random() for _ in range(3)]
        probs = {k: x / sum(p) for k, x in zip("abc", p, strict=True)}
        if rng.random() < 0.3:
            probs = {"a": 0.25, "b": 0.75}
        rec["prediction"] = {"probabilities": probs}
        if rng.random() < 0.3:
            rec["label"] = rng.choice("abc")
    else:  # reg and rec
        rec["prediction"] = {"value": rng.gauss(10, 5)}
        if rng.random() < 0.3:
            rec["label"] = rng.choice([rng.gauss(10, 5), 3])
        if rng.random() < 0.2:
            rec["prediction"]["label"] = rng.choice(["high", 3])
    if model in ("bin", "multi") and rng.random() < 0.5:
        rec["cohorts"] = {"region": rng.choice(["eu", "us", None])}
    if rng.random() < 0.3:
        rec["latency_ms"] = rng.choice([rng.uniform(0, 50), 3])
    return rec


MUTATIONS = [
    lambda r, g: r.update(model="nope"),
    lambda r, g: r.update(version="v9"),
    lambda r, g: r.pop("version"),
    lambda r, g: r.update(version=3),
    lambda r, g: r.update(prediction_id=""),
    lambda r, g: r.update(prediction_id="x" * 201),
    lambda r, g: r.update(prediction_id=7),
    lambda r, g: r.update(timestamp="yesterday"),
    lambda r, g: r.update(timestamp=(NOW + timedelta(days=2)).isoformat()),
    lambda r, g: r.update(timestamp=(NOW - timedelta(days=31)).isoformat()),
    lambda r, g: r.update(timestamp="2026-11-25 11:00:00"),  # a format both parsers read
    lambda r, g: r.update(timestamp=1764000000),
    lambda r, g: r.update(extra=1),
    lambda r, g: r.update(features={"x": "1.5"}),
    lambda r, g: r.update(features={"x": True}),
    lambda r, g: r.update(features={"x": "NaN-marker"}),
    lambda r, g: r.update(features={"c": 12}),
    lambda r, g: r.update(features={"c": ""}),
    lambda r, g: r.update(features={"c": "x" * 201}),
    lambda r, g: r.update(features={"zzz": 1}),
    lambda r, g: r.update(features={"x": 1.0, "zzz": "a", "z2": 3}),
    lambda r, g: r.update(features={"zzz": [1]}),
    lambda r, g: r.update(features={"bad name": 1}),
    lambda r, g: r.update(features={"zzz": None}),
    lambda r, g: r.update(features=[1, 2]),
    lambda r, g: r.update(features=None),
    lambda r, g: r.update(features={"x": 10 ** 400}),
    lambda r, g: r.update(features={"c": "NUL-marker"}),
    lambda r, g: r.update(cohorts={"region": 5}),
    lambda r, g: r.update(cohorts={"nope": "eu"}),
    lambda r, g: r.update(cohorts={"region": "SURROGATE-marker"}),
    lambda r, g: r.update(cohorts="eu"),
    lambda r, g: r.update(prediction=None),
    lambda r, g: r.pop("prediction"),
    lambda r, g: r.update(prediction={"score": 1.5}),
    lambda r, g: r.update(prediction={"score": -0.1, "label": "no"}),
    lambda r, g: r.update(prediction={"value": 1.0, "score": 0.5}),
    lambda r, g: r.update(prediction={"probabilities": {"a": 0.5, "b": 0.6}}),
    lambda r, g: r.update(prediction={"probabilities": {"a": 0.5, "z": 0.5}}),
    lambda r, g: r.update(prediction={"probabilities": {}}),
    lambda r, g: r.update(prediction={"score": 0.5, "label": 1}),
    lambda r, g: r.update(prediction={"score": 0.5, "label": "maybe"}),
    lambda r, g: r.update(label=1),
    lambda r, g: r.update(label=2),
    lambda r, g: r.update(label=10 ** 400),
    lambda r, g: r.update(prediction={"score": 0.5, "label": 2}),
    lambda r, g: r.update(prediction={"value": 1.0, "label": 10 ** 201}),
    lambda r, g: r.update(label="maybe"),
    lambda r, g: r.update(label=True),
    lambda r, g: r.update(label="NaN-marker"),
    lambda r, g: r.update(latency_ms=-1),
    lambda r, g: r.update(latency_ms=1e300),
    lambda r, g: r.update(latency_ms=3_600_001),
    lambda r, g: r.update(latency_ms="fast"),
    lambda r, g: r.update(prediction_id="p0"),  # a repeat inside the batch
]


def encode(batch: dict) -> bytes:
    text = json.dumps(batch, ensure_ascii=False)
    return (text.replace('"NaN-marker"', "NaN").replace("NUL-marker", "a\\u0000b")
            .replace("SURROGATE-marker", "\\ud800").encode())


def complete(body: bytes) -> v.ValidatedPredictions | ApiError | DomainError:
    s = schemas()
    try:
        records = v.records_of(parse_json(body), 10_000)
        v.check_known(records, s, with_version=True)
        return v.validate_predictions(records, s, LIMITS)
    except (ApiError, DomainError) as err:
        return err


def stored(row: tuple) -> tuple:
    """A row as the database reads it back: JSON objects parsed."""
    r = list(row[:14])
    r[5] = json.loads(r[5])
    r[6] = json.loads(r[6])
    r[9] = None if r[9] is None else json.loads(r[9])
    return tuple(r)


def same_columns(a: Rows, b: Rows) -> None:
    for name in ("version_id", "ts", "score", "value", "probabilities", "label",
                 "label_delay"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
    for part in ("features", "cohorts"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys(), part
        for k in x:
            assert x[k].dtype == y[k].dtype, (part, k)
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{part}.{k}")


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_accepts_only_what_the_complete_validator_accepts(seed: int):
    rng = random.Random(seed)
    accepted = refused = 0
    warm: dict = {}  # decoders kept across batches: later batches try the last one first
    for trial in range(60):
        records = [valid(rng, i) for i in range(rng.randint(1, 6))]
        if trial % 2:
            rng.choice(MUTATIONS)(rng.choice(records), rng)
        body = encode({"records": records})
        expected = complete(body)
        try:
            cached = decode.decode_predictions(body, lambda wanted: schemas(), LIMITS, 10_000,
                                               warm)
        except decode.NotFast:
            cached = None
        try:
            batch = decode.decode_predictions(body, lambda wanted: schemas(), LIMITS, 10_000)
        except decode.NotFast:
            assert cached is None, records
            refused += 1
            continue
        assert cached is not None and cached.rows == batch.rows and cached.names == batch.names
        accepted += 1
        assert not isinstance(expected, (ApiError, DomainError)), (records, expected.details)
        assert [stored(r) for r in batch.rows] == [stored(r) for r in expected.rows]
        assert batch.repeats == len(records) - len(expected.rows)
        # the columns handed to the summaries are those of the stored values
        shapes = {s.row.id: ModelShape.of(s.row) for s in schemas().values()}
        reference = summarize.columns_of_rows(shapes, expected.rows, expected.parsed)
        assert batch.columns.keys() == reference.keys()
        for model_id, mc in batch.columns.items():
            np.testing.assert_array_equal(mc.positions, reference[model_id].positions)
            same_columns(mc.rows, reference[model_id].rows)
    # the fast path is the common path for valid batches, not a formality
    assert accepted >= 15, (accepted, refused)


def test_limits_still_apply_on_the_fast_path():
    records = [valid(random.Random(1), i) for i in range(5)]
    with pytest.raises(decode.NotFast):
        decode.decode_predictions(encode({"records": records}), lambda wanted: schemas(),
                                  LIMITS, 4)


def test_a_cached_decoder_sees_versions_registered_after_it_was_built():
    cache: dict = {}
    first = schemas()
    rec = {"model": "bin", "version": "v1", "prediction_id": "a",
           "timestamp": NOW.isoformat(), "features": {}, "prediction": {"score": 0.5}}
    batch = decode.decode_predictions(encode({"records": [rec]}), lambda wanted: first,
                                      LIMITS, 10, cache)
    assert batch.rows[0][3] == 10
    later = {**first, "bin": v.ModelSchema.build(first["bin"].row, {"v1": 10, "v2": 11})}
    batch = decode.decode_predictions(
        encode({"records": [{**rec, "version": "v2", "prediction_id": "b"}]}),
        lambda wanted: later, LIMITS, 10, cache)
    assert batch.rows[0][3] == 11  # taken on the fast path, with the new version's id


def test_the_last_batch_decoder_steps_aside_when_the_schema_changed():
    cache: dict = {}
    first = schemas()
    rec = {"model": "bin", "version": "v1", "prediction_id": "a",
           "timestamp": NOW.isoformat(), "features": {}, "prediction": {"score": 0.5},
           "cohorts": {"region": "eu"}}
    decode.decode_predictions(encode({"records": [rec]}), lambda wanted: first, LIMITS, 10,
                              cache)
    row = first["bin"].row
    wider = {**first, "bin": v.ModelSchema.build(
        ModelRow(row.id, row.name, row.task, row.features, ["region", "device"], row.classes,
                 row.created_at), {"v1": 10})}
    # a cohort key added since: the last decoder refuses it, the batch is decoded anew
    batch = decode.decode_predictions(
        encode({"records": [{**rec, "prediction_id": "b",
                             "cohorts": {"region": "eu", "device": "ios"}}]}),
        lambda wanted: wider, LIMITS, 10, cache)
    assert json.loads(batch.rows[0][6]) == {"device": "ios", "region": "eu"}
    # and a batch the old decoder would take is decoded with the new schema's decoder too
    batch = decode.decode_predictions(encode({"records": [{**rec, "prediction_id": "c"}]}),
                                      lambda wanted: wider, LIMITS, 10, cache)
    assert batch.columns[1].rows.cohorts.keys() == {"region", "device"}


def test_a_decoder_built_by_a_racing_thread_never_mixes_with_another():
    """Two request threads meeting a cold decoder cache both build a model's decoder; the
    first stored is the one every thread uses, and a batch decoder is cached by the very
    decoders it was built from. (Before, the one thread's batch decoder could be cached beside
    the other thread's model decoder, and every later batch failed with a KeyError, a 500,
    until the process restarted: seen at 60 requests/s on a fresh `modelmon serve`.)"""
    cache: dict = {}

    def build_while_another_thread_stores_first() -> str:
        cache["key"] = "stored first"
        return "built second"

    assert decode._cached(cache, "key", build_while_another_thread_stores_first) == \
        "stored first"
    rng = random.Random(5)
    records = []
    while len(records) < 20:
        rec = valid(rng, len(records))
        if rec["model"] in ("multi", "reg") and rec.get("version") == "v1":
            records.append(rec)
    body = encode({"records": records})
    known = schemas()
    cache = {}
    assert decode.decode_predictions(body, lambda wanted: known, LIMITS, 10_000, cache)
    for name in ("multi", "reg"):  # another thread's decoders took the models' places
        cache[known[name].key] = decode.ModelDecoders(known[name])
    cache.pop(decode._LAST)
    assert decode.decode_predictions(body, lambda wanted: known, LIMITS, 10_000, cache).rows
