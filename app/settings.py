"""One settings object for the whole service, read from ``MODELMON_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELMON_", extra="ignore")

    # The embedded default: a SQLite file in the working directory, so that `modelmon serve`
    # works on a laptop with nothing to set up. Production: postgresql+psycopg://...
    database_url: str = "sqlite:///./modelmon.db"
    # Connecting to an unreachable database must fail fast (503), never hang a request.
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # Upper bound for any one statement on Postgres, so a stuck lock cannot hang a request.
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
    retry_after_seconds: int = Field(default=5, ge=1)

    max_body_bytes: int = Field(default=10 * MIB, ge=1024)
    max_batch_records: int = Field(default=10_000, ge=1)
    # Timestamps further in the future than this are refused (clock skew allowance).
    max_future_seconds: float = Field(default=86_400.0, ge=0)
    # Timestamps older than this are refused: every accepted day costs a partition.
    max_past_days: int = Field(default=400, ge=1)
    multiclass_sum_tolerance: float = Field(default=1e-3, gt=0)
    # Daily prediction partitions are created this many days ahead of need (Postgres).
    partition_days_ahead: int = Field(default=7, ge=0)
    # Error details listed in one 4xx response; the total is always given.
    max_error_details: int = Field(default=10_000, ge=1)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` and pass it to create_app."""
    return Settings()
