"""`cloud4iot explain` on a workload whose cloud4iot.io/moves annotation holds a number no
date holds (anyone who may patch the Deployment can write it): shown as written, not an
OverflowError traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cloud4iot.buildinfo import DEFAULT_POLICY
from cloud4iot.policy.loader import load_policy
from extender.podexplain.outlook import Where, format_time
from extender.podexplain.report import Inputs, history, report
from extender.scoring import evaluate
from extender.simulate import load_pod
from extender.state.statefile import load_state

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "simulate"
POD = {"metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"}}


def _owner(moves: str) -> dict[str, object]:
    return {"metadata": {"name": "omh", "annotations": {"cloud4iot.io/moves": moves}}}


@pytest.mark.parametrize(
    ("at", "shown"), [("1e20", "1e+20"), ("-1e20", "-1e+20"), ("1e300", "1e+300")]
)
def test_history_shows_an_out_of_range_move_time_as_written(at: str, shown: str) -> None:
    moves = f'[{{"at": 1764547205, "reason": "Roaming"}}, {{"at": {at}, "reason": "DeviceBack"}}]'
    lines = history(Inputs(POD, [], _owner(moves), None, None))
    times = {h["what"]: h["time"] for h in lines}
    assert times["Roaming"] == "2025-12-01T00:00:05Z"
    assert times["DeviceBack"] == shown


def test_a_running_pod_is_explained_despite_an_out_of_range_move_time() -> None:
    policy = load_policy(DEFAULT_POLICY)
    snapshot, now = load_state(EXAMPLES / "cluster.yaml")
    pod = load_pod(EXAMPLES / "pod-mhealth.yaml")
    pod["spec"]["nodeName"] = "gw-hospital"
    pod["status"] = {"phase": "Running"}
    verdicts = evaluate(pod, snapshot, policy.policy, now, explain=True).verdicts()
    owner = _owner('[{"at": 1e20, "reason": "Roaming", "from": "gw-home", "to": "gw-hospital"}]')
    w = Where(tiers={n: f.tier for n, f in snapshot.nodes.items()}, device=None, started=None)
    doc = report(Inputs(pod, [], owner), policy, verdicts, {}, now, w, with_history=True)
    assert doc["summary"]
    assert [h["time"] for h in doc["history"] if h["what"] == "Roaming"] == ["1e+20"]


def test_format_time_formats_only_what_a_date_holds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(1764547205.9) == "2025-12-01T00:00:05Z"
    for bad in (math.nan, math.inf, -math.inf, 1e20, -1e20, 1e300):
        assert format_time(bad) == str(bad)
    assert format_time(True) is True  # not a time: as given
    assert format_time("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
