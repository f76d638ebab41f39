"""Settings refuse combinations the service cannot honour, and document themselves:
docs/operations.md's settings table is generated from their descriptions."""

import importlib.util
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from app.evaluation import policy
from app.settings import ORDERED, Settings

ROOT = Path(__file__).resolve().parents[1]
TABLE_SCRIPT = ROOT / "scripts" / "settings-table.py"


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


def _settings_table_script():
    """scripts/settings-table.py as a module (its table, replaced, BEGIN, END)."""
    spec = importlib.util.spec_from_file_location("settings_table", TABLE_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_a_description():
    undocumented = [n for n, f in Settings.model_fields.items()
                    if not (f.description or "").strip()]
    assert undocumented == []


def test_docs_settings_table_is_the_generated_one():
    """docs/operations.md's table is exactly what scripts/settings-table.py makes of the
    settings: a setting added, removed or changed without running the script fails here."""
    script = _settings_table_script()
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert doc.count(script.BEGIN) == 1 and doc.count(script.END) == 1
    shown = doc[doc.index(script.BEGIN) + len(script.BEGIN) + 1:doc.index(script.END)]
    assert shown == script.table(), "run scripts/settings-table.py --write"
    rows = [line for line in shown.splitlines() if line.startswith("| `MODELMON_")]
    assert [r.split("`")[1] for r in rows] == [f"MODELMON_{n.upper()}"
                                               for n in Settings.model_fields]


def test_docs_policy_knobs_table_is_the_generated_one():
    """docs/policy.md's table of knobs is what the script makes of the settings and the
    policy: a threshold setting added without running it fails here."""
    script = _settings_table_script()
    doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    assert script.replaced(doc, script.knobs_table(), script.POLICY_BEGIN,
                           script.POLICY_END) == doc, "run scripts/settings-table.py --write"


def test_a_new_setting_needs_a_description_and_a_row(monkeypatch):
    script = _settings_table_script()
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")

    class Undocumented(Settings):
        new_knob_seconds: float = Field(default=1.0, gt=0)

    monkeypatch.setattr(script, "Settings", Undocumented)
    with pytest.raises(script.MissingDescription, match="MODELMON_NEW_KNOB_SECONDS"):
        script.table()
    assert script.main(["--check"]) == 1

    class Documented(Settings):
        new_knob_seconds: float = Field(default=1.0, gt=0, description="Why, in seconds.")

    monkeypatch.setattr(script, "Settings", Documented)
    assert "| `MODELMON_NEW_KNOB_SECONDS` | float > 0 | 1 | Why, in seconds. |" in script.table()
    assert script.replaced(doc, script.table()) != doc  # the docs test would fail until --write


def test_table_cells_say_type_range_and_default():
    table = _settings_table_script().table()
    for row in (
        "| `MODELMON_MAX_BODY_BYTES` | int >= 1024 | 10485760 (10 MiB) |",
        "| `MODELMON_THRESHOLD_ALPHA_WARNING` | float in (0, 1) | 0.001 |",
        "| `MODELMON_REFERENCE_BINS` | int in [2, 100] | 10 |",
        "| `MODELMON_AUTH` | `auto` / `on` / `off` | `auto` |",
        "| `MODELMON_METRICS_TOKEN` | str | unset |",
        "| `MODELMON_PAGE_UNUSED_FEATURES` | bool | false |",
        "| `MODELMON_WEIGHTS_MAX_BYTES` | int >= 1024 | 8589934592 (8 GiB) |",
    ):
        assert row in table, row
    assert "\\|w\\| <= this" in table  # a pipe in a description does not split its cell
