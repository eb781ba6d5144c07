"""Both services' command lines: the shared flags, their defaults, and what each requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud4iot.buildinfo import DEFAULT_POLICY
from extender.cli import _extender_parser, _rebalancer_parser


def test_the_extender_runs_standalone_and_shares_the_service_flags() -> None:
    args = _extender_parser().parse_args([])
    assert (args.port, args.policy, args.log_level) == (8888, DEFAULT_POLICY, "INFO")
    assert DEFAULT_POLICY.is_file()  # the shipped policy, wherever the command runs from
    assert args.kubeconfig is None
    assert not args.in_cluster
    assert args.policy_poll_interval == 2.0
    args = _extender_parser().parse_args(["--kubeconfig", "k.yaml", "--log-level", "debug"])
    assert (args.kubeconfig, args.log_level) == (Path("k.yaml"), "debug")


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
