"""The kubernetes.aio client both deployables use: a kubeconfig, or the pod's service account."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
