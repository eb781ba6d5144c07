"""Both services' command lines: the shared flags, their defaults, and what each requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud4iot.buildinfo import DEFAULT_POLICY
from extender.cli import _extender_parser
from rebalancer.cli import parser as _rebalancer_parser


def test_the_extender_runs_standalone_and_shares_the_service_flags() -> None:
    args = _extender_parser().parse_args([])
    # Levels are lower-case, as in --help and our JSON lines' "level" (any case is accepted)
    assert (args.port, args.policy, args.log_level) == (8888, DEFAULT_POLICY, "info")
    assert DEFAULT_POLICY.is_file()  # the shipped policy, wherever the command runs from
    assert args.kubeconfig is None
    assert not args.in_cluster
    assert args.policy_poll_interval == 2.0
    args = _extender_parser().parse_args(["--kubeconfig", "k.yaml", "--log-level", "debug"])
    assert (args.kubeconfig, args.log_level) == (Path("k.yaml"), "debug")
    assert _extender_parser().parse_args(["--log-level", "WARNING"]).log_level == "warning"
    assert _rebalancer_parser().parse_args(["--in-cluster"]).log_level == "info"


def test_the_rebalancer_needs_a_cluster_and_takes_its_own_flags() -> None:
    with pytest.raises(SystemExit):
        _rebalancer_parser().parse_args([])  # no cluster: nothing to rebalance
    with pytest.raises(SystemExit):
        _rebalancer_parser().parse_args(["--kubeconfig", "k", "--in-cluster"])
    args = _rebalancer_parser().parse_args(
        ["--in-cluster", "--dry-run", "--prometheus-url", "http://p:9090"]
    )
    assert (args.port, args.in_cluster, args.dry_run) == (8889, True, True)
    assert (args.prometheus_url, args.lease_name) == ("http://p:9090", "cloud4iot-rebalancer")
    assert args.policy_poll_interval == 2.0


def test_lease_namespace_defaults_to_the_pods_own(tmp_path: Path) -> None:
    from cloud4iot.kubeclient import own_namespace

    sa = tmp_path / "namespace"
    assert own_namespace({"POD_NAMESPACE": "iot-placement"}, sa) == "iot-placement"
    assert own_namespace({}, sa) == "kube-system"  # outside a pod: the devcluster's
    sa.write_text("from-the-token\n")
    assert own_namespace({}, sa) == "from-the-token"
    assert own_namespace({"POD_NAMESPACE": "env-wins"}, sa) == "env-wins"
    for parser, name in (
        (_extender_parser(), "cloud4iot-extender"),
        (_rebalancer_parser(), "cloud4iot-rebalancer"),
    ):
        args = parser.parse_args(["--kubeconfig", "k", "--lease-namespace", "ns1"])
        assert (args.lease_namespace, args.lease_name) == ("ns1", name)
        assert parser.parse_args(["--kubeconfig", "k"]).lease_namespace is None


def test_prometheus_preset_is_one_of_the_stacks() -> None:
    from extender.state.prometheus import PRESETS

    args = _extender_parser().parse_args(["--prometheus-preset", "kube-prometheus-stack"])
    assert args.prometheus_preset in PRESETS
    with pytest.raises(SystemExit):
        _extender_parser().parse_args(["--prometheus-preset", "victoria"])
