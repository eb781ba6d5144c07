"""`cloud4iot.io/parked-replicas` is read defensively.

"²" is a digit to str.isdigit but not to int(), and int() refuses 5,000 digits: the
ValueError made the Deployment drop out of the cache (its pods then resolved to a bare
ReplicaSet: evicted, not rolled out, no move record; a parked one never unparked). A
garbage value reads as not parked, like a garbage last-move; an unpark never restores
more than MAX_PARKED_REPLICAS.
"""

from __future__ import annotations

from typing import Any

import pytest

from cloud4iot.replicas import MAX_PARKED_REPLICAS
from cloud4iot.vocabulary import PARKED_ANNOTATION
from rebalancer.model import Action, Kind, Move, Reason, Workload
from rebalancer.workloads import DeploymentRecord, parked_replicas
from tests.rebalancer.test_rebalancer_actor import (
    NOW,
    NS,
    PARK_CLASS,
    World,
    deployment_obj,
    wearable,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2),
        ("0", 0),
        (str(MAX_PARKED_REPLICAS), MAX_PARKED_REPLICAS),
        (str(MAX_PARKED_REPLICAS + 1), None),
        ("\u00b2", None),  # SUPERSCRIPT TWO: isdigit() but not int()
        ("\u0663", None),  # ARABIC-INDIC THREE: int() reads it, but no count we wrote
        ("1" * 5000, None),
        ("-1", None),
        (" 2", None),
        ("", None),
        (None, None),
        (2, None),
    ],
)
def test_parked_replicas_is_a_bounded_decimal(value: Any, expected: int | None) -> None:
    assert parked_replicas(value) == expected


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000])
def test_a_garbage_value_keeps_the_deployment(value: str) -> None:
    obj = deployment_obj(
        "reader", "mhealth-consolidator", "patient", annotations={PARKED_ANNOTATION: value}
    )
    record = DeploymentRecord.from_deployment(obj)
    assert record.parked_replicas is None
    world = World()
    world.rebalancer.observe_replicaset(f"{NS}/reader-rs1", None, "reader")
    world.rebalancer.observe_deployment(f"{NS}/reader", None, record)
    pod = world.pod("reader-rs1-p1", "gw-home", rs="reader-rs1")
    assert world.rebalancer.workloads.workload(pod).kind is Kind.DEPLOYMENT


@pytest.mark.parametrize(
    ("saved", "restored"), [(3, 3), (0, 1), (10**9, MAX_PARKED_REPLICAS), (None, 1)]
)
async def test_an_unpark_restores_a_sane_count(saved: int | None, restored: int) -> None:
    world = World()
    workload = Workload(Kind.DEPLOYMENT, NS, "reader", replicas=0, parked_replicas=saved)
    move = Move(Action.UNPARK, Reason.DEVICE_BACK, workload, None, None, "gw-home", {})
    assert await world.rebalancer.evictor.apply(move, NOW) == "ok"
    ((_, _, _, unpark),) = world.apps.patches
    assert unpark["spec"] == {"replicas": restored}


async def test_a_parked_deployment_is_unparked_with_its_count() -> None:
    world = World()
    world.rebalancer.observe_replicaset(f"{NS}/reader-rs1", None, "reader")
    world.deployment(
        "reader", function=PARK_CLASS, replicas=0, annotations={PARKED_ANNOTATION: "2"}
    )
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home"))
    await world.step(NOW)
    ((_, _, _, unpark),) = world.apps.patches
    assert unpark["spec"] == {"replicas": 2}
