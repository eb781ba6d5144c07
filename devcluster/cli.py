"""`cloud4iot devcluster up|down|status|build` (also `python -m devcluster ...`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from devcluster.binaries import BinariesMissingError, build
from devcluster.cluster import DEFAULT_POLICY, Devcluster, DevclusterError
from devcluster.prometheus import PrometheusMissingError
from devcluster.topology import DEFAULT_TOPOLOGY, TopologyError


def add_parser(subparsers: Any) -> None:
    """Add the `devcluster` command to a parent CLI's subparsers."""
    parser = subparsers.add_parser(
        "devcluster",
        help="a local cluster: real control plane, kwok nodes, extender, Prometheus",
        description="A local cluster on 127.0.0.1 built from real Kubernetes components.",
    )
    _configure(parser)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="dev", help="cluster name (default: dev)")
    parser.add_argument(
        "--state-root",
        type=Path,
        help="where the cluster's files go (default: $XDG_RUNTIME_DIR or /tmp)",
    )
    actions = parser.add_subparsers(dest="devcluster_action", required=True)
    up = actions.add_parser(
        "up", help="start the cluster; the last line printed is KUBECONFIG=<path>"
    )
    up.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    up.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    up.add_argument(
        "--no-extender",
        action="store_true",
        help="plain scheduler without our extender (baseline for benchmarks)",
    )
    up.add_argument(
        "--no-follow-pods",
        action="store_true",
        help="node load stays idle unless set through the load simulator",
    )
    actions.add_parser("down", help="stop every process of the cluster and remove its files")
    actions.add_parser("status", help="which parts answer; exit status 1 if any does not")
    actions.add_parser("build", help="build the control-plane binaries (cached by version)")
    # `func` is what the cloud4iot CLI calls for every subcommand.
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    action = args.devcluster_action
    if action == "build":
        print(build())
        return 0
    cluster = Devcluster(
        args.name,
        state_root=args.state_root,
        topology=getattr(args, "topology", DEFAULT_TOPOLOGY),
        policy=getattr(args, "policy", DEFAULT_POLICY),
        with_extender=not getattr(args, "no_extender", False),
        follow_pods=not getattr(args, "no_follow_pods", False),
    )
    try:
        if action == "up":
            state = cluster.up()
            for component, port in state.ports.items():
                if component in state.components:
                    print(f"{component.upper()}_URL=http://127.0.0.1:{port}")
            print(f"KUBECONFIG={cluster.kubeconfig}")
            return 0
        if action == "down":
            cluster.down()
            print(f"devcluster {args.name!r} is down")
            return 0
        health = cluster.status()
        for part, ok in health.items():
            print(f"{part}: {'ok' if ok else 'DOWN'}")
        print(f"KUBECONFIG={cluster.kubeconfig}")
        return 0 if all(health.values()) else 1
    except (
        DevclusterError,
        BinariesMissingError,
        PrometheusMissingError,
        TopologyError,
        TimeoutError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    _configure(parser)
    args = parser.parse_args(argv)
    return handle(args)
