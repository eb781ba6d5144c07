"""Logging for every command of ours: `--log-level` and `--log-format text|json`.

`json` writes one object per line as Kubernetes components do with
`--logging-format=json` (accepted as a spelling too): `ts` (epoch seconds), `level`,
`logger`, `msg`, then the record's structured keys (`extra={"pod": ..., "node": ...}`),
and `err` with the traceback when there is one. `text` is the classic line with those
keys appended as key=value, so both formats carry the same facts.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import orjson

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
# Our structured keys; a record carries those it was given with `extra=`.
KEYS = ("pod", "device", "node", "nodes", "reason", "code", "workload", "move", "verb")
_PLAIN = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def level_name(value: str) -> str:
    """A level by name, any case; anything else is a usage error (exit 2), never a
    traceback from logging's own check."""
    name = value.strip().lower()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid level {value!r} (choose from {', '.join(LEVELS)})"
        )
    return name


def log_flags(
    p: argparse._ActionsContainer,
    default_level: str = "info",
    debug_adds: str = "",
) -> None:
    p.add_argument(
        "--log-level",
        type=level_name,
        default=default_level,  # a string default goes through `type` too: checked
        metavar="{" + ",".join(LEVELS) + "}",
        help="the lowest level logged" + (f"; debug adds {debug_adds}" if debug_adds else ""),
    )
    p.add_argument(
        "--log-format",
        "--logging-format",
        dest="log_format",
        choices=FORMATS,
        default="text",
        help="json: one JSON object per line, as Kubernetes components' --logging-format=json",
    )


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _PLAIN and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["err"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keys on the first line, before a traceback
        pairs = " ".join(f"{k}={_text(v)}" for k, v in extras.items())
        return f"{head} {pairs}{sep}{tail}"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return orjson.dumps(text).decode() if (" " in text or not text) else text


def configure(level: str, fmt: str = "text") -> None:
    """Root logging for a command; replaces what an earlier call set (tests, re-runs)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
