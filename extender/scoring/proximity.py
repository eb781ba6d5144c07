"""Proximity: a function that serves a BLE device belongs on the gateway that hears it.

Per node: a gateway that does not hear the device is refused (rule `required`) or
loses its preference (`preferred`); stronger signal scores higher and the
central nearest-gateway decision scores highest. Across candidates (`narrow`):
for `required`, when the nearest gateway is a feasible candidate only it stays;
otherwise any feasible gateway that hears the device beats the other tiers.
"""

from __future__ import annotations

from collections.abc import Collection

from cloud4iot.policy.schema import FunctionClass, PolicySpec, ProximityMode
from cloud4iot.vocabulary import DEVICE_ANNOTATION
from extender.scoring.model import Code, Context, Refusal, refuse
from extender.state.snapshot import DeviceFacts, NodeFacts, Snapshot


def heard_by(
    device: DeviceFacts, cls: FunctionClass, spec: PolicySpec, snapshot: Snapshot, now: float
) -> dict[str, float]:
    """Gateways whose fresh sighting is at or above the threshold, with their RSSI.

    A sighting reported by a node the cache knows as another tier (a relabelled
    gateway) does not count; unknown nodes do (full-Node requests bring their own).
    """
    threshold = device.rssi_enter if device.rssi_enter is not None else cls.rssi_threshold
    max_age = spec.stale_data.sighting_max_age
    heard = {}
    for s in device.sightings.values():
        if s.rssi < threshold or now - s.last_seen > max_age:
            continue
        known = snapshot.nodes.get(s.node)
        if known is None or known.tier == "gateway":
            heard[s.node] = s.rssi
    return heard


class ProximityRule:
    name = "proximity"

    def judge(self, ctx: Context, node: NodeFacts) -> Refusal | float:
        cls = ctx.cls
        assert cls is not None
        rssi = ctx.heard.get(node.name) if node.tier == "gateway" else None
        if rssi is not None:
            if node.name == ctx.nearest:
                return 1.0
            span = cls.rssi_strong - cls.rssi_threshold
            # Below the nearest: other gateways that hear it rank by signal, in 0..0.5.
            return 0.5 * min(1.0, max(0.0, (rssi - cls.rssi_threshold) / span))
        if cls.proximity is not ProximityMode.REQUIRED:
            return 0.0
        if not ctx.snapshot.devices_synced:
            # Without the Devices, "no gateway hears it" would send every roaming
            # function to the edge after a restart: wait instead (transient).
            return self._why_not(ctx, node)
        if node.tier != "gateway":
            return 0.0
        return self._why_not(ctx, node)

    def _why_not(self, ctx: Context, node: NodeFacts) -> Refusal:
        if not ctx.snapshot.devices_synced:
            return refuse(Code.DEVICES_NOT_SYNCED, "the extender has not loaded the Devices yet")
        if ctx.pod.device is None:
            return refuse(
                Code.NO_DEVICE_NAMED,
                f"class {ctx.pod.function} needs a device near the gateway;"
                f" the pod names none ({DEVICE_ANNOTATION})",
            )
        if ctx.device is None:
            return refuse(Code.UNKNOWN_DEVICE, f"device {ctx.pod.device} is not registered")
        sighting = ctx.device.sightings.get(node.name)
        max_age = ctx.policy.spec.stale_data.sighting_max_age
        device = ctx.pod.device
        if sighting is None:
            # The same words for every such gateway (and every device): kubectl describe
            # groups identical reasons, and the per-world table can hold this verdict.
            return NOT_HEARING
        if ctx.now - sighting.last_seen > max_age:
            why = (
                f"gateway last heard device {device} {ctx.now - sighting.last_seen:.0f}s ago"
                f" (max {max_age:.0f}s)"
            )
        else:
            why = f"gateway hears device {device} at {sighting.rssi:.0f} dBm, below the threshold"
        return refuse(Code.NOT_HEARD, why)


NOT_HEARING = refuse(Code.NOT_HEARD, "gateway does not hear the device")


def narrow(
    ctx: Context, feasible_gateways: Collection[str]
) -> tuple[frozenset[str], Refusal] | None:
    """For `required` classes: which feasible candidates stay, and why the others yield.

    `feasible_gateways` holds the feasible candidates that are gateways (at least
    those that hear the device). None when nothing yields.
    """
    cls = ctx.cls
    if cls is None or cls.proximity is not ProximityMode.REQUIRED or not ctx.heard:
        return None
    if ctx.nearest is not None and ctx.nearest in feasible_gateways:
        why = refuse(Code.NOT_NEAREST, f"the device is nearest to gateway {ctx.nearest}")
        return frozenset((ctx.nearest,)), why
    hearing = frozenset(n for n in ctx.heard if n in feasible_gateways)
    if hearing:
        why = refuse(
            Code.HEARD_BY_GATEWAY,
            f"the device is heard by gateway {', '.join(sorted(hearing))}",
        )
        return hearing, why
    return None
