"""`cloud4iot explain pod/NAME`: parse the target, gather, score, print.

Exit codes as kubectl's: 0 answered, 1 an error from the cluster or the inputs
(NotFound, forbidden, no policy), 2 a usage error (argparse)."""

from __future__ import annotations

import argparse
import sys

from cloud4iot.devices import parse_time, rfc3339
from cloud4iot.output import emit
from cloud4iot.policy.loader import PolicyError
from extender.podexplain.gather import ExplainError, Target, gather
from extender.podexplain.outlook import Where
from extender.podexplain.render import as_text
from extender.podexplain.report import report
from extender.scoring import PodFacts, evaluate

POD_KINDS = ("pod", "pods", "po")


def pod_name(ref: str) -> str:
    """`pod/NAME`, `pods/NAME`, `po/NAME` or `NAME`; ValueError for another kind."""
    kind, slash, name = ref.partition("/")
    if not slash:
        kind, name = "pod", ref
    if kind.lower() not in POD_KINDS:
        raise ValueError(f'explain knows pods only, not "{kind}" (pod/NAME)')
    if not name:
        raise ValueError("no pod name (pod/NAME)")
    return name


def run(args: argparse.Namespace) -> int:
    try:
        name = pod_name(args.ref)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = Target(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        system_namespace=args.system_namespace,
        policy=args.policy,
        prometheus_url=args.prometheus_url,
        prometheus_service=args.prometheus_service,
        prometheus_preset=args.prometheus_preset,
    )
    try:
        inputs, snapshot, policy, now = gather(target, name)
    except (ExplainError, PolicyError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    verdicts = evaluate(inputs.pod, snapshot, policy.policy, now, explain=True).verdicts()
    info = {
        "evaluatedAt": rfc3339(now),
        "nodes": len(snapshot.nodes),
        "nodes_with_load": len(snapshot.load),
    }
    device = PodFacts.from_pod(inputs.pod).device
    w = Where(
        tiers={name: n.tier for name, n in snapshot.nodes.items()},
        device=snapshot.devices.get(device) if device else None,
        started=parse_time((inputs.pod.get("status") or {}).get("startTime")),
    )
    doc = report(inputs, policy, verdicts, info, now, w, with_history=args.history)
    emit(doc, args.output, as_text)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

    from cloud4iot.output import output_flag

    ex = sub.add_parser(
        "explain",
        help="why a pod is pending, or why it runs where it runs (kubectl cloud4iot explain "
        "pod/NAME), with your own kube credentials",
    )
    ex.add_argument("ref", metavar="pod/NAME")
    ex.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    ex.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG or ~/.kube/config")
    ex.add_argument("--context", help="kubeconfig context (default: the current one)")
    ex.add_argument(
        "--system-namespace",
        default="cloud4iot-system",
        help="where the extender runs: its cloud4iot-policy ConfigMap is the policy",
    )
    ex.add_argument("--policy", type=Path, help="a policy file instead of the ConfigMap's")
    prom = ex.add_mutually_exclusive_group()
    prom.add_argument("--prometheus-url", help="read node load from this Prometheus")
    prom.add_argument(
        "--prometheus-service",
        metavar="NS/NAME:PORT",
        help="read node load through the apiserver's service proxy, e.g. "
        "monitoring/prometheus-k8s:9090 (needs get on services/proxy)",
    )
    ex.add_argument("--prometheus-preset", choices=["kube-prometheus", "kube-prometheus-stack"])
    ex.add_argument(
        "--history", action="store_true", help="also what was decided for it, oldest first"
    )
    output_flag(ex)
    ex.set_defaults(func=run)
