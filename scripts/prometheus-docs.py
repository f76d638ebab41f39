"""Print docs/prometheus.md as the catalogue of families renders it, or write it (--write).

The tables of every family /metrics exports are rendered from app/observability/families.py;
tests/observability/test_observability_families.py fails when the page differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.observability.docs import render  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/prometheus.md's "
                        "tables")
    args = parser.parse_args()
    path = ROOT / "docs" / "prometheus.md"
    text = render(path.read_text())
    if args.write:
        path.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
