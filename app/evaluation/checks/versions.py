"""Decisions on a version's weights against its predecessor's, decided when read (the
compare report, /metrics) with the model's current policy, so a PATCH of the policy changes
both. Nothing is stored per window: the deltas are stored once, at upload."""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def version_checks(overall: Mapping[str, Any], th: Thresholds) -> dict[str, dict[str, Any]]:
    """The decisions on a version's overall weight delta to its predecessor (the stored
    ``overall`` of a delta): ``sparsity_jump`` on the absolute sparsity change as a ratio,
    ``norm_jump`` on the larger absolute relative change of the L1 and L2 norms; a figure
    that is missing or not finite is insufficient data."""
    sp = overall.get("sparsity_change_pp")
    sparsity = abs(sp) / 100 if _finite(sp) else None
    norms = {n: abs(overall[f"{n}_relative_change"]) for n in ("l1", "l2")
             if _finite(overall.get(f"{n}_relative_change"))}
    norm = max(norms, key=norms.__getitem__) if norms else None
    out = {"sparsity_jump": {"value": sparsity, "lines": {
        "warning": th.sparsity_jump_warning, "critical": th.sparsity_jump_critical}},
           "norm_jump": {"value": norms[norm] if norm else None, "norm": norm,
                         "lines": {"warning": th.norm_jump_warning}}}
    for check in out.values():
        v, lines = check["value"], check["lines"]
        check["decision"] = (INSUFFICIENT_DATA if v is None
                             else CRITICAL if "critical" in lines and v > lines["critical"]
                             else WARNING if v > lines["warning"] else OK)
    return out


def version_checks_by_model(settings: Settings,
                            overrides: Mapping[str, Mapping[str, Any] | None],
                            deltas: list[dict[str, Any]]) -> None:
    """Decide each stored version delta with its model's effective policy (in place, under
    "checks"), what /metrics exports as modelmon_version_check_state."""
    th = {name: effective(settings, o).thresholds for name, o in overrides.items()}
    default = Thresholds.from_settings(settings)
    for d in deltas:
        d["checks"] = version_checks(d["overall"], th.get(d["model"], default))
