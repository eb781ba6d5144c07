"""The monitor's Prometheus metrics, on a registry of its own (several monitors per process
in tests and the demo must not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from cloud4iot.buildinfo import register_build_info

PREFIX = "cloud4iot_gateway_monitor"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_build_info(self.registry, "gateway-monitor")
        r = self.registry
        self.adverts = Counter(
            f"{PREFIX}_adverts",
            "Advertisements received; result=tracked (a Device), candidate (matches a"
            " DeviceClass, reported for discovery) or dropped (unknown, unpublished)",
            ["result"],
            registry=r,
        )
        self.present = Gauge(
            f"{PREFIX}_devices_present", "Devices this gateway hears now", registry=r
        )
        self.registered = Gauge(
            f"{PREFIX}_devices_registered", "Device objects this gateway looks for", registry=r
        )
        self.transitions = Counter(
            f"{PREFIX}_presence_changes", "Presence flips by direction", ["transition"], registry=r
        )
        self.publishes = Counter(
            f"{PREFIX}_publishes",
            "Writes of this gateway's report, by the most urgent reason it carried and outcome",
            ["reason", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "Failures by component", ["component"], registry=r
        )
        self.scanner_up = Gauge(
            f"{PREFIX}_scanner_healthy", "1 while the BLE scanner runs normally", registry=r
        )
        self.apiserver_up = Gauge(
            f"{PREFIX}_apiserver_reachable", "0 while publishes fail for connectivity", registry=r
        )
        for result in ("tracked", "candidate", "dropped"):
            self.adverts.labels(result)
        for component in ("scanner", "publisher", "registry", "recorder"):
            self.errors.labels(component)
