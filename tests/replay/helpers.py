"""Synthetic recordings and the shared data for the replay tests."""

from __future__ import annotations

import random
from pathlib import Path

from replay.inputs import Advert, Recording, synthetic_address

DATA = Path(__file__).resolve().parents[1] / "data" / "ble-flat"
WITH_TRUTH = ("calib1", "calib2", "calib3", "calib4", "test_robot")


def recording(
    levels: dict[str, tuple[float, float]],
    seconds: float,
    seed: int = 1,
    rate: float = 3.0,
    noise: float = 3.0,
    device: str = "tag",
) -> Recording:
    """Each gateway hears ``device`` at ``rate`` Hz, its mean RSSI moving linearly from
    levels[gw][0] to levels[gw][1] over ``seconds``, with Gaussian noise."""
    rng = random.Random(seed)
    adverts = []
    for gw, (a, b) in sorted(levels.items()):
        t = rng.uniform(0, 1 / rate)
        while t < seconds:
            mean = a + (b - a) * t / seconds
            adverts.append(Advert(round(t, 3), gw, device, round(mean + rng.gauss(0, noise))))
            t += 1 / rate
    adverts.sort(key=lambda x: x.t)
    return Recording(adverts=adverts, addresses={device: synthetic_address(device)})


def nodes(timeline: list[tuple[float, str | None]]) -> list[str | None]:
    return [n for _, n in timeline]
