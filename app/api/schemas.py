"""Request and response schemas: what the OpenAPI spec shows and what registration validates.

Prediction and label batches are validated by app/ingest/validation.py (per model schema,
collecting every problem); their classes here document the contract in the spec.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    StringConstraints,
    WithJsonSchema,
    create_model,
    model_validator,
)

from app.api.feature_spec import FeatureSpec
from app.evaluation import policy as model_policy
from app.evaluation.policy import PER_COHORT_KEY_FIELDS, PER_FEATURE_FIELDS
from app.ingest.names import FeatureName, check_feature_names
from app.settings import Settings

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Task = Literal["binary_classification", "multiclass_classification", "regression"]


def _integer_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Integer class labels (scikit-learn's `classes_` of [0, 1]) are stored and reported as their
# decimal string, as integer labels in predictions and labels are (docs/ingest.md).
ClassName = Annotated[
    str, BeforeValidator(_integer_as_text), StringConstraints(min_length=1, max_length=200),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200},
                              {"type": "integer"}]}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _knob(name: str) -> tuple[Any, Any]:
    """A policy knob's type and range: its default setting's own, so a knob never takes a
    value the setting would refuse. Unset means the default; null only where the setting is
    nullable (elsewhere the spec shows no `default: null`, which the type would refuse)."""
    sf = Settings.model_fields[model_policy.setting_of(name)]
    inner = [a for a in getattr(sf.annotation, "__args__", ()) if a is not type(None)]
    nullable = len(inner) == 1
    typ = inner[0] if nullable else sf.annotation
    if sf.metadata:
        typ = Annotated[typ, *sf.metadata]  # type: ignore[misc]
    return (typ | None if nullable else typ), Field(default=None, description=(
        f"default MODELMON_{model_policy.setting_of(name).upper()}; docs/policy.md"),
        json_schema_extra=None if nullable else lambda s: s.pop("default", None))


class StrictPolicy(BaseModel):
    # Strict types: "0.2" is not a number and 1 is not true; a knob's type is what it says.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


FeaturePolicy = create_model(  # type: ignore[call-overload]
    "FeaturePolicy", __base__=StrictPolicy, **{k: _knob(k) for k in PER_FEATURE_FIELDS})
CohortKeyPolicy = create_model(  # type: ignore[call-overload]
    "CohortKeyPolicy", __base__=StrictPolicy,
    **{k: _knob(k) for k in PER_COHORT_KEY_FIELDS})
Policy = create_model(  # type: ignore[call-overload]
    "Policy", __base__=StrictPolicy,
    __doc__="A model's overrides of the service-wide defaults (docs/policy.md): any "
    "threshold, label lag, expected interval (null: a batch model) and whether critical "
    "findings page; per feature and per cohort key, the fields listed there.",
    **{k: _knob(k) for k in (*model_policy.threshold_knobs(), *model_policy.MODEL_KNOBS)},
    features=(dict[FeatureName, FeaturePolicy] | None, Field(default=None, max_length=2000)),
    cohort_keys=(dict[Name, CohortKeyPolicy] | None, Field(default=None, max_length=100)),
)


def policy_overrides(p: BaseModel | None) -> dict[str, Any]:
    """What a policy sets, as stored: only the knobs sent (an unset knob follows its
    default, also when the default changes later)."""
    if p is None:
        return {}
    out = p.model_dump(mode="json", exclude_unset=True)
    for kind in ("features", "cohort_keys"):
        if not out.get(kind, True):  # null or {}: nothing overridden
            del out[kind]
    return out


class ModelCreate(Strict):
    name: Name
    task: Task
    features: list[FeatureSpec] = Field(default_factory=list, max_length=2000)
    cohort_keys: list[Name] = Field(default_factory=list, max_length=100)
    classes: list[ClassName] | None = Field(
        default=None,
        max_length=1000,
        description="Classification only. Binary: exactly two, the second is the positive class "
        '(default ["0", "1"]). Integers are taken as their decimal string (0 is "0").',
    )
    policy: Policy | None = Field(  # type: ignore[valid-type]
        default=None, description="Overrides of the service-wide thresholds and alerting "
        "for this model (docs/policy.md); omitted on a re-registration, the stored policy "
        "stands. PATCH /v1/models/{model} changes it.")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "fraud",
                "task": "binary_classification",
                "features": [
                    {"name": "amount", "type": "numeric"},
                    {"name": "country", "type": "categorical"},
                ],
                "cohort_keys": ["region"],
                "classes": ["legit", "fraud"],
            }
        }
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelCreate:
        check_feature_names(names := [f.name for f in self.features])
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(dupes)}")
        dupes = sorted({k for k in self.cohort_keys if self.cohort_keys.count(k) > 1})
        if dupes:
            raise ValueError(f"cohort_keys must be unique; repeated: {', '.join(dupes)}")
        if self.task == "regression":
            if self.classes is not None:
                raise ValueError("classes apply to classification tasks only; omit them")
            return self
        if self.task == "binary_classification":
            if self.classes is None:
                self.classes = ["0", "1"]
            if len(self.classes) != 2:
                raise ValueError("binary_classification needs exactly two classes")
        elif self.classes is None or len(self.classes) < 2:
            raise ValueError("multiclass_classification needs at least two classes")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        return self


class PolicyRead(BaseModel):
    overrides: dict[str, Any] = Field(description="what the model's policy sets")
    effective: dict[str, Any] = Field(description="every knob's value in force: the policy's, "
                                      "else the service-wide default")


class ModelPatch(Strict):
    """What PATCH /v1/models/{model} changes, at least one of: the policy, replaced whole
    (send {} to follow the service-wide defaults again); the cohort keys, the current list
    extended by new keys at its end (a key cannot be removed or renamed: stored predictions,
    summaries and results are keyed by it)."""

    policy: Policy | None = Field(  # type: ignore[valid-type]
        default=None, description="replaces the stored policy whole; omitted: unchanged")
    cohort_keys: list[Name] | None = Field(
        default=None, max_length=100,
        description="the current cohort keys, in order, followed by the keys to add; "
        "omitted: unchanged")

    model_config = ConfigDict(json_schema_extra={"example": {
        "policy": {"psi_critical": 0.1, "expected_interval_seconds": None, "page": False,
                   "features": {"amount": {"psi_warning": 0.05}}},
        "cohort_keys": ["region", "device"]}})


class DeletedRead(BaseModel):
    model: str
    version: str | None = Field(default=None, description="the version deleted; null when "
                                "the model was")
    deleted: dict[str, int] = Field(description="rows removed, per table")

    model_config = ConfigDict(json_schema_extra={"example": {
        "model": "fraud", "version": "v2", "deleted": {
            "predictions": 120000, "labels": 80000, "prediction_keys": 120000,
            "bucket_summaries": 2880, "metric_results": 9100, "reference_profiles": 1,
            "weight_stats": 3, "model_versions": 1}}})


class ModelRead(BaseModel):
    name: str
    task: Task
    features: list[FeatureSpec]
    cohort_keys: list[str]
    classes: list[str] | None
    created_at: datetime
    versions: int = Field(description="number of registered versions")
    policy: PolicyRead

    model_config = ConfigDict(json_schema_extra={"example": {
        **ModelCreate.model_config["json_schema_extra"]["example"],  # type: ignore[index]
        "created_at": "2026-11-23T10:00:00Z", "versions": 2,
        "policy": {"overrides": {"psi_critical": 0.1, "page": False},
                   "effective": {"psi_critical": 0.1, "psi_warning": 0.015, "page": False,
                                 "expected_interval_seconds": 1800.0,
                                 "label_lag_seconds": 0.0, "features": {},
                                 "cohort_keys": {}}}}})


class Regularization(Strict):
    type: Literal["l1", "l2", "elastic_net", "none"]
    lambda_: float | None = Field(default=None, alias="lambda", ge=0)
    l1_ratio: float | None = Field(default=None, ge=0, le=1)

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Regularization:
        if self.type in ("l1", "l2", "elastic_net") and self.lambda_ is None:
            raise ValueError(f"regularization of type {self.type} needs lambda")
        if self.type == "elastic_net" and self.l1_ratio is None:
            raise ValueError("elastic_net needs l1_ratio in [0, 1]")
        if self.type != "elastic_net" and self.l1_ratio is not None:
            raise ValueError("l1_ratio applies to elastic_net only")
        return self


MAX_COHORT_FIGURES = 1000
CohortName = Annotated[str, StringConstraints(min_length=3, max_length=300,
                                              pattern=r"^[^=]+=.+$")]


class Training(Strict):
    """What training measured for a version, as registered by its pipeline. Losses are the
    training objective's terms (``penalty_loss`` is the regularization term of the training
    loss); ``validation_error`` is an error rate (classification) or MAE (regression), the same
    measure the service computes in production; ``cohort_validation_error`` maps
    ``cohort_key=value`` to that error on the validation set's cohort (rows: the next)."""

    train_loss: FiniteFloat | None = None
    validation_loss: FiniteFloat | None = None
    penalty_loss: FiniteFloat | None = Field(default=None, ge=0)
    validation_error: FiniteFloat | None = Field(default=None, ge=0)
    validation_ece: FiniteFloat | None = Field(default=None, ge=0, le=1)
    cohort_validation_error: dict[CohortName, Annotated[FiniteFloat, Field(ge=0)]] | None = (
        Field(default=None, max_length=MAX_COHORT_FIGURES))
    train_rows: int | None = Field(default=None, ge=0)
    validation_rows: int | None = Field(default=None, ge=0)
    cohort_validation_rows: dict[CohortName, Annotated[int, Field(ge=0)]] | None = (
        Field(default=None, max_length=MAX_COHORT_FIGURES))
    parameters: int | None = Field(default=None, ge=0, description="parameters in the model")
    nonzero_parameters: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Training:
        if (self.parameters is not None and self.nonzero_parameters is not None
                and self.nonzero_parameters > self.parameters):
            raise ValueError("nonzero_parameters cannot exceed parameters")
        return self


class VersionMetadata(Strict):
    regularization: Regularization | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    artifact_bytes: int | None = Field(default=None, ge=0)
    training: Training | None = None


class VersionPatch(Strict):
    """What may change on a version until its first prediction is stored."""

    training: Training


MAX_MAINTENANCE_SECONDS = 31 * 86_400


def _utc(ts: datetime) -> datetime:
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00: no store can hold it
        raise ValueError("dates must be representable in UTC (years 1 to 9999)") from None


class VersionCreate(Strict):
    version: Name
    created_at: Annotated[datetime, AfterValidator(_utc)] | None = Field(
        default=None, description="when the version was trained; defaults to registration time"
    )
    metadata: VersionMetadata = Field(default_factory=VersionMetadata)
    maintenance_seconds: float | None = Field(
        default=None, gt=0, le=MAX_MAINTENANCE_SECONDS, strict=True,
        description="open a maintenance window of the model for this long from registration "
        "(a rollout's drift settling): its drift, calibration and cohort pages are "
        "suppressed meanwhile, tickets still flow. Only a new registration opens one.")
    features: list[FeatureSpec] | None = Field(
        default=None, max_length=2000,
        description="the version's own feature list, when it differs from the model's: a "
        "feature of the model left out is not monitored for this version (and is an "
        "undeclared feature in its predictions); one added is declared here with its type "
        "and monitored for this version only. A model feature keeps its type. Omitted: the "
        "model's features.")

    @model_validator(mode="after")
    def _unique_features(self) -> VersionCreate:
        check_feature_names(names := [f.name for f in self.features or []])
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(dupes)}")
        return self

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": "v2",
                "created_at": "2026-11-20T09:00:00Z",
                "metadata": {
                    "regularization": {"type": "l1", "lambda": 0.01},
                    "hyperparameters": {"learning_rate": 0.1, "epochs": 20},
                    "artifact_bytes": 1048576,
                    "training": {"train_loss": 0.21, "validation_loss": 0.25,
                                 "penalty_loss": 0.03, "validation_error": 0.08,
                                 "validation_ece": 0.02,
                                 "cohort_validation_error": {"region=eu": 0.09},
                                 "train_rows": 80000, "validation_rows": 20000,
                                 "parameters": 1200, "nonzero_parameters": 310},
                },
            }
        }
    )


class MaintenanceCreate(Strict):
    """A maintenance (retraining) window: while it is open, the model's drift, calibration
    and cohort pages are suppressed; their tickets still flow (docs/policy.md)."""

    start: datetime = Field(description="ISO 8601; without an offset it is taken as UTC")
    end: datetime = Field(description="after start, at most 31 days later")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]

    model_config = ConfigDict(json_schema_extra={"example": {
        "start": "2026-12-03T10:00:00Z", "end": "2026-12-03T14:00:00Z",
        "reason": "retraining on November data"}})

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceCreate:
        start, end = _utc(self.start), _utc(self.end)
        if end <= start:
            raise ValueError("end must be after start")
        if (end - start).total_seconds() > MAX_MAINTENANCE_SECONDS:
            raise ValueError("a maintenance window lasts at most 31 days; open another "
                             "when it ends")
        self.start, self.end = start, end
        return self


class MaintenanceRead(BaseModel):
    id: int
    model: str
    start: datetime
    end: datetime
    reason: str
    created_at: datetime
    open: bool = Field(description="whether the window is open now")

    model_config = ConfigDict(json_schema_extra={"example": {
        "id": 7, "model": "fraud",
        **MaintenanceCreate.model_config["json_schema_extra"]["example"],  # type: ignore[index]
        "created_at": "2026-12-03T09:55:00Z", "open": True}})


class VersionRead(BaseModel):
    model: str
    version: str
    created_at: datetime
    registered_at: datetime
    metadata: dict[str, Any]
    features: list[FeatureSpec] | None = Field(
        default=None, description="the version's own feature list; null: the model's")

    model_config = ConfigDict(json_schema_extra={"example": {
        "model": "fraud", **VersionCreate.model_config["json_schema_extra"]["example"],  # type: ignore[index]
        "registered_at": "2026-11-23T10:05:00Z"}})


class PredictionPayload(Strict):
    score: float | None = Field(default=None, description="binary: positive-class probability")
    probabilities: dict[str, float] | None = Field(
        default=None, description="multiclass: probability per class, summing to 1"
    )
    value: float | None = Field(default=None, description="regression: predicted value")
    label: str | int | None = Field(
        default=None, description="the predicted label, optional; an integer is taken as its "
        'decimal string (1 is the class "1")')


class PredictionRecord(Strict):
    model: str
    version: str
    prediction_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    timestamp: datetime = Field(description="ISO 8601; without an offset it is taken as UTC")
    features: dict[str, float | str | None] | None = None  # required unless "summarized"
    prediction: PredictionPayload
    cohorts: dict[str, str | None] = Field(default_factory=dict)
    label: str | int | float | None = Field(
        default=None, description="ground truth, when known: a class (an integer is taken as its "
        "decimal string) or, for regression, a number")
    latency_ms: float | None = Field(default=None, ge=0)


class PredictionBatch(Strict):
    records: list[PredictionRecord]
    summarized: bool = Field(default=False, description=(
        "thin rows, for label pairing only: no features, no latency_ms (docs/summaries.md)"))

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "records": [
                    {
                        "model": "fraud",
                        "version": "v2",
                        "prediction_id": "req-0001",
                        "timestamp": "2026-11-23T10:15:00Z",
                        "features": {"amount": 129.5, "country": "DE"},
                        "prediction": {"score": 0.91, "label": "fraud"},
                        "cohorts": {"region": "eu"},
                        "latency_ms": 4.2,
                    }
                ]
            }
        }
    )


class PredictionResult(BaseModel):
    accepted: int = Field(description="records stored by this request")
    duplicates: int = Field(description="records already stored (retries), skipped")

    model_config = ConfigDict(json_schema_extra={"example": {"accepted": 998, "duplicates": 2}})


class LabelRecord(Strict):
    model: str
    prediction_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    label: str | int | float = Field(description="a class (an integer is taken as its decimal "
                                     "string) or, for regression, a number")
    timestamp: datetime


class LabelBatch(Strict):
    records: list[LabelRecord]

    model_config = ConfigDict(json_schema_extra={"example": {"records": [
        {"model": "fraud", "prediction_id": "req-0001", "label": "fraud",
         "timestamp": "2026-11-24T08:00:00Z"}]}})


class LabelResult(BaseModel):
    matched: int = Field(description="new labels whose prediction is stored")
    pending: int = Field(description="new labels kept until their prediction arrives")
    duplicates: int = Field(description="labels already stored, skipped")

    model_config = ConfigDict(json_schema_extra={"example": {"matched": 950, "pending": 50,
                                                             "duplicates": 0}})


class ErrorDetail(BaseModel):
    index: int | None = Field(default=None, description="record index in the batch")
    field: str | None = Field(default=None, description="the offending field")
    problem: str


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code")
    message: str = Field(description="what went wrong and what to do")
    details: list[ErrorDetail]

    model_config = ConfigDict(json_schema_extra={"example": {
        "code": "validation_error",
        "message": "1 of 1000 records are invalid; nothing was stored. Fix the fields listed "
                   "in details and resend the whole batch.",
        "details": [{"index": 637, "field": "prediction.score",
                     "problem": "probability must be within [0, 1]"}]}})
