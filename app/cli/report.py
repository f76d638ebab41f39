"""`modelmon report ...`: the REST reports as readable tables, read from the API (--url,
--token), or computed with the same code from a database named explicitly (--database-url)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from app.cli.client import ApiClient, add_connection_args
from app.cli.errors import CliError
from app.errors import ApiError, DomainError
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
    if report.get("empty"):
        parts.append(report.get("note") or "no traffic in this window")
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
    if args.kind == "compare" and not (args.base and args.candidate):
        raise CliError("compare needs --base and --candidate", exit_code=2)
    if args.database_url:
        if args.url or args.token:
            raise CliError("--database-url reads the database itself: give it without --url "
                           "and --token", exit_code=2)
        report = _from_database(args)
    else:
        report = _from_api(args)
    print(json.dumps(report, indent=2) if args.json else render(args.kind, report))
    return 0


def _from_api(args: argparse.Namespace) -> dict[str, Any]:
    api = ApiClient(args.url, args.token)
    model = urllib.parse.quote(args.model, safe="")
    if args.kind == "compare":
        return api.get(f"/v1/models/{model}/versions/compare",
                       {"base": args.base, "candidate": args.candidate})
    return api.get(f"/v1/models/{model}/reports/{args.kind}",
                   {"version": args.version, "start": args.start, "end": args.end,
                    "bins": args.bins if args.kind == "calibration" else None})


def _from_database(args: argparse.Namespace) -> dict[str, Any]:
    """The same report computed here from the database, with no server: for a database the
    API does not serve (a restored backup, a replica under investigation)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from app.evaluation import reports
    from app.evaluation.profiles import ProfileCache
    from app.registry import weights
    from app.storage import migrate
    from app.storage.db import make_engine, missing_sqlite_file

    try:
        url = make_url(args.database_url)
    except Exception:  # noqa: BLE001 - any unparsable URL
        raise CliError(f"--database-url {args.database_url!r} is not a database URL "
                       "(postgresql+psycopg://... or sqlite:///path)", exit_code=2) from None
    shown = url.render_as_string(hide_password=True)
    if (missing := missing_sqlite_file(args.database_url)) is not None:
        raise CliError(f"no SQLite database at {missing}")
    settings = get_settings().model_copy(update={"database_url": args.database_url})
    start, end = _instant(args.start, "--start"), _instant(args.end, "--end")
    engine = make_engine(settings)
    try:
        if migrate.current_revision(engine) is None:
            raise CliError(f"the database at {shown} holds no modelmon schema (run modelmon "
                           "migrate against it first)")
        with engine.connect() as conn:
            if args.kind == "compare":
                return weights.compare(conn=conn, settings=settings, model_name=args.model,
                                       base=args.base,
                                       candidate=args.candidate)
            sc = reports.scope(conn, settings, args.model, args.version, start, end,
                               needs_labels=args.kind in ("calibration", "cohorts"))
            if args.kind == "drift":
                return reports.drift_report(conn, settings, sc, ProfileCache())
            if args.kind == "calibration":
                return reports.calibration_report(conn, settings, sc, args.bins)
            return reports.cohorts_report(conn, settings, sc)
    except (ApiError, DomainError) as err:
        raise CliError(err.message) from None
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise CliError(f"cannot use the database at {shown} ({reason})") from None
    finally:
        engine.dispose()


def _instant(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-11-25T10:00:00Z)",
                       exit_code=2) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="print a drift, calibration, cohort or compare report",
                       description="Print a report of the modelmon API as a table (or JSON). "
                       "With --database-url it is computed from that database instead, with no "
                       "server.")
    p.add_argument("kind", choices=["drift", "calibration", "cohorts", "compare"])
    p.add_argument("--model", required=True)
    p.add_argument("--version", help="one version (default: every version in the window)")
    p.add_argument("--start", help="window start, ISO 8601 (default: the latest window)")
    p.add_argument("--end", help="window end, ISO 8601")
    p.add_argument("--bins", type=int, help="calibration: confidence bins (default 10)")
    p.add_argument("--base", help="compare: the earlier version")
    p.add_argument("--candidate", help="compare: the later version")
    p.add_argument("--json", action="store_true", help="print the JSON report instead")
    add_connection_args(p)
    p.add_argument("--database-url", help="compute the report from this database instead of "
                   "asking the API (postgresql+psycopg://... or sqlite:///path)")
    p.set_defaults(func=run)
