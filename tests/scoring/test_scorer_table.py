"""The scorer, case by case: `evaluate` on hand-built Snapshots, given full node
facts (a full-Node request) or node names the node cache resolves.

No files, no HTTP, a fixed clock. Each row names the pod, the candidates (in the
order kube-scheduler sends them), the device's sightings and the node load, and
states every verdict field that matters: feasible, code, score, a fragment of
the reason, and whether the refusal is permanent (unresolvable) or transient.

Expected scores are worked out by hand from the policy below, never by calling
the scorer. The scorer's formula, for reference:

    score = int(10 * (w_tier*tier + w_prox*prox + w_load*load) / (w_tier + w_prox + w_load) + 0.5)

with parts in 0..1: tier = 1.0 for the first preferred tier down to 0.0 for the
last; prox = 1.0 on the nearest gateway, 0.5 * (rssi - threshold) / (strong -
threshold) on another gateway that hears the device, else 0.0; load = 1 - the
higher of cpu and memory, or 0.5 (neutral) when the data is stale or missing
under failOpen.

Ties: `evaluate` answers in input order and never breaks a tie between equal
scores; kube-scheduler adds up the extender's and its own plugins' scores and
picks at random among the nodes with the highest total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import pytest

from cloud4iot.policy.loader import parse_policy
from cloud4iot.policy.schema import PlacementPolicy
from extender.scoring import Code, PodFacts, TableCache, Verdict, evaluate
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Sighting, Snapshot

NOW = 1_800_000_000.0

# wearable: gateway (first) or edge, must run on the gateway nearest its device.
# engine:   any tier, edge preferred, a gateway that hears the device is preferred
#           (proximity weighs 4, load 0).
# batch:    edge or cloud (cloud first), no proximity, load weighs 3.
POLICY_YAML = """
apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata:
  name: table
spec:
  staleData:
    loadMaxAge: 30s
    sightingMaxAge: 30s
    onStaleLoad: ON_STALE
  gateways:
    relay:
      excludeFromVote: true
  classes:
    wearable:
      tiers: [gateway, edge]
      proximity: required
      rssiThreshold: -80
      rssiStrong: -40
      loadLimits:
        cpu: 0.8
        memory: 0.9
      weights:
        tier: 1
        proximity: 2
        load: 1
    engine:
      tiers: [gateway, edge, cloud]
      preference:
        default: [edge, cloud, gateway]
      proximity: preferred
      rssiThreshold: -80
      rssiStrong: -40
      weights:
        tier: 1
        proximity: 4
        load: 0
    batch:
      tiers: [edge, cloud]
      preference:
        default: [cloud, edge]
      loadLimits:
        cpu: 0.8
        memory: 0.9
      weights:
        tier: 1
        proximity: 0
        load: 3
"""

POLICIES: dict[str, PlacementPolicy] = {
    mode: parse_policy(POLICY_YAML.replace("ON_STALE", mode), source=f"table-{mode}").policy
    for mode in ("failOpen", "failClosed")
}

NODES: dict[str, NodeFacts] = {
    n.name: n
    for n in (
        NodeFacts("gw1", "gateway", "arm64"),
        NodeFacts("gw2", "gateway", "arm64"),
        NodeFacts("gw3", "gateway", "arm64"),
        NodeFacts("relay", "gateway", "arm64"),  # excludeFromVote in the policy
        NodeFacts("edge1", "edge", "amd64"),
        NodeFacts("edge2", "edge", "amd64"),
        NodeFacts("noarch", "edge", None),
        NodeFacts("cloud1", "cloud", "amd64"),
        NodeFacts("cloud2", "cloud", "amd64"),
        NodeFacts("bare", None, "amd64"),  # no cloud4iot.io/tier label
        NodeFacts("fog", "fog", "amd64"),  # a tier that does not exist
    )
}


# --- table vocabulary --------------------------------------------------------


class Want(NamedTuple):
    feasible: bool
    code: Code
    score: int
    reason: str  # a fragment the reason must contain
    unresolvable: bool


def kept(score: int) -> Want:
    return Want(True, Code.KEPT, score, "feasible", False)


def transient(code: Code, fragment: str) -> Want:
    return Want(False, code, 0, fragment, False)


def permanent(code: Code, fragment: str) -> Want:
    return Want(False, code, 0, fragment, True)


UNMANAGED = Want(True, Code.UNMANAGED, 0, "pod names no function class", False)


def pod(
    function: str | None = "wearable", device: str | None = "band", archs: str = ""
) -> PodFacts:
    return PodFacts(
        name="fn-0",
        namespace="iot",
        function=function,
        device=device,
        archs=frozenset(a for a in archs.split(",") if a),
    )


def band(
    *heard: tuple[str, float, float],
    nearest: str | None = None,
    rssi_enter: float | None = None,
) -> DeviceFacts:
    """Device `band`, heard by (gateway, rssi dBm, seconds since the sighting)."""
    return DeviceFacts(
        name="band",
        address="C0:FF:EE:00:00:01",
        sightings={n: Sighting(n, rssi, NOW - age) for n, rssi, age in heard},
        nearest=nearest,
        rssi_enter=rssi_enter,
    )


def at(cpu: float, memory: float = 0.125, age: float = 0.0) -> LoadSample:
    return LoadSample(cpu=cpu, memory=memory, at=NOW - age)


# Every node's load unless a case says otherwise: peak 0.25, so the load part is 0.75.
DEFAULT_LOAD = at(0.25)


@dataclass(frozen=True)
class Case:
    pod: PodFacts
    want: Mapping[str, Want]  # candidate -> expected verdict, in the order sent
    device: DeviceFacts | None = None
    load: Mapping[str, LoadSample | None] = field(default_factory=dict)  # None: no sample
    on_stale: str = "failOpen"
    devices_synced: bool = True


def snapshot(case: Case) -> Snapshot:
    load = {n: DEFAULT_LOAD for n in NODES}
    for name, sample in case.load.items():
        if sample is None:
            del load[name]
        else:
            load[name] = sample
    devices = {case.device.name: case.device} if case.device else {}
    return Snapshot(
        nodes=NODES,
        devices=devices,
        load=load,
        nodes_synced=True,
        devices_synced=case.devices_synced,
        load_refreshed_at=NOW,
    )


NEAREST_GW1 = "the device is nearest to gateway gw1"


# --- evaluate ----------------------------------------------------------------
#
# Scores, by class (load part 0.75 unless stated):
#   wearable (1, 2, 1):  10 * (tier + 2*prox + load) / 4
#   engine   (1, 4, 0):  10 * (tier + 4*prox) / 5          tier: edge 1, cloud .5, gateway 0
#   batch    (1, 0, 3):  10 * (tier + 3*load) / 4          tier: cloud 1, edge 0

CASES = [
    # -- load limits (batch: cpu 0.8, memory 0.9) --
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                "cloud1": kept(4),  # cpu 0.80 = limit: load .2; 10 * (1 + 3*.2) / 4 = 4.0
                "cloud2": kept(8),  # 10 * (1 + 3*.75) / 4 = 8.125
            },
            load={"cloud1": at(0.8)},
        ),
        id="cpu-exactly-at-limit-kept",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                "cloud1": transient(
                    Code.OVERLOADED, "cpu 81 percent above the limit 80 percent of class batch"
                ),
                "cloud2": kept(8),  # 10 * (1 + 3*.75) / 4 = 8.125
            },
            load={"cloud1": at(0.81)},
        ),
        id="cpu-just-above-limit-overloaded",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {"cloud1": kept(3)},  # memory 0.90 = limit: load .1; 10 * (1 + 3*.1) / 4 = 3.25
            load={"cloud1": at(0.25, memory=0.9)},
        ),
        id="memory-exactly-at-limit-kept",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {"cloud1": transient(Code.OVERLOADED, "memory 91 percent above the limit 90 percent")},
            load={"cloud1": at(0.25, memory=0.91)},
        ),
        id="memory-just-above-limit-overloaded",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                "edge1": kept(7),  # load .875; 10 * (0 + 3*.875) / 4 = 6.5625
                "edge2": kept(2),  # load .25;  10 * (0 + 3*.25) / 4 = 1.875
            },
            load={"edge1": at(0.125), "edge2": at(0.75)},
        ),
        id="load-weight-3-prefers-headroom",
    ),
    # -- stale and missing load (loadMaxAge 30 s) --
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                # 31 s old and over the limit: not trusted, so neither refused nor
                # scored by it; neutral .5: 10 * (1 + 3*.5) / 4 = 6.25
                "cloud1": kept(6),
                "cloud2": kept(8),  # fresh: 8.125
            },
            load={"cloud1": at(0.95, age=31)},
        ),
        id="stale-load-failOpen-neutral-part",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                "cloud1": transient(
                    Code.STALE_LOAD, "load data older than 30s (policy: failClosed)"
                ),
                "cloud2": kept(8),
            },
            load={"cloud1": at(0.25, age=31)},
            on_stale="failClosed",
        ),
        id="stale-load-failClosed-refused",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {"cloud1": kept(8)},  # exactly 30 s old is still fresh: 8.125
            load={"cloud1": at(0.25, age=30)},
            on_stale="failClosed",
        ),
        id="load-exactly-max-age-fresh-failClosed",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {"cloud1": kept(6), "edge1": kept(4)},  # neutral .5: 6.25 and 10 * 1.5 / 4 = 3.75
            load={"cloud1": None, "edge1": None},
        ),
        id="missing-load-failOpen-neutral-part",
    ),
    pytest.param(
        Case(
            pod(function="batch", device=None),
            {
                "cloud1": transient(
                    Code.STALE_LOAD, "no load data for the node (policy: failClosed)"
                ),
                "cloud2": kept(8),
            },
            load={"cloud1": None},
            on_stale="failClosed",
        ),
        id="missing-load-failClosed-refused",
    ),
    # -- RSSI threshold (wearable: -80 dBm) and sighting age (30 s) --
    pytest.param(
        Case(
            pod(),
            {
                "gw1": kept(9),  # nearest: 10 * (1 + 2*1 + .75) / 4 = 9.375
                "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1),
            },
            device=band(("gw1", -80, 0)),
        ),
        id="rssi-exactly-at-threshold-heard",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(
                    Code.NOT_HEARD,
                    "gateway hears device band at -81 dBm, below the threshold",
                ),
                "edge1": kept(2),  # 10 * (0 + 0 + .75) / 4 = 1.875
            },
            device=band(("gw1", -81, 0)),
        ),
        id="rssi-1dB-below-threshold-not-heard",
    ),
    pytest.param(
        Case(
            pod(),
            {"gw1": kept(9), "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1)},  # 9.375
            device=band(("gw1", -85, 0), rssi_enter=-90),
        ),
        id="device-rssi-enter-below-class-threshold-hears",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(Code.NOT_HEARD, "at -75 dBm, below the threshold"),
                "edge1": kept(2),  # 1.875
            },
            device=band(("gw1", -75, 0), rssi_enter=-70),
        ),
        id="device-rssi-enter-above-class-threshold-refuses",
    ),
    pytest.param(
        Case(
            pod(),
            {"gw1": kept(9), "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1)},  # 9.375
            device=band(("gw1", -60, 30)),
        ),
        id="sighting-exactly-max-age-heard",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(Code.NOT_HEARD, "last heard device band 31s ago (max 30s)"),
                "edge1": kept(2),  # 1.875
            },
            device=band(("gw1", -60, 31)),
        ),
        id="sighting-older-than-max-age-not-heard",
    ),
    # -- narrowing for `required` --
    pytest.param(
        Case(
            pod(),
            {
                "gw1": kept(9),  # strongest, nearest: 9.375
                "gw2": transient(Code.NOT_NEAREST, NEAREST_GW1),
                "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1),
            },
            device=band(("gw1", -60, 0), ("gw2", -70, 0)),
        ),
        id="required-nearest-feasible-others-not-nearest",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(
                    Code.OVERLOADED, "cpu 85 percent above the limit 80 percent of class wearable"
                ),
                # prox .5 * (-70 + 80) / 40 = .125: 10 * (1 + 2*.125 + .75) / 4 = 5.0
                "gw2": kept(5),
                "edge1": transient(
                    Code.HEARD_BY_GATEWAY,
                    "the device is heard by gateway gw2",
                ),
            },
            device=band(("gw1", -60, 0), ("gw2", -70, 0)),
            load={"gw1": at(0.85)},
        ),
        id="required-nearest-overloaded-other-hearing-gateway-kept",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(Code.NOT_HEARD, "at -90 dBm, below the threshold"),
                "gw2": transient(Code.NOT_HEARD, "gateway does not hear the device"),
                "edge1": kept(2),  # 1.875
            },
            device=band(("gw1", -90, 0)),
        ),
        id="required-no-gateway-hears-edge-kept",
    ),
    pytest.param(
        Case(
            pod(),
            {
                # Without a central decision the strongest voter is nearest; on equal
                # RSSI the greater name wins (max over (rssi, name)): gw2.
                "gw1": transient(Code.NOT_NEAREST, "nearest to gateway gw2"),
                "gw2": kept(9),  # 9.375
                "edge1": transient(Code.NOT_NEAREST, "nearest to gateway gw2"),
            },
            device=band(("gw1", -60, 0), ("gw2", -60, 0)),
        ),
        id="equal-rssi-nearest-is-greater-name",
    ),
    pytest.param(
        Case(
            pod(),
            {
                # status.nearest holds while its gateway hears the device, though weaker.
                "gw1": transient(Code.NOT_NEAREST, "nearest to gateway gw2"),
                "gw2": kept(9),  # 9.375
            },
            device=band(("gw1", -60, 0), ("gw2", -70, 0), nearest="gw2"),
        ),
        id="central-decision-beats-stronger-gateway",
    ),
    pytest.param(
        Case(
            pod(),
            {
                # The nearest (gw3) is not among the candidates; gw2 and gw1 hear the
                # device equally: prox .5 * 20/40 = .25, 10 * (1 + .5 + .75) / 4 = 5.625.
                # Same score; answered in input order (gw2 first), the tie is left to
                # kube-scheduler.
                "gw2": kept(6),
                "gw1": kept(6),
                "edge1": transient(Code.HEARD_BY_GATEWAY, "heard by gateway gw1, gw2"),
            },
            device=band(("gw3", -50, 0), ("gw1", -60, 0), ("gw2", -60, 0), nearest="gw3"),
        ),
        id="tie-two-hearing-gateways-same-score-input-order",
    ),
    pytest.param(
        Case(
            pod(),
            {
                # relay hears it best but is excludeFromVote: the fallback picks gw1.
                "relay": transient(Code.NOT_NEAREST, NEAREST_GW1),
                "gw1": kept(9),  # 9.375
                "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1),
            },
            device=band(("relay", -40, 0), ("gw1", -60, 0)),
        ),
        id="excluded-gateway-never-nearest-by-fallback",
    ),
    pytest.param(
        Case(
            pod(),
            {
                # No voter hears it, so no nearest; relay still hears it and may run it:
                # prox .5 * 40/40 = .5, 10 * (1 + 2*.5 + .75) / 4 = 6.875
                "relay": kept(7),
                "edge1": transient(Code.HEARD_BY_GATEWAY, "heard by gateway relay"),
            },
            device=band(("relay", -40, 0)),
        ),
        id="excluded-gateway-alone-hears-kept-not-nearest",
    ),
    # -- permanent (unresolvable) vs transient refusals --
    pytest.param(
        Case(
            pod(),
            {
                "gw1": kept(9),  # 9.375
                "gw2": transient(Code.NOT_HEARD, "does not hear the device"),
                "cloud1": permanent(
                    Code.TIER_NOT_ALLOWED,
                    "tier cloud not allowed",
                ),
                "bare": permanent(Code.NO_TIER, "node has no cloud4iot.io/tier label"),
                "fog": permanent(Code.NO_TIER, "unknown tier 'fog'"),
            },
            device=band(("gw1", -60, 0)),
        ),
        id="tier-refusals-permanent-not-heard-transient",
    ),
    pytest.param(
        Case(
            pod(device=None),
            {
                "gw1": permanent(Code.NO_DEVICE_NAMED, "the pod names none"),
                "edge1": kept(2),  # 1.875
            },
        ),
        id="required-class-pod-names-no-device",
    ),
    pytest.param(
        Case(
            pod(device="lost"),
            {
                "gw1": transient(Code.UNKNOWN_DEVICE, "device lost is not registered"),
                "edge1": kept(2),  # 1.875
            },
            device=band(("gw1", -60, 0)),
        ),
        id="required-class-unknown-device",
    ),
    pytest.param(
        Case(
            pod(),
            {
                "gw1": transient(Code.DEVICES_NOT_SYNCED, "has not loaded the Devices yet"),
                "edge1": transient(Code.DEVICES_NOT_SYNCED, "has not loaded the Devices yet"),
            },
            devices_synced=False,
        ),
        id="required-class-devices-not-synced-waits",
    ),
    # -- weights --
    pytest.param(
        Case(
            pod(function="engine"),
            {
                "gw1": kept(8),  # nearest, last tier: 10 * (0 + 4*1) / 5 = 8
                "gw2": kept(0),  # not heard, kept (preferred): 10 * (0 + 0) / 5 = 0
                "edge1": kept(2),  # first tier: 10 * (1 + 0) / 5 = 2
                "cloud1": kept(1),  # 10 * (.5 + 0) / 5 = 1
            },
            device=band(("gw1", -60, 0)),
        ),
        id="proximity-weight-dominates-tier-preference",
    ),
    pytest.param(
        Case(
            pod(function="engine"),
            {
                "edge1": kept(2),  # load weight 0: 10 * (1 + 0) / 5 = 2 at any load
                "edge2": kept(2),
            },
            device=band(("gw1", -60, 0)),
            load={"edge1": at(0.125), "edge2": at(0.75)},
        ),
        id="load-weight-0-ignores-headroom",
    ),
    # -- unmanaged, unknown class, architecture --
    pytest.param(
        Case(
            pod(function=None, device=None),
            {"gw1": UNMANAGED, "cloud1": UNMANAGED, "bare": UNMANAGED},
        ),
        id="unmanaged-pod-kept-everywhere-score-0",
    ),
    pytest.param(
        Case(
            pod(function=None, device=None, archs="amd64"),
            {
                "gw1": permanent(
                    Code.ARCH_MISMATCH, "no image for arm64: pod images exist for amd64"
                ),
                "edge1": UNMANAGED,
            },
        ),
        id="unmanaged-pod-arch-still-applies",
    ),
    pytest.param(
        Case(
            pod(function="nope"),
            {
                name: permanent(
                    Code.UNKNOWN_CLASS, "function class 'nope' is not defined in policy table"
                )
                for name in ("gw1", "edge1", "cloud1")
            },
            device=band(("gw1", -60, 0)),
        ),
        id="unknown-class-refused-everywhere",
    ),
    pytest.param(
        Case(
            pod(archs="amd64"),
            {
                "gw1": permanent(
                    Code.ARCH_MISMATCH, "no image for arm64: pod images exist for amd64"
                ),
                "noarch": permanent(
                    Code.ARCH_MISMATCH, "node has no kubernetes.io/arch label; pod images: amd64"
                ),
                # The nearest gateway cannot run it and no other hears: edge, 1.875
                "edge1": kept(2),
            },
            device=band(("gw1", -60, 0)),
        ),
        id="arch-mismatch-on-nearest-falls-back-to-edge",
    ),
]


def check(verdicts: list[Verdict], want: Mapping[str, Want]) -> None:
    assert [v.node for v in verdicts] == list(want), "one verdict per candidate, in order"
    got = {v.node: (v.feasible, v.code, v.score, v.unresolvable) for v in verdicts}
    assert got == {n: (w.feasible, w.code, w.score, w.unresolvable) for n, w in want.items()}
    for v in verdicts:
        assert want[v.node].reason in v.reason, f"{v.node}: {v.reason!r}"


@pytest.mark.parametrize("case", CASES)
def test_evaluate(case: Case) -> None:
    nodes = [NODES[n] for n in case.want]
    verdicts = evaluate(
        case.pod, snapshot(case), POLICIES[case.on_stale], NOW, nodes=nodes
    ).verdicts()
    check(verdicts, case.want)


def test_explain_shows_the_neutral_load_part_of_stale_data() -> None:
    case = Case(pod(function="batch", device=None), {}, load={"cloud1": at(0.95, age=31)})
    [verdict] = evaluate(
        case.pod,
        snapshot(case),
        POLICIES["failOpen"],
        NOW,
        nodes=[NODES["cloud1"]],
        explain=True,
    ).verdicts()
    assert dict(verdict.parts) == {"tier": 1.0, "proximity": 0.0, "load": 0.5}
    assert verdict.score == 6  # 10 * (1 + 3*.5) / 4 = 6.25


# --- evaluate, by node name ---------------------------------------------------

UNKNOWN_NODE = "node not (yet) in the extender's node cache"

NAME_CASES = [
    pytest.param(
        pod(),
        {
            "ghost": transient(Code.UNKNOWN_NODE, UNKNOWN_NODE),
            "gw1": kept(9),  # 9.375
            "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1),
        },
        id="managed-pod-unknown-name-transient",
    ),
    pytest.param(
        pod(),
        {
            "edge1": transient(Code.NOT_NEAREST, NEAREST_GW1),
            "ghost": transient(Code.UNKNOWN_NODE, UNKNOWN_NODE),
            "gw1": kept(9),
        },
        id="managed-pod-order-of-names-preserved",
    ),
    pytest.param(
        pod(function=None, device=None),
        {"ghost": UNMANAGED, "cloud1": UNMANAGED, "gw1": UNMANAGED},
        id="unmanaged-arch-agnostic-unknown-name-kept",
    ),
    pytest.param(
        pod(function=None, device=None, archs="amd64"),
        {
            "gw1": permanent(Code.ARCH_MISMATCH, "no image for arm64"),
            "ghost": transient(Code.UNKNOWN_NODE, UNKNOWN_NODE),
            "edge1": UNMANAGED,
        },
        id="unmanaged-pod-with-archs-unknown-name-transient",
    ),
]


@pytest.mark.parametrize(("facts", "want"), NAME_CASES)
def test_evaluate_names(facts: PodFacts, want: Mapping[str, Want]) -> None:
    case = Case(facts, want, device=band(("gw1", -60, 0)))
    known = {n: f for n, f in NODES.items() if n in want}
    assert "ghost" in want
    assert "ghost" not in known
    world = replace(snapshot(case), nodes=known)
    policy = POLICIES[case.on_stale]
    # Every node judged, and the same through a table cache (the webhook's path).
    for tables in (None, TableCache()):
        evaluation = evaluate(facts, world, policy, NOW, names=list(want), tables=tables)
        check(evaluation.verdicts(), want)
