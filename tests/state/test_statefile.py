"""`cloud4iot simulate`'s state file: what it refuses, naming the key (a NaN `now` made
two-year-old sightings fresh; `nodes: 5` was a TypeError traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.cli import main
from extender.state.statefile import StateFileError, snapshot_from_state

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "simulate"


def _example() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"now": float("nan")}, "now: not a time: nan"),
        ({"now": float("inf")}, "now: not a time: inf"),
        ({"now": "-.inf"}, "now: not a time"),
        ({"nodes": 5}, "nodes: expected a list of objects, got 5"),
        ({"devices": {"a": 1}}, "devices: expected a list of objects"),
        ({"nodes": "gw-home"}, "nodes: expected a list of objects"),
        ({"load": {"gw-home": {"cpu": 0.5, "at": float("nan")}}}, "load.gw-home.at: not a time"),
    ],
)
def test_a_state_file_with_what_no_world_has_is_refused_naming_the_key(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(StateFileError, match=message.replace(".", r"\.")) as info:
        snapshot_from_state(_example() | change, "site.yaml")
    assert str(info.value).startswith("site.yaml: ")


def test_the_example_and_empty_lists_still_load() -> None:
    snapshot, now = snapshot_from_state(_example(), "site.yaml")
    assert snapshot.nodes
    assert snapshot.devices
    snapshot, _ = snapshot_from_state({"now": now, "nodes": None, "devices": []}, "s")
    assert not snapshot.nodes
    assert not snapshot.devices


def test_simulate_with_a_nan_now_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (EXAMPLES / "cluster.yaml").read_text()
    state = tmp_path / "nan.yaml"
    state.write_text(
        "now: .nan\n" + "\n".join(line for line in text.splitlines() if not line.startswith("now:"))
    )
    pod = str(EXAMPLES / "pod-mhealth.yaml")
    assert main(["simulate", "--state", str(state), "--pod", pod, "-o", "json"]) == 2
    assert capsys.readouterr().err == f"cloud4iot simulate: {state}: now: not a time: nan\n"
    state.write_text("nodes: 5\n")
    assert main(["simulate", "--state", str(state), "--pod", pod, "-o", "json"]) == 2
    assert "nodes: expected a list" in capsys.readouterr().err
