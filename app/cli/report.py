"""`modelmon report ...`: the REST reports as readable tables, read from the API (--url,
--token), or computed with the same code from a database named explicitly (--database-url)."""

from __future__ import annotations

import argparse
import json
import re
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
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]
    return "\n".join(out)


def _regularization(r: dict[str, Any] | None) -> str:
    """``l1 lambda=0.01`` rather than a Python dict."""
    if not r:
        return "-"
    return " ".join([str(r.get("type"))] + [f"{k}={_fmt(v)}" for k, v in r.items()
                                             if k != "type" and v is not None])


def _compare(report: dict[str, Any]) -> str:
    base, cand = report["base"], report["candidate"]
    head = table(["", "version", "regularization"], [
        ("base", base["version"], _regularization(base.get("regularization"))),
        ("candidate", cand["version"], _regularization(cand.get("regularization")))])
    rows = [(t["name"], t.get("l1_relative_change"), t.get("l2_relative_change"),
             t.get("sparsity_base"), t.get("sparsity_candidate"), t.get("sparsity_change_pp"))
            for t in [report["overall"], *report["tensors"]]]
    parts = [f"{report['model']}: {base['version']} -> {cand['version']}", head, "",
             table(["tensor", "L1 rel", "L2 rel", "sparsity base", "sparsity cand",
                    "change (pp)"], rows),
             f"added: {', '.join(report['added']) or '-'}; removed: "
             f"{', '.join(report['removed']) or '-'}; reshaped: "
             f"{', '.join(report['reshaped']) or '-'}"]
    checks = [(name, c.get("value"), _lines(c.get("lines")), c.get("decision"))
              for name, c in (report.get("checks") or {}).items()]
    if checks:
        parts += ["", table(["check", "value", "lines", "decision"], checks)]
    f = report.get("features") or {}
    if f:
        parts.append(f"\nfeatures with weight: {f.get('nonzero_base')} -> "
                     f"{f.get('nonzero_candidate')}; zeroed: "
                     f"{', '.join(f.get('zeroed') or []) or '-'}; revived: "
                     f"{', '.join(f.get('revived') or []) or '-'}")
        shifts = [(s["feature"], s["importance_base"], s["importance_candidate"], s["change"])
                  for s in f.get("shifts") or []]
        if shifts:
            parts.append(table(["feature", "importance base", "importance cand", "change"],
                               shifts))
    return "\n".join(parts)


def _lines(lines: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in (lines or {}).items()) or "-"


def alert(decision: str | None, importance: float | None, policy: dict[str, Any]) -> str:
    """What the alert rules make of a drift decision, and why (docs/runbooks.md): a critical
    decision pages, unless the model's policy turns pages off, or the version gives the
    feature no weight (importance 0) and the policy does not page unused features."""
    effective = policy.get("effective", policy)
    if decision == "warning":
        return "ticket"
    if decision != "critical":
        return "-"
    if effective.get("page") is False:
        return "ticket (policy: page false)"
    if importance == 0 and not effective.get("page_unused_features"):
        return "ticket (importance 0: the version does not use it)"
    return "page"


def _drift(v: dict[str, Any], policy: dict[str, Any]) -> list[str]:
    rows = [(f["feature"], f["psi"], f["psi_band"], f["ks_statistic"], f["ks_pvalue"],
             f["missing_rate"], f.get("importance"), f["decision"],
             alert(f["decision"], f.get("importance"), policy))
            for f in v.get("features", [])]
    if v.get("prediction"):
        p = v["prediction"]
        rows.append(("(prediction)", p["psi"], p["psi_band"], p["ks_statistic"],
                     p["ks_pvalue"], p["missing_rate"], None, p["decision"],
                     alert(p["decision"], None, policy)))
    out = [f"\nversion {v['version']}: n={v['n']}, reference: "
           f"{v['reference'].get('source')}",
           table(["feature", "PSI", "band", "KS D", "p", "missing", "importance", "decision",
                  "alert"], rows)]
    out += [_multivariate(v["multivariate"])] if v.get("multivariate") else []
    return out + [_embedding(e) for e in (v.get("embeddings") or {}).get("features", [])]


def _multivariate(m: dict[str, Any]) -> str:
    """One line for the PCA reconstruction error check."""
    return _effect_line("multivariate", m, "PCA", f"PCA, {m.get('components')} components")


def _embedding(e: dict[str, Any]) -> str:
    """One line per embedding feature: its whitened mean shift."""
    return _effect_line(f"embedding {e['feature']}", e, None,
                        f"dim {e.get('dim')}, {e.get('components')} directions")


def _effect_line(name: str, e: dict[str, Any], kind: str | None, detail: str) -> str:
    """A multivariate check's line: its effect, p, n and decision (with the reason a window
    was not decided), or why it does not apply."""
    if e.get("status") == "not_applicable":
        return f"{name}{f' ({kind})' if kind else ''}: not applicable: {e.get('reason')}"
    reason = e.get("reason") or e.get("decision_reason")
    why = f" ({reason})" if reason else ""
    return (f"{name} ({detail}): effect {_fmt(e.get('effect'))} sd, p {_fmt(e.get('pvalue'))}, "
            f"n {e.get('n')}: {e.get('decision')}{why}")


def _gap(v: dict[str, Any]) -> list[str]:
    gap = v.get("generalization_gap")
    if not gap:
        return [f"\nversion {v['version']}: generalization gap: - (no validation error "
                "registered with the version: register it with training.validation_error)"]
    rows = []
    for g in [*([gap["overall"]] if gap.get("overall") else []), *gap.get("cohorts", [])]:
        where = f"{g['cohort_key']}={g['cohort']}" if g.get("cohort_key") else "(overall)"
        rows.append((where, g.get("n"), g.get("validation_error"), g.get("production_error"),
                     g.get("ci_low"), g.get("ci_high"), g.get("gap"), _lines(g.get("lines")),
                     g.get("decision")))
    return [f"\nversion {v['version']}: generalization gap (production error against the "
            "validation error registered with the version)",
            table(["where", "n", "validation", "production", "ci low", "ci high", "gap",
                   "lines", "decision"], rows)]


def _cohorts(v: dict[str, Any]) -> list[str]:
    parts = []
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
    return parts + _gap(v)


def _calibration(v: dict[str, Any]) -> list[str]:
    parts = [f"\nversion {v['version']}: n={v.get('n')}, ECE={_fmt(v.get('ece'))}, "
             f"MCE={_fmt(v.get('mce'))}, Brier={_fmt(v.get('brier'))}, "
             f"label coverage={_fmt(v.get('label_coverage'))}, "
             f"decision={v.get('decision')}"]
    rows = [(f"{b['lower']:.2f}-{b['upper']:.2f}", b["count"], b["mean_confidence"],
             b["observed_rate"]) for b in v.get("bins", [])]
    if rows:
        parts.append(table(["bin", "n", "confidence", "observed"], rows))
    return parts


def render(kind: str, report: dict[str, Any]) -> str:
    if kind == "compare":
        return _compare(report)
    parts = [f"{report['model']} window {report['window_start']} .. {report['window_end']}"]
    if report.get("empty"):
        # the service's hint names the query string; here it is this command's options
        parts.append(re.sub(r"\?start=(\S+)&end=(\S+)", r"--start \1 --end \2",
                            report.get("note") or "no traffic in this window"))
    for v in report["versions"]:
        if kind == "drift":
            parts += _drift(v, report.get("policy") or {})
        elif kind == "calibration":
            parts += _calibration(v)
        else:
            parts += _cohorts(v)
    if kind == "drift" and report["versions"]:
        parts.append("\nalert: what the alert rules make of a decision: a critical one pages, "
                     "unless the feature has importance 0 in the version's weights (it cannot "
                     "move the predictions: a ticket) or the model's policy turns pages off")
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
    p.add_argument("kind", choices=["drift", "calibration", "cohorts", "compare"],
                   help="which report")
    p.add_argument("--model", required=True, help="a registered model")
    p.add_argument("--version", help="one version (default: every version in the window)")
    p.add_argument("--start", help="window start, ISO 8601 (default: the latest window)")
    p.add_argument("--end", help="window end, ISO 8601 (default: the latest bucket "
                   "boundary)")
    p.add_argument("--bins", type=int, help="calibration: confidence bins (default 10)")
    p.add_argument("--base", help="compare: the earlier version (no default)")
    p.add_argument("--candidate", help="compare: the later version (no default)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead")
    add_connection_args(p)
    p.add_argument("--database-url", help="compute the report from this database instead of "
                   "asking the API (postgresql+psycopg://... or sqlite:///path; default: ask the "
                   "API)")
    p.set_defaults(func=run)
