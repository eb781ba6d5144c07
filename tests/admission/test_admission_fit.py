"""fit.PodConstraints answers what kube-scheduler's NodeAffinity, TaintToleration and
NodeUnschedulable filters answer (semantics of kube 1.36: component-helpers'
nodeaffinity, apimachinery's label selector, core/v1 Toleration.ToleratesTaint)."""

from __future__ import annotations

from typing import Any

import pytest
from admission_cases import expr, facts, required

from extender.admission.fit import PodConstraints, UnsupportedError
from extender.state.snapshot import NodeFacts


def admits(spec: dict[str, Any], node: NodeFacts) -> bool:
    return PodConstraints.from_spec(spec).admits(node)


REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
ZONE_A = facts("a1", labels={"zone": "a", "disk": "ssd"})
ZONE_B = facts("b1", labels={"zone": "b"})


def test_no_constraints_admit_a_plain_node() -> None:
    assert admits({}, ZONE_A)


def test_node_selector_needs_every_label_equal() -> None:
    assert admits({"nodeSelector": {"zone": "a"}}, ZONE_A)
    assert admits({"nodeSelector": {"zone": "a", "disk": "ssd"}}, ZONE_A)
    assert not admits({"nodeSelector": {"zone": "a"}}, ZONE_B)  # other value
    assert not admits({"nodeSelector": {"zone": "a", "disk": "ssd"}}, ZONE_B)  # label absent
    assert not admits({"nodeSelector": {"zone": "a", "disk": "hdd"}}, ZONE_A)


def test_required_terms_are_ored() -> None:
    spec = {
        "affinity": required(
            {"matchExpressions": [expr("zone", "In", "x")]},
            {"matchExpressions": [expr("zone", "In", "b")]},
        )
    }
    assert admits(spec, ZONE_B)  # the second term
    assert not admits(spec, ZONE_A)  # neither


def test_expressions_of_a_term_are_anded() -> None:
    term = {"matchExpressions": [expr("zone", "In", "a", "b"), expr("disk", "Exists")]}
    assert admits({"affinity": required(term)}, ZONE_A)
    assert not admits({"affinity": required(term)}, ZONE_B)  # zone fits, disk absent


@pytest.mark.parametrize("empty", [{}, {"matchExpressions": []}, {"matchFields": []}])
def test_an_empty_term_matches_nothing(empty: dict[str, Any]) -> None:
    assert not admits({"affinity": required(empty)}, ZONE_A)
    # ... but does not spoil the others.
    assert admits(
        {"affinity": required(empty, {"matchExpressions": [expr("zone", "In", "a")]})}, ZONE_A
    )


def test_a_node_selector_and_required_affinity_both_apply() -> None:
    spec = {
        "nodeSelector": {"zone": "a"},
        "affinity": required({"matchExpressions": [expr("disk", "In", "hdd")]}),
    }
    assert not admits(spec, ZONE_A)  # selector fits, affinity does not


# (operator, values, node labels, matches)
OPERATOR_CASES = [
    ("In", ["a", "b"], {"zone": "a"}, True),
    ("In", ["a", "b"], {"zone": "c"}, False),
    ("In", ["a"], {}, False),
    ("NotIn", ["a"], {"zone": "b"}, True),
    ("NotIn", ["a"], {"zone": "a"}, False),
    ("NotIn", ["a"], {}, True),  # an absent label matches NotIn
    ("Exists", [], {"zone": ""}, True),
    ("Exists", [], {}, False),
    ("DoesNotExist", [], {}, True),
    ("DoesNotExist", [], {"zone": "a"}, False),
    ("Gt", ["5"], {"zone": "10"}, True),
    ("Gt", ["5"], {"zone": "5"}, False),
    ("Gt", ["-3"], {"zone": "0"}, True),
    ("Lt", ["5"], {"zone": "4"}, True),
    ("Lt", ["5"], {"zone": "5"}, False),
    ("Lt", ["5"], {"zone": "007"}, False),  # leading zeros: 7, as strconv.ParseInt reads it
    ("Gt", ["5"], {}, False),  # absent label
    ("Gt", ["5"], {"zone": "ten"}, False),  # not an integer: no match, no error
    ("Lt", ["50"], {"zone": "1_0"}, False),  # a valid label value Go's ParseInt refuses
    ("Lt", ["50"], {"zone": "1.5"}, False),
    ("Gt", ["5"], {"zone": "99999999999999999999"}, False),  # past int64: ParseInt fails
]


@pytest.mark.parametrize(("op", "values", "labels", "matches"), OPERATOR_CASES)
def test_operators_match_like_the_label_selector(
    op: str, values: list[str], labels: dict[str, str], matches: bool
) -> None:
    node = facts("n", labels=labels)
    spec = {"affinity": required({"matchExpressions": [expr("zone", op, *values)]})}
    assert admits(spec, node) is matches


@pytest.mark.parametrize("values", [["five"], ["1", "2"], [], ["1_0"], [" 5"], ["5.0"]])
@pytest.mark.parametrize("op", ["Gt", "Lt"])
def test_gt_lt_need_one_integer_value(op: str, values: list[str]) -> None:
    spec = {"affinity": required({"matchExpressions": [expr("zone", op, *values)]})}
    with pytest.raises(UnsupportedError, match="needs one integer value"):
        PodConstraints.from_spec(spec)


def test_gt_lt_value_that_is_not_a_string_is_unsupported_not_a_crash() -> None:
    term = {"matchExpressions": [{"key": "zone", "operator": "Gt", "values": [None]}]}
    with pytest.raises(UnsupportedError):
        PodConstraints.from_spec({"affinity": required(term)})


def test_match_fields_select_by_node_name() -> None:
    names_in = {"matchFields": [expr("metadata.name", "In", "a1", "x")]}
    names_not_in = {"matchFields": [expr("metadata.name", "NotIn", "a1")]}
    assert admits({"affinity": required(names_in)}, ZONE_A)
    assert not admits({"affinity": required(names_in)}, ZONE_B)
    assert not admits({"affinity": required(names_not_in)}, ZONE_A)
    assert admits({"affinity": required(names_not_in)}, ZONE_B)


def test_match_fields_and_expressions_of_one_term_are_anded() -> None:
    term = {
        "matchExpressions": [expr("zone", "In", "b")],
        "matchFields": [expr("metadata.name", "In", "a1")],
    }
    assert not admits({"affinity": required(term)}, ZONE_A)
    assert not admits({"affinity": required(term)}, ZONE_B)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"affinity": required({"matchExpressions": [expr("z", "Matches", "a")]})}, "operator"),
        ({"affinity": required({"matchExpressions": ["zone=a"]})}, "not an object"),
        ({"affinity": required({"matchFields": [expr("metadata.uid", "In", "u")]})}, "matchFields"),
        ({"affinity": required({"matchFields": [expr("metadata.name", "Exists")]})}, "operator"),
        (
            {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": ["zone=a"]}}}},
            "not an object",
        ),
        ({"affinity": required({"matchExpressions": {"key": "zone"}})}, "not lists"),
        ({"affinity": {"nodeAffinity": {REQUIRED: {}}}}, "nodeSelectorTerms"),
        ({"nodeSelector": ["zone=a"]}, "nodeSelector"),
        ({"tolerations": [{"key": "k", "operator": "Lt", "value": "3"}]}, "toleration operator"),
        ({"tolerations": ["k"]}, "toleration"),
    ],
)
def test_what_is_not_understood_raises(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedError, match=message):
        PodConstraints.from_spec(spec)


def taint(key: str, value: str | None, effect: str) -> dict[str, str]:
    found = {"key": key, "effect": effect}
    if value is not None:
        found["value"] = value
    return found


DEDICATED = facts("d", taints=[taint("dedicated", "iot", "NoSchedule")])
EVICTING = facts("x", taints=[taint("dedicated", "iot", "NoExecute")])


def tolerating(*tolerations: dict[str, Any]) -> dict[str, Any]:
    return {"tolerations": list(tolerations)}


@pytest.mark.parametrize(
    ("toleration", "node", "tolerated"),
    [
        (None, DEDICATED, False),
        (None, EVICTING, False),
        (
            {"key": "dedicated", "operator": "Equal", "value": "iot", "effect": "NoSchedule"},
            DEDICATED,
            True,
        ),
        (
            {"key": "dedicated", "value": "iot", "effect": "NoSchedule"},
            DEDICATED,
            True,
        ),  # Equal by default
        (
            {"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"},
            DEDICATED,
            False,
        ),
        ({"key": "other", "operator": "Equal", "value": "iot"}, DEDICATED, False),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, DEDICATED, True),
        ({"key": "other", "operator": "Exists"}, DEDICATED, False),
        ({"operator": "Exists"}, DEDICATED, True),  # no key: every taint
        ({"operator": "Exists"}, EVICTING, True),
        ({"key": "dedicated", "value": "iot"}, DEDICATED, True),  # no effect: every effect
        ({"key": "dedicated", "value": "iot"}, EVICTING, True),
        ({"key": "dedicated", "value": "iot", "effect": "NoExecute"}, DEDICATED, False),
        ({"key": "dedicated", "value": "iot", "effect": "NoSchedule"}, EVICTING, False),
        (
            {"key": "dedicated", "operator": "Exists", "effect": "PreferNoSchedule"},
            DEDICATED,
            False,
        ),
    ],
)
def test_hard_taints_need_a_matching_toleration(
    toleration: dict[str, Any] | None, node: NodeFacts, tolerated: bool
) -> None:
    spec = tolerating(toleration) if toleration else {}
    assert admits(spec, node) is tolerated


def test_every_hard_taint_must_be_tolerated() -> None:
    node = facts("t", taints=[taint("a", "1", "NoSchedule"), taint("b", None, "NoExecute")])
    assert not admits(tolerating({"key": "a", "value": "1"}), node)
    assert admits(tolerating({"key": "a", "value": "1"}, {"key": "b", "operator": "Exists"}), node)


def test_from_node_keeps_hard_taints_and_drops_prefer_no_schedule() -> None:
    node = facts(
        "t",
        taints=[
            taint("soft", "x", "PreferNoSchedule"),
            taint("hard", None, "NoSchedule"),
            taint("gone", "y", "NoExecute"),
        ],
    )
    assert node.taints == (("hard", "", "NoSchedule"), ("gone", "y", "NoExecute"))
    soft_only = facts("s", taints=[taint("soft", "x", "PreferNoSchedule")])
    assert soft_only.taints == ()
    assert admits({}, soft_only)  # kube-scheduler only scores PreferNoSchedule


UNSCHEDULABLE_TOLERATION = {
    "key": "node.kubernetes.io/unschedulable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def test_an_unschedulable_node_is_refused_unless_the_pod_tolerates_it() -> None:
    cordoned = facts("c", unschedulable=True)
    assert cordoned.unschedulable
    assert not facts("c").unschedulable
    assert not admits({}, cordoned)
    assert admits(tolerating(UNSCHEDULABLE_TOLERATION), cordoned)
    assert admits(tolerating({"operator": "Exists"}), cordoned)  # tolerates everything
    no_execute = {**UNSCHEDULABLE_TOLERATION, "effect": "NoExecute"}
    assert not admits(tolerating(no_execute), cordoned)
    with_value = {"key": "node.kubernetes.io/unschedulable", "value": "true"}
    assert not admits(tolerating(with_value), cordoned)  # the taint has no value


def test_only_a_literal_true_marks_a_node_unschedulable() -> None:
    node = NodeFacts.from_node({"metadata": {"name": "n"}, "spec": {"unschedulable": "yes"}})
    assert not node.unschedulable
