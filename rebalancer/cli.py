"""`cloud4iot-rebalancer`: the rebalancer service's command line."""

from __future__ import annotations

import argparse
import logging
import sys

from cloud4iot.buildinfo import require_extra
from cloud4iot.kubeclient import own_namespace
from cloud4iot.policy.loader import PolicyError
from cloud4iot.service import configure_logging, lease_flags, service_flags

log = logging.getLogger("cloud4iot")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloud4iot-rebalancer",
        description="moves running IoT functions (roaming, offloading, onloading, device "
        "lifecycle) through rollouts and evictions, with the extender's scorer",
    )
    service_flags(
        p,
        8889,
        True,
        "node load from this Prometheus (offloading)",
        debug_adds="a line each time a refused move is held back",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plan, log and emit Events of what would move; change nothing",
    )
    lease_flags(p, "cloud4iot-rebalancer")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    require_extra(p.prog, "extender")
    configure_logging(args.log_level, args.log_format)
    from aiohttp import web

    from rebalancer.app import create_rebalancer_app
    from rebalancer.settings import RebalancerSettings

    settings = RebalancerSettings(
        policy_path=args.policy,
        host=args.host,
        port=args.port,
        kubeconfig=None if args.in_cluster else args.kubeconfig,
        prometheus_url=args.prometheus_url,
        prometheus_preset=args.prometheus_preset,
        dry_run=args.dry_run,
        policy_poll_interval=args.policy_poll_interval,
        lease_namespace=args.lease_namespace or own_namespace(),
        lease_name=args.lease_name,
        gateway_namespace=args.gateway_namespace,
    )
    try:
        app = create_rebalancer_app(settings)
    except PolicyError as exc:
        print(f"cloud4iot-rebalancer: policy refused:\n{exc}", file=sys.stderr)
        return 2
    mode = " (dry run: nothing is changed)" if args.dry_run else ""
    log.info("rebalancer on %s:%d with policy %s%s", args.host, args.port, args.policy, mode)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0
