"""`modelmon report ...`: the REST reports as readable tables, computed with the same code
against MODELMON_DATABASE_URL (no running server needed)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.errors import ApiError
from app.settings import get_settings


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def render(kind: str, report: dict[str, Any]) -> str:
    if kind == "compare":
        head = (f"{report['model']}: {report['base']['version']} -> "
                f"{report['candidate']['version']}\n"
                f"regularization: {report['base']['regularization']} -> "
                f"{report['candidate']['regularization']}\n")
        rows = [(t["name"], t["l1_relative_change"], t["l2_relative_change"],
                 t["sparsity_base"], t["sparsity_candidate"], t["sparsity_change_pp"])
                for t in [report["overall"], *report["tensors"]]]
        extra = (f"\nadded: {', '.join(report['added']) or '-'}; removed: "
                 f"{', '.join(report['removed']) or '-'}; reshaped: "
                 f"{', '.join(report['reshaped']) or '-'}")
        return head + table(["tensor", "L1 rel", "L2 rel", "sparsity base", "sparsity cand",
                             "change (pp)"], rows) + extra
    parts = [f"{report['model']} window {report['window_start']} .. {report['window_end']}"]
    if not report["versions"]:
        parts.append("no traffic in this window")
    for v in report["versions"]:
        if kind == "drift":
            parts.append(f"\nversion {v['version']}: n={v['n']}, reference: "
                         f"{v['reference'].get('source')}")
            rows = [(f["feature"], f["psi"], f["psi_band"], f["ks_statistic"],
                     f["ks_pvalue"], f["missing_rate"], f["decision"])
                    for f in v.get("features", [])]
            if v.get("prediction"):
                p = v["prediction"]
                rows.append(("(prediction)", p["psi"], p["psi_band"], p["ks_statistic"],
                             p["ks_pvalue"], p["missing_rate"], p["decision"]))
            parts.append(table(["feature", "PSI", "band", "KS D", "p", "missing", "decision"],
                               rows))
        elif kind == "calibration":
            parts.append(f"\nversion {v['version']}: n={v.get('n')}, ECE={_fmt(v.get('ece'))}, "
                         f"MCE={_fmt(v.get('mce'))}, Brier={_fmt(v.get('brier'))}, "
                         f"label coverage={_fmt(v.get('label_coverage'))}, "
                         f"decision={v.get('decision')}")
            rows = [(f"{b['lower']:.2f}-{b['upper']:.2f}", b["count"], b["mean_confidence"],
                     b["observed_rate"]) for b in v.get("bins", [])]
            if rows:
                parts.append(table(["bin", "n", "confidence", "observed"], rows))
        else:
            for key, r in v["cohort_keys"].items():
                o = r.get("overall") or {}
                parts.append(f"\nversion {v['version']}, cohort key {key}: overall n={o.get('n')}"
                             f" error={_fmt(o.get('error_rate', o.get('mae')))}")
                rows = [(c["cohort"], c["n"], c.get("error_rate", c.get("mae")),
                         c.get("ci_low"), c.get("ci_high"),
                         c.get("delta_error_rate", c.get("delta_mae")), c["decidable"],
                         c["decision"]) for c in r["cohorts"]]
                parts.append(table(["cohort", "n", "error", "ci low", "ci high", "delta",
                                    "decidable", "decision"], rows))
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    from app.evaluation import reports
    from app.evaluation.profiles import ProfileCache
    from app.ingest import weights
    from app.storage.db import make_engine

    settings = get_settings()
    engine = make_engine(settings)
    start = datetime.fromisoformat(args.start) if args.start else None
    end = datetime.fromisoformat(args.end) if args.end else None
    try:
        with engine.connect() as conn:
            if args.kind == "compare":
                if not (args.base and args.candidate):
                    print("compare needs --base and --candidate")
                    return 2
                report = weights.compare(conn=conn, model_name=args.model, base=args.base,
                                         candidate=args.candidate)
            else:
                sc = reports.scope(conn, settings, args.model, args.version, start, end,
                                   needs_labels=args.kind in ("calibration", "cohorts"))
                report = {"drift": lambda: reports.drift_report(conn, settings, sc,
                                                                    ProfileCache()),
                          "calibration": lambda: reports.calibration_report(conn, settings, sc,
                                                                            None),
                          "cohorts": lambda: reports.cohorts_report(conn, settings, sc),
                          }[args.kind]()
    except ApiError as err:
        print(f"error: {err.message}")
        return 1
    finally:
        engine.dispose()
    print(json.dumps(report, indent=2) if args.json else render(args.kind, report))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="print a drift, calibration, cohort or compare report")
    p.add_argument("kind", choices=["drift", "calibration", "cohorts", "compare"])
    p.add_argument("--model", required=True)
    p.add_argument("--version", help="one version (default: every version in the window)")
    p.add_argument("--start", help="window start, ISO 8601 (default: the latest window)")
    p.add_argument("--end", help="window end, ISO 8601")
    p.add_argument("--base", help="compare: the earlier version")
    p.add_argument("--candidate", help="compare: the later version")
    p.add_argument("--json", action="store_true", help="print the JSON report instead")
    p.set_defaults(func=run)
