#!/usr/bin/env python3
"""Checks that the service's code fits on a screen: no function over 60 lines and no module
over 500 lines in app/ (migrations excepted: a revision is a record, not a design).

    scripts/check-code-shape.py            # app/ of this checkout
    scripts/check-code-shape.py PATH...    # other files or directories (the tests use this)

Prints every offender as ``path:line: what (N lines, limit L)`` and exits 1 when there is
any. A function's length runs from its ``def``
line to its last line (decorators and the blank lines after it excluded), so a docstring
counts: what a reader scrolls through is what is measured. Nested functions and methods are
measured on their own too; a long function does not excuse its parts.

Parsed with ``ast``, never imported, so the check needs nothing installed and runs on code
that would not import.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500
# Directories never checked, wherever they sit below a checked directory.
SKIPPED_DIRS = frozenset({"migrations", "__pycache__"})


@dataclass(frozen=True)
class Offender:
    path: str  # as given, relative to the repository root where it is inside it
    line: int
    what: str  # "module" or "function <qualified name>"
    lines: int
    limit: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} ({self.lines} lines, limit {self.limit})"


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def check_file(path: Path, max_function: int = MAX_FUNCTION_LINES,
               max_module: int = MAX_MODULE_LINES) -> list[Offender]:
    """The offenders of one Python file, in line order."""
    text = path.read_text(encoding="utf-8")
    shown = _shown(path)
    out = []
    n_lines = len(text.splitlines())
    if n_lines > max_module:
        out.append(Offender(shown, 1, "module", n_lines, max_module))
    for name, node in _functions(ast.parse(text, filename=str(path))):
        length = node.end_lineno - node.lineno + 1  # type: ignore[attr-defined]
        if length > max_function:
            out.append(Offender(shown, node.lineno,  # type: ignore[attr-defined]
                                f"function {name}", length, max_function))
    return out


def python_files(paths: Iterable[Path]) -> list[Path]:
    """Every .py file given or below a directory given, outside SKIPPED_DIRS, sorted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += [f for f in p.rglob("*.py")
                      if not SKIPPED_DIRS.intersection(f.relative_to(p).parts[:-1])]
        else:
            files.append(p)
    return sorted(files)


def check(paths: Iterable[Path]) -> list[Offender]:
    """Every function and module over its limit below ``paths``."""
    return [o for f in python_files(paths) for o in check_file(f)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "app"],
                        help="files or directories to check (default: app/)")
    args = parser.parse_args(argv)
    new = check(args.paths)
    for o in new:
        print(o)
    if new:
        print(f"{len(new)} over the limits ({MAX_FUNCTION_LINES} lines a function, "
              f"{MAX_MODULE_LINES} a module): split them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
