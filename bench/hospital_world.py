"""The hospital of the sighting bench, pure: gateways in corridors, wearables, walks, RSSI.

No I/O and no clock here: bench/hospital_sightings.py feeds these positions to the real
gateway monitor code on the devcluster and measures what reaches the apiserver.

Gateways stand every ``SPACING`` m along corridors ``CORRIDOR_GAP`` m apart (no radio
between corridors). A wearable rests within ``SPREAD`` m of its home gateway, so its own
gateway and the two neighbours hear it (2 at a corridor's end): the issue's "heard by
2-3 gateways". One in ``WALK_EVERY`` walks: it rests at home, walks at ``SPEED`` to a
neighbouring gateway, rests there, walks back, and so on. Its true nearest gateway
changes when it crosses the midpoint between two gateways.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SPACING = 10.0  # m between gateways along a corridor
SPREAD = 3.5  # m: a resting wearable's offset from its gateway, uniform +/-
RANGE = 14.5  # m: beyond this a gateway hears nothing (the walls, the next corridor)
SPEED = 1.0  # m/s walking
WALK_EVERY = 20  # one wearable in 20 walks (5 %)
REST = (150.0, 240.0)  # s at each end of a walk: past the rebalancer's 2 min cooldown
TX_AT_1M = -40.0  # dBm at 1 m; path loss exponent 3 (indoors)
EXPONENT = 3.0


def rssi_at(distance: float) -> float:
    """Noise-free RSSI at ``distance`` m (log-distance path loss)."""
    return TX_AT_1M - 10.0 * EXPONENT * math.log10(max(distance, 0.5))


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    corridor: int
    x: float


@dataclass(frozen=True, slots=True)
class Leg:
    """One walk: from ``x0`` at ``start`` to ``x1`` at ``start + |x1 - x0| / SPEED``."""

    start: float
    x0: float
    x1: float

    @property
    def end(self) -> float:
        return self.start + abs(self.x1 - self.x0) / SPEED

    def x(self, t: float) -> float:
        if t <= self.start:
            return self.x0
        if t >= self.end:
            return self.x1
        return self.x0 + math.copysign(SPEED * (t - self.start), self.x1 - self.x0)


@dataclass(frozen=True, slots=True)
class Wearable:
    name: str
    address: str
    corridor: int
    x: float  # resting position at home
    legs: tuple[Leg, ...] = ()  # walks, in time order (empty: stationary)

    def position(self, t: float) -> float:
        x = self.x
        for leg in self.legs:
            if t < leg.start:
                break
            x = leg.x(t)
        return x


def gateway_name(corridor: int, index: int) -> str:
    return f"gw-c{corridor:02d}-{index:02d}"


def gateways(count: int, per_corridor: int) -> list[Gateway]:
    return [
        Gateway(
            gateway_name(i // per_corridor, i % per_corridor),
            i // per_corridor,
            (i % per_corridor) * SPACING,
        )
        for i in range(count)
    ]


def address(k: int) -> str:
    return ":".join(f"{b:02X}" for b in (0xC4, 0x1D, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF, 7))


def wearables(
    count: int, gws: list[Gateway], per_corridor: int, walk_from: float, until: float, seed: int
) -> list[Wearable]:
    """``count`` wearables spread round-robin over the gateways; walkers start walking
    at ``walk_from`` (a random rest first) and walk until ``until``."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        home = gws[k % len(gws)]
        x = home.x + rng.uniform(-SPREAD, SPREAD)
        legs: list[Leg] = []
        if k % WALK_EVERY == 0:
            index = round(home.x / SPACING)
            step = 1 if index == 0 else -1 if index == per_corridor - 1 else rng.choice((-1, 1))
            there = x + step * SPACING
            t = walk_from + rng.uniform(0.0, REST[0])
            here = x
            while t < until:
                legs.append(Leg(t, here, there))
                t = legs[-1].end + rng.uniform(*REST)
                here, there = there, here
        out.append(Wearable(f"hw-{k:05d}", address(k), home.corridor, x, tuple(legs)))
    return out


def nearest(gws_of_corridor: list[Gateway], x: float) -> Gateway:
    return min(gws_of_corridor, key=lambda g: (abs(g.x - x), g.name))


@dataclass(frozen=True, slots=True)
class Move:
    """A wearable's true nearest gateway changed at ``t`` (the midpoint crossing)."""

    device: str
    t: float
    old: str
    new: str


def true_moves(w: Wearable, gws_of_corridor: list[Gateway]) -> list[Move]:
    out = []
    for leg in w.legs:
        a, b = nearest(gws_of_corridor, leg.x0), nearest(gws_of_corridor, leg.x1)
        if a.name == b.name:
            continue
        mid = (a.x + b.x) / 2.0
        out.append(Move(w.name, leg.start + abs(mid - leg.x0) / SPEED, a.name, b.name))
    return out


def evidence_time(switch_cost: float, deadband: float, step: float = 0.01) -> float:
    """Seconds after the midpoint crossing until the noise-free advantage of the new
    gateway past ``deadband`` dB, summed over time, reaches ``switch_cost`` dB x s:
    when the policy's evidence rule can move at the earliest, for this walk."""
    half = SPACING / 2.0
    total, t = 0.0, 0.0
    while total < switch_cost:
        t += step
        d = min(SPEED * t, half - 0.01)
        advantage = rssi_at(half - d) - rssi_at(half + d)
        total += max(0.0, advantage - deadband) * step
    return t


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
