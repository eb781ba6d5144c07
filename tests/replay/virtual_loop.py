"""An asyncio event loop on virtual time: the live loops run unchanged, without waiting.

``loop.time()`` is a counter that jumps to the next timer whenever nothing is ready,
so ``asyncio.sleep``, ``asyncio.timeout`` and ``call_later`` keep their order and
their virtual durations while an hour passes in the seconds the work takes.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual loop: nothing scheduled and nothing ready (deadlock)")
        # Land exactly on the next timer (now + timeout could miss it by a rounding).
        timers = getattr(self.loop, "_scheduled", None)
        self.now = max(self.now, timers[0].when()) if timers else self.now + max(0.0, timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._virtual = _Selector()
        self._virtual.now = start
        super().__init__(self._virtual)
        self._virtual.loop = self

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[Any, Any, T], start: float = 0.0) -> T:
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
