"""Move records stamped ahead of the reader's clock.

A previous leader whose clock ran ahead, our own clock stepped back, or a hand-edited
`cloud4iot.io/last-move` ("at": 1e300) must not hold cooldowns, no-return and the rates
for the whole skew (or for ever): a record from the future counts as made now, and a
non-finite stamp is no record at all.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rebalancer.model import Memory, MoveRecord, Pending, Reason
from rebalancer.plan import Limit, plan
from rebalancer.workloads import DeploymentRecord, last_move_of, moves_on_record
from tests.rebalancer.test_rebalance_plan import P, T, at_home, pod, world


def annotated(name: str, at: Any, frm: str = "gw-home", device: str | None = None) -> Any:
    note = {"at": at, "reason": "Offloading", "from": frm, "to": "edge-1", "device": device}
    return {
        "metadata": {
            "name": name,
            "namespace": "health",
            "annotations": {"cloud4iot.io/last-move": orjson.dumps(note).decode()},
        },
        "spec": {"replicas": 1},
    }


def recorded(name: str, at: Any, device: str | None = None) -> DeploymentRecord:
    return DeploymentRecord.from_deployment(annotated(name, at, device=device))


def forced_offload(records: tuple[MoveRecord, ...]) -> tuple[Any, list[Any]]:
    fn = pod("fn", "gw-home")
    snap = world(T, [at_home(T)], load={"gw-home": 0.95})  # over mhealth's cpu limit
    memory = Memory(pending={fn.uid: Pending("edge-1", Reason.OFFLOADING, T - 60)}, moves=records)
    p = plan([fn], snap, P, memory, T)
    return p.moves, [(h.limit, h.until - T if h.until else None) for h in p.held]


def test_a_skewed_leaders_records_count_as_made_now():
    # Three functions moved off gw-home 30 s ago: gw-home's node rate (3/min) is full.
    honest = moves_on_record([recorded(f"o{i}", T - 30) for i in range(3)], now=T)
    assert forced_offload(honest) == ((), [(Limit.NODE_RATE, 30.0)])
    # The same moves by a leader whose clock ran an hour ahead: held one window, not 1 h.
    skewed = moves_on_record([recorded(f"o{i}", T + 3570) for i in range(3)], now=T)
    assert [r.at for r in skewed] == [T, T, T]
    assert forced_offload(skewed) == ((), [(Limit.NODE_RATE, 60.0)])


def test_records_from_the_future_in_memory_age_out_after_their_window():
    # Our clock stepped back an hour within a term: the memory holds moves "made" later.
    future = tuple(
        MoveRecord(
            f"Deployment/health/o{i}", None, "gw-home", "edge-1", Reason.OFFLOADING, T + 3600
        )
        for i in range(3)
    )
    _, held = forced_offload(future)
    assert held == [(Limit.NODE_RATE, 60.0)]
    fn = pod("fn", "gw-home")
    memory = Memory(pending={fn.uid: Pending("edge-1", Reason.OFFLOADING, T - 60)}, moves=future)
    first = plan([fn], world(T, [at_home(T)], load={"gw-home": 0.95}), P, memory, T)
    assert first.moves == ()
    snap = world(T + 61, [at_home(T + 61)], load={"gw-home": 0.95})
    later = plan([fn], snap, P, first.memory, T + 61)
    assert [m.to_node for m in later.moves] == ["edge-1"]


@pytest.mark.parametrize("at", [1e300, "inf", "-inf", "nan"])
def test_a_garbage_stamp_does_not_hold_a_function_off_its_gateway(at: Any):
    at = float(at) if isinstance(at, str) else at
    obj = annotated("fn", at, device="patient")
    records = moves_on_record([DeploymentRecord.from_deployment(obj)], now=T)
    if at == 1e300:
        assert [r.at for r in records] == [T]
    else:  # orjson writes a non-finite float as null: no record either way
        assert records == ()
        assert last_move_of(obj) is None
    # fn was offloaded gw-home -> edge-1; the patient is at home and edge-1 is infeasible
    # for it now: a forced DeviceBack, wanted for 10 min
    fn = pod("fn", "edge-1")
    memory = Memory(
        pending={fn.uid: Pending("gw-home", Reason.DEVICE_BACK, T - 600)}, moves=records
    )
    p = plan([fn], world(T, [at_home(T)], load={"edge-1": 0.8}), P, memory, T)
    assert not [h for h in p.held if h.until is not None and h.until > T + 86400], p.held


@pytest.mark.parametrize("raw", ['{"at": 1e400, "reason": "Roaming", "from": "a"}',
                                 '{"at": "Infinity", "reason": "Roaming", "from": "a"}',
                                 '{"at": "nan", "reason": "Roaming", "from": "a"}'])  # fmt: skip
def test_a_non_finite_stamp_is_no_record(raw: str):
    obj = {"metadata": {"name": "fn", "annotations": {"cloud4iot.io/last-move": raw}}}
    assert last_move_of(obj) is None
