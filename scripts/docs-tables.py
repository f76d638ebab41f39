"""Print the docs' generated tables, or write them into the docs (--write).

The table of checks in docs/jobs.md is rendered from the check declarations
(app/evaluation/checks); tests/evaluation/test_evaluation_catalogue.py fails when they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation.checks.docs import BEGIN, END, checks_table, replace_between  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/jobs.md's table")
    args = parser.parse_args()
    table = checks_table()
    if not args.write:
        print(table)
        return 0
    path = ROOT / "docs" / "jobs.md"
    path.write_text(replace_between(path.read_text(), BEGIN, END, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
