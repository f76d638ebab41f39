"""The rules ``app.settings`` holds its fields to, apart from the fields themselves: names of
the environment variables, the ordered pairs of policy lines, and the checks at start."""

from __future__ import annotations

import ipaddress
from typing import Any

ENV_PREFIX = "MODELMON_"

# (lower, upper) pairs of policy thresholds that must keep their order: a warning line below
# its critical one, the moderate PSI band below the major one, and the critical alpha (the
# stronger evidence) below the warning one. Settings holds the service-wide defaults to it;
# app/evaluation/policy.py holds every model's effective policy to it.
ORDERED: tuple[tuple[str, str], ...] = (
    ("psi_moderate", "psi_major"), ("psi_warning", "psi_critical"),
    ("ece_warning", "ece_critical"), ("alpha_critical", "alpha_warning"),
    ("oe_log_warning", "oe_log_critical"), ("pca_error_warning", "pca_error_critical"),
    ("embedding_shift_warning", "embedding_shift_critical"),
    ("sparsity_jump_warning", "sparsity_jump_critical"),
    ("cbpe_drop_warning", "cbpe_drop_critical"))


def variable(field: str) -> str:
    """The environment variable of a settings field, as operators and error messages name it."""
    return f"{ENV_PREFIX}{field.upper()}"


def listed(value: str) -> list[str]:
    """The items of a comma-separated setting, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]



def known_database(value: str) -> str:
    """``postgres://`` (what many hosts hand out) is PostgreSQL through psycopg, as is
    ``postgresql://``; anything but PostgreSQL and SQLite is refused here, by name."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError("must be a URL such as postgresql+psycopg://user:pass@host/db or "
                         "sqlite:///./modelmon.db")
    if scheme in ("postgres", "postgresql", "postgres+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme.split("+")[0] not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {scheme.split('+')[0][:40]!r}: use "
                         "postgresql+psycopg://... or sqlite:///...")
    return value


def proxies_are_addresses(value: str) -> str:
    for item in listed(value):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{variable('trusted_proxies')}: {item[:100]!r} is not an IP "
                             "address or network (e.g. 10.0.0.0/8)") from None
    return value


def windows_are_whole_buckets(s: Any) -> None:
    ratio = s.job_window_seconds / s.job_interval_seconds
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise ValueError(
            "MODELMON_JOB_WINDOW_SECONDS must be a whole multiple of "
            "MODELMON_JOB_INTERVAL_SECONDS: windows are made of whole summary buckets")
    longer = s.job_long_window_seconds / s.job_interval_seconds
    if abs(longer - round(longer)) > 1e-9:
        raise ValueError(
            "MODELMON_JOB_LONG_WINDOW_SECONDS must be a whole multiple of "
            "MODELMON_JOB_INTERVAL_SECONDS: windows are made of whole summary buckets")


def rollups_keep_their_order(s: Any) -> None:
    hourly, daily = s.summary_rollup_hourly_after_seconds, s.summary_rollup_daily_after_seconds
    if hourly and daily and daily < hourly:
        raise ValueError(
            "MODELMON_SUMMARY_ROLLUP_DAILY_AFTER_SECONDS must not be below "
            "MODELMON_SUMMARY_ROLLUP_HOURLY_AFTER_SECONDS: days are made of older hours")


def thresholds_keep_their_order(s: Any) -> None:
    """Refused at start rather than left to every model's policy check: a warning line
    above its critical one would make every model's defaults contradict themselves."""
    wrong = []
    for low, high in ORDERED:
        lo, hi = getattr(s, f"threshold_{low}"), getattr(s, f"threshold_{high}")
        if lo > hi:
            wrong.append(f"{variable(f'threshold_{low}')} ({lo:g}) must not exceed "
                         f"{variable(f'threshold_{high}')} ({hi:g})")
    if wrong:
        raise ValueError("; ".join(wrong) + ": a decision's lines must keep their order "
                         "(docs/policy.md); change one of each pair")
