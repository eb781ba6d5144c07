"""Reference deciders replay runs beside the policy, on the raw readings of one device.

* ``strongest_mean``: every GRID seconds, the gateway with the strongest mean over the
  last 5 s (no hysteresis: the most responsive causal choice, and the most restless).
* ``ema_margin``: a 3 s exponential average per gateway, updated on every reception;
  move when another gateway's average is 6 dB above the current one's (no dwell).
* ``hindsight``: the path that minimises the summed deficit (dB x s) plus MOVE_COST per
  move, knowing the whole recording: a bound no online decider reaches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from replay.inputs import Advert
from replay.metrics import GRID, UNHEARD_DBM, Reference, Timeline

EMA_TAU = 3.0
EMA_MARGIN_DB = 6.0
STALE_S = 15.0  # a gateway not heard for this long is no candidate (the policy's freshness)
MEAN_WINDOW = 5.0
MOVE_COST_DB_S = 30.0  # hindsight: a move costs as much as 6 dB for 5 s


def strongest_mean(
    adverts: Sequence[Advert], ref: Reference, window: float = MEAN_WINDOW
) -> Timeline:
    out: list[tuple[float, str | None]] = []
    by_gw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, list[tuple[float, float]]] = {}
    for a in adverts:
        rows.setdefault(a.gateway, []).append((a.t, float(a.rssi)))
    for gw, r in rows.items():
        t = np.array([x[0] for x in r])
        by_gw[gw] = (t, np.concatenate(([0.0], np.cumsum([x[1] for x in r]))))
    if not len(ref.times):
        return out
    grid = ref.times
    names = sorted(by_gw)
    means = np.full((len(names), len(grid)), -np.inf)
    for i, gw in enumerate(names):
        t, csum = by_gw[gw]
        lo = np.searchsorted(t, grid - window, side="right")
        hi = np.searchsorted(t, grid, side="right")
        n = hi - lo
        means[i] = np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), -np.inf)
    pick = np.argmax(means, axis=0)
    heard = np.isfinite(np.max(means, axis=0))
    current: str | None = None
    for k, t in enumerate(grid):
        node = names[pick[k]] if heard[k] else None
        if node is not None and node != current:
            out.append((float(t), node))
            current = node
    return out


def ema_margin(
    adverts: Sequence[Advert], tau: float = EMA_TAU, margin: float = EMA_MARGIN_DB
) -> Timeline:
    out: list[tuple[float, str | None]] = []
    ema: dict[str, float] = {}
    seen: dict[str, float] = {}
    current: str | None = None
    for a in adverts:
        prev = seen.get(a.gateway)
        if prev is None:
            ema[a.gateway] = float(a.rssi)
        else:
            alpha = 1.0 - math.exp(-max(0.0, a.t - prev) / tau)
            ema[a.gateway] += alpha * (a.rssi - ema[a.gateway])
        seen[a.gateway] = a.t
        fresh = {g: v for g, v in ema.items() if a.t - seen[g] <= STALE_S}
        if current is None or current not in fresh:
            pick = max(fresh, key=lambda g: (fresh[g], g))
        else:
            rival = max((g for g in fresh if g != current), key=lambda g: fresh[g], default=None)
            pick = (
                rival if rival is not None and fresh[rival] >= fresh[current] + margin else current
            )
        if pick != current:
            out.append((a.t, pick))
            current = pick
    return out


def hindsight(ref: Reference, move_cost: float = MOVE_COST_DB_S) -> Timeline:
    """Viterbi over the grid: cost = deficit x GRID per point + move_cost per change."""
    n_gw, n_t = ref.means.shape
    if n_t == 0:
        return []
    own = np.where(np.isnan(ref.means), UNHEARD_DBM, ref.means)
    cost = (ref.best[None, :] - own) * GRID
    back = np.zeros((n_gw, n_t), dtype=np.int64)
    acc = cost[:, 0].copy()
    for k in range(1, n_t):
        j = int(np.argmin(acc))
        switch = acc[j] + move_cost
        stay = acc <= switch
        back[:, k] = np.where(stay, np.arange(n_gw), j)
        acc = np.where(stay, acc, switch) + cost[:, k]
    path = np.zeros(n_t, dtype=np.int64)
    path[-1] = int(np.argmin(acc))
    for k in range(n_t - 1, 0, -1):
        path[k - 1] = back[path[k], k]
    out: list[tuple[float, str | None]] = []
    current = -1
    for k in range(n_t):
        if path[k] != current:
            current = int(path[k])
            out.append((float(ref.times[k]), ref.gateways[current]))
    return out
