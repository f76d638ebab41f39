"""A model's versions page: per version its regularization, weight norms and sparsity per
layer (tensor) and overall, and against its predecessor (the nearest earlier version with
weights) the deltas, the features zeroed and revived and the version checks, read through
the compare report's own function (GET /v1/models/{model}/versions/compare)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from app.registry import weights
from app.settings import Settings
from app.storage import registry
from app.storage import weights as store


@dataclass
class VersionWeights:
    version: str
    created_at: str
    regularization: dict[str, Any] | None
    overall: dict[str, Any] | None = None
    tensors: list[dict[str, Any]] = field(default_factory=list)
    predecessor: str | None = None
    compare: dict[str, Any] | None = None

    @property
    def strength(self) -> str:
        """The regularization as a person reads it: type, lambda and (elastic net) the L1
        ratio."""
        r = self.regularization
        if not r:
            return "not stated"
        parts = [str(r.get("type"))]
        if r.get("lambda") is not None:
            parts.append(f"λ={r['lambda']:g}")
        if r.get("l1_ratio") is not None:
            parts.append(f"l1_ratio={r['l1_ratio']:g}")
        return " ".join(parts)


def _layers(summary: Any, compared: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each tensor's own stats, with its delta to the predecessor's tensor of that name."""
    deltas = {} if compared is None else {t["name"]: t for t in compared["tensors"]}
    return [{**t.to_dict(), "delta": deltas.get(t.name)} for t in summary.tensors]


def versions_view(conn: Connection, settings: Settings, model_name: str
                  ) -> list[VersionWeights]:
    """The model's versions in registration order (the order predecessors follow)."""
    model = registry.require_model(conn=conn, name=model_name)
    versions = registry.list_versions(conn=conn, model_id=model.id)
    have = store.with_weights(conn=conn, version_ids=[v.id for v in versions])
    out = []
    previous = None
    for v in versions:
        row = VersionWeights(v.version, v.created_at.isoformat(),
                             v.metadata.get("regularization"))
        out.append(row)
        if v.id not in have:
            continue
        summary = weights.load_summary(conn=conn, version_id=v.id)
        assert summary is not None
        row.overall = summary.overall.to_dict()
        if previous is not None:
            row.predecessor = previous
            row.compare = weights.compare(conn=conn, settings=settings,
                                          model_name=model_name, base=previous,
                                          candidate=v.version)
        row.tensors = _layers(summary, row.compare)
        previous = v.version
    return out
