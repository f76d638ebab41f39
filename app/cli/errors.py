"""The one kind of failure every subcommand may end with on purpose."""

from __future__ import annotations


class CliError(Exception):
    """An expected failure of a command: one line on stderr, a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
