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

from cloud4iot.policy.schema import PrometheusSpec
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
        return merge_samples(cpu, memory, at)


def missing_metrics(nodes: Iterable[str], load: Mapping[str, LoadSample]) -> list[str]:
    return sorted(set(nodes) - set(load))


async def refresh_load(
    url: str,
    store: StateStore,
    policy: PolicyStore,
    report_gaps: Callable[[int], None] = lambda n: None,
) -> None:
    """Refresh node load into `store` on the policy's interval, forever; report
    gaps (known nodes without metrics) and staleness in the source's health."""
    source = PrometheusSource(url)
    health = store.health("prometheus")
    reported: tuple[str, tuple[str, ...]] | None = None
    while True:
        spec = policy.current.policy.spec.prometheus
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
