"""The one error shape every 4xx and 5xx response has: ``{code, message, details}``.

Raised anywhere below the API layer and translated by the handlers in app/api/errors.py.
Messages never echo a client's value back: a non-finite number in a response would turn a
422 into a 500, and echoing is how that happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    problem: str
    field: str | None = None
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.index is not None:
            out["index"] = self.index
        if self.field is not None:
            out["field"] = self.field
        out["problem"] = self.problem
        return out


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    details: list[Problem] = field(default_factory=list)
    headers: dict[str, str] | None = None

    def body(self, max_details: int | None = None) -> dict[str, Any]:
        details = self.details if max_details is None else self.details[:max_details]
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "details": [d.to_dict() for d in details],
        }
        if len(details) < len(self.details):
            out["details_truncated"] = True
            out["details_total"] = len(self.details)
        return out


def not_found(code: str, message: str, field_name: str | None = None) -> ApiError:
    return ApiError(404, code, message, [Problem(message, field=field_name)])
