"""Which event loop a service runs on.

uvloop (libuv, its transports and TLS in C) when it is installed, asyncio's own loop
otherwise or when asked (`--event-loop asyncio`). Why, for the extender: with admission
narrowing the scheduler path is many small requests (an /admit over TLS per pod, then a
/filter and a /prioritize over 16 names), so the loop's own work per request (the
transports, asyncio's TLS in Python) was a third of the extender's CPU at 5,000 nodes
(BENCHMARKS.md, "Where the extender's CPU per pod goes"); the handlers run the same code
on either loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

CHOICES = ("auto", "uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopError(ValueError):
    """The loop asked for cannot be had here."""


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """ "auto" -> the loop it stands for here; a bad name or a missing uvloop -> LoopError."""
    if choice not in CHOICES:
        raise LoopError(f"event loop {choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        raise LoopError("event loop 'uvloop': uvloop is not installed (pip install uvloop)")
    return choice


def loop_factory(choice: str) -> LoopFactory:
    """A function making a new loop of the kind `choice` names (see resolve)."""
    if resolve(choice) == "uvloop":
        import uvloop  # installed: resolve checked; imported here, not at import time

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": the kind of the loop running now (for the start-up log)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
