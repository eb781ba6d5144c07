"""What the nearest writer should write: pure, from the snapshot's Devices, the
decisions of this leadership term, our own recent writes and the time.

A device is rewritten when the decision differs from what its object shows
(counting our own write the watch has not delivered yet), or when the rssi moved
by RSSI_STEP dB since our last write in this term, at most every RSSI_REFRESH. The
object's rssi is not in the snapshot, so a new term rewrites each heard device once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cloud4iot.policy.schema import PolicySpec
from extender.scoring.nearest import NearestState, decide_nearest
from extender.state.snapshot import DeviceFacts

RSSI_STEP = 6.0  # rewrite status.nearest.rssi only on a change this large ...
# ... and at most this often per device (display only: no decision reads it back; the
# live value is in each GatewayReport). At rest the Device is written only when the
# decision changes, plus this refresh (issue 23 item 2). A still wearable's published
# RSSI swings by 6 dB within minutes on the tracker's short window, so the step alone
# does not hold writes back: the interval is what bounds them. At 300 s every Device
# of a ward was rewritten every ~5 minutes (6.3 writes a second at 2,000 devices,
# BENCHMARKS.md "etcd over two compactions"); at 1,800 s that is ~1 a second.
RSSI_REFRESH = 1800.0


@dataclass(frozen=True, slots=True)
class Written:
    """Our last write of one device's status.nearest in this term."""

    node: str | None
    rssi: float | None
    before: str | None  # status.nearest.node the snapshot showed when we wrote
    seen: bool = False  # whether the snapshot has shown our write since
    at: float = -math.inf  # when we wrote it


@dataclass(frozen=True, slots=True)
class NearestWrite:
    device: str
    state: NearestState
    rssi: float | None
    last_seen: float | None
    shown: str | None  # what the object shows, counting our write not yet delivered
    before: str | None  # status.nearest.node on the object when planned

    @property
    def moved(self) -> bool:
        return self.shown != self.state.node


@dataclass(frozen=True, slots=True)
class NearestPlan:
    states: dict[str, NearestState] = field(default_factory=dict)  # decided this step
    writes: list[NearestWrite] = field(default_factory=list)
    written: dict[str, Written] = field(default_factory=dict)  # records now acknowledged
    # Devices whose decision raised (a bug): skipped, their previous state kept. One
    # such device once failed every pass, and no device was decided at all.
    errors: dict[str, Exception] = field(default_factory=dict)


# How long our write may go unseen before we stop counting it as in flight. The watch
# delivers it in about a second; an object that still shows what it showed before our
# write after this long had our write overwritten before we saw it (a previous leader's
# write landing after ours, an admin), and believing it delivered would keep the stale
# value on the object until the decision changes (found in review, 2026-12-07). Longer
# than a busy apiserver's delivery (p99 8 s at 60 x 3,000, BENCHMARKS.md): a write
# counted lost too early is only written again, with the same value.
UNDELIVERED_MAX = 30.0


def shown(
    mine: Written | None, on_object: str | None, now: float
) -> tuple[str | None, float | None, bool]:
    """(node, rssi, acknowledged) the object shows, counting our undelivered write."""
    if mine is None:
        return on_object, None, False  # the rssi a previous leader wrote is not in DeviceFacts
    if on_object == mine.node:
        return mine.node, mine.rssi, True
    if mine.seen or on_object != mine.before:
        return on_object, None, False  # changed by someone else since our write
    if now - mine.at > UNDELIVERED_MAX:
        return on_object, None, False  # never seen: overwritten before the watch showed it
    return mine.node, mine.rssi, False


def due_devices(
    devices: Mapping[str, DeviceFacts],
    previous: Mapping[str, DeviceFacts],
    states: Mapping[str, NearestState],
    retry: set[str],
) -> list[str]:
    """Between sweeps: the changed devices, failed writes, pending challengers and
    arrival picks still settling.

    The reflector replaces only changed entries, so identity finds them cheaply.
    """
    return [
        n
        for n, d in devices.items()
        if previous.get(n) is not d
        or n in retry
        or ((st := states.get(n)) is not None and st.pending)
    ]


def plan_nearest(
    devices: Mapping[str, DeviceFacts],
    due: Iterable[str],
    states: Mapping[str, NearestState],
    written: Mapping[str, Written],
    now: float,
    spec: PolicySpec,
) -> NearestPlan:
    plan = NearestPlan()
    for name in due:
        dev = devices[name]
        prev = states.get(name)
        if prev is None and dev.nearest is not None:
            # A new leader continues the decision already on the object.
            prev = NearestState(node=dev.nearest, since=dev.nearest_since or now)
        try:
            state = decide_nearest(prev, dev.sightings, now, spec)
        except Exception as exc:  # one device's bug: the others are still decided
            plan.errors[name] = exc
            continue
        plan.states[name] = state
        mine = written.get(name)
        last_node, last_rssi, acknowledged = shown(mine, dev.nearest, now)
        if acknowledged and mine is not None and not mine.seen:
            plan.written[name] = replace(mine, seen=True)
        sighting = dev.sightings.get(state.node) if state.node else None
        rssi = sighting.rssi if sighting else None
        drift = rssi is not None and (
            last_rssi is None
            or (
                abs(rssi - last_rssi) >= RSSI_STEP
                and (mine is None or now - mine.at >= RSSI_REFRESH)
            )
        )
        if last_node != state.node or drift:
            plan.writes.append(
                NearestWrite(
                    name,
                    state,
                    rssi,
                    sighting.last_seen if sighting else None,
                    last_node,
                    dev.nearest,
                )
            )
    return plan
