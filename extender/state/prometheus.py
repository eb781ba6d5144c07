"""Background refresh of node load from Prometheus; requests only read the result.

prometheus-api-client is synchronous (requests), so each refresh runs in one
worker thread with an explicit timeout and no retries: its default (no timeout,
three retries with backoff) can take longer than kube-scheduler's whole extender
timeout. A failed refresh keeps the previous samples; their age then decides,
through the policy's stale-data rule, whether they still count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cloud4iot.policy.schema import PrometheusQueries, PrometheusSpec
from cloud4iot.policy.store import PolicyStore
from extender.state.snapshot import LoadSample
from extender.state.store import StateStore

log = logging.getLogger(__name__)


def parse_vector(result: Iterable[Mapping[str, Any]], label: str) -> dict[str, float]:
    """{node: value} from an instant-vector result; NaN/Inf and unlabelled series dropped."""
    out: dict[str, float] = {}
    for series in result:
        metric, value = series.get("metric") or {}, series.get("value")
        node = metric.get(label)
        if not isinstance(node, str) or not isinstance(value, list | tuple) or len(value) != 2:
            continue
        try:
            number = float(value[1])  # Prometheus sends values as strings
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[node] = min(1.0, max(0.0, number))
    return out


def series_without(result: Iterable[Mapping[str, Any]], label: str) -> int:
    """How many series of an instant-vector result lack `label` (they name no node)."""
    return sum(
        1 for series in result if not isinstance((series.get("metric") or {}).get(label), str)
    )


# The node-exporter series of the two common stacks carry the node's name differently:
# kube-prometheus relabels it into `instance` (job="node-exporter"); kube-prometheus-stack
# leaves `instance` as host:port, so the node comes from a join with the recording rule
# node_namespace_pod:kube_pod_info: that both stacks ship (on the exporter pod's
# namespace and pod labels). The join works in both; the `instance` form is cheaper.
_NE = 'job="node-exporter"'
_JOIN = "* on (namespace, pod) group_left (node) node_namespace_pod:kube_pod_info:"
PRESETS: dict[str, tuple[str, PrometheusQueries]] = {
    "kube-prometheus": (
        "instance",
        PrometheusQueries(
            cpu=f'1 - avg by (instance) (rate(node_cpu_seconds_total{{{_NE},mode="idle"}}[1m]))',
            memory=f"max by (instance) (1 - node_memory_MemAvailable_bytes{{{_NE}}}"
            f" / node_memory_MemTotal_bytes{{{_NE}}})",
        ),
    ),
    "kube-prometheus-stack": (
        "node",
        PrometheusQueries(
            cpu=f'1 - avg by (node) (rate(node_cpu_seconds_total{{{_NE},mode="idle"}}[1m])'
            f" {_JOIN})",
            memory=f"max by (node) ((1 - node_memory_MemAvailable_bytes{{{_NE}}}"
            f" / node_memory_MemTotal_bytes{{{_NE}}}) {_JOIN})",
        ),
    ),
}


def with_preset(spec: PrometheusSpec, preset: str | None) -> PrometheusSpec:
    """The policy's Prometheus settings with a stack's node label and queries, if named
    (the interval and timeout stay the policy's)."""
    if not preset:
        return spec
    label, queries = PRESETS[preset]
    return spec.model_copy(update={"node_label": label, "queries": queries})


def merge_samples(
    cpu: Mapping[str, float], memory: Mapping[str, float], at: float
) -> dict[str, LoadSample]:
    return {
        node: LoadSample(cpu=cpu.get(node), memory=memory.get(node), at=at)
        for node in set(cpu) | set(memory)
    }


class PrometheusSource:
    """Owns one PrometheusConnect; used from a single refresher task (requests'
    Session is not promised to be thread-safe)."""

    def __init__(self, url: str) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        self.client: Any = PrometheusConnect(url=url, retry=Retry(total=0), timeout=5)
        self.unlabelled = 0  # series of the last fetch without the node label

    def fetch(self, spec: PrometheusSpec) -> dict[str, LoadSample]:
        """Blocking: run both queries. Raises on transport or query errors."""
        # Both the HTTP call and the server-side evaluation are bounded.
        params = {"timeout": f"{max(1, int(spec.timeout * 1000))}ms"}
        at = time.time()
        results = [
            self.client.custom_query(q, params=params, timeout=spec.timeout)
            for q in (spec.queries.cpu, spec.queries.memory)
        ]
        cpu, memory = (parse_vector(r, spec.node_label) for r in results)
        self.unlabelled = sum(series_without(r, spec.node_label) for r in results)
        return merge_samples(cpu, memory, at)


def missing_metrics(nodes: Iterable[str], load: Mapping[str, LoadSample]) -> list[str]:
    return sorted(set(nodes) - set(load))


async def refresh_load(
    url: str,
    store: StateStore,
    policy: PolicyStore,
    report_gaps: Callable[[int], None] = lambda n: None,
    report_unlabelled: Callable[[int], None] = lambda n: None,
    preset: str | None = None,
) -> None:
    """Refresh node load into `store` on the policy's interval, forever; report
    gaps (known nodes without metrics), series that name no node, and staleness in
    the source's health. `preset` replaces the policy's node label and queries."""
    source = PrometheusSource(url)
    health = store.health("prometheus")
    reported: tuple[str, tuple[str, ...]] | None = None
    key_unlabelled: str | None = None
    while True:
        spec = with_preset(policy.current.policy.spec.prometheus, preset)
        started = time.monotonic()
        try:
            # Bounds the await (asyncio.timeout, not wait_for: on 3.11 wait_for can
            # swallow a cancellation); the thread itself is bounded by the HTTP timeout.
            async with asyncio.timeout(2 * spec.timeout + 1):
                load = await asyncio.to_thread(source.fetch, spec)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                # The abandoned thread may still use its requests Session, which is
                # not thread-safe: the next refresh gets a client of its own.
                source = PrometheusSource(url)
            age = time.time() - (store.snapshot.load_refreshed_at or 0)
            health.ok = False
            health.detail = f"refresh failed ({type(exc).__name__}: {exc}); data {age:.0f}s old"
            log.warning("prometheus refresh failed: %s", exc)
        else:
            now = time.time()
            store.snapshot = store.snapshot.with_load(load, refreshed_at=now)
            health.ok, health.last_success = True, now
            health.detail = f"{len(load)} nodes"
            report_unlabelled(source.unlabelled)
            if source.unlabelled and not load:
                # Series came back but none names a node: every node would look
                # unloaded (failOpen) or unknown. Say so instead of going quiet.
                health.ok = False
                health.detail = (
                    f"{source.unlabelled} series but none carries the node label "
                    f"{spec.node_label!r}: set spec.prometheus.nodeLabel and queries, "
                    "or --prometheus-preset for your Prometheus stack"
                )
                if key_unlabelled != policy.current.digest:
                    log.warning("prometheus: %s", health.detail)
                    key_unlabelled = policy.current.digest
            gaps = missing_metrics(store.snapshot.nodes, load)
            report_gaps(len(gaps))
            key = (policy.current.digest, tuple(gaps))
            if gaps and key != reported and store.snapshot.nodes_synced:
                # The classic load-aware failure: the node label does not match.
                log.warning(
                    "no load metrics for %d node(s): %s (label %r; query %s)",
                    len(gaps),
                    ", ".join(gaps[:20]),
                    spec.node_label,
                    spec.queries.cpu,
                )
                reported = key
        await asyncio.sleep(max(0.0, spec.refresh_interval - (time.monotonic() - started)))
