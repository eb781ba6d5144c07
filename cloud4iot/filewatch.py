"""The one loop that re-checks a file: the policy, the TLS certificate and key, the
gateway's policy. Standard library only (the policy store uses it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def watch_file(
    interval: float,
    check: Callable[[], str | T],
    on_result: Callable[[str], None] | None = None,
    *,
    apply: Callable[[T], str] | None = None,
    what: str = "reload",
    keeps: str = "what is in force",
    immediately: bool = False,
) -> None:
    """Every `interval` seconds, forever: `check` runs off the event loop (it reads
    files) and returns "applied", "refused" or "unchanged", or something prepared for
    `apply` to put in force on the event loop. `on_result` hears every result but
    "unchanged". A bug must not end reloading for good: logged, counted "refused".
    `immediately`: the first check at once, not after the first interval."""
    first = True
    while True:
        if not (first and immediately):
            await asyncio.sleep(interval)
        first = False
        try:
            checked = await asyncio.to_thread(check)
            if isinstance(checked, str):
                result = checked
            else:
                assert apply is not None, "check prepared something but nothing applies it"
                result = apply(checked)
        except Exception:  # a bug must not end reloading for good
            log.exception("%s failed unexpectedly; %s stays", what, keeps)
            result = "refused"
        if result != "unchanged" and on_result is not None:
            on_result(result)
