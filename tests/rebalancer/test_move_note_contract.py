"""The move record is a contract between two parts: the rebalancer's evictor writes it on
the workload (rebalancer.workloads: cloud4iot.io/moves, cloud4iot.io/last-move) and
`cloud4iot explain --history` reads it back (extender.podexplain.report), without
importing the rebalancer. What one writes, the other reads, field for field."""

from __future__ import annotations

from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION, MOVES_ANNOTATION
from extender.podexplain.report import moves_recorded
from rebalancer.workloads import MoveNote, last_move_of, move_note_json, moves_json

ROAM = MoveNote(1_700_000_000.25, "Roaming", "gw-home", "gw-hospital", "patient-1")
PARK = MoveNote(1_700_000_060.0, "DeviceAway", "gw-hospital", None, "patient-1")


def workload(**annotations: str) -> dict[str, object]:
    return {"metadata": {"name": "omh", "namespace": "default", "annotations": annotations}}


def as_read(note: MoveNote) -> dict[str, object]:
    return {
        "reason": note.reason,
        "from": note.from_node,
        "to": note.to_node,
        "device": note.device,
    }


def test_explain_reads_the_list_the_evictor_writes() -> None:
    moves = moves_json(moves_json(None, ROAM), PARK)
    read = moves_recorded(workload(**{MOVES_ANNOTATION: moves}))
    assert [{k: v for k, v in r.items() if k != "time"} for r in read] == [
        as_read(ROAM),
        as_read(PARK),
    ]
    assert read[0]["time"] == "2023-11-14T22:13:20Z"
    assert all(isinstance(r["time"], str) for r in read)


def test_explain_reads_the_last_move_alone_and_the_rebalancer_reads_it_back() -> None:
    obj = workload(**{LAST_MOVE_ANNOTATION: move_note_json(PARK)})
    (read,) = moves_recorded(obj)
    assert {k: v for k, v in read.items() if k != "time"} == as_read(PARK)
    assert last_move_of(obj) == PARK
