"""Command lines: `cloud4iot-extender` (the service) and `cloud4iot` (admin tools);
`cloud4iot-rebalancer` is rebalancer/cli.py.

The product only: development commands (devcluster, demo, bench) are
`python -m devcluster ...`, which lives with them outside the wheel.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from cloud4iot.buildinfo import require_extra
from cloud4iot.kubeclient import own_namespace
from cloud4iot.logs import log_flags
from cloud4iot.output import emit, output_flag, table
from cloud4iot.policy.loader import PolicyError
from cloud4iot.service import (
    configure_logging,
    lease_flags,
    policy_flag,
    service_flags,
    version_flag,
)
from extender.settings import DEFAULT_CANDIDATES

log = logging.getLogger("cloud4iot")


def _extender_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloud4iot-extender",
        description="kube-scheduler extender placing IoT functions on gateway, edge and cloud",
    )
    service_flags(
        p,
        8888,
        False,
        "refresh node load from this Prometheus",
        debug_adds="one line per placement decision (pod, device, node, reason) and per pod "
        "admitted unpinned",
    )
    p.add_argument(
        "--state",
        type=Path,
        help="serve a fixed world from a simulate state file (no cluster): what-if, benchmarks",
    )
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument(
        "--no-leader-election",
        action="store_true",
        help="never write Device status.nearest nor touch Nodes (read-only replica)",
    )
    lease_flags(p, "cloud4iot-extender")
    tls = p.add_argument_group(
        "TLS", "HTTPS for the webhook (plain HTTP without these); reloaded when the files change"
    )
    tls.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    tls.add_argument(
        "--client-ca",
        type=Path,
        help="require client certificates signed by this CA (mutual TLS; kube-scheduler's "
        "extender tlsConfig certFile/keyFile)",
    )
    tls.add_argument("--tls-poll-interval", type=float, default=10.0)
    p.add_argument(
        "--health-port",
        type=int,
        help="also serve /healthz /readyz /metrics (only those) over plain HTTP on this port: "
        "for probes and Prometheus when the main port requires client certificates",
    )
    adm = p.add_argument_group(
        "admission narrowing",
        "an HTTPS listener serving /admit (only that) for a MutatingWebhookConfiguration: "
        "new pods of our scheduler are pinned to their best nodes (extender/admission)",
    )
    adm.add_argument("--admission-port", type=int)
    adm.add_argument("--admission-cert", type=Path, help="its server certificate chain (PEM)")
    adm.add_argument("--admission-key", type=Path, help="its private key (PEM)")
    adm.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help="nodes a narrowed pod is pinned to (0: admit every pod unchanged)",
    )
    return p


# A 5,000-name request holds thousands of short-lived tuples at once, which at the default
# gen0 threshold (700) set off ~4 collections per request, and the older generations
# (the world: nodes, Devices, verdict tables) then got scanned every few hundred requests:
# 50 ms pauses in-process (p99 20 ms, against 13 ms with this; BENCHMARKS.md). Almost all
# of our garbage is freed by reference counting; the cyclic collector only needs to run
# now and then.
GC_THRESHOLDS = (20_000, 20, 10)


def _tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def extender_main(argv: list[str] | None = None) -> int:
    parser = _extender_parser()
    args = parser.parse_args(argv)
    require_extra(parser.prog, "extender")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca is not None and args.tls_cert is None:
        parser.error("--client-ca needs --tls-cert and --tls-key")
    admission = (args.admission_port, args.admission_cert, args.admission_key)
    if any(a is not None for a in admission) and None in admission:
        parser.error("--admission-port, --admission-cert and --admission-key go together")
    if args.candidates < 0:
        parser.error("--candidates must be 0 or more")
    configure_logging(args.log_level, args.log_format)
    from aiohttp import web

    from extender.app import create_app
    from extender.runtime import RUNTIME
    from extender.settings import Settings
    from extender.state.statefile import StateFileError
    from extender.tls import TlsError

    settings = Settings(
        policy_path=args.policy,
        host=args.host,
        port=args.port,
        kubeconfig=args.kubeconfig,
        in_cluster=args.in_cluster,
        prometheus_url=args.prometheus_url,
        prometheus_preset=args.prometheus_preset,
        state_path=args.state,
        max_body_bytes=args.max_body_bytes,
        policy_poll_interval=args.policy_poll_interval,
        leader_election=not args.no_leader_election,
        lease_namespace=args.lease_namespace or own_namespace(),
        lease_name=args.lease_name,
        gateway_namespace=args.gateway_namespace,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        tls_poll_interval=args.tls_poll_interval,
        health_port=args.health_port,
        admission_port=args.admission_port,
        admission_cert=args.admission_cert,
        admission_key=args.admission_key,
        candidates=args.candidates,
    )
    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"cloud4iot-extender: policy refused:\n{exc}", file=sys.stderr)
        return 2
    except (StateFileError, TlsError) as exc:
        print(f"cloud4iot-extender: {exc}", file=sys.stderr)
        return 2
    tls = app[RUNTIME].tls
    ssl_context = tls.context if tls is not None else None
    if ssl_context is None:
        scheme = "http"
    else:
        scheme = "https, client certificates required" if args.client_ca else "https"
    log.info(
        "listening on %s:%d (%s) with policy %s", args.host, args.port, scheme, settings.policy_path
    )
    _tune_gc()
    # Keep idle connections longer than Go's http.Transport (90 s), so kube-scheduler
    # never sends a request on a connection we are closing.
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        keepalive_timeout=120,
        ssl_context=ssl_context,
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from extender.podexplain.render import simulate_text
    from extender.simulate import simulate
    from extender.state.statefile import StateFileError

    try:
        doc = simulate(args.policy, args.state, args.pod)
    except (PolicyError, StateFileError) as exc:
        print(f"cloud4iot simulate: {exc}", file=sys.stderr)
        return 2
    emit(doc, args.output, simulate_text)
    return 0


def _check_policy(args: argparse.Namespace) -> int:
    from cloud4iot.policy.loader import load_policy

    results: list[dict[str, Any]] = []
    for path in args.files:
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            if args.output in ("table", "wide"):
                print(exc, file=sys.stderr)  # every problem, as the loader words them
            results.append({"file": str(path), "valid": False, "error": str(exc)})
        else:
            spec = loaded.policy.spec
            results.append(
                {
                    "file": str(path),
                    "valid": True,
                    "policy": loaded.version,
                    "digest": loaded.digest,
                    "classes": list(spec.classes),
                }
            )
    emit(results, args.output, _policy_table)
    return 0 if all(r["valid"] for r in results) else 1


def _policy_table(results: list[dict[str, Any]], wide: bool) -> str:
    rows = [
        [
            r["file"],
            "valid" if r["valid"] else "refused (see above)",
            r.get("policy"),
            ", ".join(r.get("classes") or ()) or None,
        ]
        + ([r.get("digest")] if wide else [])
        for r in results
    ]
    headers = ["FILE", "RESULT", "POLICY", "CLASSES"] + (["DIGEST"] if wide else [])
    return table(headers, rows)


def _tier_affinity(args: argparse.Namespace) -> int:
    from cloud4iot.policy.loader import load_policy
    from extender.admission.tier_affinity import render

    try:
        loaded = load_policy(args.policy)
    except PolicyError as exc:
        print(f"cloud4iot tier-affinity: policy refused:\n{exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(loaded.policy, str(args.policy)))
    return 0


def _replay(rest: list[str]) -> int:
    # Not imported by the services: the replay package is not in their images.
    try:
        from replay.cli import main as replay_main
    except ImportError:
        print("cloud4iot replay: the replay package is not installed here", file=sys.stderr)
        return 2
    return replay_main(rest)


def _certs(args: argparse.Namespace) -> int:
    from kubernetes.client import ApiException
    from kubernetes.config import ConfigException

    from extender.certs import write

    try:
        done = write(
            args.kubeconfig,
            args.namespace,
            args.webhook,
            in_cluster=args.in_cluster,
            extra_sans=args.extra_san,
        )
    except (ApiException, ConfigException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"cloud4iot certs: {reason}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cloud4iot", description="Cloud4IoT placement admin tools")
    version_flag(p)
    log_flags(p, "warning")
    sub = p.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="each node's verdict for a pod in a given state")
    policy_flag(sim)
    sim.add_argument("--state", type=Path, required=True, help="state file (see docs)")
    sim.add_argument("--pod", type=Path, required=True, help="Pod as YAML or JSON")
    output_flag(sim)
    sim.set_defaults(func=_simulate)

    chk = sub.add_parser("check-policy", help="validate policy files, report every problem")
    chk.add_argument("files", type=Path, nargs="+")
    output_flag(chk)
    chk.set_defaults(func=_check_policy)

    aff = sub.add_parser(
        "tier-affinity",
        help="print the MutatingAdmissionPolicy that gives each pod of a tier-restricted "
        "class a required node affinity on those tiers (kubectl apply -f -)",
    )
    policy_flag(aff)
    aff.set_defaults(func=_tier_affinity)

    rep = sub.add_parser(
        "replay",
        add_help=False,
        help="replay recorded adverts through the live nearest decision chain, scored "
        "(cloud4iot replay --help)",
    )
    rep.add_argument("rest", nargs=argparse.REMAINDER)
    # The flags given before `replay` hold unless it is given its own.
    rep.set_defaults(
        func=lambda a: _replay(["--log-level", a.log_level, "--log-format", a.log_format, *a.rest])
    )

    crt = sub.add_parser(
        "certs",
        help="write the extender's, the scheduler's and the admission webhook's TLS Secrets "
        "and the webhook's caBundle (one CA, kept in the Secret cloud4iot-ca and reused)",
    )
    crt.add_argument("--namespace", default="cloud4iot-system", help="where the parts run")
    crt.add_argument("--webhook", default="cloud4iot-narrowing")
    crt.add_argument(
        "--extra-san",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="another name the extender is reached by (both serving pairs; repeatable)",
    )
    where = crt.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG or ~/.kube/config")
    where.add_argument("--in-cluster", action="store_true")
    crt.set_defaults(func=_certs)

    from extender.podexplain.command import add_parser as explain_parser

    explain_parser(sub)

    from extender.approve import add_parser as devices_parser

    devices_parser(sub)

    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["replay"]:  # its own parser, --help included
        return _replay(args_list[1:])
    args = p.parse_args(args_list)
    configure_logging(args.log_level, args.log_format)
    if args.command in ("simulate", "certs", "explain"):
        require_extra(f"cloud4iot {args.command}", "extender")
    code: int = args.func(args)
    return code
