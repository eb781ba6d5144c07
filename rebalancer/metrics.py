"""The rebalancer's own Prometheus metrics, on a per-app registry (tests run many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cloud4iot.buildinfo import register_build_info
from cloud4iot.service import LATENCY_BUCKETS


class RebalancerMetrics:
    """The rebalancer's own metrics (moves, holds, plan latency), on a per-app registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_build_info(self.registry, "rebalancer")
        r = self.registry
        self.moves = Counter(
            "cloud4iot_rebalancer_moves",
            "Moves by reason, action and result (ok, failed, dry-run)",
            ["reason", "action", "result"],
            registry=r,
        )
        self.held = Counter(
            "cloud4iot_rebalancer_moves_held",
            "Wanted moves held back, by the limit that held them (counted when it changes)",
            ["limit"],
            registry=r,
        )
        self.plan_seconds = Histogram(
            "cloud4iot_rebalancer_plan_duration_seconds",
            "Time to plan, by trigger (event: affected pods only; full: every managed pod)",
            ["trigger"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "cloud4iot_rebalancer_leader", "1 while this replica holds the Lease", registry=r
        )
        self.pods = Gauge(
            "cloud4iot_rebalancer_managed_pods", "Managed pods in the cache", registry=r
        )
        self.source_up = Gauge(
            "cloud4iot_rebalancer_source_up",
            "1 while a state source (kubernetes, prometheus) is healthy",
            ["source"],
            registry=r,
        )
