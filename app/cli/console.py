"""The rich console of the commands' human output: on a terminal, its width; elsewhere (a
pipe, a log file, CI) no width limit, so that no line is cut or wrapped at 80 columns."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

WIDE = 10_000


def console(file: IO[str] | None = None) -> Any:
    from rich.console import Console

    stream = file or sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=not tty,
                   width=None if tty else WIDE)


def add_json(parser: Any, help_text: str = "print the result as JSON on stdout") -> None:
    """Every command's ``--json``: what it prints for a program rather than a person."""
    parser.add_argument("--json", action="store_true", help=help_text)


def json_logs(settings: Any, on: bool) -> Any:
    """The settings with JSON logs when ``--json`` asks for them; the environment too, for
    the worker processes a server starts."""
    if not on:
        return settings
    os.environ["MODELMON_LOG_FORMAT"] = "json"
    return settings.model_copy(update={"log_format": "json"})
