"""The kubernetes.aio client both deployables use: a kubeconfig, or the pod's service account."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "kube-system"


def own_namespace(environ: dict[str, str] | None = None, sa_file: Path | None = None) -> str:
    """The namespace a service's Lease lives in when no flag says: the pod's own
    (POD_NAMESPACE, from the Downward API in the manifests; else the service account's
    namespace file), and kube-system for a process outside any pod (the devcluster)."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        text = (sa_file or SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    except OSError:
        text = ""
    return text or FALLBACK_NAMESPACE


async def api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient from `kubeconfig`, or from the in-cluster service account when None."""
    from kubernetes.aio import config
    from kubernetes.aio.client import ApiClient, Configuration

    if kubeconfig is None:
        cfg = Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return ApiClient(configuration=cfg)
    return await config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
