"""The extender's Runtime: one object under one AppKey, shared (not copied) by the
listeners that serve sub-apps (the plain health port, the admission port)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from conftest import ROOT, ClientFactory
from webhook_cases import snapshot

from cloud4iot.policy.store import PolicyStore
from devcluster.processes import free_port
from extender.admission.server import _admission_app
from extender.app import create_app
from extender.runtime import RUNTIME
from extender.settings import Settings
from extender.state.snapshot import NodeFacts
from extender.state.store import StateStore

POLICY = ROOT / "policies" / "default.yaml"


def app_with(**settings: Any) -> web.Application:
    return create_app(
        Settings(policy_path=POLICY, **settings),
        policy=PolicyStore.open(POLICY),
        state=StateStore(snapshot=snapshot(0.0)),
        sources=[],
    )


def test_the_admission_app_holds_the_parents_runtime() -> None:
    parent = app_with()
    assert _admission_app(parent[RUNTIME])[RUNTIME] is parent[RUNTIME]


async def test_the_health_port_answers_from_the_same_runtime(aiohttp_client: ClientFactory) -> None:
    health_port = free_port()
    client = await aiohttp_client(app_with(host="127.0.0.1", health_port=health_port))
    rt = client.app[RUNTIME]
    url = f"http://127.0.0.1:{health_port}/readyz"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            before = (await resp.json())["nodes"]
        # What the main app's Runtime sees next, the health port answers from too.
        extra = NodeFacts("late-node", "edge", "amd64")
        rt.state.snapshot = rt.state.snapshot.with_nodes(
            {**rt.state.snapshot.nodes, extra.name: extra}
        )
        async with session.get(url) as resp:
            after = (await resp.json())["nodes"]
    assert after == before + 1


def test_the_extender_declares_one_app_key() -> None:
    """No handler reaches a shared object by a key of its own: all go through RUNTIME."""
    found = []
    for path in sorted((ROOT / "extender").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "AppKey":
                found.append(str(Path(path).relative_to(ROOT)))
    assert found == ["extender/runtime.py"]
