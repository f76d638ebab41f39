"""Logging: one JSON object a line for log collectors, or plain text for a terminal
(MODELMON_LOG_FORMAT), with the id of the request being served on every line it causes.

Standard library logging throughout, so uvicorn's, APScheduler's and SQLAlchemy's records
come out in the same format. Structured fields go in ``extra=`` (``event`` names the kind of
line: ``request``, ``job_window``, ``tick``, ``shutdown``); they become keys of the JSON object,
or ``key=value`` pairs after the message in text.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("modelmon_request_id", default=None)
# A request id a client sends is kept when it is short and plain (it ends up in logs and in a
# response header); anything else is replaced by a generated one.
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
# uvicorn's color_message is its message with terminal colour codes.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


def request_id_from(sent: str | None) -> str:
    """The client's X-Request-ID when it is usable, otherwise a new random id."""
    if sent and _REQUEST_ID_OK.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    rid = REQUEST_ID.get()
    if rid is not None and "request_id" not in out:
        out["request_id"] = rid
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the request id
    when a request is being served, every ``extra=`` field, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, the structured fields as key=value after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {fields}{sep}{tail}"


def use_json(log_format: str, stream: Any = None) -> bool:
    """``auto`` is text on a terminal and JSON anywhere else (a container, a service manager,
    a file), where a log collector reads it."""
    if log_format == "auto":
        stream = stream or sys.stderr
        return not (hasattr(stream, "isatty") and stream.isatty())
    return log_format == "json"


def configure_logging(log_format: str, level: str) -> None:
    """Route every logger (uvicorn's too) through one handler on stderr in the chosen format.
    uvicorn's access log is left off: the request middleware writes one line per request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json(log_format) else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # APScheduler logs every run at INFO; modelmon logs each tick and window itself. Alembic
    # logs each of its plugins at INFO when first imported (by the migration at start).
    for name in ("apscheduler", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
