"""Hot reload: a changed policy applies, a bad one is refused and the last good stays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.settings import Settings
from extender.state.store import StateStore
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "policies" / "default.yaml").read_text()


def test_reload_applies_valid_change_and_keeps_last_good_on_error(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    first = store.current
    assert store.check_once() == "unchanged"

    path.write_text(GOOD.replace("loadMaxAge: 30s", "loadMaxAge: 45s"))
    assert store.check_once() == "applied"
    assert store.current.policy.spec.stale_data.load_max_age == 45.0
    assert store.current.digest != first.digest

    in_force = store.current
    path.write_text(GOOD.replace("tiers: [gateway, edge]", "tiers: [gatway, edge]", 1))
    assert store.check_once() == "refused"
    assert store.current is in_force
    assert store.last_error is not None
    assert any("tiers[0]" in p.field for p in store.last_error.problems)
    # The same bad bytes again are not re-reported as a new failure.
    assert store.check_once() == "unchanged"

    path.write_text(GOOD)
    assert store.check_once() == "applied"
    assert store.last_error is None


def test_configmap_symlink_swap_is_followed(tmp_path):
    # kubelet's layout: file -> ..data/file, ..data -> ..<timestamp> (swapped atomically)
    v1, v2 = tmp_path / "..v1", tmp_path / "..v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "policy.yaml").write_text(GOOD)
    (v2 / "policy.yaml").write_text(GOOD.replace("refreshInterval: 5s", "refreshInterval: 7s"))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    store = PolicyStore.open(tmp_path / "policy.yaml")
    assert store.current.policy.spec.prometheus.refresh_interval == 5.0

    os.symlink("..v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert store.check_once() == "applied"
    assert store.current.policy.spec.prometheus.refresh_interval == 7.0


def test_missing_file_during_swap_keeps_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    path.unlink()
    assert store.check_once() == "refused"
    assert store.current.policy.metadata.name == "default"


async def test_reload_loop_survives_a_file_yaml_cannot_build(tmp_path, aiohttp_client):
    import asyncio

    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    settings = Settings(policy_path=path, policy_poll_interval=0.05)
    store = PolicyStore.open(path)
    client = await aiohttp_client(
        create_app(settings, policy=store, state=StateStore(), sources=[])
    )
    path.write_text(GOOD.replace("loadMaxAge: 30s", "loadMaxAge: !!float abc"))
    for _ in range(100):
        if store.last_error is not None:
            break
        await asyncio.sleep(0.05)
    assert store.last_error is not None
    body = await (await client.get("/readyz")).json()
    assert any(d.startswith("policy:") for d in body["degraded"])
    # A later good edit still applies: the reloader is alive.
    path.write_text(GOOD.replace("loadMaxAge: 30s", "loadMaxAge: 40s"))
    for _ in range(100):
        if store.current.policy.spec.stale_data.load_max_age == 40.0:
            break
        await asyncio.sleep(0.05)
    assert store.current.policy.spec.stale_data.load_max_age == 40.0


def test_a_deleted_file_is_reported_once_and_its_return_clears_the_refusal(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    in_force = store.current
    path.unlink()
    assert store.check_once() == "refused"
    assert store.last_error is not None
    assert "cannot read: No such file or directory" in str(store.last_error)
    assert store.check_once() == "unchanged"  # still gone: not a new refusal every poll
    assert store.reloads_failed == 1
    path.write_text(GOOD)  # the very bytes in force come back
    assert store.check_once() == "applied"
    assert store.last_error is None
    assert store.current.digest == in_force.digest
    assert store.check_once() == "unchanged"


async def _reloading_app(
    tmp_path: Path, aiohttp_client: Any
) -> tuple[Path, PolicyStore, TestClient[Any, Any]]:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    settings = Settings(policy_path=path, policy_poll_interval=0.02)
    client = await aiohttp_client(
        create_app(settings, policy=store, state=StateStore(), sources=[])
    )
    return path, store, client


async def _policy_degraded(client: TestClient[Any, Any]) -> list[str]:
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    return [d for d in body["degraded"] if d.startswith("policy:")]


async def test_a_nul_byte_shows_in_readyz_until_a_good_file_returns(tmp_path, aiohttp_client):
    path, store, client = await _reloading_app(tmp_path, aiohttp_client)
    in_force = store.current
    assert await _policy_degraded(client) == []
    path.write_bytes(GOOD.replace("name: default", "name: default\x00").encode())

    async def degraded() -> bool:
        return bool(await _policy_degraded(client))

    async def clean() -> bool:
        return not await _policy_degraded(client)

    await eventually(degraded, 5, "/readyz to show the refused policy")
    assert store.last_error is not None
    [problem] = store.last_error.problems
    assert "character #x0000 is not allowed" in problem.message
    assert problem.line == GOOD.splitlines().index("  name: default") + 1
    assert store.current is in_force
    path.write_text(GOOD)
    await eventually(clean, 5, "/readyz to clear once the good file is back")
    assert store.current.digest == in_force.digest


async def test_readyz_clears_when_a_deleted_file_comes_back_identical(tmp_path, aiohttp_client):
    path, store, client = await _reloading_app(tmp_path, aiohttp_client)

    async def degraded() -> bool:
        return bool(await _policy_degraded(client))

    async def clean() -> bool:
        return not await _policy_degraded(client)

    path.unlink()
    await eventually(degraded, 5, "/readyz to show the missing file")
    path.write_text(GOOD)
    await eventually(clean, 5, "/readyz to clear once the same file is back")
    assert store.last_error is None
    assert store.current.policy.metadata.name == "default"


def test_a_loader_failure_of_any_kind_is_a_refusal_not_a_clean_state(tmp_path, monkeypatch):
    import cloud4iot.policy.store as store_module

    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)

    def broken(raw: bytes, source: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(store_module, "parse_policy", broken)
    path.write_text(GOOD + "\n# edited\n")
    assert store.check_once() == "refused"
    assert store.last_error is not None
    assert "could not be loaded: RecursionError" in str(store.last_error)
    assert store.current.policy.metadata.name == "default"
