"""Shared fixtures. `devcluster`: one real local cluster for all end-to-end tests
of a run (tests that use it carry `@pytest.mark.cluster`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m 'not cluster'` must really leave the cluster out: a test that uses
    # the fixture without the marker is a mistake, caught at collection.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "devcluster" in fixtures and item.get_closest_marker("cluster") is None:
            raise pytest.UsageError(f"{item.nodeid} uses devcluster but lacks @pytest.mark.cluster")


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
