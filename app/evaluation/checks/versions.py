"""Decisions on a version's weights against its predecessor's, decided when read (the
compare report, /metrics) with the model's current policy, so a PATCH of the policy changes
both. Nothing is stored per window: the deltas are stored once, at upload."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.evaluation.checks.declare import Check
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds, effective
from app.monitoring import INSUFFICIENT_DATA
from app.settings import Settings

SPARSITY_JUMP = Check(
    "sparsity_jump", None, "the absolute change of the overall sparsity, as a ratio, above "
    "its lines (warning, critical)", ("sparsity_jump_warning", "sparsity_jump_critical"))
NORM_JUMP = Check(
    "norm_jump", None, "the larger absolute relative change of the L1 and L2 norms above "
    "its line (warning)", ("norm_jump_warning",))
CHECKS = (SPARSITY_JUMP, NORM_JUMP)


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """One decision on a version's weight delta: the figure (None when missing or not
    finite) and its lines."""

    value: float | None
    lines: dict[str, float]
    decision: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "lines": self.lines, "decision": self.decision}


@dataclass(frozen=True, slots=True)
class NormJump(VersionCheck):
    """The norm jump, with the norm whose change it is (None when neither is known)."""

    norm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "norm": self.norm, "lines": self.lines,
                "decision": self.decision}


@dataclass(frozen=True, slots=True)
class VersionChecks:
    """The decisions on a version's overall weight delta to its predecessor."""

    sparsity_jump: VersionCheck
    norm_jump: NormJump

    def by_name(self) -> dict[str, VersionCheck]:
        return {"sparsity_jump": self.sparsity_jump, "norm_jump": self.norm_jump}

    def to_dict(self) -> dict[str, Any]:
        return {name: c.to_dict() for name, c in self.by_name().items()}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _decide(v: float | None, lines: dict[str, float]) -> str:
    return (INSUFFICIENT_DATA if v is None
            else CRITICAL if "critical" in lines and v > lines["critical"]
            else WARNING if v > lines["warning"] else OK)


def version_checks(overall: Mapping[str, Any], th: Thresholds) -> VersionChecks:
    """The decisions on a version's overall weight delta to its predecessor (the stored
    ``overall`` of a delta): ``sparsity_jump`` on the absolute sparsity change as a ratio,
    ``norm_jump`` on the larger absolute relative change of the L1 and L2 norms; a figure
    that is missing or not finite is insufficient data."""
    sp = overall.get("sparsity_change_pp")
    sparsity = abs(sp) / 100 if _finite(sp) else None
    norms = {n: abs(overall[f"{n}_relative_change"]) for n in ("l1", "l2")
             if _finite(overall.get(f"{n}_relative_change"))}
    norm = max(norms, key=norms.__getitem__) if norms else None
    sparsity_lines = {"warning": th.sparsity_jump_warning,
                      "critical": th.sparsity_jump_critical}
    norm_value, norm_lines = (norms[norm] if norm else None), {"warning": th.norm_jump_warning}
    return VersionChecks(
        VersionCheck(sparsity, sparsity_lines, _decide(sparsity, sparsity_lines)),
        NormJump(norm_value, norm_lines, _decide(norm_value, norm_lines), norm))


def version_checks_by_model(settings: Settings,
                            overrides: Mapping[str, Mapping[str, Any] | None],
                            deltas: list[dict[str, Any]]) -> None:
    """Decide each stored version delta with its model's effective policy (in place, under
    "checks"), what /metrics exports as modelmon_version_check_state."""
    th = {name: effective(settings, o).thresholds for name, o in overrides.items()}
    default = Thresholds.from_settings(settings)
    for d in deltas:
        d["checks"] = version_checks(d["overall"], th.get(d["model"], default))
