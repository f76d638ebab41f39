"""Print the docs' generated tables, or write them into the docs (--write).

The table of checks in docs/jobs.md is rendered from the check declarations
(app/evaluation/checks), the tables of docs/prometheus.md from the catalogue of families
(app/observability/families.py); tests/evaluation/test_evaluation_catalogue.py and
tests/observability/test_observability_families.py fail when they differ. The settings and
policy-knob tables have their own script, scripts/settings-table.py (`make docs` runs both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation.checks.docs import BEGIN, END, checks_table, replace_between  # noqa: E402
from app.observability.docs import render  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite the tables in docs/jobs.md and docs/prometheus.md")
    args = parser.parse_args()
    jobs, prometheus = ROOT / "docs" / "jobs.md", ROOT / "docs" / "prometheus.md"
    pages = {jobs: replace_between(jobs.read_text(), BEGIN, END, checks_table()),
             prometheus: render(prometheus.read_text())}
    for path, text in pages.items():
        if args.write:
            path.write_text(text)
        else:
            print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
