"""Hot reload: a changed policy applies, a bad one is refused and the last good stays."""

from __future__ import annotations

import os
from pathlib import Path

from extender.policy.store import PolicyStore

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

    from extender.app import create_app
    from extender.settings import Settings
    from extender.state.store import StateStore

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
