"""Settings refuse combinations the service cannot honour."""

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_a_window_is_made_of_whole_buckets():
    assert Settings(job_interval_seconds=2, job_window_seconds=20).job_window_seconds == 20
    with pytest.raises(ValidationError, match="whole multiple"):
        Settings(job_interval_seconds=300, job_window_seconds=3500)
    with pytest.raises(ValidationError, match="whole multiple"):
        Settings(job_interval_seconds=300, job_window_seconds=100)
