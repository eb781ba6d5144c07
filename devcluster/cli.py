"""`python -m devcluster`: the development tool, run from the source tree.

    python -m devcluster [--name N] [--state-root DIR] up|down|status|build
    python -m devcluster demo [--keep] [--name N] [--out PNG] [--standalone]
    python -m devcluster bench extender-latency [--nodes ...] [--mode ...]
    python -m devcluster bench extender-pair [--names ...] [--concurrency ...] [--profile DIR]
    python -m devcluster bench scheduler-throughput [--nodes 500 5000] [--pods N ...] [--repeat K]

Never part of the wheel or the images: the product (`cloud4iot`,
`cloud4iot-extender`, `cloud4iot-gateway-monitor`) does not import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devcluster.binaries import BinariesMissingError, build
from devcluster.cluster import DEFAULT_POLICY, Devcluster, DevclusterError
from devcluster.prometheus import PrometheusMissingError
from devcluster.topology import DEFAULT_TOPOLOGY, TopologyError

CLUSTER_NAME = "dev"  # the default --name of up/down/status
DEMO_NAME = "demo"  # and of demo
# `bench SCRIPT [options]`: the scripts of bench/, each run through its `main(argv, prog)`.
BENCHES = (
    "extender-latency",
    "extender-memory",
    "extender-pair",
    "noop-extender",
    "rebalancer-plan",
    "rebalancer-reaction",
    "apiserver-outage",
    "scheduler-throughput",
    "omh-queue",
    "replay-speed",
    "nearest-knobs",
    "walk-front",
    "receiver-bias",
    "hospital-sightings",
    "hospital-chain-lag",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="Development tools: a local cluster from real components, the demo and"
        " the benchmarks.",
    )
    # Before the command, as scripts have always called it (`--name cli up`); `demo`
    # also takes --name after it. The default depends on the command (dev, demo).
    parser.add_argument("--name", help="cluster name (default: dev; for demo: demo)")
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
        "--no-rebalancer",
        action="store_true",
        help="no rebalancer: running pods stay where the scheduler put them",
    )
    up.add_argument(
        "--no-follow-pods",
        action="store_true",
        help="node load stays idle unless set through the load simulator",
    )
    up.add_argument(
        "--no-narrowing",
        action="store_true",
        help="do not install the admission-narrowing webhook (pods reach the scheduler "
        "unpinned; for comparisons)",
    )
    up.add_argument(
        "--no-tier-affinity",
        action="store_true",
        help="do not install the tier-affinity admission policy (every node then reaches "
        "the extender; for comparisons)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between kube-scheduler and the extender (certificates made under "
        "the cluster's tls/ directory; health and metrics on EXTENDER_HEALTH_URL)",
    )
    up.add_argument(
        "--verbosity",
        type=int,
        metavar="N",
        help="klog -v of kube-scheduler and kube-controller-manager (e.g. 4 logs each"
        " informer's watch retries and each scheduling attempt)",
    )
    actions.add_parser("down", help="stop every process of the cluster and remove its files")
    actions.add_parser(
        "status", help="which parts answer, and restarts by the supervisor; exit 1 if any is down"
    )
    restart = actions.add_parser("restart", help="restart one component now")
    restart.add_argument("component", help="e.g. kube-controller-manager, prometheus, extender")
    actions.add_parser("build", help="build the control-plane binaries (cached by version)")

    demo = actions.add_parser(
        "demo", help="roaming, offloading, confidentiality and a mode switch on a local cluster"
    )
    demo.add_argument("--keep", action="store_true", help="leave the demo cluster running")
    # SUPPRESS: an absent --name here keeps the one given before the command.
    demo.add_argument("--name", default=argparse.SUPPRESS, help="devcluster name (default: demo)")
    demo.add_argument(
        "--out",
        type=Path,
        help="the timeline picture of the run; its data (.json) and a page (.html) go next"
        " to it (default: demo-timeline.png in the current directory)",
    )
    demo.add_argument(
        "--standalone",
        action="store_true",
        help="no cluster: the extender alone answering sample kube-scheduler requests",
    )

    bench = actions.add_parser(
        "bench",
        help="run a benchmark script of bench/ (see BENCHMARKS.md)",
        description="Run a benchmark script of bench/; its own options follow its name.",
    )
    bench.add_argument("script", choices=BENCHES)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the script's options")
    return parser


def handle(args: argparse.Namespace) -> int:
    action = args.devcluster_action
    if action == "demo":
        return _demo(args)
    if action == "bench":
        return _bench(args)
    if action == "build":
        print(build())
        return 0
    cluster = Devcluster(
        args.name or CLUSTER_NAME,
        state_root=args.state_root,
        topology=getattr(args, "topology", DEFAULT_TOPOLOGY),
        policy=getattr(args, "policy", DEFAULT_POLICY),
        with_extender=not getattr(args, "no_extender", False),
        with_rebalancer=not getattr(args, "no_rebalancer", False),
        follow_pods=not getattr(args, "no_follow_pods", False),
        tls=getattr(args, "tls", False),
        tier_affinity=not getattr(args, "no_tier_affinity", False),
        narrowing=not getattr(args, "no_narrowing", False),
        verbosity=getattr(args, "verbosity", None),
    )
    try:
        if action == "up":
            state = cluster.up()
            for component, port in state.ports.items():
                if component in state.components:
                    scheme = "https" if component == "extender" and state.tls else "http"
                    print(f"{component.upper()}_URL={scheme}://127.0.0.1:{port}")
            if state.tls:
                print(f"EXTENDER_HEALTH_URL={cluster.extender_health_url}")
                print(f"TLS_DIR={cluster.tls_dir}")
            print(f"KUBECONFIG={cluster.kubeconfig}")
            return 0
        if action == "down":
            cluster.down()
            print(f"devcluster {cluster.name!r} is down")
            return 0
        if action == "restart":
            pid = cluster.restart(args.component)
            print(f"{args.component} restarted (pid {pid})")
            return 0
        health = cluster.status()
        restarts = cluster.restarts()
        for part, ok in health.items():
            again = f" (restarted {restarts[part]}x)" if restarts.get(part) else ""
            print(f"{part}: {'ok' if ok else 'DOWN'}{again}")
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


def _demo(args: argparse.Namespace) -> int:
    if args.standalone:
        from demo.standalone import run_demo

        code: int = run_demo(args)
        return code
    from demo.scenario import main as run_scenario

    return run_scenario(
        keep=args.keep, name=args.name or DEMO_NAME, state_root=args.state_root, out=args.out
    )


def _bench(args: argparse.Namespace) -> int:
    if args.script == "extender-latency":
        from bench.extender_latency import main as run
    elif args.script == "extender-memory":
        from bench.extender_memory import main as run
    elif args.script == "extender-pair":
        from bench.extender_pair import main as run
    elif args.script == "rebalancer-plan":
        from bench.rebalancer_plan import main as run
    elif args.script == "rebalancer-reaction":
        from bench.rebalancer_reaction import main as run
    elif args.script == "apiserver-outage":
        from bench.apiserver_outage import main as run
    elif args.script == "scheduler-throughput":
        from bench.scheduler_throughput import main as run
    elif args.script == "omh-queue":
        from bench.omh_queue import main as run
    elif args.script == "replay-speed":
        from bench.replay_speed import main as run
    elif args.script == "nearest-knobs":
        from bench.nearest_knobs import main as run
    elif args.script == "walk-front":
        from bench.walk_front import main as run
    elif args.script == "receiver-bias":
        from bench.receiver_bias import main as run
    elif args.script == "hospital-chain-lag":
        from bench.hospital_chain_lag import main as run
    elif args.script == "hospital-sightings":
        from bench.hospital_sightings import main as run
    else:
        from bench.noop_extender import main as run
    run(args.args, prog=f"python -m devcluster bench {args.script}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return handle(args)
