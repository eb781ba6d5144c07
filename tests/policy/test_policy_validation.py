"""Policy validation: every problem reported at once, with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud4iot.policy.loader import PolicyError, load_policy, parse_policy
from extender.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (ROOT / "policies" / "default.yaml").read_text()

MINIMAL = """\
apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata:
  name: t
spec:
  classes:
    c:
      tiers: [gateway, edge]
"""


def problems_of(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


def test_every_shipped_policy_is_valid():
    files = sorted((ROOT / "policies").glob("*.yaml"))
    assert files
    for f in files:
        loaded = load_policy(f)
        assert loaded.policy.spec.classes


def test_default_policy_has_the_papers_classes():
    spec = load_policy(ROOT / "policies" / "default.yaml").policy.spec
    mhealth = spec.classes["mhealth-consolidator"]
    assert [t.value for t in mhealth.tiers] == ["gateway", "edge"]
    assert mhealth.proximity.value == "required"
    engine = spec.classes["engine-diagnostic"]
    assert engine.preference_for("intensive")[0].value == "gateway"
    assert engine.preference_for("normal")[0].value == "cloud"
    assert engine.preference_for(None)[0].value == "cloud"  # default mode: normal


@pytest.mark.parametrize(
    ("edit", "line", "field", "message"),
    [
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, fog]"),
            8,
            "spec.classes.c.tiers[1]",
            "'gateway', 'edge' or 'cloud'",
        ),
        (("tiers: [gateway, edge]", "tiers: []"), 8, "spec.classes.c.tiers", "at least 1"),
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      rssiTreshold: -80"),
            9,
            "spec.classes.c.rssiTreshold",
            "unknown field",
        ),
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      loadLimits: {cpu: 1.5}"),
            9,
            "spec.classes.c.loadLimits.cpu",
            "less than or equal to 1",
        ),
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      proximity: sometimes"),
            9,
            "spec.classes.c.proximity",
            "'required', 'preferred' or 'ignored'",
        ),
        (("kind: PlacementPolicy", "kind: Policy"), 2, "kind", "PlacementPolicy"),
        (("  name: t", "  nam: t"), 3, "metadata.name", "required field is missing"),
        (
            ("spec:\n", "spec:\n  staleData: {loadMaxAge: soon}\n"),
            6,
            "spec.staleData.loadMaxAge",
            "not a duration",
        ),
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      preference: {default: [cloud]}",
            ),
            9,
            "spec.classes.c.preference.default[0]",
            "not in this class's tiers",
        ),
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      rssiThreshold: -50\n      rssiStrong: -60",
            ),
            10,
            "spec.classes.c.rssiStrong",
            "above rssiThreshold",
        ),
        (
            ("tiers: [gateway, edge]", "tiers: [edge, cloud]\n      proximity: required"),
            9,
            "spec.classes.c.proximity",
            "needs 'gateway'",
        ),
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      weights: {tier: 0, proximity: 0, load: 0}",
            ),
            9,
            "spec.classes.c.weights",
            "at least one weight",
        ),
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      defaultMode: fast\n      preference: {slow: [edge]}",
            ),
            9,
            "spec.classes.c.defaultMode",
            "no entry in preference",
        ),
        (
            ("    c:\n", "    c:\n      tiers: [edge]\n"),
            9,
            "spec.classes.c.tiers",
            "key appears twice",
        ),
        # spec.rebalance
        (
            ("spec:\n", "spec:\n  rebalance: {interval: 0s}\n"),
            6,
            "spec.rebalance.interval",
            "greater than 0",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {minImprovement: 0}\n"),
            6,
            "spec.rebalance.minImprovement",
            "greater than or equal to 1",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {minImprovement: 11}\n"),
            6,
            "spec.rebalance.minImprovement",
            "less than or equal to 10",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {minImprovement: 2.5}\n"),
            6,
            "spec.rebalance.minImprovement",
            "valid integer",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {minImprovement: yes}\n"),
            6,
            "spec.rebalance.minImprovement",
            "valid integer",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {dwell: soon}\n"),
            6,
            "spec.rebalance.dwell",
            "not a duration",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {cooldown: -2}\n"),
            6,
            "spec.rebalance.cooldown",
            "greater than or equal to 0",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {deviceAwayAfter: 2 minutes}\n"),
            6,
            "spec.rebalance.deviceAwayAfter",
            "not a duration",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {maxMovesPerMinute: 0}\n"),
            6,
            "spec.rebalance.maxMovesPerMinute",
            "greater than or equal to 1",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {maxMovesPerNodePerMinute: 0}\n"),
            6,
            "spec.rebalance.maxMovesPerNodePerMinute",
            "greater than or equal to 1",
        ),
        (
            ("spec:\n", "spec:\n  rebalance: {minImprovment: 3}\n"),
            6,
            "spec.rebalance.minImprovment",
            "unknown field",
        ),
        # spec.nearest.settle
        (
            ("spec:\n", "spec:\n  nearest: {settle: -5s}\n"),
            6,
            "spec.nearest.settle",
            "not a duration",
        ),
        (
            ("spec:\n", "spec:\n  nearest: {settle: -5}\n"),
            6,
            "spec.nearest.settle",
            "greater than or equal to 0",
        ),
        # classes.<name>.whenDeviceAway
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      proximity: required\n      whenDeviceAway: sleep",
            ),
            10,
            "spec.classes.c.whenDeviceAway",
            "'keep', 'fallback' or 'park'",
        ),
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      whenDeviceAway: park"),
            9,
            "spec.classes.c.whenDeviceAway",
            "'park' needs a device",
        ),
        (
            (
                "tiers: [gateway, edge]",
                "tiers: [gateway, edge]\n      proximity: ignored\n      whenDeviceAway: keep",
            ),
            10,
            "spec.classes.c.whenDeviceAway",
            "'keep' needs a device",
        ),
        # Numbers the consumers cannot use: refused here, not a 500 or a dead refresh later.
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      weights: {tier: .inf}"),
            9,
            "spec.classes.c.weights.tier",
            "finite number",
        ),
        (
            ("tiers: [gateway, edge]", "tiers: [gateway, edge]\n      weights: {load: 1e+308}"),
            9,
            "spec.classes.c.weights.load",
            "less than or equal to 1000",
        ),
        (
            ("spec:\n", "spec:\n  prometheus:\n    timeout: .nan\n"),
            7,
            "spec.prometheus.timeout",
            "finite number",
        ),
        (
            ("spec:\n", "spec:\n  staleData:\n    loadMaxAge: 1" + "0" * 400 + "\n"),
            7,
            "spec.staleData.loadMaxAge",
            "at most 604800 seconds",
        ),
        (
            ("spec:\n", "spec:\n  staleData:\n    loadMaxAge: " + "9" * 400 + "s\n"),
            7,
            "spec.staleData.loadMaxAge",
            "finite number",
        ),
        (
            ("spec:\n", "spec:\n  rebalance:\n    cooldown: 8d\n"),
            7,
            "spec.rebalance.cooldown",
            "not a duration",
        ),
        (
            ("spec:\n", "spec:\n  rebalance:\n    cooldown: 200h\n"),
            7,
            "spec.rebalance.cooldown",
            "less than or equal to 604800",
        ),
    ],
)
def test_invalid_policies_name_line_and_field(edit, line, field, message):
    old, new = edit
    assert old in MINIMAL
    found = problems_of(MINIMAL.replace(old, new, 1))
    matching = [p for p in found if p[1] == field]
    assert matching, found
    got_line, _, got_message = matching[0]
    assert got_line == line, found
    assert message in got_message, found


def test_all_problems_reported_at_once_sorted_by_line():
    text = DEFAULT.replace(
        "tiers: [gateway, edge]\n      preference:\n        default: [gateway, edge]",
        "tiers: [gateway, fog]\n      preference:\n        default: [gateway, edge]",
    )
    text = text.replace("rssiThreshold: -90", "rssiTreshold: -90").replace(
        "refreshInterval: 5s", "refreshInterval: -1s"
    )
    found = problems_of(text)
    fields = [f for _, f, _ in found]
    assert "spec.prometheus.refreshInterval" in fields
    assert "spec.classes.mhealth-consolidator.tiers[1]" in fields
    assert "spec.classes.engine-diagnostic.rssiTreshold" in fields
    assert [line for line, _, _ in found] == sorted(line for line, _, _ in found)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "empty"),
        ("spec: [unclosed\n", 2, "invalid YAML"),
        ("- a\n- b\n", 1, "must be a mapping"),
        (b"\xff\xfe", 1, "not UTF-8"),
        (MINIMAL.replace("name: t", "name: t\x00"), 4, "character #x0000 is not allowed"),
        ("kind: x\n\x07", 2, "character #x0007 is not allowed"),
    ],
)
def test_unusable_documents(text, line, message):
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    first = info.value.problems[0]
    assert first.file == "p.yaml"
    assert first.line == line
    assert message in first.message


def test_check_policy_command_prints_file_line_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("tiers: [gateway, edge]", "tiers: [gateway, fog]"))
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert main(["check-policy", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in captured.out.splitlines()[1:]}
    assert rows == {str(good): "valid", str(bad): "refused"}
    assert f"{bad}:8: spec.classes.c.tiers[1]:" in captured.err


@pytest.mark.parametrize(
    "value",
    ["!!float abc", "!!timestamp x", "!!python/name:os.system ''", "!!binary '%%%'"],
)
def test_values_yaml_cannot_build_are_problems_not_crashes(value):
    text = MINIMAL.replace("spec:\n", f"spec:\n  staleData: {{loadMaxAge: {value}}}\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    problem = info.value.problems[0]
    assert problem.line == 6
    assert problem.field == "spec.staleData.loadMaxAge"


def test_complex_keys_are_problems_not_crashes():
    with pytest.raises(PolicyError):
        parse_policy(MINIMAL + "? [a, b]\n: c\n", "p.yaml")


def test_rebalance_and_settle_defaults_are_the_documented_ones():
    spec = parse_policy(MINIMAL, "p.yaml").policy.spec
    r = spec.rebalance
    assert (r.interval, r.min_improvement, r.dwell, r.cooldown) == (60.0, 2, 10.0, 120.0)
    assert (r.device_away_after, r.max_moves_per_minute, r.max_moves_per_node_per_minute) == (
        120.0,
        10,
        3,
    )
    assert spec.nearest.settle == 5.0
    assert spec.classes["c"].when_device_away.value == "fallback"


def test_default_policy_sets_rebalance_and_device_away():
    spec = load_policy(ROOT / "policies" / "default.yaml").policy.spec
    assert spec.rebalance.cooldown == 120.0
    assert spec.rebalance.device_away_after == 120.0
    assert spec.nearest.settle == 5.0
    assert spec.classes["mhealth-consolidator"].when_device_away.value == "fallback"


@pytest.mark.parametrize(("proximity", "away"), [("required", "park"), ("preferred", "keep")])
def test_keep_and_park_are_accepted_with_a_device(proximity, away):
    text = MINIMAL.replace(
        "tiers: [gateway, edge]",
        f"tiers: [gateway, edge]\n      proximity: {proximity}\n      whenDeviceAway: {away}",
    )
    assert parse_policy(text, "p.yaml").policy.spec.classes["c"].when_device_away.value == away
