"""Retry delays for the gateway's loops (the BLE scanner, the Device watch)."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delays(base: float = 1.0, cap: float = 30.0) -> Callable[[int], float]:
    """Exponential backoff with full jitter, so restarted gateways do not retry in step."""

    def delay(failures: int) -> float:
        return random.uniform(0.5, 1.0) * min(cap, base * 2.0 ** max(0, failures - 1))

    return delay
