"""`cloud4iot tier-affinity`: a policy's tier restrictions as a MutatingAdmissionPolicy.

Pure checks of the render; what the apiserver makes of it is in
tests/devcluster/test_tier_affinity_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud4iot.policy.loader import load_policy, parse_policy
from cloud4iot.policy.schema import PlacementPolicy
from extender.admission.tier_affinity import NAME, manifests, render, restricted_classes
from extender.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"
CHECKED_IN = ROOT / "manifests" / "placement" / "scheduler" / "tier-affinity.yaml"


def policy(classes: str) -> PlacementPolicy:
    text = (
        "apiVersion: cloud4iot.io/v1alpha1\nkind: PlacementPolicy\nmetadata:\n  name: t\n"
        "spec:\n  classes:\n" + classes
    )
    return parse_policy(text, "t.yaml").policy


def spec_of(p: PlacementPolicy) -> dict[str, Any]:
    docs = manifests(p)
    assert [d["kind"] for d in docs] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ]
    spec: dict[str, Any] = docs[0]["spec"]
    return spec


def variable(spec: dict[str, Any], name: str) -> str:
    (found,) = [v["expression"] for v in spec["variables"] if v["name"] == name]
    return str(found)


def test_the_checked_in_manifest_is_the_render_of_the_default_policy() -> None:
    # If this fails: python -m extender.cli is not the command; run
    # `cloud4iot tier-affinity --policy policies/default.yaml > manifests/placement/scheduler/tier-affinity.yaml`
    rendered = render(load_policy(DEFAULT).policy, "policies/default.yaml")
    assert CHECKED_IN.read_text() == rendered


def test_default_policy_restricts_the_gateway_edge_classes_only() -> None:
    assert restricted_classes(load_policy(DEFAULT).policy) == {
        "anonymiser": ["gateway", "edge"],
        "mhealth-consolidator": ["gateway", "edge"],
    }


def test_a_class_with_every_tier_gets_no_rule() -> None:
    p = policy(
        "    everywhere:\n      tiers: [cloud, gateway, edge]\n"
        "    edge-only:\n      tiers: [edge]\n"
    )
    assert restricted_classes(p) == {"edge-only": ["edge"]}
    spec = spec_of(p)
    assert '"everywhere"' not in yaml.safe_dump(spec)
    assert spec["matchConditions"][1]["expression"].rstrip().endswith('in ["edge-only"]')
    assert variable(spec, "allowedTiers").startswith('{"edge-only": ["edge"]}[')


def test_no_restricted_class_renders_a_policy_that_matches_no_pod() -> None:
    # Still rendered, so applying it replaces a policy of an older render.
    p = policy("    everywhere:\n      tiers: [gateway, edge, cloud]\n")
    assert restricted_classes(p) == {}
    spec = spec_of(p)
    assert spec["matchConditions"][1]["expression"].rstrip().endswith("in []")
    assert "#   (none)" in render(p, "t.yaml")


def test_tiers_come_in_canonical_order_whatever_the_class_lists() -> None:
    p = policy("    c:\n      tiers: [edge, gateway]\n")
    assert restricted_classes(p) == {"c": ["gateway", "edge"]}


def test_the_policy_matches_pod_creation_of_our_scheduler_and_restricted_classes() -> None:
    spec = spec_of(load_policy(DEFAULT).policy)
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["pods"],
    }
    scheduler, klass = (c["expression"] for c in spec["matchConditions"])
    assert scheduler == 'object.spec.?schedulerName.orValue("") == "cloud4iot-scheduler"'
    assert '[?"cloud4iot.io/function"]' in klass
    assert klass.rstrip().endswith('in ["anonymiser", "mhealth-consolidator"]')
    assert spec["failurePolicy"] == "Ignore"
    assert spec["reinvocationPolicy"] == "IfNeeded"


def test_the_expression_uses_the_tier_label_and_is_added_to_every_term() -> None:
    spec = spec_of(load_policy(DEFAULT).policy)
    # Terms that already restrict the tier to allowed tiers are skipped: idempotent.
    unrestricted = variable(spec, "unrestricted")
    assert "lists.range(size(variables.terms))" in unrestricted
    assert 'e.key == "cloud4iot.io/tier" && e.operator == "In"' in unrestricted
    assert "e.values.all(v, v in variables.allowedTiers)" in unrestricted
    (mutation,) = spec["mutations"]
    assert mutation["patchType"] == "JSONPatch"
    patch = mutation["jsonPatch"]["expression"]
    assert 'key: "cloud4iot.io/tier", operator: "In", values: variables.allowedTiers' in patch
    # One append per term without the expression (a term without matchExpressions
    # gets an empty list first) ...
    assert "variables.unrestricted.map(i," in patch
    assert '+ string(i) + "/matchExpressions/-"' in patch
    assert '+ string(i) + "/matchExpressions", value: []' in patch
    # ... or one new term when there is none, added at the first missing level
    # (an `add` on an existing member would replace it).
    for path in (
        '"/spec/affinity"',
        '"/spec/affinity/nodeAffinity"',
        '"/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"',
    ):
        assert f'op: "add", path: {path},' in patch


def test_variable_names_are_cel_identifiers() -> None:
    # `function` is reserved in CEL: the apiserver refuses such a variable name.
    names = [v["name"] for v in spec_of(load_policy(DEFAULT).policy)["variables"]]
    assert names == ["className", "allowedTiers", "terms", "unrestricted"]


def test_the_binding_names_the_policy() -> None:
    binding = manifests(load_policy(DEFAULT).policy)[1]
    assert binding["metadata"]["name"] == NAME
    assert binding["spec"] == {"policyName": NAME}


def test_class_names_are_cel_string_literals_and_cannot_break_the_file() -> None:
    p = policy('    "odd\\"name\\nline":\n      tiers: [gateway]\n')
    assert restricted_classes(p) == {'odd"name\nline': ["gateway"]}
    assert '{"odd\\"name\\nline": ["gateway"]}' in variable(spec_of(p), "allowedTiers")
    docs = [d for d in yaml.safe_load_all(render(p, "t.yaml")) if d]
    assert [d["kind"] for d in docs] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ]


def test_the_command_prints_the_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tier-affinity", "--policy", str(DEFAULT)]) == 0
    out = capsys.readouterr().out
    assert out == render(load_policy(DEFAULT).policy, str(DEFAULT))
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ]


def test_the_command_refuses_a_bad_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: nope\n")
    assert main(["tier-affinity", "--policy", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "policy refused" in captured.err
