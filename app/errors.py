"""Domain errors, and the one error shape every 4xx and 5xx response has: ``{code, message,
details}``.

Code below the API layer (registry, ingest, evaluation, storage) raises a ``DomainError``:
what went wrong, in the domain's words, with no HTTP status. app/api/errors.py maps each kind
to its status in one table (``STATUS``). ``ApiError`` is the API layer's own (auth, rate
limits, body reading), where the status is the point.

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


def _body(code: str, message: str, details: list[Problem],
          max_details: int | None) -> dict[str, Any]:
    shown = details if max_details is None else details[:max_details]
    out: dict[str, Any] = {"code": code, "message": message,
                           "details": [d.to_dict() for d in shown]}
    if len(shown) < len(details):
        out["details_truncated"] = True
        out["details_total"] = len(details)
    return out


@dataclass
class DomainError(Exception):
    """A refusal in the domain's words; the API maps its kind to a status (app/api/errors.py).
    ``code`` is the stable machine-readable code clients match on."""

    code: str
    message: str
    details: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def body(self, max_details: int | None = None) -> dict[str, Any]:
        return _body(self.code, self.message, self.details, max_details)


class NotFound(DomainError):
    """A model, version, metric or other named thing that is not there."""


class Conflict(DomainError):
    """The request contradicts what is stored (a different re-registration, a version in
    use)."""


class Invalid(DomainError):
    """Well-formed input whose content is refused; ``details`` names every problem."""


class Malformed(DomainError):
    """Input that cannot be read at all (not valid JSON, CSV, Parquet, gzip)."""


class TooLarge(DomainError):
    """Input past a size or count limit."""


class Unavailable(DomainError):
    """A dependency (the database) cannot serve now; the client should retry later."""


@dataclass
class ApiError(Exception):
    """An HTTP-level refusal raised in the API layer, where the status is the point (401,
    403, 408, 413, 415, 429, ...)."""

    status: int
    code: str
    message: str
    details: list[Problem] = field(default_factory=list)
    headers: dict[str, str] | None = None

    def body(self, max_details: int | None = None) -> dict[str, Any]:
        return _body(self.code, self.message, self.details, max_details)


def not_found(code: str, message: str, field_name: str | None = None) -> NotFound:
    return NotFound(code, message, [Problem(message, field=field_name)])
