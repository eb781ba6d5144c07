"""HTTP handlers: decode, ask the scorer, encode. No scoring logic lives here."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from cloud4iot.httpjson import json_response, read_body
from cloud4iot.policy.loader import LoadedPolicy
from extender.explain import explanation
from extender.protocol import (
    ArgsError,
    ExtenderArgs,
    error_result,
    filter_result,
    parse_args,
    parse_explain,
    priority_list,
    retry_reason,
)
from extender.runtime import RUNTIME
from extender.scoring import PodFacts, TableCache, Verdict, evaluate
from extender.state.snapshot import NodeFacts, Snapshot

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def decide(
    args: ExtenderArgs,
    snapshot: Snapshot,
    policy: LoadedPolicy,
    now: float,
    tables: TableCache | None,
    explain: bool = False,
) -> list[Verdict]:
    """Verdicts for exactly the nodes the request names, in its order."""
    pod = PodFacts.from_pod(args.pod)
    if args.node_names is None:
        facts = [NodeFacts.from_node(n) for n in args.nodes or []]
        evaluation = evaluate(pod, snapshot, policy.policy, now, nodes=facts, explain=explain)
        return evaluation.verdicts([n.name for n in facts])
    # NodeNames mode: the node cache resolves the names.
    evaluation = evaluate(
        pod, snapshot, policy.policy, now, names=args.node_names, explain=explain, tables=tables
    )
    return evaluation.verdicts()


def _instrumented(
    verb: str, answer: Callable[[web.Request, bytes], tuple[web.Response, str]]
) -> Handler:
    """Wrap a verb: body read, 400 on bad input, request count and latency by mode."""

    async def handler(request: web.Request) -> web.StreamResponse:
        metrics = request.app[RUNTIME].metrics
        start = time.perf_counter()
        try:
            body = await read_body(request)
            response, mode = answer(request, body)
        except ArgsError as exc:
            response, mode = json_response({"error": str(exc)}, status=400), "invalid"
        except web.HTTPException as exc:  # 413 from the body limit, 415 encoding
            metrics.requests.labels(verb, "invalid", str(exc.status)).inc()
            raise
        except Exception:
            # A bug, not the caller's fault: say so, count it, keep serving.
            log.exception("%s failed on a request", verb)
            response, mode = json_response({"error": "internal error (logged)"}, 500), "error"
        metrics.requests.labels(verb, mode, str(response.status)).inc()
        metrics.latency.labels(verb).observe(time.perf_counter() - start)
        return response

    return handler


# Until the caches have listed, a classed pod gets an error, not refusals: kube-scheduler
# retries an extender error with its backoff (1-10 s), whereas a pod every node refused
# waits in the unschedulable pool for a cluster event, up to 5 minutes on a quiet
# cluster (an extender restarted mid-burst; the fault campaign).
NOT_SYNCED = (
    "the extender's node and device caches have not synced yet (it is starting): retry shortly"
)


def _filter(request: web.Request, body: bytes) -> tuple[web.Response, str]:
    rt, args = request.app[RUNTIME], parse_args(body)
    snapshot, policy = rt.state.snapshot, rt.policy.current
    if (
        rt.settings.cluster_configured
        and not (snapshot.nodes_synced and snapshot.devices_synced)
        and PodFacts.from_pod(args.pod).function is not None
    ):
        return json_response(error_result(args, NOT_SYNCED)), "not-synced"
    verdicts = decide(args, snapshot, policy, rt.clock(), rt.tables)
    if args.node_names is not None:  # full Node objects bring their own labels: not reused
        rt.verdicts.put(args.pod, snapshot, policy, verdicts)
    rt.metrics.count_decisions(verdicts)
    if log.isEnabledFor(logging.DEBUG):
        log_decision(args, verdicts)
    retry = retry_reason(verdicts)
    if retry is not None:
        return json_response(error_result(args, retry)), "retry"
    return json_response(filter_result(args, verdicts)), args.mode


def log_decision(args: ExtenderArgs, verdicts: list[Verdict]) -> None:
    """One debug line per filter answer: the pod, its device, the node it is best
    placed on (None: refused everywhere) and why, with the refusals by reason."""
    facts = PodFacts.from_pod(args.pod)
    kept = sorted((v for v in verdicts if v.feasible), key=lambda v: (-v.score, v.node))
    refused: dict[str, int] = {}
    for v in verdicts:
        if not v.feasible:
            refused[v.code.value] = refused.get(v.code.value, 0) + 1
    best = kept[0] if kept else None
    log.debug(
        "filter %s/%s: %d of %d nodes kept",
        facts.namespace,
        facts.name,
        len(kept),
        len(verdicts),
        extra={
            "pod": f"{facts.namespace}/{facts.name}",
            "device": facts.device,
            "node": best.node if best else None,
            "reason": f"best score {best.score}" if best else "every node refused",
            "code": refused,
        },
    )


def _prioritize(request: web.Request, body: bytes) -> tuple[web.Response, str]:
    rt, args = request.app[RUNTIME], parse_args(body)
    snapshot, policy = rt.state.snapshot, rt.policy.current
    verdicts = None
    if args.node_names is not None:
        verdicts = rt.verdicts.get(args.pod, snapshot, policy, args.node_names)
    if verdicts is None:
        verdicts = decide(args, snapshot, policy, rt.clock(), rt.tables)
    return json_response(priority_list(verdicts)), args.mode


def _explain(request: web.Request, body: bytes) -> tuple[web.Response, str]:
    """A pod (bare, or in ExtenderArgs) -> every node's verdict, reason and score parts."""
    rt, args = request.app[RUNTIME], parse_explain(body)
    snapshot = rt.state.snapshot
    if args.nodes is None and args.node_names is None:
        args = ExtenderArgs(pod=args.pod, nodes=None, node_names=sorted(snapshot.nodes))
    policy = rt.policy.current
    verdicts = decide(args, snapshot, policy, rt.clock(), rt.tables, explain=True)
    doc = explanation(PodFacts.from_pod(args.pod), policy, verdicts)
    return json_response(doc), args.mode


filter_handler = _instrumented("filter", _filter)
prioritize_handler = _instrumented("prioritize", _prioritize)
explain_handler = _instrumented("explain", _explain)


async def readyz(request: web.Request) -> web.Response:
    """Not ready until the node cache synced; degraded (still 200) on stale sources."""
    rt = request.app[RUNTIME]
    settings, store = rt.settings, rt.state
    snapshot = store.snapshot
    problems: list[str] = []
    degraded: list[str] = []
    if settings.cluster_configured and not snapshot.nodes_synced:
        problems.append("node cache has not completed its first sync")
    if settings.cluster_configured and not snapshot.devices_synced:
        problems.append("device cache has not completed its first sync")
    for name, health in sorted(store.sources.items()):
        if not health.ok:
            degraded.append(f"{name}: {health.detail}")
    policy = rt.policy
    if policy.last_error is not None:
        degraded.append(
            f"policy: last reload refused, {len(policy.last_error.problems)} problem(s)"
        )
    if rt.tls is not None and (tls_error := rt.tls.last_error) is not None:
        degraded.append(f"tls: last reload refused, the certificate in force stays: {tls_error}")
    body = {
        "ready": not problems,
        "degraded": degraded,
        "problems": problems,
        "policy": policy.current.version,
        "nodes": len(snapshot.nodes),
        "devices": len(snapshot.devices),
    }
    return json_response(body, status=200 if not problems else 503)
