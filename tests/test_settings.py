"""Settings refuse combinations the service cannot honour."""

import pytest
from pydantic import ValidationError

from app.evaluation import policy
from app.settings import ORDERED, Settings


def test_a_window_is_made_of_whole_buckets():
    assert Settings(job_interval_seconds=2, job_window_seconds=20).job_window_seconds == 20
    with pytest.raises(ValidationError, match="whole multiple"):
        Settings(job_interval_seconds=300, job_window_seconds=3500)
    with pytest.raises(ValidationError, match="whole multiple"):
        Settings(job_interval_seconds=300, job_window_seconds=100)


@pytest.mark.parametrize(("low", "high"), ORDERED)
def test_default_thresholds_keep_their_order(low, high):
    """Each ordered pair of default thresholds: equal is fine, the lower line above the upper
    one is refused, naming both variables and their values."""
    upper = getattr(Settings(), f"threshold_{high}")
    assert getattr(Settings(**{f"threshold_{low}": upper}), f"threshold_{low}") == upper
    # An upper line pushed below its lower one (every lower default is above 0).
    lower = getattr(Settings(), f"threshold_{low}")
    with pytest.raises(ValidationError) as err:
        Settings(**{f"threshold_{high}": lower / 2})
    text = str(err.value)
    assert f"MODELMON_THRESHOLD_{low.upper()} ({lower:g}) must not exceed " \
           f"MODELMON_THRESHOLD_{high.upper()} ({lower / 2:g})" in text
    assert "docs/policy.md" in text


def test_disordered_thresholds_from_the_environment_are_all_named(monkeypatch):
    monkeypatch.setenv("MODELMON_THRESHOLD_PSI_WARNING", "0.2")  # critical stays 0.15
    monkeypatch.setenv("MODELMON_THRESHOLD_ALPHA_CRITICAL", "0.01")  # warning stays 0.001
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert ("MODELMON_THRESHOLD_PSI_WARNING (0.2) must not exceed "
            "MODELMON_THRESHOLD_PSI_CRITICAL (0.15)") in text
    assert ("MODELMON_THRESHOLD_ALPHA_CRITICAL (0.01) must not exceed "
            "MODELMON_THRESHOLD_ALPHA_WARNING (0.001)") in text


def test_ordered_pairs_have_one_source_and_name_real_thresholds():
    assert policy.ORDERED is ORDERED
    for low, high in ORDERED:
        assert low in policy.threshold_knobs() and high in policy.threshold_knobs()
        assert f"threshold_{low}" in Settings.model_fields
        assert f"threshold_{high}" in Settings.model_fields
