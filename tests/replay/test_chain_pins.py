"""The replay chain's decisions on synthetic sites, pinned: a speed-up of the shared code
(tracker, publish plan, report index; BENCHMARKS.md "Replay speed") must write the same
reports and take the same nearest decisions, to the same virtual instant.

The pins are the decision RULES' output: a change of a rule (the tracker's smoothing, the
publisher's send rule, the nearest decision) moves them, and whoever changes a rule
re-pins here (print the three values with the loop below) and says so. A change that is
only meant to be faster must never move them."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from bench.replay_speed import site
from cloud4iot.buildinfo import DEFAULT_POLICY
from cloud4iot.policy.loader import load_policy
from replay.chain import run_chain

PINS = [
    # gateways, devices, seconds: applies, nearest changes, digest of every decision
    # Re-pinned for issue 19's rules (no coalescing, 1 s tracker window, 0.5 s writer
    # tick, switchCostDbS 6 past deadbandDb 5.5); before: (834, 21), (722, 72).
    # Re-pinned when a move started going to the rival furthest ahead over the episode
    # (extender/scoring/nearest.py `_target`); before: (719, 69, "eae5a4ebb19f5232").
    ((8, 12, 240), (993, 21, "b4eae111dddd7a26")),
    ((20, 50, 60), (714, 64, "9d57b603b00b53fd")),
]


@pytest.mark.parametrize(("shape", "pinned"), PINS)
def test_synthetic_site_decisions_are_pinned(
    shape: tuple[int, int, int], pinned: tuple[int, int, str]
) -> None:
    result = asyncio.run(run_chain(site(*shape), load_policy(DEFAULT_POLICY)))
    changes = sum(max(0, len(t) - 1) for t in result.decisions.values())
    digest = hashlib.sha256(json.dumps(sorted(result.decisions.items())).encode()).hexdigest()
    assert (result.applies, changes, digest[:16]) == pinned
