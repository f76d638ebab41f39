"""What an upload may become, beyond the bytes sent (those are app/api/body.py's): each limit
is refused with a 413 that names its setting and the member, column or header past it, before
the memory it would take is spent."""

from __future__ import annotations

import os
from pathlib import Path

from app.errors import Problem, TooLarge
from app.settings import Settings, variable


def too_large(message: str, setting: str, value: int, field: str) -> TooLarge:
    """The 413 of an upload past ``setting`` (a Settings field) at ``field``."""
    return TooLarge("payload_too_large", f"{message}; nothing was stored. The limit is "
                    f"{variable(setting)}={value}",
                    [Problem(f"past {variable(setting)}={value}", field=field)])


def json_upload(path: Path, settings: Settings, hint: str) -> bytes:
    """An uploaded JSON document, parsed whole into memory, so held to the JSON body limit
    (MODELMON_MAX_BODY_BYTES, after gzip decompression too) before it is read."""
    size = os.path.getsize(path)
    if size > settings.max_body_bytes:
        raise too_large(f"a JSON upload is parsed whole, and this one is {size} bytes; {hint}",
                        "max_body_bytes", settings.max_body_bytes, "body")
    return path.read_bytes()
