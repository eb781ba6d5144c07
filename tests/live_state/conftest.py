"""A real Prometheus (Debian package) scraping the load simulator, for live-state tests."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devcluster import prometheus
from devcluster.processes import (
    MARKER_ENV,
    free_port,
    marked_processes,
    start_detached,
    stop_processes,
    wait_http_ok,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class PromStack:
    prometheus_url: str
    loadsim_url: str
    prometheus_pid: int

    def set_load(self, node: str, cpu: float, memory: float) -> None:
        req = urllib.request.Request(
            f"{self.loadsim_url}/load/{node}",
            data=json.dumps({"cpu": cpu, "memory": memory}).encode(),
            method="PUT",
        )
        with urllib.request.urlopen(req, timeout=5):
            pass


@pytest.fixture(scope="module")
def prom_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromStack]:
    workdir = tmp_path_factory.mktemp("live-prom")
    env = {**os.environ, MARKER_ENV: str(workdir)}
    sim_port, prom_port = free_port(), free_port()
    sim = start_detached(
        [sys.executable, "-m", "devcluster.loadsim", "--port", str(sim_port)],
        workdir / "loadsim.log",
        env,
    )
    config = prometheus.write_config(
        workdir / "prometheus.yml", {"loadsim": [f"127.0.0.1:{sim_port}"]}
    )
    prom = start_detached(
        prometheus.prometheus_argv(config, workdir / "data", prom_port), workdir / "prom.log", env
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{sim_port}/healthz", 30, pid=sim)
        wait_http_ok(prometheus.ready_url(prom_port), 60, pid=prom, log=workdir / "prom.log")
        yield PromStack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{sim_port}", prom)
    finally:
        stop_processes(marked_processes(workdir))


@pytest.fixture
def fast_policy(tmp_path: Path) -> Path:
    """The default policy with query windows and refresh suited to a 1 s scrape."""
    text = (ROOT / "policies" / "default.yaml").read_text()
    text = text.replace("[30s]", f"[{prometheus.RATE_WINDOW_S}s]").replace(
        "refreshInterval: 5s", "refreshInterval: 1s"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path
