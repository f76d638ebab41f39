"""The ``modelmon`` command: one module of this package per subcommand, the HTTP client they
share (client.py) and their one kind of expected failure (errors.py)."""

from __future__ import annotations

import argparse
import sys

from app.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    from app import __version__
    from app.cli import backfill, demo, imports, migrate, report, serve, tokens, worker

    parser = argparse.ArgumentParser(prog="modelmon", description="Production model monitoring.")
    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    worker.add_parser(sub)
    tokens.add_parsers(sub)
    report.add_parser(sub)
    demo.add_parser(sub)
    imports.add_parser(sub)
    backfill.add_parser(sub)
    migrate.add_parser(sub)
    show_defaults(parser)
    args = parser.parse_args(argv)
    return _run(args)


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under ``parser`` that runs a command (those without subcommands)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values())
            for leaf in leaf_parsers(p)]


class DefaultsFormatter(argparse.HelpFormatter):
    """An option's help with its default, unless the help already says it (an unset value
    that means something, "default: every version", is said in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.required or action.default in (None, False)
                or action.default is argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every command's --help states each option's default."""
    parser.formatter_class = DefaultsFormatter
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for p in dict.fromkeys(a.choices.values()):
                show_defaults(p)


def _run(args: argparse.Namespace) -> int:
    """The command; an expected failure is one line on stderr and a non-zero exit code."""
    from app.cli.errors import CliError

    prefix = f"modelmon {args.command}"
    try:
        return args.func(args)
    except CliError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from pydantic import ValidationError

        if isinstance(err, ValidationError) and err.title == "Settings":
            for e in err.errors(include_url=False, include_input=False):
                name = "MODELMON_" + "_".join(str(p) for p in e["loc"]).upper()
                print(f"{prefix}: error: {name if e['loc'] else 'settings'}: "
                      f"{e['msg'].removeprefix('Value error, ')}", file=sys.stderr)
            return 2
        if "sqlalchemy" in sys.modules:
            from sqlalchemy.exc import OperationalError

            if isinstance(err, OperationalError):
                from sqlalchemy.engine import make_url

                url = make_url(get_settings().database_url).render_as_string(hide_password=True)
                reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
                print(f"{prefix}: error: cannot use the database at {url} ({reason}); check "
                      "MODELMON_DATABASE_URL", file=sys.stderr)
                return 1
        raise
