"""kubectl's output conventions for the admin commands: a table by default, `-o wide`
for more columns, `-o json|yaml` for the whole document (parse it back, script it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import yaml

FORMATS = ("table", "wide", "json", "yaml")


def output_flag(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        help="table (default), wide (more columns), json or yaml (the whole document)",
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, three spaces apart, as kubectl prints."""
    cells = [[str(h) for h in headers]] + [
        ["<none>" if c is None else str(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def emit(doc: Any, fmt: str, as_table: Callable[[Any, bool], str]) -> None:
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(as_table(doc, fmt == "wide") + "\n")
    sys.stdout.flush()
