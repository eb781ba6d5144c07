"""`cloud4iot_build_info` on every process's /metrics registry: which build runs where."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from cloud4iot.buildinfo import version
from extender.metrics import Metrics
from gateway_monitor.metrics import Metrics as GatewayMetrics
from rebalancer.metrics import RebalancerMetrics


@pytest.mark.parametrize(
    ("registry", "component"),
    [
        (lambda: Metrics().registry, "extender"),
        (lambda: RebalancerMetrics().registry, "rebalancer"),
        (lambda: GatewayMetrics().registry, "gateway-monitor"),
    ],
)
def test_build_info(registry: object, component: str) -> None:
    reg: CollectorRegistry = registry()  # type: ignore[operator]
    labels = {"version": version(), "component": component}
    value = reg.get_sample_value("cloud4iot_build_info", labels | {"python": _python()})
    assert value == 1.0
    assert version() == "0.1.0"


def _python() -> str:
    import sys

    return ".".join(str(n) for n in sys.version_info[:3])
