"""What the jobs store in `metric_results`: each check's findings (app/evaluation/checks) as
rows of one window and version, each metric named in the catalogue and stored by its job."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from app.evaluation.catalogue import METRICS
from app.evaluation.checks.declare import Finding
from app.evaluation.windows import MergedWindow
from app.storage.registry import ModelRow

Row = dict[str, Any]


def rows(job: str, model: ModelRow, w: MergedWindow, findings: Iterable[Finding]) -> list[Row]:
    """The rows of ``findings`` over the window ``w`` of one version, computed now."""
    now = datetime.now(UTC)
    out: list[Row] = []
    for f in findings:
        if METRICS[f.metric].job != job:
            raise ValueError(f"{f.metric} is stored by the {METRICS[f.metric].job} job, "
                             f"not {job}")
        out.append({"job": job, "model_id": model.id, "version_id": w.version_id,
                    "metric": f.metric, "subject": f.subject, "window_start": w.start,
                    "window_end": w.end, "n": f.n, "value": f.value, "decision": f.decision,
                    "method": f.method, "detail": f.detail, "computed_at": now})
    return out
