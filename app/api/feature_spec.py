"""A feature as a model or version declares it (POST /v1/models, /versions)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.ingest.names import FeatureName
from app.monitoring.embedding import DIM_MAX as EMBEDDING_DIM_MAX
from app.monitoring.embedding import DIM_MIN as EMBEDDING_DIM_MIN


class FeatureSpec(BaseModel):
    """A feature of a model's schema: numeric, categorical, or an embedding of ``dim``
    numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: FeatureName
    type: Literal["numeric", "categorical", "embedding"]
    dim: int | None = Field(
        default=None, strict=True, exclude_if=lambda v: v is None,  # stored as before
        description="Embedding only: the vector's length, "
        f"{EMBEDDING_DIM_MIN} to {EMBEDDING_DIM_MAX}; a record's value is a list of this "
        "many finite numbers (or null).")

    @model_validator(mode="after")
    def _dim(self) -> FeatureSpec:
        if self.type != "embedding":
            if self.dim is not None:
                raise ValueError(f"feature {self.name!r}: dim is for embedding features only")
        elif self.dim is None or not EMBEDDING_DIM_MIN <= self.dim <= EMBEDDING_DIM_MAX:
            raise ValueError(f"embedding feature {self.name!r} needs dim, an integer from "
                             f"{EMBEDDING_DIM_MIN} to {EMBEDDING_DIM_MAX} (got {self.dim})")
        return self
