"""Real Prometheus (Debian package) scraping the load simulator: the query the
extender uses gives back the load a test sets."""

import json
import time
import urllib.request
from typing import Any

import pytest

from devcluster.prometheus import query

pytestmark = pytest.mark.prometheus

CPU_LOAD = '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[5s]))'
MEMORY_LOAD = "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes"


@pytest.fixture(scope="module")
def prom_and_loadsim(prom_stack: Any) -> tuple[str, str]:
    return prom_stack.prometheus_url, prom_stack.loadsim_url


def put_load(loadsim_url: str, node: str, body: dict[str, float]) -> None:
    request = urllib.request.Request(
        f"{loadsim_url}/load/{node}", data=json.dumps(body).encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def wait_query(
    base_url: str, promql: str, node: str, target: float, timeout_s: float = 30
) -> float:
    deadline = time.monotonic() + timeout_s
    value = float("nan")
    while time.monotonic() < deadline:
        value = query(base_url, promql).get(node, float("nan"))
        if abs(value - target) < 0.03:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{promql} for {node} stayed at {value}, expected {target}")


def test_cpu_and_memory_load_set_on_the_simulator_show_in_prometheus(
    prom_and_loadsim: tuple[str, str],
) -> None:
    prom_url, sim_url = prom_and_loadsim
    put_load(sim_url, "gw-home", {"cpu": 0.9, "memory": 0.7})
    assert wait_query(prom_url, CPU_LOAD, "gw-home", 0.9) == pytest.approx(0.9, abs=0.03)
    assert wait_query(prom_url, MEMORY_LOAD, "gw-home", 0.7) == pytest.approx(0.7, abs=0.01)
    # The other nodes stay at the idle load.
    assert query(prom_url, CPU_LOAD)["cloud-1"] == pytest.approx(0.05, abs=0.03)


def test_every_topology_node_has_per_cpu_series(prom_and_loadsim: tuple[str, str]) -> None:
    prom_url, _ = prom_and_loadsim
    deadline = time.monotonic() + 15
    cpus: dict[str, float] = {}
    while time.monotonic() < deadline and len(cpus) < 5:
        cpus = query(prom_url, 'count by (node) (node_cpu_seconds_total{mode="idle"})')
        time.sleep(0.5)
    assert cpus == {"gw-home": 2, "gw-hospital": 2, "edge-1": 8, "cloud-1": 32, "cloud-2": 32}
