"""Fixtures shared by the discovery e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient

from tests.gateway_monitor.node_tokens import admin_client


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    """An aio client with the devcluster's admin kubeconfig."""
    async with admin_client(devcluster.kubeconfig) as client:
        yield client
