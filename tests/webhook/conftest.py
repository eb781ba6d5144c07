"""An in-process extender app with a known cluster picture, for the webhook tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from webhook_cases import snapshot

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.settings import Settings
from extender.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def store() -> StateStore:
    return StateStore(snapshot=snapshot(time.time()))


@pytest.fixture
async def client(aiohttp_client: ClientFactory, store: StateStore) -> TestClient[Any, Any]:
    settings = Settings(policy_path=ROOT / "policies" / "default.yaml", max_body_bytes=256 * 1024)
    app = create_app(
        settings, policy=PolicyStore.open(settings.policy_path), state=store, sources=[]
    )
    return await aiohttp_client(app)
