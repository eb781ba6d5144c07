"""Shared fixtures. `devcluster`: one real local cluster for all end-to-end tests
of a run (tests that use it carry `@pytest.mark.cluster`)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import kube, prometheus
from devcluster.cluster import Devcluster
from devcluster.processes import (
    MARKER_ENV,
    free_port,
    marked_processes,
    start_detached,
    stop_processes,
    wait_http_ok,
)
from devcluster.schedconfig import REPO_ROOT
from devcluster.topology import load_topology


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m 'not cluster'` must really leave the cluster out: a test that uses
    # the fixture without the marker is a mistake, caught at collection.
    # Likewise `-m 'not go'` for the fixtures that build bench/go.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "devcluster" in fixtures and item.get_closest_marker("cluster") is None:
            raise pytest.UsageError(f"{item.nodeid} uses devcluster but lacks @pytest.mark.cluster")
        if "go_pair" in fixtures and item.get_closest_marker("go") is None:
            raise pytest.UsageError(f"{item.nodeid} uses go_pair but lacks @pytest.mark.go")


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    """Bring the cluster up once per run, and down at the end, leaving no process.

    Missing binaries or Prometheus fail the tests with the command that fixes
    it; nothing is skipped. Set CLOUD4IOT_KEEP_LOGS=1 to keep the component
    logs (under pytest's temporary directory) after the run.
    """
    user_kubeconfig = Path.home() / ".kube" / "config"
    before = _fingerprint(user_kubeconfig)
    cluster = Devcluster(f"pytest-{os.getpid()}", state_root=tmp_path_factory.mktemp("cluster"))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down(keep_logs=os.environ.get("CLOUD4IOT_KEEP_LOGS") == "1")
        leftover = cluster.leftover_processes()
        assert leftover == [], f"devcluster processes left behind: {leftover}"
        assert _fingerprint(user_kubeconfig) == before, f"{user_kubeconfig} was modified"


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


@pytest.fixture(scope="session")
def kube_api(devcluster: Devcluster) -> Iterator[client.ApiClient]:
    with kube.api_client(devcluster.kubeconfig) as api:
        yield api


@pytest.fixture
def namespace(kube_api: client.ApiClient, devcluster: Devcluster) -> Iterator[str]:
    """A fresh namespace per test; the node loads are reset afterwards too."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(kube_api, name)
    try:
        yield name
    finally:
        client.CoreV1Api(kube_api).delete_namespace(name)
        devcluster.clear_load()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@dataclass
class PromStack:
    """A real Prometheus (Debian package) scraping the load simulator, nothing else."""

    prometheus_url: str
    loadsim_url: str
    prometheus_pid: int

    def set_load(self, node: str, cpu: float | None = None, memory: float | None = None) -> None:
        body = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
        req = urllib.request.Request(
            f"{self.loadsim_url}/load/{node}", data=json.dumps(body).encode(), method="PUT"
        )
        with urllib.request.urlopen(req, timeout=5):
            pass


@pytest.fixture(scope="module")
def prom_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromStack]:
    """Per test module: the load simulator and a Prometheus with enough history for
    `rate()` over the devcluster's window; both stopped afterwards, none left behind."""
    workdir = tmp_path_factory.mktemp("prom")
    env = {**os.environ, MARKER_ENV: str(workdir)}
    sim_port, prom_port = free_port(), free_port()
    sim = start_detached(
        [sys.executable, "-m", "devcluster.loadsim", "--port", str(sim_port)],
        workdir / "loadsim.log",
        env,
        cwd=REPO_ROOT,  # dev tools are not installed: `-m` finds them from the root
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
        nodes = [n.name for n in load_topology()]
        prom_url = f"http://127.0.0.1:{prom_port}"
        prometheus.wait_for_history(prom_url, nodes, prometheus.RATE_WINDOW_S)
        yield PromStack(prom_url, f"http://127.0.0.1:{sim_port}", prom)
    finally:
        stop_processes(marked_processes(workdir))
        assert marked_processes(workdir) == []
