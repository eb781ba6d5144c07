"""A function bound to each device through the scorer and the rebalancer's planner.

On the flat's recordings (deterministic: virtual clock): how often the function moves
and how long it has no node, with the shipped policy and with a load series.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from cloud4iot.buildinfo import DEFAULT_POLICY
from cloud4iot.policy.loader import load_policy
from replay.chain import ChainConfig, ChainResult, run_chain
from replay.cli import main
from replay.functions import default_class
from replay.inputs import read_csv_adverts
from tests.replay.helpers import DATA

POLICY = load_policy(DEFAULT_POLICY)
CLASS = "mhealth-consolidator"


def chain(name: str, **kw: object) -> ChainResult:
    recording = read_csv_adverts(DATA / f"{name}.adverts.csv.gz")
    return asyncio.run(run_chain(recording, POLICY, ChainConfig(function_class=CLASS, **kw)))  # type: ignore[arg-type]


def overload(gateways: list[str], until: float) -> dict[str, list[tuple[float, float, None]]]:
    """Every gateway at 95 % CPU (above the class's 85 % limit), sampled every 5 s as
    Prometheus would be, until ``until``; 30 % after."""
    return {
        gw: [(float(t), 0.95 if t < until else 0.3, None) for t in range(0, 600, 5)]
        for gw in gateways
    }


def test_the_default_class_is_the_proximity_required_one() -> None:
    assert default_class(POLICY) == CLASS


@pytest.mark.parametrize(
    ("name", "moves", "decisions"), [("calib1", 10, 22), ("test_robot", 6, 11)]
)
def test_function_follows_the_nearest_decision_with_the_planners_rules(
    name: str, moves: int, decisions: int
) -> None:
    result = chain(name)
    stats = result.functions["tag"]
    assert len(result.decisions["tag"]) == decisions
    # Fewer function moves than decision changes: dwell 10 s, settle 5 s, cooldown 2 min.
    assert stats.moves == moves
    assert stats.unplaced_s < 0.1  # placed on the first sighting's gateway
    times = [t for t, _ in stats.placements[2:]]
    # Cooldown: an optional move waits 2 min after the last one of the workload, unless
    # forced (the device left its gateway's range) -- never two moves within the dwell.
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(times)), times
    summary = stats.summary()
    assert summary["function_moves"] == moves
    assert summary["function_moves_per_h"] == pytest.approx(moves / (stats.seconds / 3600), 0.01)


def test_overloaded_gateways_leave_the_function_unplaced_without_an_edge() -> None:
    recording = read_csv_adverts(DATA / "calib1.adverts.csv.gz")
    result = chain("calib1", load=overload(recording.gateways, 60))
    stats = result.functions["tag"]
    # Load samples every 5 s: the 95 % at 55 s holds until the 60 s sample; then the
    # next planner step places it.
    assert 60.0 <= stats.unplaced_s <= 61.0, stats.unplaced_s
    assert stats.placements[1][0] == pytest.approx(stats.unplaced_s, abs=0.01)


def test_overloaded_gateways_offload_to_the_edge_then_onload() -> None:
    recording = read_csv_adverts(DATA / "calib1.adverts.csv.gz")
    result = chain("calib1", load=overload(recording.gateways, 60), extra_nodes={"edge-1": "edge"})
    stats = result.functions["tag"]
    assert stats.unplaced_s < 0.01  # the first planner step, 1 ms after the start
    assert stats.placements[1][1] == "edge-1"
    first_gateway = stats.placements[2]
    assert first_gateway[1] != "edge-1"
    # Onloading once the load is read below the limit (60 s) and the dwell (10 s) passed
    # (wanted for the same target: the nearest decision moved meanwhile; 74.61 s here).
    assert 70.0 <= first_gateway[0] <= 75.0, first_gateway
    assert stats.moves == 9


def test_cli_reports_function_moves_and_unplaced_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load = tmp_path / "load.csv"
    rows = ["time_s,node,cpu,memory"]
    rows += [
        f"{t},anchor-{i},{0.95 if t < 60 else 0.3}," for t in range(0, 600, 5) for i in range(1, 7)
    ]
    load.write_text("\n".join(rows) + "\n")
    rc = main([str(DATA / "calib1.adverts.csv.gz"), "--load", str(load), "-o", "json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    total = doc["total"]["policy"]
    assert 60.0 <= total["unplaced_s"] <= 61.0
    assert total["function_moves"] == doc["devices"]["tag"]["policy"]["function_moves"] > 0
    assert "function_moves" not in doc["total"]["ema-3s-6db"]  # baselines move no function
    rc = main([str(DATA / "calib1.adverts.csv.gz"), "--function-class", "none", "-o", "json"])
    assert rc == 0
    assert "function_moves" not in json.loads(capsys.readouterr().out)["total"]["policy"]
    assert main([str(DATA / "calib1.adverts.csv.gz"), "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "fn moves/h" in out
    assert "fn unplaced s" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--function-class", "nope"], "--function-class nope: the policy has no such class"),
        (["--node", "e=fog"], "--node e=fog: the tier is one of gateway, edge, cloud"),
        (["--load", "LOAD"], "cpu or memory out of range"),
        # Read, then never used: refused as truth naming an unknown gateway is.
        (["--load", "ELSEWHERE"], "node(s) gw-zz in neither the recordings nor --node"),
        # Epoch seconds against a recording from zero: never read, the figures of no load.
        (["--load", "EPOCH"], "none of 2 load samples falls inside the recordings"),
        (["--function-class", "none", "--load", "LOAD"], "--load: no function to place"),
        (["--function-class", "none", "--node", "e=edge"], "--node: no function to place"),
    ],
)
def test_bad_function_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    bad = tmp_path / "load.csv"
    bad.write_text("time_s,node,cpu\n0,anchor-1,95\n")
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("time_s,node,cpu\n0,anchor-1,0.5\n0,gw-zz,0.5\n")
    epoch = tmp_path / "epoch.csv"
    epoch.write_text("time_s,node,cpu\n1765000000,anchor-1,0.95\n1765000300,anchor-1,0.3\n")
    files = {"LOAD": str(bad), "ELSEWHERE": str(elsewhere), "EPOCH": str(epoch)}
    args = [files.get(a, a) for a in args]
    assert main([str(DATA / "calib1.adverts.csv.gz"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_a_sparse_load_series_read_from_just_before_the_recording_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample shortly before the start (within the policy's loadMaxAge, 30 s) is read
    at the start: a series sparser than the recording is not on another clock."""
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("time_s,node,cpu\n-20,anchor-1,0.95\n900,anchor-1,0.3\n")
    assert main([str(DATA / "calib4.adverts.csv.gz"), "--load", str(sparse), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["policy"]
    stale = tmp_path / "stale.csv"  # 40 s before: stale from the start, never read fresh
    stale.write_text("time_s,node,cpu\n-40,anchor-1,0.95\n900,anchor-1,0.3\n")
    assert main([str(DATA / "calib4.adverts.csv.gz"), "--load", str(stale)]) == 2
    assert "within loadMaxAge (30 s) before them" in capsys.readouterr().err
