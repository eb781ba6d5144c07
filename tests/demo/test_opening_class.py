"""The demo's opening scene as shipped: its DeviceClass parses and matches what the
demo follows, and the demo's policy holds the class its functions run."""

from __future__ import annotations

import yaml

from cloud4iot.deviceclass import AUTO, full_uuid, parse_class
from cloud4iot.policy.loader import parse_policy
from demo import opening
from demo.scenario import demo_policy

ROOT = opening.ROOT


def test_the_ward_strap_class_parses_and_names_what_the_demo_follows() -> None:
    cls = parse_class(yaml.safe_load(opening.CLASS_FILE.read_text()))
    assert (cls.name, cls.admission) == (opening.CLASS, AUTO)
    assert cls.filter.service_uuids == {full_uuid("180D")}
    assert (cls.away_after, cls.forget_after) == (5.0, 45.0)
    assert {f.namespace for f in cls.functions} == {opening.NAMESPACE}
    deployments = {f"{f.name}-{opening.STRAP}" for f in cls.functions}
    assert deployments == {d for _, d in opening.FUNCTIONS.values()}
    for f in cls.functions:
        template = f.spec["template"]
        assert template["metadata"]["annotations"]["cloud4iot.io/function"] == opening.PARK_CLASS
        selector = ",".join(f"{k}={v}" for k, v in f.spec["selector"]["matchLabels"].items())
        assert selector in {s for s, _ in opening.FUNCTIONS.values()}


def test_the_demo_policy_holds_the_strap_functions_class() -> None:
    text = demo_policy((ROOT / "manifests" / "policy" / "policy.yaml").read_text())
    policy = parse_policy(text).policy
    parked = policy.spec.classes[opening.PARK_CLASS]
    assert parked.when_device_away.value == "park"
    assert parked.tiers == policy.spec.classes["mhealth-consolidator"].tiers
