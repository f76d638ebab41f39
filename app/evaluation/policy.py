"""A model's policy: the service-wide settings as defaults, overlaid by what the model's
policy sets, overlaid again per feature and per cohort key. Jobs, reports, /metrics and
GET /v1/models/{model} all read the effective values from here, so a report, a stored
decision and a page cannot disagree (docs/policy.md).

The knobs are every field of ``Thresholds`` (its default is MODELMON_THRESHOLD_<FIELD>),
plus ``label_lag_seconds``, ``expected_interval_seconds``, ``page``,
``page_unused_features`` and ``unknown_features``; their types and ranges are the settings'
own, so a knob cannot take a value its setting would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from typing import Any

from app.monitoring import INSUFFICIENT_DATA
from app.settings import ORDERED, Settings

# The decision words every check stores and every report states; /metrics exports them as
# 0 (ok and insufficient data), 1 and 2.
OK, WARNING, CRITICAL = "ok", "warning", "critical"
DECISIONS = (OK, INSUFFICIENT_DATA, WARNING, CRITICAL)
_PREFIX = "threshold_"


class _ThresholdsBase:
    """What a set of thresholds can do; the fields are the settings' ``threshold_*``."""

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(**{k: getattr(s, _PREFIX + k) for k in cls.__dataclass_fields__})

    def overlay(self, overrides: Mapping[str, Any]) -> Thresholds:
        """These thresholds with the fields ``overrides`` names replaced (other keys are
        not thresholds and are ignored)."""
        mine = {k: v for k, v in overrides.items() if k in self.__dataclass_fields__}
        return replace(self, **mine) if mine else self  # type: ignore[type-var]

    def stated(self, fields: tuple[str, ...]) -> dict[str, Any]:
        """The values of ``fields``, as a report or a stored row states what it applied."""
        return {k: getattr(self, k) for k in fields if k in self.__dataclass_fields__}


# The decision thresholds: one field per MODELMON_THRESHOLD_<FIELD> setting, defaulting to
# that setting's default, so a knob and its default are written once (app/settings.py).
Thresholds = make_dataclass(
    "Thresholds",
    [(name.removeprefix(_PREFIX), f.annotation, field(default=f.default))
     for name, f in Settings.model_fields.items() if name.startswith(_PREFIX)],
    bases=(_ThresholdsBase,), frozen=True)
Thresholds.__module__ = __name__

# What a model's policy may set per feature and per cohort key: the effect sizes and
# minimum n. The error rates (alpha) stay the model's: they are corrected across the columns
# or cohorts tested together.
PER_FEATURE_FIELDS = ("psi_moderate", "psi_major", "psi_warning", "psi_critical", "ks_d",
                      "min_n", "missing_rise", "out_of_range_rise", "new_category_rise")
PER_COHORT_KEY_FIELDS = ("cohort_ratio_critical", "cohort_min_n")

# Knobs beyond the thresholds, each defaulting to the setting of the same name.
MODEL_KNOBS = ("label_lag_seconds", "expected_interval_seconds", "page",
               "page_unused_features", "unknown_features")


def setting_of(knob: str) -> str:
    """The settings field that holds a knob's service-wide default."""
    return knob if knob in MODEL_KNOBS else f"threshold_{knob}"


def threshold_knobs() -> tuple[str, ...]:
    return tuple(Thresholds.__dataclass_fields__)


@dataclass(frozen=True)
class EffectivePolicy:
    thresholds: Thresholds
    label_lag_seconds: float
    expected_interval_seconds: float | None
    page: bool
    page_unused_features: bool
    unknown_features: str = "reject"
    features: dict[str, Thresholds] = field(default_factory=dict)
    cohort_keys: dict[str, Thresholds] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every knob's effective value; per feature and per cohort key, the fields those
        may override, for the features and keys the policy names."""
        return {**asdict(self.thresholds), "label_lag_seconds": self.label_lag_seconds,
                "expected_interval_seconds": self.expected_interval_seconds,
                "page": self.page, "page_unused_features": self.page_unused_features,
                "unknown_features": self.unknown_features,
                "features": {n: t.stated(PER_FEATURE_FIELDS) for n, t in self.features.items()},
                "cohort_keys": {k: t.stated(PER_COHORT_KEY_FIELDS)
                                for k, t in self.cohort_keys.items()}}


def effective(settings: Settings, overrides: Mapping[str, Any] | None) -> EffectivePolicy:
    """Settings, then the model's ``overrides`` (a stored policy), then its per-feature and
    per-cohort-key overrides."""
    o = dict(overrides or {})
    base = Thresholds.from_settings(settings).overlay(o)
    return EffectivePolicy(
        thresholds=base,
        label_lag_seconds=o.get("label_lag_seconds", settings.label_lag_seconds),
        expected_interval_seconds=o.get("expected_interval_seconds",
                                        settings.expected_interval_seconds),
        page=o.get("page", settings.page),
        page_unused_features=o.get("page_unused_features", settings.page_unused_features),
        unknown_features=o.get("unknown_features", settings.unknown_features),
        features={n: base.overlay(v) for n, v in (o.get("features") or {}).items()},
        cohort_keys={k: base.overlay(v) for k, v in (o.get("cohort_keys") or {}).items()},
    )


def problems(settings: Settings, overrides: Mapping[str, Any], features: list[str],
             cohort_keys: list[str]) -> list[tuple[str, str]]:
    """(field path, problem) for what a well-typed policy still gets wrong against its model
    and the settings: a feature or cohort key the model does not have, and effective lines
    out of order (a warning line above its critical one, say)."""
    out: list[tuple[str, str]] = []
    for kind, known in (("features", features), ("cohort_keys", cohort_keys)):
        for name in overrides.get(kind) or {}:
            if name not in known:
                out.append((f"policy.{kind}.{name}",
                            f"the model has no {'feature' if kind == 'features' else 'cohort key'}"
                            " of this name; name one it declares"))
    eff = effective(settings, overrides)
    # Each level answers for the pairs it sets a side of (an inherited disorder is reported
    # where it is made, once).
    levels = [("policy", eff.thresholds, overrides)]
    levels += [(f"policy.features.{n}", t, overrides["features"][n])
               for n, t in eff.features.items()]
    levels += [(f"policy.cohort_keys.{k}", t, overrides["cohort_keys"][k])
               for k, t in eff.cohort_keys.items()]
    for path, th, own in levels:
        for low, high in ORDERED:
            fields = th.__dataclass_fields__
            if (low in fields and high in fields and (low in own or high in own)
                    and getattr(th, low) > getattr(th, high)):
                out.append((f"{path}.{low}", f"the effective {low} must not exceed the "
                            f"effective {high} (from the policy or its default setting)"))
    return out


def paging_by_model(settings: Settings, overrides: Mapping[str, Mapping[str, Any] | None]
                    ) -> dict[str, tuple[float | None, bool, bool]]:
    """model -> (expected interval, page, page unused features), what /metrics exports for
    the alert rules."""
    out = {}
    for name, o in overrides.items():
        e = effective(settings, o)
        out[name] = (e.expected_interval_seconds, e.page, e.page_unused_features)
    return out
