"""kubectl's output options on every admin command that prints a document: `simulate`,
`check-policy` and `replay` take `-o table|wide|json|yaml` as `explain` does; a table
by default; json and yaml parse back to the same document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from extender.cli import main
from tests.replay.helpers import DATA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "simulate"
POLICY = ROOT / "policies" / "default.yaml"
SIMULATE = ["simulate", "--state", str(EXAMPLES / "cluster.yaml")]
SIMULATE += ["--pod", str(EXAMPLES / "pod-mhealth.yaml")]


def out(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code
    return capsys.readouterr().out


def test_simulate_prints_a_table_by_default_and_the_document_on_request(capsys):
    doc = json.loads(out(capsys, *SIMULATE, "-o", "json"))
    assert yaml.safe_load(out(capsys, *SIMULATE, "-o", "yaml")) == doc
    text = out(capsys, *SIMULATE)
    assert f"Best:           {doc['best']}" in text
    # One row per reason, as `cloud4iot explain` groups them; every node in one row.
    rows = [line.split()[0] for line in text.splitlines()[text.splitlines().index("") + 2 :]]
    assert rows == [g["code"] for g in doc["groups"]]
    assert sorted(n for g in doc["groups"] for n in g["nodes"]) == sorted(
        n["node"] for n in doc["nodes"]
    )
    assert doc["groups"][0]["feasible"]
    assert doc["groups"][0]["nodes"][0] == doc["best"]
    # wide: one row per node, best first.
    wide = out(capsys, *SIMULATE, "-o", "wide").splitlines()
    header = wide.index(next(line for line in wide if line.startswith("NODE ")))
    assert [line.split()[0] for line in wide[header + 1 :]] == [n["node"] for n in doc["nodes"]]


def test_check_policy_takes_the_same_options(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.read_text().replace("kind: PlacementPolicy", "kind: Nope"))
    doc = json.loads(out(capsys, "check-policy", "-o", "json", str(POLICY), str(bad), code=1))
    assert [(r["file"], r["valid"]) for r in doc] == [(str(POLICY), True), (str(bad), False)]
    assert doc[0]["policy"].startswith("default@")
    assert "kind" in doc[1]["error"]
    assert yaml.safe_load(out(capsys, "check-policy", "-o", "yaml", str(POLICY))) == doc[:1]
    table = out(capsys, "check-policy", "-o", "wide", str(POLICY)).splitlines()
    assert table[0].split() == ["FILE", "RESULT", "POLICY", "CLASSES", "DIGEST"]
    assert table[1].split()[-1] == doc[0]["digest"]
    with pytest.raises(SystemExit) as bad_output:
        main(["check-policy", "-o", "xml", str(POLICY)])
    assert bad_output.value.code == 2


def test_replay_takes_the_same_options(capsys):
    argv = ["replay", str(DATA / "calib4.adverts.csv.gz"), "--no-baselines"]
    doc = json.loads(out(capsys, *argv, "-o", "json"))
    again = yaml.safe_load(out(capsys, *argv, "-o", "yaml"))
    assert again.pop("chain").keys() == doc.pop("chain").keys()  # wall-clock speed differs
    assert again == doc
    table = out(capsys, *argv)
    wide = out(capsys, *argv, "-o", "wide")  # the per-device tables too
    assert table.startswith("all devices")
    assert wide.startswith(table.split("\n\n")[0])
    for device in doc["devices"]:
        assert device in wide
        assert f"\n{device}\n" not in table
