"""Replica counts saved in annotations by a park (the rebalancer's and discovery's)."""

from __future__ import annotations

from typing import Any

# The most replicas an unpark restores: a saved count above it is garbage (edited by
# hand), not a function's replica count to bring back.
MAX_PARKED_REPLICAS = 10_000


def saved_count(value: Any) -> int | None:
    """A short ASCII decimal as an int, else None. Never raises: "²" is a digit to
    str.isdigit but not to int(), and int() of thousands of digits is slow, and refused
    past 4,300 (an annotation must not drop a Deployment out of a cache)."""
    if not isinstance(value, str) or not (value.isascii() and value.isdecimal()):
        return None
    if len(value) > len(str(MAX_PARKED_REPLICAS)):
        return None
    return int(value)
